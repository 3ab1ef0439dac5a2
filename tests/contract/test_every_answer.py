"""Every operation the emulator serves, walked through the spec's operation table, with each
JSON answer validated against the spec's response schema for that operation and status.

What is walked here, per operation: the error answers (401 without a key, 400 for a malformed
revision and for a bad query or body, 404 for an unknown id, 404/405 for a method the path does
not have, 429 over the burst limit), validated against the operation's own ``4XX`` response
(the official stable.json's, $refs resolved from its components; the derived error schema when
it is absent); and for every read, sparse fieldsets of its own type and of every type it can
include, validated against its success schema with the attributes' ``required`` lifted (a sparse
fieldset leaves the other attributes out, as at Klaviyo). The plain and the rich answers (every
include and additional field) of every read are walked in ``test_emulator_contract.py``, and the
writes and job reads in ``test_write_contract.py``; ``test_every_served_operation_is_walked``
checks that together they leave none out.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator

import klaviyo_spec as spec
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings
from klaviyo_spec.derive import to_json_schema

from ..emulator.writes_helpers import FakeClock, suppression_body
from .test_emulator_contract import FORMATS, SYNTHETIC_READS, OpenApiValidator, _path_for, check, official_components

HEADERS = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": spec.spec_revision()}
SERVED = sorted({*spec.emulated_operations(), *spec._raw().get("emulated_bodyless_operations", ())})
SETTINGS = dict(seed=11, profiles=150, events=400, lists=3, campaigns=9, templates=4, flows=9)
METHODS = ("GET", "POST", "PATCH", "DELETE")
#: 429 is walked for every operation whose burst is at most this (the rest share the same code path).
SMALL_BURST = 10


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator.test", headers=HEADERS)


@pytest.fixture(scope="module")
def app():
    return create_app(EmulatorSettings(**SETTINGS, rate_limits=False))


@pytest.fixture
async def client(app):
    async with _client(app) as c:
        yield c


# ----- validators ---------------------------------------------------------------------------
def _official_response(op_id: str, status: int) -> dict | None:
    """The official response schema of ``op_id`` for ``status`` (its own code, else its NXX), with $defs."""
    loaded = official_components()
    if loaded is None:
        return None
    raw, defs = loaded
    op = spec.operation(op_id)
    responses = raw["paths"][op.path][op.method.lower()]["responses"]
    response = responses.get(str(status)) or responses[f"{status // 100}XX"]
    if "$ref" in response:
        response = raw["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    media = next(iter(response["content"].values()))
    return {**to_json_schema(copy.deepcopy(media["schema"])), "$defs": defs}


@cache
def error_validators(op_id: str, status: int) -> tuple:
    official = _official_response(op_id, status)
    derived = Draft202012Validator(spec.error_json_schema(), format_checker=FORMATS)
    return (derived,) if official is None else (derived, OpenApiValidator(official, format_checker=FORMATS))


def _lift_attribute_requirements(schema: dict) -> dict:
    """``schema`` with no ``required`` on any resource's ``attributes`` (sparse fieldsets)."""
    schema = copy.deepcopy(schema)
    defs = schema.get("$defs", {})
    refs: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            attributes = (node.get("properties") or {}).get("attributes")
            if isinstance(attributes, dict):
                attributes.pop("required", None)
                if "$ref" in attributes:
                    refs.add(attributes["$ref"].rsplit("/", 1)[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    for name in refs:
        if name in defs:
            defs[name].pop("required", None)
    return schema


@cache
def sparse_validators(op_id: str) -> tuple:
    derived = OpenApiValidator(_lift_attribute_requirements(spec.response_json_schema(op_id)), format_checker=FORMATS)
    official = _official_response(op_id, spec.operation(op_id).success_status or 200)
    if official is None:
        return (derived,)
    return derived, OpenApiValidator(_lift_attribute_requirements(official), format_checker=FORMATS)


def validate(validators: tuple, op_id: str, status: int, body: dict) -> None:
    for validator in validators:
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        assert not errors, f"{op_id} {status}: " + "; ".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])


def check_error(op_id: str, response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in statuses, f"{op_id}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    body = response.json()
    validate(error_validators(op_id, response.status_code), op_id, response.status_code, body)
    assert all(e["status"] == response.status_code for e in body["errors"])
    return body


def _any_path(op_id: str) -> str:
    op = spec.operation(op_id)
    return op.url_path(**{name: "NOPE0NOPE0NOPE0NOPE0NOPE00" for name in op.path_params})


# ----- error answers of every operation -------------------------------------------------------
@pytest.mark.parametrize("op_id", SERVED)
async def test_error_answers_match_the_operation_s_4xx_schema(client, op_id):
    op = spec.operation(op_id)
    path = _any_path(op_id)
    body = None if op.method == "GET" else b"{not json"

    no_key = {k: v for k, v in HEADERS.items() if k != "Authorization"}
    async with httpx.AsyncClient(transport=client._transport, base_url="http://emulator.test", headers=no_key) as bare:
        check_error(op_id, await bare.request(op.method, path, content=body), 401)
    bad = check_error(op_id, await client.request(op.method, path, content=body, headers={"revision": "July 2026"}), 400)
    assert bad["errors"][0]["source"] == {"parameter": "revision"}
    if op.method == "GET":
        bad = check_error(op_id, await client.get(path, params={"bogus": "1"}), 400)
        assert bad["errors"][0]["source"] == {"parameter": "bogus"}
        if op.path_params:
            check_error(op_id, await client.get(path), 404)
    else:
        bad = check_error(op_id, await client.request(op.method, path, content=body), 400)
        assert bad["errors"][0]["source"].get("pointer", "").startswith("/data")
    taken = {o.method for o in spec.operations().values() if o.path == op.path}
    other = next((m for m in METHODS if m not in taken), None)
    if other is not None:
        check_error(op_id, await client.request(other, path, content=b"{}" if other != "GET" else None), 404, 405)


@pytest.mark.parametrize("op_id", [o for o in SERVED if spec.operation(o).ratelimit.burst_per_second <= SMALL_BURST])
async def test_throttled_answers_match_the_operation_s_4xx_schema(op_id):
    """Over the burst limit (a frozen clock: no request ages out of the window): 429, Retry-After,
    RateLimit-* headers, and the operation's error schema."""
    op = spec.operation(op_id)
    app = create_app(EmulatorSettings(**SETTINGS, rate_limits=True), clock=FakeClock())
    body = None if op.method == "GET" else b"{not json"
    async with _client(app) as c:
        answers = [await c.request(op.method, _any_path(op_id), content=body) for _ in range(op.ratelimit.burst_per_second + 1)]
    assert all(a.status_code != 429 for a in answers[:-1])
    throttled = answers[-1]
    check_error(op_id, throttled, 429)
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.headers["RateLimit-Remaining"] == "0" or int(throttled.headers["RateLimit-Remaining"]) >= 0


# ----- sparse fieldsets of every read ---------------------------------------------------------
def _sparse_params(op_id: str) -> list[dict]:
    """Two attributes of the operation's own type, then each includable type's first attribute
    (with that include), as ``fields[type]`` allows them."""
    op = spec.operation(op_id)
    out = []
    for type_, names in op.fields.items():
        tops = [n for n in names if "." not in n][:2]
        if not tops:
            continue
        params = {f"fields[{type_}]": ",".join(tops)}
        included = [i for i in op.include if i.rstrip("s").replace("-", "") in type_.replace("-", "") or type_ in i]
        if included:
            params["include"] = ",".join(op.include)
        out.append(params)
    if op.filter_required and "messages.channel" in op.filters:
        out = [dict(p, filter="equals(messages.channel,'email')") for p in out]
    return out


@pytest.mark.parametrize("op_id", [o for o in SYNTHETIC_READS if spec.operation(o).fields])
async def test_sparse_fieldsets_match_the_success_schema(client, op_id):
    path = await _path_for(client, op_id)
    for params in _sparse_params(op_id):
        response = await client.get(path, params=params)
        assert response.status_code == 200, f"{op_id} {params}: {response.text[:300]}"
        body = response.json()
        validate(sparse_validators(op_id), op_id, 200, body)
        wanted = {k[7:-1]: set(v.split(",")) for k, v in params.items() if k.startswith("fields[")}
        resources = body["data"] if isinstance(body["data"], list) else [body["data"]]
        for resource in [*resources, *body.get("included", [])]:
            if resource and resource["type"] in wanted and "attributes" in resource:
                assert set(resource["attributes"]) <= wanted[resource["type"]], (op_id, params, resource["type"])


# ----- the writes and job reads test_write_contract.py does not walk ---------------------------
#: (operation, method, path, body, status) in order; "{profile}" and "{job}" are filled in as they become known.
OTHER_SUCCESSES = [
    (
        "create_profile",
        "POST",
        "/api/profiles",
        {
            "data": {
                "type": "profile",
                "attributes": {
                    "email": "walked@example.com",
                    "first_name": "Walked",
                    "location": {"city": "Oslo"},
                    "properties": {"plan": "gold"},
                },
            }
        },
        201,
    ),
    (
        "update_profile",
        "PATCH",
        "/api/profiles/{profile}",
        {
            "data": {
                "type": "profile",
                "id": "{profile}",
                "attributes": {"last_name": "Through", "properties": {"plan": "silver"}},
            }
        },
        200,
    ),
    (
        "bulk_suppress_profiles",
        "POST",
        "/api/profile-suppression-bulk-create-jobs",
        suppression_body(["walked@example.com"]),
        202,
    ),
    ("get_bulk_suppress_profiles_jobs", "GET", "/api/profile-suppression-bulk-create-jobs", None, 200),
    ("get_bulk_suppress_profiles_job", "GET", "/api/profile-suppression-bulk-create-jobs/{job}", None, 200),
    (
        "bulk_unsuppress_profiles",
        "POST",
        "/api/profile-suppression-bulk-delete-jobs",
        suppression_body(["walked@example.com"], delete=True),
        202,
    ),
    ("get_bulk_unsuppress_profiles_jobs", "GET", "/api/profile-suppression-bulk-delete-jobs", None, 200),
    ("get_bulk_unsuppress_profiles_job", "GET", "/api/profile-suppression-bulk-delete-jobs/{job}", None, 200),
    (
        "create_event",
        "POST",
        "/api/events",
        {
            "data": {
                "type": "event",
                "attributes": {
                    "properties": {"OrderId": "walk-1", "Items": ["Tea"]},
                    "time": "2025-12-01T10:00:00Z",
                    "value": 12.5,
                    "unique_id": "walk-1",
                    "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
                    "profile": {"data": {"type": "profile", "attributes": {"email": "walked@example.com"}}},
                },
            }
        },
        202,
    ),
    (
        "bulk_create_events",
        "POST",
        "/api/event-bulk-create-jobs",
        {
            "data": {
                "type": "event-bulk-create-job",
                "attributes": {
                    "events-bulk-create": {
                        "data": [
                            {
                                "type": "event-bulk-create",
                                "attributes": {
                                    "profile": {"data": {"type": "profile", "attributes": {"email": "walked-too@example.com"}}},
                                    "events": {
                                        "data": [
                                            {
                                                "type": "event",
                                                "attributes": {
                                                    "properties": {"Page": "home"},
                                                    "time": "2025-12-02T10:00:00Z",
                                                    "metric": {
                                                        "data": {"type": "metric", "attributes": {"name": "Walked Through"}}
                                                    },
                                                },
                                            }
                                        ]
                                    },
                                },
                            }
                        ]
                    }
                },
            }
        },
        202,
    ),
    # the written events, their new metric and their profiles read back valid
    ("get_events", "GET", "/api/events?sort=-datetime&page[size]=5&include=metric,profile", None, 200),
]


async def test_other_writes_and_job_reads_match_the_success_schema():
    known: dict[str, str] = {}

    def fill(value):
        if isinstance(value, str):
            return value.format(**known) if "{" in value else value
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    async with _client(create_app(EmulatorSettings(**SETTINGS, rate_limits=False), clock=FakeClock())) as c:
        for op_id, method, path, body, status in OTHER_SUCCESSES:
            response = await c.request(method, fill(path), json=fill(body))
            assert response.status_code == status, f"{op_id}: {response.text[:300]}"
            if not response.content:
                continue
            document = response.json()
            check(op_id, document)
            data = document["data"]
            if op_id == "create_profile":
                known["profile"] = data["id"]
            elif isinstance(data, list) and data:
                known["job"] = data[0]["id"]
            elif isinstance(data, dict) and data["type"].endswith("-job"):
                known["job"] = data["id"]


def test_every_served_operation_is_walked():
    """Successes: reads here and in test_emulator_contract.py, writes and job reads in
    test_write_contract.py and above; errors: every operation above."""
    write_contract = Path(__file__).with_name("test_write_contract.py").read_text()
    in_write_contract = {op for op in SERVED if re.search(rf'["\']{re.escape(op)}["\']', write_contract)}
    missing = set(SERVED) - set(SYNTHETIC_READS) - in_write_contract - {o[0] for o in OTHER_SUCCESSES}
    assert not missing, f"operations whose success answer no contract test validates: {sorted(missing)}"
