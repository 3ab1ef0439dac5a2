"""Every emulated operation's responses validate against Klaviyo's published schemas.

Two sources: the derived ``spec_data.json`` (always) and, when the official
``stable.json`` is present, the schema converted straight from its components.

One deliberate relaxation: Klaviyo's spec uses ``oneOf`` over structurally
identical or non-exclusive alternatives (e.g. ``send_options`` is one of
EmailSendOptions / SMSSendOptions / PushSendOptions, all ``{use_smart_sending}``;
``tracking_options`` likewise), which no instance can satisfy under strict JSON
Schema. ``oneOf`` is therefore checked as "at least one alternative matches".
"""

from __future__ import annotations

import copy
import json
from functools import cache

import httpx
import jsonschema
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema._keywords import anyOf as _any_of

import klaviyo_spec as spec
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings
from klaviyo_spec.derive import find_spec, to_json_schema

HEADERS = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15"}
OpenApiValidator = jsonschema.validators.extend(Draft202012Validator, {"oneOf": _any_of})
FORMATS = FormatChecker()


@pytest.fixture(scope="module")
def app():
    return create_app(
        EmulatorSettings(seed=11, profiles=150, events=400, lists=3, campaigns=9, templates=4, flows=9, rate_limits=False)
    )


@pytest.fixture
async def client(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator.test", headers=HEADERS) as c:
        yield c


@cache
def derived_validator(op_id: str):
    return OpenApiValidator(spec.response_json_schema(op_id), format_checker=FORMATS)


@cache
def official_components():
    path = find_spec()
    if path is None:
        return None
    raw = json.loads(path.read_text())
    return raw, {name: to_json_schema(copy.deepcopy(s)) for name, s in raw["components"]["schemas"].items()}


def official_validator(op_id: str):
    loaded = official_components()
    if loaded is None:
        return None
    raw, defs = loaded
    op = spec.operation(op_id)
    responses = raw["paths"][op.path][op.method.lower()]["responses"]
    media = next(iter(responses[str(op.success_status or 200)]["content"].values()))
    return OpenApiValidator({**to_json_schema(copy.deepcopy(media["schema"])), "$defs": defs}, format_checker=FORMATS)


def check(op_id: str, body: dict) -> None:
    errors = sorted(derived_validator(op_id).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{op_id}: " + "; ".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])
    official = official_validator(op_id)
    if official is not None:
        errors = list(official.iter_errors(body))
        assert not errors, f"{op_id} (official spec): " + "; ".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])


def _all_params(op_id: str) -> list[dict]:
    """Plain request, every include + additional field at once, and a sparse fieldset."""
    op = spec.operation(op_id)
    variants: list[dict] = [{}]
    rich: dict = {}
    if op.include:
        rich["include"] = ",".join(op.include)
    for type_, names in op.additional_fields.items():
        rich[f"additional-fields[{type_}]"] = ",".join(names)
    if rich:
        variants.append(rich)
    if op.filter_required and "messages.channel" in op.filters:
        variants = [dict(v, filter=f"equals(messages.channel,'{ch}')") for v in variants for ch in ("email", "sms")]
    return variants


async def _first_id(client, path: str, params: dict | None = None) -> str:
    response = await client.get(path, params=params)
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.json()["data"][0]["id"]


async def _path_for(client, op_id: str) -> str:
    """The operation's path for a resource that has data to show (a profile in a list, an email
    campaign, a flow with actions...)."""
    op = spec.operation(op_id)
    if not op.path_params:
        return op.path
    kind = op.path.split("/")[2]
    if kind == "profiles":
        first_list = await _first_id(client, "/api/lists")
        ident = await _first_id(client, f"/api/lists/{first_list}/profiles")
    elif kind == "campaigns":
        ident = await _first_id(client, "/api/campaigns", {"filter": "equals(messages.channel,'email')"})
    elif kind == "campaign-messages":
        campaign = await _first_id(client, "/api/campaigns", {"filter": "equals(messages.channel,'email')"})
        ident = await _first_id(client, f"/api/campaigns/{campaign}/campaign-messages")
    elif kind == "campaign-recipient-estimations":
        ident = await _first_id(client, "/api/campaigns", {"filter": "equals(messages.channel,'email')"})
    elif kind == "flow-actions":
        ident = await _first_id(client, f"/api/flows/{await _first_id(client, '/api/flows')}/flow-actions")
    else:
        ident = await _first_id(client, f"/api/{kind}")
    return op.url_path(id=ident)


#: The account's read operations (job reads and writes are covered in test_write_contract.py).
SYNTHETIC_READS = [op for op in spec.emulated_operations() if spec.operation(op).method == "GET" and "bulk_" not in op]


@pytest.mark.parametrize("op_id", SYNTHETIC_READS)
async def test_operation_matches_schema(client, op_id):
    path = await _path_for(client, op_id)
    for params in _all_params(op_id):
        response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/vnd.api+json")
        body = response.json()
        check(op_id, body)
        for _ in range(2):  # and the following pages
            nxt = body.get("links", {}).get("next")
            if not nxt:
                break
            body = (await client.get(nxt)).json()
            check(op_id, body)


async def test_sparse_fieldsets_keep_only_requested_attributes(client):
    # Sparse responses may omit attributes the schema marks required, so they are checked directly.
    for path, type_, wanted in (
        ("/api/profiles", "profile", "email,location.city"),
        ("/api/lists", "list", "name"),
        ("/api/accounts", "account", "timezone,contact_information.street_address.city"),
    ):
        body = (await client.get(path, params={f"fields[{type_}]": wanted})).json()
        tops = {w.split(".")[0] for w in wanted.split(",")}
        assert body["data"] and all(set(item["attributes"]) == tops for item in body["data"])


def test_every_emulated_operation_has_a_handler():
    from klaviyo_emulator.handlers import HANDLERS
    from klaviyo_emulator.related import READS
    from klaviyo_emulator.writes import READ_HANDLERS, WRITE_HANDLERS

    served = {*spec.emulated_operations(), *spec._raw()["emulated_bodyless_operations"]}
    assert {*HANDLERS, *READ_HANDLERS, *READS, *WRITE_HANDLERS} == served


@pytest.mark.parametrize(
    "url,status",
    [
        ("/api/profiles?filter=equals(nope,'x')", 400),
        ("/api/profiles?sort=nope", 400),
        ("/api/profiles?page[size]=0", 400),
        ("/api/campaigns", 400),
        ("/api/profiles/NOPE", 404),
        ("/api/nowhere", 404),
        ("/api/events?bogus=1", 400),
    ],
)
async def test_errors_match_error_schema(client, url, status):
    response = await client.get(url)
    assert response.status_code == status
    validator = Draft202012Validator(spec.error_json_schema(), format_checker=FORMATS)
    assert not list(validator.iter_errors(response.json()))
    if official_components() is not None:
        raw, _ = official_components()
        media = next(iter(raw["components"]["responses"]["ClientError"]["content"].values()))
        official = Draft202012Validator(to_json_schema(copy.deepcopy(media["schema"])), format_checker=FORMATS)
        assert not list(official.iter_errors(response.json()))
