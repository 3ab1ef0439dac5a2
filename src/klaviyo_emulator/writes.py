"""The write side: bulk profile import jobs, lists and membership, consent and suppression.

Each handler gets a ``Request`` whose body already passed the spec's request
schema (``bodies.validate_body``) and returns ``(status, document or None)``.
The documented limits and rules that a schema cannot say (counts per request,
bytes per profile, identifiers, consent rules) are checked here; a violation
raises ``BodyError`` with one JSON pointer per offending field or row, so a
client can drop exactly those rows. Problems Klaviyo reports *after* accepting
a bulk import (an invalid email or phone number in one profile) become import
errors of the job, with the profile's index in the pointer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from . import tracked
from .bodies import BodyError
from .catalog import Record
from .handlers import Document, Handler, NotFound, Request, _page, _url
from .identifiers import EMAIL_RE, identifier_problems
from .jobs import ImportProblem, Job
from .jsontypes import JSON
from .keyset import by_row
from .state import AccountState
from .timefmt import parse_datetime

MAX_IMPORT_PROFILES = 10_000
MAX_PROFILE_BYTES = 100 * 1024
MAX_LIST_IDS = 1_000
MAX_SUBSCRIBE = 1_000
MAX_UNSUBSCRIBE = 100
MAX_SUPPRESS = 100
PROFILES_PTR = "/data/attributes/profiles/data"

#: a write: the request in, (status, document or None) out
WriteHandler = Callable[[Request], "tuple[int, Document | None]"]


class ImportColumns(NamedTuple):
    """A bulk import's profiles as columns (see ``AccountState.upsert_many``)."""

    pids: Sequence[str | None]
    emails: Sequence[str | None]
    phones: Sequence[str | None]
    external_ids: Sequence[str | None]
    attributes: Sequence[Any]  # dicts, or the fast path's Structs (``attributes_of`` makes dicts of them)
    blobs: Sequence[bytes | None] | None  # packed attributes, when already made


def _too_many(count: int, limit: int, pointer: str, what: str) -> None:
    if count > limit:
        raise BodyError([(pointer, f"At most {limit:,} {what} are allowed per request; got {count:,}.")])


def _list_or_error(req: Request, list_id: str, pointer: str) -> str:
    if list_id not in req.account.list_members:
        raise BodyError([(pointer, f"List {list_id!r} does not exist.")])
    return list_id


# ----- bulk profile import --------------------------------------------------------------------
def bulk_import_profiles(req: Request) -> tuple[int, Document]:
    data = req.body["data"]
    profiles = data["attributes"]["profiles"]["data"]
    _too_many(len(profiles), MAX_IMPORT_PROFILES, PROFILES_PTR, "profiles")
    if not profiles:
        raise BodyError([(PROFILES_PTR, "At least one profile is required.")])
    oversize = [
        (f"{PROFILES_PTR}/{i}", f"Profile {i} is {n:,} bytes; the maximum per profile is {MAX_PROFILE_BYTES:,} bytes.")
        for i, n in ((i, len(orjson.dumps(p))) for i, p in enumerate(profiles))
        if n > MAX_PROFILE_BYTES
    ]
    if oversize:
        raise BodyError(oversize)
    lists = (data.get("relationships") or {}).get("lists", {}).get("data") or []
    list_ids = [_list_or_error(req, rel["id"], f"/data/relationships/lists/data/{i}/id") for i, rel in enumerate(lists)]
    errors: list[ImportProblem] = []
    items: list[tuple[int, str | None, JSON]] = []
    for i, profile in enumerate(profiles):
        attrs = profile["attributes"]
        problems = identifier_problems({**attrs, "id": profile.get("id")}, f"{PROFILES_PTR}/{i}/attributes")
        if problems:
            pointer, detail = problems[0]
            errors.append(
                {
                    "index": i,
                    "code": "invalid",
                    "title": "Invalid input.",
                    "detail": detail,
                    "pointer": pointer,
                    "payload": profile,
                }
            )
        else:
            items.append((i, profile.get("id"), attrs))
    attrs = [a for _, _, a in items]
    columns = ImportColumns(
        [pid for _, pid, _ in items],
        [a.get("email") for a in attrs],
        [a.get("phone_number") for a in attrs],
        [a.get("external_id") for a in attrs],
        attrs,
        None,
    )
    return submit_import_job(req, len(profiles), columns, list_ids, errors)


def submit_import_job(
    req: Request,
    count: int,
    columns: ImportColumns,
    list_ids: list[str],
    errors: list[ImportProblem],
    attributes_of: Callable[[Any], JSON] | None = None,
) -> tuple[int, Document]:
    """Queue a bulk import job (both request paths): at completion it upserts ``columns`` (ids,
    emails, phones, external ids, attributes, blobs: see ``AccountState.upsert_many``) and adds
    the profiles to ``list_ids``."""
    ctx = req.emulator
    state = req.emulator.state

    def apply(job: Job) -> None:
        now = ctx.now()
        rows = state.upsert_many(*columns, now, attributes_of)
        # an array, not a list of ints: nothing for the garbage collector to walk for as long as the job is kept
        job.profile_rows = np.fromiter(dict.fromkeys(rows), dtype=np.int64)
        for list_id in job.list_ids:
            state.add_members(list_id, job.profile_rows, now)

    s = req.account.settings
    job = ctx.jobs.submit(
        "profile-bulk-import-job",
        ctx.clock(),
        ctx.now(),
        count,
        s.job_profiles_per_second,
        s.job_queued_seconds,
        apply,
        list_ids=list_ids,
        errors=errors,
    )
    return 202, {"data": _import_job(req, job), "links": {"self": _url(req, None)}}


def _import_job(req: Request, job: Job) -> Document:
    own = f"{req.base}/api/profile-bulk-import-jobs/{job.id}/"
    wanted = req.query.fields.get("profile-bulk-import-job")
    attrs = job.attributes(req.emulator.clock())
    if wanted:
        attrs = {k: v for k, v in attrs.items() if k in wanted}
    return {
        "type": "profile-bulk-import-job",
        "id": job.id,
        "attributes": attrs,
        "relationships": {
            "lists": {
                "data": [{"type": "list", "id": lid} for lid in job.list_ids],
                "links": {"self": f"{own}relationships/lists/", "related": f"{own}lists/"},
            },
            "profiles": {"links": {"self": f"{own}relationships/profiles/", "related": f"{own}profiles/"}},
            "import-errors": {"links": {"related": f"{own}import-errors/"}},
        },
        "links": {"self": own},
    }


def _list(req: Request, list_id: str) -> Record:
    rec = req.account.record("list", list_id)
    if rec is None:
        raise NotFound(f"list {list_id!r}")
    return rec


def _job(req: Request, type_: str = "profile-bulk-import-job") -> Job:
    job = req.emulator.jobs.jobs.get(req.item_id)
    if job is None or job.type != type_:
        raise NotFound(f"job {req.id!r}")
    return job


def get_bulk_import_profiles_jobs(req: Request) -> Document:
    jobs = [j for j in req.emulator.jobs.order if j.type == "profile-bulk-import-job"]
    clock = req.emulator.clock()
    statuses = [j.status(clock) for j in jobs]
    q = req.query

    def compute() -> np.ndarray:
        keep = np.ones(len(jobs), dtype=bool)
        for cond in q.conditions:  # status: equals / any
            allowed = cond.value if isinstance(cond.value, list) else [cond.value]
            keep &= np.array([s in allowed for s in statuses], dtype=bool)
        rows = np.arange(len(jobs), dtype=np.int64)[keep]
        return rows[::-1].copy() if q.sort == "-created_at" else rows

    page, links = _page(req, f"jobs:{len(jobs)}:{','.join(statuses)}", compute, by_row(q.sort == "-created_at"))
    return {"data": [_import_job(req, jobs[i]) for i in page.tolist()], "links": links}


def get_bulk_import_profiles_job(req: Request) -> Document:
    job = _job(req)
    doc: Document = {"data": _import_job(req, job), "links": {"self": _url(req, None)}}
    if req.query.include:
        doc["included"] = [req.renderer.record(_list(req, lid)) for lid in job.list_ids]
    return doc


def get_errors_for_bulk_import_profiles_job(req: Request) -> Document:
    job = _job(req)
    errors = job.visible_errors(req.emulator.clock())
    page, links = _page(req, f"errors:{job.id}:{len(errors)}", lambda: np.arange(len(errors), dtype=np.int64))
    wanted = req.query.fields.get("import-error")
    data: list[JSON] = []
    for i in page.tolist():
        e = errors[i]
        attrs: JSON = {
            "code": e["code"],
            "title": e["title"],
            "detail": e["detail"],
            "source": {"pointer": e["pointer"]},
            "original_payload": e["payload"],
        }
        if wanted:
            attrs = {k: v for k, v in attrs.items() if k in wanted}
        data.append(
            {
                "type": "import-error",
                "id": req.emulator.jobs.error_id(job, e["index"]),
                "attributes": attrs,
                "links": {"self": f"{req.base}/api/import-errors/{req.emulator.jobs.error_id(job, e['index'])}/"},
            }
        )
    return {"data": data, "links": links}


def _job_profiles_page(req: Request) -> tuple[np.ndarray, dict[str, str]]:
    job = _job(req)
    rows = np.array(job.profile_rows, dtype=np.int64)
    page, links = _page(req, f"job-profiles:{job.id}:{len(rows)}", lambda: np.arange(len(rows), dtype=np.int64))
    return rows[page], links


def get_profiles_for_bulk_import_profiles_job(req: Request) -> Document:
    rows, links = _job_profiles_page(req)
    return {"data": req.renderer.profiles(rows), "links": links}


def get_profile_ids_for_bulk_import_profiles_job(req: Request) -> Document:
    rows, links = _job_profiles_page(req)
    return {"data": [{"type": "profile", "id": pid} for pid in req.account.profiles.ids_for(rows)], "links": links}


def get_list_for_bulk_import_profiles_job(req: Request) -> Document:
    job = _job(req)
    return {"data": [req.renderer.record(_list(req, lid)) for lid in job.list_ids], "links": {"self": _url(req, None)}}


def get_list_ids_for_bulk_import_profiles_job(req: Request) -> Document:
    job = _job(req)
    return {"data": [{"type": "list", "id": lid} for lid in job.list_ids], "links": {"self": _url(req, None)}}


# ----- lists ----------------------------------------------------------------------------------
def create_list(req: Request) -> tuple[int, Document]:
    attrs = req.body["data"]["attributes"]
    name = attrs["name"]
    if not name.strip():
        raise BodyError([("/data/attributes/name", "A list name cannot be blank.")])
    rec = req.emulator.state.create_list(name, attrs.get("opt_in_process"), req.emulator.now())
    return 201, {"data": req.renderer.record(rec), "links": {"self": _url(req, None)}}


def _member_rows(req: Request) -> np.ndarray:
    if req.item_id not in req.account.list_members:
        raise NotFound(f"list {req.id!r}")
    items = req.body["data"]
    _too_many(len(items), MAX_LIST_IDS, "/data", "profile ids")
    state = req.emulator.state
    rows: list[int] = []
    problems: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        row = state.row_for_id(item["id"])
        if row is None:
            problems.append((f"/data/{i}/id", f"Profile {item['id']!r} does not exist."))
        else:
            rows.append(row)
    if problems:
        raise BodyError(problems)
    return np.array(rows, dtype=np.int64)


def add_profiles_to_list(req: Request) -> tuple[int, None]:
    rows = _member_rows(req)
    req.emulator.state.add_members(req.item_id, rows, req.emulator.now())
    return 204, None


def remove_profiles_from_list(req: Request) -> tuple[int, None]:
    rows = _member_rows(req)
    req.emulator.state.remove_members(req.item_id, rows, req.emulator.now())
    return 204, None


# ----- consent --------------------------------------------------------------------------------
CHANNELS = (("email", "marketing", "email"), ("sms", "marketing", "sms"), ("sms", "transactional", "sms_transactional"))
#: one profile of a consent request: (profile id, attributes, channels to change, consented_at per channel)
ConsentItem = tuple[str | None, JSON, dict[str, bool], dict[str, int]]


def _consent_profiles(req: Request, limit: int, subscribe: bool) -> tuple[list[ConsentItem], str | None]:
    data = req.body["data"]
    attributes = data["attributes"]
    profiles = attributes["profiles"]["data"]
    _too_many(len(profiles), limit, PROFILES_PTR, "profiles")
    if not profiles:
        raise BodyError([(PROFILES_PTR, "At least one profile is required.")])
    historical = bool(attributes.get("historical_import")) if subscribe else False
    rel = ((data.get("relationships") or {}).get("list") or {}).get("data")
    list_id = _list_or_error(req, rel["id"], "/data/relationships/list/data/id") if rel else None
    now = req.emulator.now()
    past = max(now, req.emulator.real_now())
    problems: list[tuple[str, str]] = []
    parsed: list[ConsentItem] = []
    for i, profile in enumerate(profiles):
        base = f"{PROFILES_PTR}/{i}/attributes"
        attrs = profile["attributes"]
        subs = attrs.get("subscriptions") or {}
        problems += identifier_problems(
            {"email": attrs.get("email"), "phone_number": attrs.get("phone_number"), "id": profile.get("id")}, base
        )
        channels: dict[str, bool] = {}
        consented: dict[str, int] = {}
        for channel, kind, key in CHANNELS:
            params = (subs.get(channel) or {}).get(kind)
            if not params:
                continue
            channels[key] = True
            ident = "email" if channel == "email" else "phone_number"
            if not attrs.get(ident) and not profile.get("id"):
                problems.append((f"{base}/{ident}", f"{ident} is required to change {channel} {kind} consent."))
            at = params.get("consented_at")
            where = f"{base}/subscriptions/{channel}/{kind}/consented_at"
            if historical and not at:
                problems.append((where, "consented_at is required when historical_import is true."))
            elif at:
                ts = parse_datetime(at)
                if ts is None or ts > past:
                    problems.append((where, f"consented_at must be in the past; got {at!r}."))
                else:
                    consented[key] = int(ts)
        if not channels and not any(subs.get(c) for c in ("whatsapp", "push")):
            problems.append((f"{base}/subscriptions", "At least one channel (email, sms) is required."))
        parsed.append((profile.get("id"), attrs, channels, consented))
    if problems:
        raise BodyError(problems)
    return parsed, list_id


def _consent_row(state: AccountState, pid: str | None, attrs: dict[str, Any], now: int) -> int:
    """The row of a consent request's profile (by id, email or phone), created if there is none."""
    ident = {k: attrs[k] for k in ("email", "phone_number") if attrs.get(k)}
    row = state.match(ident, pid)
    if row is None:
        row, _ = state.upsert(ident, now)
    return row


def _consent_write(req: Request, most: int, *, subscribe: bool) -> tuple[int, None]:
    """Subscribe (and add to the list, if one is given) or unsubscribe (from the list, if one is
    given) each profile of a bulk consent request, as one consent change."""
    parsed, list_id = _consent_profiles(req, most, subscribe=subscribe)
    ctx = req.emulator
    state = ctx.state

    def apply() -> None:
        now = ctx.now()
        rows: list[int] = []
        for pid, attrs, channels, consented in parsed:
            row = _consent_row(state, pid, attrs, now)
            if subscribe:
                state.subscribe(row, channels, now, consented)
            else:
                state.unsubscribe(row, channels, now, list_id)
            rows.append(row)
        if subscribe and list_id:
            state.add_members(list_id, np.array(rows, dtype=np.int64), now)

    ctx.consent_change(apply)
    return 202, None


def bulk_subscribe_profiles(req: Request) -> tuple[int, None]:
    return _consent_write(req, MAX_SUBSCRIBE, subscribe=True)


def bulk_unsubscribe_profiles(req: Request) -> tuple[int, None]:
    return _consent_write(req, MAX_UNSUBSCRIBE, subscribe=False)


# ----- suppression ----------------------------------------------------------------------------
def _suppression(req: Request, type_: str, suppress: bool) -> tuple[int, Document]:
    data = req.body["data"]
    profiles = ((data["attributes"].get("profiles") or {}).get("data")) or []
    rels = data.get("relationships") or {}
    group = [(name, rel) for name in ("list", "segment") if (rel := (rels.get(name) or {}).get("data"))]
    if bool(profiles) + len(group) != 1:
        raise BodyError([("/data", "Give either profiles (emails) or one list or segment, not both and not neither.")])
    _too_many(len(profiles), MAX_SUPPRESS, PROFILES_PTR, "email addresses")
    problems = [
        (f"{PROFILES_PTR}/{i}/attributes/email", f"Invalid email address {p['attributes']['email']!r}.")
        for i, p in enumerate(profiles)
        if not EMAIL_RE.match(p["attributes"]["email"])
    ]
    if problems:
        raise BodyError(problems)
    ctx = req.emulator
    state = ctx.state
    list_ids: list[str] = []
    segment_ids: list[str] = []
    targets: list[int] | list[str]
    if group:
        name, rel = group[0]
        members = (req.account.list_members if name == "list" else req.account.segment_members).get(rel["id"])
        if members is None:
            raise BodyError([(f"/data/relationships/{name}/data/id", f"{name.title()} {rel['id']!r} does not exist.")])
        (list_ids if name == "list" else segment_ids).append(rel["id"])
        targets = members.profiles.tolist()
    else:
        targets = [p["attributes"]["email"] for p in profiles]

    def apply(job: Job) -> None:
        now = ctx.now()
        for target in targets:
            row = target if isinstance(target, int) else state.row_for("email", target)
            if row is None:
                if not suppress:
                    job.skipped += 1  # unsuppressing an unknown email does nothing
                    continue
                row, _ = state.upsert({"email": target}, now)
            if suppress:
                state.suppress(row, now)
            elif not state.unsuppress(row, now):
                job.skipped += 1

    s = req.account.settings
    job = ctx.jobs.submit(
        type_,
        ctx.clock(),
        ctx.now(),
        len(targets),
        s.job_profiles_per_second,
        s.job_queued_seconds,
        apply,
        list_ids=list_ids,
        segment_ids=segment_ids,
    )
    return 202, {"data": _suppression_job(req, job), "links": {"self": _url(req, None)}}


def _suppression_job(req: Request, job: Job) -> Document:
    own = f"{req.base}/api/{job.type}s/{job.id}/"
    attrs = job.attributes(req.emulator.clock())
    wanted = req.query.fields.get(job.type)
    if wanted:
        attrs = {k: v for k, v in attrs.items() if k in wanted}
    relationships: JSON = {}
    for name, values, rtype in (("lists", job.list_ids, "list"), ("segments", job.segment_ids, "segment")):
        relationships[name] = {
            "data": [{"type": rtype, "id": v} for v in values],
            "links": {"self": f"{own}relationships/{name}/", "related": f"{own}{name}/"},
        }
    return {"type": job.type, "id": job.id, "attributes": attrs, "relationships": relationships, "links": {"self": own}}


def _suppression_jobs(type_: str) -> Handler:
    def handler(req: Request) -> Document:
        jobs = [j for j in req.emulator.jobs.order if j.type == type_]
        clock = req.emulator.clock()
        statuses = [j.status(clock) for j in jobs]
        q = req.query

        def keep(job: Job, status: str) -> bool:
            for cond in q.conditions:
                allowed = cond.value if isinstance(cond.value, list) else [cond.value]
                value = (
                    status
                    if cond.field == "status"
                    else next(iter(job.list_ids), None)
                    if cond.field == "list_id"
                    else next(iter(job.segment_ids), None)
                )
                if value not in allowed:
                    return False
            return True

        rows = np.array([i for i, (j, st) in enumerate(zip(jobs, statuses)) if keep(j, st)], dtype=np.int64)
        page, links = _page(req, f"{type_}:{len(jobs)}:{','.join(statuses)}", lambda: rows)
        return {"data": [_suppression_job(req, jobs[i]) for i in page.tolist()], "links": links}

    return handler


def _suppression_job_read(type_: str) -> Handler:
    def handler(req: Request) -> Document:
        return {"data": _suppression_job(req, _job(req, type_)), "links": {"self": _url(req, None)}}

    return handler


def bulk_suppress_profiles(req: Request) -> tuple[int, Document]:
    return _suppression(req, "profile-suppression-bulk-create-job", suppress=True)


def bulk_unsuppress_profiles(req: Request) -> tuple[int, Document]:
    return _suppression(req, "profile-suppression-bulk-delete-job", suppress=False)


# ----- data-privacy deletion --------------------------------------------------------------------
def request_profile_deletion(req: Request) -> tuple[int, None]:
    """POST /api/data-privacy-deletion-jobs: exactly one of email, phone_number or id; every
    profile it matches is deleted asynchronously (after ``deletion_delay_seconds``)."""
    profile = req.body["data"]["attributes"]["profile"]["data"]
    attrs = {k: v for k, v in (profile.get("attributes") or {}).items() if v not in (None, "")}
    given = [k for k in ("email", "phone_number") if k in attrs] + (["id"] if profile.get("id") else [])
    pointer = "/data/attributes/profile/data"
    if len(given) != 1:
        raise BodyError([(pointer, "Give exactly one identifier: email, phone_number or id.")])
    ctx = req.emulator
    state = ctx.state
    key = given[0]

    def apply() -> None:
        row = state.row_for_id(profile["id"]) if key == "id" else state.row_for(key, attrs[key])
        if row is not None:
            state.delete_profile(row, ctx.now())

    ctx.jobs.later(ctx.clock() + req.account.settings.deletion_delay_seconds, apply)
    return 202, None


# ----- single profile upsert ------------------------------------------------------------------
def create_or_update_profile(req: Request) -> tuple[int, Document]:
    data = req.body["data"]
    attrs = {k: v for k, v in data["attributes"].items() if k != "_kx"}
    problems = identifier_problems({**attrs, "id": data.get("id")}, "/data/attributes")
    if problems:
        raise BodyError(problems)
    state = req.emulator.state
    if data.get("id") and state.row_for_id(data["id"]) is None:
        raise NotFound(f"profile {data['id']!r}")
    row, created = state.upsert(attrs, req.emulator.now(), data.get("id"))
    doc = req.renderer.profiles(np.array([row]), relationships=("lists", "push-tokens", "segments"))[0]
    return (201 if created else 200), {"data": doc, "links": {"self": _url(req, None)}}


def _profile_document(req: Request, row: int) -> Document:
    doc = req.renderer.profiles(np.array([row]), relationships=("lists", "push-tokens", "segments"))[0]
    return {"data": doc, "links": {"self": _url(req, None)}}


def create_profile(req: Request) -> tuple[int, Document]:
    """POST /api/profiles: 201 with the new profile, or Klaviyo's 409 naming the profile that
    already has one of the identifiers."""
    data = req.body["data"]
    attrs = {k: v for k, v in data["attributes"].items() if k != "_kx"}
    problems = identifier_problems(attrs, "/data/attributes")
    if problems:
        raise BodyError(problems)
    state = req.emulator.state
    ident = {k: attrs[k] for k in ("email", "phone_number", "external_id") if attrs.get(k)}
    if not ident:
        raise BodyError([("/data/attributes", "A profile needs an email, phone_number or external_id.")])
    existing = state.match(ident)
    if existing is not None:
        raise Conflict(state.profile_id(existing))
    row, _ = state.upsert(attrs, req.emulator.now())
    return 201, _profile_document(req, row)


def update_profile(req: Request) -> tuple[int, Document]:
    """PATCH /api/profiles/{id}: the given attributes replace the profile's (null clears one)."""
    data = req.body["data"]
    if data.get("id") != req.id:
        raise BodyError([("/data/id", f"The id in the body ({data.get('id')!r}) must be the one in the path ({req.id!r}).")])
    state = req.emulator.state
    if state.row_for_id(req.item_id) is None:
        raise NotFound(f"profile {req.id!r}")
    attrs = {k: v for k, v in (data.get("attributes") or {}).items() if k != "_kx"}
    problems = identifier_problems({k: v for k, v in attrs.items() if v is not None}, "/data/attributes", need_identifier=False)
    if problems:
        raise BodyError(problems)
    row, _ = state.upsert(attrs, req.emulator.now(), req.id)
    return 200, _profile_document(req, row)


class Conflict(Exception):
    """409: a profile with one of these identifiers exists (``duplicate_profile_id``)."""

    def __init__(self, profile_id: str) -> None:
        super().__init__(profile_id)
        self.profile_id = profile_id


READ_HANDLERS: dict[str, Handler] = {
    "get_bulk_suppress_profiles_jobs": _suppression_jobs("profile-suppression-bulk-create-job"),
    "get_bulk_suppress_profiles_job": _suppression_job_read("profile-suppression-bulk-create-job"),
    "get_bulk_unsuppress_profiles_jobs": _suppression_jobs("profile-suppression-bulk-delete-job"),
    "get_bulk_unsuppress_profiles_job": _suppression_job_read("profile-suppression-bulk-delete-job"),
    "get_bulk_import_profiles_jobs": get_bulk_import_profiles_jobs,
    "get_bulk_import_profiles_job": get_bulk_import_profiles_job,
    "get_errors_for_bulk_import_profiles_job": get_errors_for_bulk_import_profiles_job,
    "get_profiles_for_bulk_import_profiles_job": get_profiles_for_bulk_import_profiles_job,
    "get_profile_ids_for_bulk_import_profiles_job": get_profile_ids_for_bulk_import_profiles_job,
    "get_list_for_bulk_import_profiles_job": get_list_for_bulk_import_profiles_job,
    "get_list_ids_for_bulk_import_profiles_job": get_list_ids_for_bulk_import_profiles_job,
}
WRITE_HANDLERS: dict[str, WriteHandler] = {
    "bulk_import_profiles": bulk_import_profiles,
    "create_list": create_list,
    "add_profiles_to_list": add_profiles_to_list,
    "remove_profiles_from_list": remove_profiles_from_list,
    "request_profile_deletion": request_profile_deletion,
    "bulk_subscribe_profiles": bulk_subscribe_profiles,
    "bulk_unsubscribe_profiles": bulk_unsubscribe_profiles,
    "bulk_suppress_profiles": bulk_suppress_profiles,
    "bulk_unsuppress_profiles": bulk_unsuppress_profiles,
    "create_or_update_profile": create_or_update_profile,
    "create_profile": create_profile,
    "update_profile": update_profile,
    "create_event": tracked.create_event,
    "bulk_create_events": tracked.bulk_create_events,
}
#: Whole-request byte limits the spec documents (5 MB per bulk import or bulk event create, 100 KB per
#: profile upsert).
PAYLOAD_LIMITS = {
    "bulk_import_profiles": 5 * 1024 * 1024,
    "bulk_create_events": 5 * 1024 * 1024,
    "create_or_update_profile": MAX_PROFILE_BYTES,
    "create_profile": MAX_PROFILE_BYTES,
    "update_profile": MAX_PROFILE_BYTES,
}
