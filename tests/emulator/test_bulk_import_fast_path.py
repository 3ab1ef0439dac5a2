"""The bulk import fast path (``emulator/bulkimport.py``) against the general path.

1. Whatever ``bulkimport.decode`` accepts, the general path accepts too (orjson parses it,
   ``validate_body`` finds nothing) and the Structs hold exactly the parsed values: checked on
   every single-point mutation (wrong types, nulls, missing and unknown fields, enum values,
   huge numbers, nesting) of a body that uses every field.
2. The same requests through an app with the fast path and one without it give the same
   responses, job documents, import errors, profiles and list members.
"""

from __future__ import annotations

import copy
import random

import msgspec
import orjson
import pytest

from klaviyo_emulator import bulkimport
from klaviyo_emulator.bodies import BodyError, validate_body

from .writes_helpers import FakeClock, client_for, make_app

OP = "bulk_import_profiles"
JOBS = "/api/profile-bulk-import-jobs"


def _full_profile(i: int) -> dict:
    return {
        "type": "profile",
        "id": None,
        "attributes": {
            "email": f"p{i}@example.com",
            "phone_number": f"+4420300{i:05d}",
            "external_id": f"x{i}",
            "first_name": "Ann",
            "last_name": None,
            "organization": "Org",
            "locale": "en-GB",
            "title": "Dr",
            "image": "https://i/x.png",
            "location": {
                "address1": "1 High St",
                "address2": None,
                "city": "Leeds",
                "country": "UK",
                "ip": "10.0.0.1",
                "latitude": 53.8,
                "longitude": "-1.5",
                "region": "Yorks",
                "timezone": "Europe/London",
                "zip": "LS1",
            },
            "properties": {
                "tier": "gold",
                "points": 12,
                "ratio": 0.5,
                "vip": True,
                "none": None,
                "tags": ["a", 1],
                "nested": {"k": "v"},
            },
        },
    }


def _full_body(n: int = 2, list_id: str = "L1") -> dict:
    return {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": [_full_profile(i) for i in range(n)]}},
            "relationships": {"lists": {"data": [{"type": "list", "id": list_id}]}},
        }
    }


REPLACEMENTS = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**63,
    2**64 + 1,
    -(2**63) - 1,
    "",
    "x",
    "profile",
    "list",
    "profile-bulk-import-job",
    [],
    [1],
    ["s"],
    {},
    {"a": 1},
    {"a": [1]},
    {"a": {"b": {"c": 1}}},
    [[1]],
    [{"a": 1}],
]


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _set(doc, path, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return doc


def _delete(doc, path):
    doc = copy.deepcopy(doc)
    target = doc
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    return doc


def _mutations(doc):
    for path in list(_paths(doc)):
        for value in REPLACEMENTS:
            yield _set(doc, path, value)
        if path:
            yield _delete(doc, path)
        target = doc
        for p in path:
            target = target[p]
        if isinstance(target, dict):
            yield _set(doc, path, {**target, "unknown_field": 1})
            yield _set(doc, path, {**target, "_kx": "t"})
            yield _set(doc, path, {**target, "meta": None})


def _raw(doc) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # an int orjson cannot write: the text by hand
        return msgspec.json.encode(doc)


def _check_never_looser(raw: bytes) -> bool:
    fast = bulkimport.decode(raw)
    if fast is None:
        return False
    parsed = orjson.loads(raw)  # must not raise
    validate_body(OP, parsed)  # must not raise BodyError
    assert msgspec.to_builtins(fast) == parsed
    return True


def test_fast_decode_never_accepts_what_the_schema_rejects():
    base = _full_body()
    assert _check_never_looser(orjson.dumps(base))
    accepted = rejected_by_schema = 0
    for doc in _mutations(base):
        raw = _raw(doc)
        if _check_never_looser(raw):
            accepted += 1
        else:
            try:
                validate_body(OP, orjson.loads(raw))
            except (BodyError, orjson.JSONDecodeError):
                rejected_by_schema += 1
    assert accepted > 50 and rejected_by_schema > 50


@pytest.mark.parametrize(
    "text",
    [
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{"properties":{"n":123456789012345678901234567890}}}]}}}}',
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{"properties":{"n":18446744073709551615}}}]}}}}',
        b'{"data":{"type":"profile-bulk-import-job","type":"x","attributes":{"profiles":{"data":[{"type":"profile","attributes":{}}]}}}}',
        b'{"data":{"type":"x","type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{}}]}}}}',
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{"email":1,"email":"a@b.co"}}]}}}}',
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{"properties":{"a":1,"b":2,"a":3}}}]}}}}',
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{"email":"\\ud800"}}]}}}}',
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{"properties":{"f":1e400}}}]}}}}',
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{"properties":{"f":1E5,"g":-0.0,"h":5e-324}}}]}}}}',
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[]}},"relationships":{}}}',
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{}}]}},"relationships":{"lists":{}}}}',
        b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{}}]}}}} ',
        b"[]",
        b"null",
        b'{"data":null}',
        b"",
    ],
)
def test_fast_decode_edge_texts(text):
    try:
        _check_never_looser(text)
    except (BodyError, orjson.JSONDecodeError) as exc:
        pytest.fail(f"fast path accepted what the general path rejects: {exc}")


def test_random_floats_decode_alike():
    rng = random.Random(1)
    values = [rng.uniform(-1e6, 1e6) for _ in range(300)] + [rng.random() * 10 ** rng.randint(-300, 300) for _ in range(300)]
    props = {f"f{i}": v for i, v in enumerate(values)}
    body = _full_body(1)
    body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["properties"] = props
    raw = orjson.dumps(body)
    assert _check_never_looser(raw)
    assert (
        msgspec.to_builtins(bulkimport.decode(raw))["data"]["attributes"]["profiles"]["data"][0]["attributes"]["properties"]
        == props
    )


# ----- end to end: fast path vs general path ------------------------------------------------------
def _strip_error_ids(doc):
    if isinstance(doc, dict):
        return {k: _strip_error_ids(v) for k, v in doc.items() if not (k == "id" and "status" in doc and "code" in doc)}
    if isinstance(doc, list):
        return [_strip_error_ids(v) for v in doc]
    return doc


def _norm(content: bytes) -> bytes:
    """Error documents carry random ids: drop them; everything else byte for byte."""
    return orjson.dumps(_strip_error_ids(orjson.loads(content))) if content.startswith(b'{"errors"') else content


async def _run(app, clock, bodies) -> list:
    out = []
    async with client_for(app) as c:
        list_id = (await c.get("/api/lists")).json()["data"][0]["id"]
        job_ids = []
        for b in bodies:
            raw = b(list_id) if callable(b) else b
            r = await c.post(JOBS, content=raw, headers={"content-type": "application/vnd.api+json"})
            out.append((r.status_code, _norm(r.content)))
            if r.status_code == 202:
                job_ids.append(r.json()["data"]["id"])
            clock.advance(0.05)
            out.append(_norm((await c.get(f"{JOBS}/{job_ids[-1]}")).content) if job_ids else None)
        clock.advance(3600)
        for jid in job_ids:
            for suffix in ("", "/import-errors", "/profiles", "/relationships/profiles", "/lists"):
                r = await c.get(
                    f"{JOBS}/{jid}{suffix}",
                    params={"page[size]": 100} if suffix in ("/profiles", "/relationships/profiles") else None,
                )
                out.append((suffix, r.status_code, _norm(r.content)))
        for params in (
            {"sort": "-updated", "page[size]": 100, "additional-fields[profile]": "subscriptions"},
            {"sort": "-created", "page[size]": 100},
        ):
            r = await c.get("/api/profiles", params=params)
            out.append((r.status_code, _norm(r.content)))
        r = await c.get(f"/api/lists/{list_id}/profiles", params={"page[size]": 100})
        out.append((r.status_code, _norm(r.content)))
    state = app.state.emulator.state
    out.append(orjson.dumps(state.profile_attributes(list(range(state.count)), True, False)))
    out.append(app.state.emulator.snapshot())
    out.append((state.version, {f: list(ix.items()) for f, ix in state.index.items()}, list(state.new_updated.items())))
    return out


def _bodies(existing_emails, existing_phone, existing_id):
    def body(profiles, lists=True):
        def make(list_id):
            data = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": profiles}}}
            if lists:
                data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
            return orjson.dumps({"data": data})

        return make

    def p(i, **attrs):
        a = {
            "email": f"user{i}@example.com",
            "first_name": f"F{i}",
            "phone_number": f"+4420{30000000 + i}",
            "properties": {"tier": "gold", "points": i},
        }
        a.update(attrs)
        return {"type": "profile", "attributes": {k: v for k, v in a.items() if v != "DROP"}}

    fresh = [p(i) for i in range(40)]
    mixed = [p(i, last_name="New") for i in range(30, 60)]  # 30..39 match the first body
    mixed.append(p(100, email=existing_emails[0]))  # matches a synthetic profile by email
    mixed.append(p(101, email="DROP", phone_number=existing_phone))
    mixed.append(
        {"type": "profile", "id": existing_id, "attributes": {"first_name": "ById", "location": {"zip": "Z", "city": None}}}
    )
    mixed.append(p(102, email="User5@Example.COM"))  # same key as profile 5
    mixed.append(p(103, phone_number="+442030000100"))  # phone of profile 100 in this job
    dup_inside = [p(200), p(201, email="user200@example.com", phone_number="DROP")]
    with_errors = [p(300), p(301, email="not-an-email"), p(302, phone_number="555"), p(303, email=None, phone_number=None)]
    odd = [
        p(400, location={"latitude": 1, "longitude": 2.5, "city": "X"}, properties={"x": [1, "a"], "y": {"k": None}}),
        {"type": "profile", "attributes": {"email": "kx@example.com", "_kx": "token"}},
        {"type": "profile", "attributes": {"email": "meta@example.com"}, "meta": {"patch_properties": {"unset": "x"}}},
        {"type": "profile", "attributes": {"email": "extra@example.com", "favourite": "blue"}},
    ]
    big = [p(500, properties={"blob": "x" * 120_000})]
    return [
        body(fresh),
        body(mixed),
        body(dup_inside, lists=False),
        body(with_errors),
        *[body([q]) for q in odd],
        body(big),
        body([]),
        body([p(600 + i) for i in range(10_001)]),
        orjson.dumps(
            {
                "data": {
                    "type": "profile-bulk-import-job",
                    "attributes": {"profiles": {"data": [p(700)]}},
                    "relationships": {"lists": {"data": [{"type": "list", "id": "nope"}]}},
                }
            }
        ),
        orjson.dumps(
            {
                "data": {
                    "type": "profile-bulk-import-job",
                    "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": 5}}]}},
                }
            }
        ),
        b"{not json",
        body([p(800, last_name="DROP"), p(801, last_name=None)]),
    ]


async def test_fast_path_and_general_path_answer_and_store_alike(monkeypatch):
    runs = []
    for fast in (True, False):
        clock = FakeClock()
        app = make_app(clock, job_profiles_per_second=1000)
        base = app.state.emulator.account.profiles.base
        phone_row = next(r for r in range(50) if base.phone(r))
        bodies = _bodies([base.email(3)], base.phone(phone_row), base.profile_id(9))
        if not fast:
            monkeypatch.setattr(bulkimport, "decode", lambda raw: None)
        runs.append(await _run(app, clock, bodies))
        monkeypatch.undo()
    fast_run, general_run = runs
    assert len(fast_run) == len(general_run)
    for a, b in zip(fast_run, general_run):
        assert a == b


async def test_fast_path_is_taken_for_a_plain_body(monkeypatch):
    taken = []
    accept = bulkimport.accept
    monkeypatch.setattr(bulkimport, "accept", lambda req, body: taken.append(1) or accept(req, body))
    clock = FakeClock()
    app = make_app(clock)
    async with client_for(app) as c:
        body = {
            "data": {
                "type": "profile-bulk-import-job",
                "attributes": {
                    "profiles": {"data": [{"type": "profile", "attributes": {"email": "a@example.com", "properties": {"n": 1}}}]}
                },
            }
        }
        r = await c.post(JOBS, json=body)
        assert r.status_code == 202 and taken


@pytest.mark.parametrize("seed", range(20))
def test_all_match_in_one_call_is_all_of_match(seed):
    """The newline-joined regex check answers as one ``match`` per value (``$`` before a final newline too)."""
    from klaviyo_emulator.identifiers import EMAIL_RE, PHONE_RE

    rng = random.Random(seed)
    emails = [
        "a@b.co",
        "x.y+z@sub.example.com",
        "a@b",
        "@b.co",
        "a@-b.co",
        "a@b.co\n",
        "a@b.co\n\n",
        "a\n@b.co",
        "",
        "é@b.co",
        "a@b.co ",
        "a@b-.co",
        "a@b.c-d.co",
    ]
    phones = [
        "+15005550006",
        "+1500555",
        "+150055",
        "+0123456789",
        "+4420300000001234",
        "+442030000000\n",
        "+44\n2030000",
        "",
        "+١٢٣٤٥٦٧٨",
        "15005550006",
        "+1 5005550006",
    ]
    for pattern, pool in ((EMAIL_RE, emails), (PHONE_RE, phones)):
        for _ in range(60):
            values = [rng.choice(pool[:2] if rng.random() < 0.7 else pool) for _ in range(rng.choice([0, 1, 2, 5, 40]))]
            assert bulkimport._all_match(pattern, values) == all(map(pattern.match, values)), values


@pytest.mark.parametrize("seed", range(10))
def test_email_check_without_backtracking_is_email_re(seed):
    """The possessive email pattern of the one-call check accepts exactly what EMAIL_RE does."""
    from klaviyo_emulator.identifiers import EMAIL_RE

    assert bulkimport._joined(EMAIL_RE).pattern.startswith(f"(?>{bulkimport._EMAIL_BODY}")  # EMAIL_RE unchanged
    rng = random.Random(seed)
    alphabet = "ab9-.@_+\n~Z"

    def label() -> str:
        return "".join(rng.choice("ab9-" if rng.random() < 0.8 else alphabet) for _ in range(rng.randint(1, 4)))

    valid = 0
    for _ in range(3000):
        if rng.random() < 0.3:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        else:
            text = rng.choice(["x", "a.b", "q+1", "", "a@"]) + "@" + ".".join(label() for _ in range(rng.randint(1, 3)))
        valid += bool(EMAIL_RE.match(text))
        assert bulkimport._all_match(EMAIL_RE, [text]) == bool(EMAIL_RE.match(text)), text
        assert bulkimport._all_match(EMAIL_RE, ["ok@x.io", text]) == bool(EMAIL_RE.match(text)), text
    assert valid > 100  # a fair share of valid addresses, not only rejections
