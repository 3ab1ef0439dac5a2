"""Fast path for the common bulk profile import: a valid body of well-formed profiles.

``decode(raw)`` parses the body straight into msgspec Structs that are at least as
strict as the spec's request schema (``ProfileImportJobCreateQuery``): unknown
fields are refused even where the schema allows them, ``meta`` and ``_kx`` are not
taken, property values are scalars or one level of list/object, integers fit in 64
bits. ``accept(req, body)`` then does what ``writes.bulk_import_profiles`` does for a
body that draws no error: the 202 and a job whose items carry each profile's packed
attributes.

Anything else (decode failure, a limit, an unknown list, an oversize profile, a
profile with an identifier problem) returns None and the request takes the general
path (``orjson.loads`` + ``validate_body`` + ``bulk_import_profiles``), which answers
exactly as before. Neither function changes any state before it has decided.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Literal, Union, cast

import msgspec
import orjson
from msgspec import UNSET, Meta, Struct, UnsetType

from .handlers import Document, Request
from .identifiers import EMAIL_RE, PHONE_RE
from .writes import MAX_IMPORT_PROFILES, MAX_PROFILE_BYTES, ImportColumns, submit_import_job

Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Scalar = Union[str, Int64, float, bool, None]
Value = Union[str, Int64, float, bool, None, list[Scalar], dict[str, Scalar]]
Text = Union[str, None, UnsetType]
Coordinate = Union[str, Int64, float, None, UnsetType]


class _S(Struct, forbid_unknown_fields=True, gc=False, omit_defaults=False):
    pass


class Location(_S):
    address1: Text = UNSET
    address2: Text = UNSET
    city: Text = UNSET
    country: Text = UNSET
    ip: Text = UNSET
    latitude: Coordinate = UNSET
    longitude: Coordinate = UNSET
    region: Text = UNSET
    timezone: Text = UNSET
    zip: Text = UNSET


class Attributes(_S):
    email: Text = UNSET
    external_id: Text = UNSET
    first_name: Text = UNSET
    image: Text = UNSET
    last_name: Text = UNSET
    locale: Text = UNSET
    location: Union[Location, None, UnsetType] = UNSET
    organization: Text = UNSET
    phone_number: Text = UNSET
    properties: Union[dict[str, Value], None, UnsetType] = UNSET
    title: Text = UNSET


class Profile(_S):
    type: Literal["profile"]
    attributes: Attributes
    id: Text = UNSET


class Profiles(_S):
    data: list[Profile]


class JobAttributes(_S):
    profiles: Profiles


class ListRef(_S):
    type: Literal["list"]
    id: str


class ListRefs(_S):
    data: Union[list[ListRef], UnsetType] = UNSET


class Relationships(_S):
    lists: Union[ListRefs, UnsetType] = UNSET


class JobData(_S):
    type: Literal["profile-bulk-import-job"]
    attributes: JobAttributes
    relationships: Union[Relationships, UnsetType] = UNSET


class Body(_S):
    data: JobData


_decoder = msgspec.json.Decoder(Body)
_encode = msgspec.json.Encoder().encode
#: A profile's packed attributes below this size cannot be over the 100 KB limit however
#: orjson writes it (an escape is at most 6x a character, a float at most ~8x its shortest form).
_SURELY_SMALL = 10_000


_LABEL = r"[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+"
#: ``identifiers.EMAIL_RE`` without backtracking: a domain label "alnum, then optionally [alnum-]* ending
#: in alnum" is "alnum runs joined by hyphen runs", and no part given back could let the rest match.
_EMAIL_BODY = rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]++@{_LABEL}(?:\.{_LABEL})++"
_EMAIL_RE_TEXT = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


@cache
def _joined(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """``pattern`` (``^...$``, no newline in what it matches) over newline-joined values, one regex call for all."""
    body = _EMAIL_BODY if pattern.pattern == _EMAIL_RE_TEXT else pattern.pattern.removeprefix("^").removesuffix("$")
    return re.compile(f"(?>{body}\n)*{body}")


def _all_match(pattern: re.Pattern[str], values: list[str]) -> bool:
    """``all(map(pattern.match, values))``, in one call when no value holds a newline (``$`` also
    matches before a final one, so such values go one by one)."""
    text = "\n".join(values)
    if values and text.count("\n") == len(values) - 1:
        return _joined(pattern).fullmatch(text) is not None
    return all(map(pattern.match, values))


def _texts(values: list[str | None | UnsetType]) -> list[str]:
    """The strings among ``values`` (str, None or UNSET); all of them when all are truthy, without a scan in Python."""
    return cast("list[str]", values) if all(values) else [v for v in values if isinstance(v, str)]


def _unset_to_none(values: list[str | None | UnsetType]) -> list[str | None]:
    """``values`` with UNSET as None; C-level checks first, for the common all-set and all-unset columns."""
    if all(values):  # None and UNSET are falsy: all are strings
        return cast("list[str | None]", values)
    if values.count(UNSET) == len(values):
        return [None] * len(values)
    return [v if isinstance(v, str) else None for v in values]


def decode(raw: bytes) -> Body | None:
    try:
        return _decoder.decode(raw)
    except Exception:  # noqa: BLE001 - any failure: the general path decides and answers
        return None


def accept(req: Request, body: Body) -> tuple[int, Document] | None:
    """The 202 of ``bulk_import_profiles`` for a body without problems; None: take the general path."""
    data = body.data
    profiles = data.attributes.profiles.data
    if not 0 < len(profiles) <= MAX_IMPORT_PROFILES:
        return None
    lists = data.relationships.lists.data if data.relationships and data.relationships.lists else []
    list_ids = [rel.id for rel in lists or ()]
    if any(lid not in req.account.list_members for lid in list_ids):
        return None
    attrs = [p.attributes for p in profiles]
    blobs = list(map(_encode, attrs))
    pids = [p.id for p in profiles]
    if max(map(len, blobs)) + 6 * max((len(p) for p in pids if isinstance(p, str)), default=0) > _SURELY_SMALL:
        if any(len(orjson.dumps(msgspec.to_builtins(p))) > MAX_PROFILE_BYTES for p in profiles):
            return None
    emails = [a.email for a in attrs]
    phones = [a.phone_number for a in attrs]
    exts = [a.external_id for a in attrs]
    if not _all_match(EMAIL_RE, _texts(emails)) or not _all_match(PHONE_RE, _texts(phones)):
        return None
    if not (all(emails) or all(phones) or all(map(any, zip(emails, phones, exts, pids)))):  # UNSET is falsy
        return None
    columns = ImportColumns(
        _unset_to_none(pids), _unset_to_none(emails), _unset_to_none(phones), _unset_to_none(exts), attrs, blobs
    )
    return submit_import_job(req, len(profiles), columns, list_ids, [], msgspec.to_builtins)
