"""Check export rows before anything is sent, a column at a time.

Each check turns one Arrow column into a per-row reason (NULL = fine), using
Arrow compute kernels (regex match, trim, value counts) rather than a Python
call per cell. Phone numbers need libphonenumber, so they are normalised once
per *distinct* value and mapped back. The result keeps, for every input row,
either a cleaned value or the reason it was rejected, so every row can be
accounted for.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE
from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc

from ..errors import ExportError

#: local@domain.tld, unicode allowed (IDN domains, non-ASCII local parts), no spaces,
#: no display names or brackets, a dot in the domain, a TLD of 2+ characters.
EMAIL_PATTERN = r'^[^\s@<>()\[\],;:"\\]+@[^\s@<>()\[\],;:"\\.]+(\.[^\s@<>()\[\],;:"\\.]+)*\.[^\s@<>()\[\],;:"\\.0-9]{2,}$'
MAX_EMAIL_LENGTH = 254


@dataclass
class Checked:
    """A cleaned column plus, per row, why it is invalid (None when valid)."""

    values: pa.Array
    reasons: pa.Array


def require_columns(table_schema: pa.Schema, required: Sequence[str], operation: str, *, any_of: bool = False) -> None:
    """Fail before sending when a required column is missing or not text (names are case-sensitive)."""
    names = table_schema.names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ExportError(
            f"the query returned the column {twice[0]!r} {names.count(twice[0])} times; give each column "
            f"one name (SELECT ... AS {twice[0]}_2)",
            column=twice[0],
        )
    present = [c for c in required if c in names]
    missing = [c for c in required if c not in names]
    if (any_of and not present) or (not any_of and missing):
        wanted = " or ".join(required) if any_of else ", ".join(missing)
        near = [n for n in names if n.lower() in {c.lower() for c in required}]
        hint = f" (found {near[0]!r}: column names are case-sensitive)" if near else ""
        raise ExportError(
            f"operation {operation!r} needs a string column {wanted}{hint}; the query returned: {', '.join(names)}",
            column=(missing or list(required))[0],
        )
    for col in present:
        t = table_schema.field(col).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            raise ExportError(
                f"operation {operation!r}: column {col!r} must be a string, the query returned {t}",
                column=col,
            )


def _as_text(column: pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), pa.string())
    return column.cast(pa.string())


def _reason_where(mask: pa.Array, reason: str, current: pa.Array) -> pa.Array:
    """Set ``reason`` where mask is true and no earlier reason exists."""
    mask = pc.fill_null(mask, False)
    return pc.if_else(pc.and_(mask, pc.is_null(current)), pa.scalar(reason), current)


def check_emails(column: pa.Array, name: str = "email", *, required: bool = True) -> Checked:
    """Trim, lower-case the domain-insensitive whole address, and flag invalid syntax."""
    text = pc.utf8_trim_whitespace(_as_text(column))
    reasons = pa.nulls(len(text), pa.string())
    empty = pc.or_kleene(pc.is_null(text), pc.equal(text, ""))
    if required:
        reasons = _reason_where(empty, f"{name} is empty", reasons)
    has_display_name = pc.match_substring_regex(text, r"<[^>]*@[^>]*>")
    reasons = _reason_where(has_display_name, f"{name} has a display name; give the address only", reasons)
    too_long = pc.greater(pc.utf8_length(text), MAX_EMAIL_LENGTH)
    reasons = _reason_where(too_long, f"{name} is longer than {MAX_EMAIL_LENGTH} characters", reasons)
    # Control characters (NUL, CR/LF: header injection) and invisible format characters (bidi
    # overrides, zero-width: an address that reads as another) are never part of a real address.
    hidden = pc.match_substring_regex(text, r"[\x00-\x1f\x7f\x{200b}-\x{200f}\x{202a}-\x{202e}\x{2060}-\x{2064}\x{feff}]")
    reasons = _reason_where(hidden, f"{name} contains a control or invisible character", reasons)
    bad = pc.and_kleene(pc.invert(empty), pc.invert(pc.match_substring_regex(text, EMAIL_PATTERN)))
    reasons = _reason_where(bad, f"{name} is not a valid email address", reasons)
    cleaned = pc.if_else(empty, pa.scalar(None, pa.string()), pc.utf8_lower(text))
    return Checked(cleaned, reasons)


def normalise_phone(raw: str, default_region: str | None = None) -> tuple[str | None, str | None]:
    """(E.164, None) or (None, reason). National formats need ``default_region``."""
    text = raw.strip()
    if any(ch.isalpha() for ch in text):
        return None, "phone_number contains letters"
    digits = sum(ch.isdigit() for ch in text)
    if digits > 15:
        return None, "phone_number has more than 15 digits"
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        if not text.startswith("+") and default_region is None:
            return None, "phone_number is not in E.164 (+countrycode...) and no default region is set"
        return None, "phone_number cannot be parsed"
    if not phonenumbers.is_valid_number(number):
        return None, "phone_number is not a valid number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


#: The most common types first: a number matched by one is not tried against the rest.
_NUMBER_TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)
_E164 = r"^\+[1-9][0-9]{6,14}$"


def _desc_matches(nsn: pa.Array, lengths: np.ndarray, desc: PhoneNumberDesc | None) -> np.ndarray:
    """libphonenumber's _is_number_matching_desc over a column: possible length and full pattern match."""
    if desc is None or not desc.national_number_pattern:
        return np.zeros(len(nsn), dtype=bool)
    ok: np.ndarray = pc.match_substring_regex(nsn, f"^(?:{desc.national_number_pattern})$").to_numpy(zero_copy_only=False)
    if desc.possible_length:
        ok &= np.isin(lengths, np.array(desc.possible_length))
    return ok


def _valid_in_region(nsn: pa.Array, lengths: np.ndarray, metadata: PhoneMetadata) -> np.ndarray:
    """Number type is not UNKNOWN (libphonenumber's _number_type_helper), a column at a time.

    Each type's pattern runs only on the rows no earlier type matched (any type will do), so a
    column of ordinary fixed-line and mobile numbers costs two or three regex passes, not ten."""
    found = np.zeros(len(nsn), dtype=bool)
    pending = np.flatnonzero(_desc_matches(nsn, lengths, metadata.general_desc))
    for name in _NUMBER_TYPES:
        if not len(pending):
            break
        hit = _desc_matches(nsn.take(pa.array(pending)), lengths[pending], getattr(metadata, name, None))
        found[pending[hit]] = True
        pending = pending[~hit]
    return found


def valid_e164(values: pa.Array) -> np.ndarray:
    """True where a value is already canonical E.164 that libphonenumber's is_valid_number accepts.

    The same rules as ``phonenumbers.is_valid_number`` (region chosen by leading digits or by
    type, then the region's length and type patterns), run as regex kernels per country code
    instead of a parse per value. False means "not shown valid here": the caller parses those.
    """
    n = len(values)
    out = np.zeros(n, dtype=bool)
    if not n:
        return out
    strict = pc.fill_null(pc.match_substring_regex(values, _E164), False).to_numpy(zero_copy_only=False)
    if not strict.any():
        return out
    cc = np.zeros(n, dtype=np.int64)
    width = np.zeros(n, dtype=np.int64)
    for k in (3, 2, 1):  # country codes are prefix-free: at most one width matches
        prefix = pc.utf8_slice_codeunits(values, 1, 1 + k)
        code = pc.cast(pc.if_else(strict, prefix, "0"), pa.int64()).to_numpy(zero_copy_only=False)
        known = np.isin(code, np.fromiter(COUNTRY_CODE_TO_REGION_CODE, dtype=np.int64)) & strict
        cc[known] = code[known]
        width[known] = k
    for code in np.unique(cc[cc > 0]).tolist():
        regions = COUNTRY_CODE_TO_REGION_CODE[code]
        if "001" in regions:
            continue  # non-geographic entities: parse those
        rows = np.flatnonzero(cc == code)
        k = int(width[rows[0]])
        nsn = pc.utf8_slice_codeunits(pc.take(values, pa.array(rows)), 1 + k)
        lead_zero = pc.starts_with(nsn, "0").to_numpy(zero_copy_only=False)
        lengths = pc.utf8_length(nsn).to_numpy(zero_copy_only=False)
        undecided = ~lead_zero  # leading zeros (Italian style): parse those
        valid = np.zeros(len(rows), dtype=bool)
        for region in regions:
            md = PhoneMetadata.metadata_for_region(region, None)
            if md is None:
                continue
            at = np.flatnonzero(undecided)  # a region only sees the numbers no earlier region took
            if not len(at):
                break
            sub = nsn.take(pa.array(at))
            in_region = _valid_in_region(sub, lengths[at], md)
            if len(regions) == 1:
                chosen = np.ones(len(at), dtype=bool)
            elif md.leading_digits is not None:
                chosen = pc.match_substring_regex(sub, f"^(?:{md.leading_digits})").to_numpy(zero_copy_only=False)
            else:
                chosen = in_region
            valid[at[chosen & in_region]] = True
            undecided[at[chosen]] = False
        out[rows] = valid
    return out


def check_phones(column: pa.Array, *, required: bool = True, default_region: str | None = None) -> Checked:
    """E.164 normalisation, computed once per distinct value.

    Values already in valid E.164 are recognised with regex kernels (``valid_e164``); only the
    rest are parsed with libphonenumber, one call per distinct value.
    """
    text = pc.utf8_trim_whitespace(_as_text(column))
    empty = pc.or_kleene(pc.is_null(text), pc.equal(text, ""))
    distinct = pc.unique(pc.filter(text, pc.invert(empty)))
    try:
        fast = valid_e164(distinct)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a pattern RE2 does not take: parse all
        fast = np.zeros(len(distinct), dtype=bool)
    normal, why = distinct.cast(pa.string()), pa.nulls(len(distinct), pa.string())
    slow = np.flatnonzero(~fast)
    if len(slow):
        parsed = [normalise_phone(value, default_region) for value in distinct.take(pa.array(slow)).to_pylist()]
        mask = pa.array(~fast)
        normal = pc.replace_with_mask(normal, mask, pa.array([e164 for e164, _ in parsed], pa.string()))
        why = pc.replace_with_mask(why, mask, pa.array([reason for _, reason in parsed], pa.string()))
    index = pc.index_in(text, value_set=distinct)
    values = pc.take(normal, index)
    reasons = pc.take(why, index)
    if required:
        reasons = _reason_where(empty, "phone_number is empty", reasons)
    return Checked(values, reasons)


def check_required_text(column: pa.Array, name: str) -> Checked:
    text = pc.utf8_trim_whitespace(_as_text(column))
    empty = pc.or_kleene(pc.is_null(text), pc.equal(text, ""))
    reasons = _reason_where(empty, f"{name} is empty", pa.nulls(len(text), pa.string()))
    return Checked(text, reasons)


def duplicate_reasons(values: pa.Array, name: str, reasons: pa.Array) -> pa.Array:
    """Flag the second and later rows carrying the same identifier (the first one is kept)."""
    return SeenValues().check(values, name, reasons)


_hash = hash  # a name tests can replace to force collisions


def _repeats_exactly(values: pa.Array) -> np.ndarray:
    """True for each non-first row of a value (by the values themselves, not their hashes)."""
    table = pa.table({"v": values, "i": pa.array(np.arange(len(values)), pa.int64())})
    firsts = table.group_by("v", use_threads=False).aggregate([("i", "min")])
    first_index = pc.take(firsts.column("i_min"), pc.index_in(values, value_set=firsts.column("v")))
    repeats: np.ndarray = pc.not_equal(first_index, table.column("i")).to_numpy(zero_copy_only=False)
    return repeats


class SeenValues:
    """Identifiers of earlier chunks of one export, so duplicates are found across the whole input.

    Kept as one sorted array of 64-bit hashes per identifier (8 bytes a value, not a Python
    string each). A chunk costs one sort of its hashes, one binary search of its distinct
    hashes and one merge: repeats inside the chunk are rows whose hash equals an earlier row's
    and whose value really is equal (compared, so a hash collision there never drops a row);
    a row whose hash an earlier chunk had is a repeat of that chunk's row (there a collision would
    drop a row: about 3 chances in 10^8 for a million distinct values).

    Chunks may be prepared on several threads: ``in_order(k)`` is chunk ``k``'s view, whose
    ``check`` does the chunk's own part at once and the lookup in (and merge into) the earlier
    chunks' values only after every chunk before ``k`` has checked that identifier or
    ``finish``-ed, so "the first row is kept" means the first in the input, as on one thread.
    """

    def __init__(self, _shared: _Seen | None = None, _chunk: int | None = None) -> None:
        self._shared = _shared or _Seen()
        self._chunk = _chunk

    def in_order(self, chunk: int) -> SeenValues:
        """Chunk ``chunk``'s view (chunks are numbered 0, 1, ... in input order)."""
        return SeenValues(self._shared, chunk)

    def finish(self, chunk: int) -> None:
        """Chunk ``chunk`` checks nothing more (call it whether or not its preparation succeeded)."""
        self._shared.finish(chunk)

    def check(self, values: pa.Array, name: str, reasons: pa.Array) -> pa.Array:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        rows = np.flatnonzero(pc.is_valid(values).to_numpy(zero_copy_only=False))
        present = values.take(pa.array(rows, pa.int64()))
        hashes = np.fromiter(map(_hash, present.to_pylist()), dtype=np.int64, count=len(present))
        order = np.argsort(hashes)
        ordered = hashes[order]
        starts_group = np.ones(len(ordered), dtype=bool)
        starts_group[1:] = ordered[1:] != ordered[:-1]
        starts = np.flatnonzero(starts_group)
        group = np.cumsum(starts_group) - 1
        first = np.minimum.reduceat(order, starts)[group] if len(order) else order  # earliest row per hash
        repeat = order != first
        if repeat.any():
            at = np.flatnonzero(repeat)
            same = pc.equal(present.take(pa.array(order[at])), present.take(pa.array(first[at])))
            if not pc.all(same).as_py():  # two values share a hash (about 1 in 10^10 chunks)
                repeat = _repeats_exactly(present)[order]
        distinct = ordered[starts]
        earlier = self._shared.merge(name, self._chunk, distinct)
        duplicate = np.zeros(len(values), dtype=bool)
        duplicate[rows[order[repeat | earlier[group]]]] = True
        if not duplicate.any():
            return reasons
        return _reason_where(pa.array(duplicate), f"duplicate {name} (an earlier row has the same value)", reasons)


class _Seen:
    """The hashes every chunk has checked, per identifier, and whose turn it is to look them up."""

    def __init__(self) -> None:
        self._seen: dict[str, np.ndarray] = {}
        self._cond = threading.Condition()
        self._finished: set[int] = set()
        self._checked: dict[str, set[int]] = {}
        self._next: dict[str, int] = {}  # per identifier: the first chunk that has not checked it

    def merge(self, name: str, chunk: int | None, distinct: np.ndarray) -> np.ndarray:
        """Which of a chunk's distinct hashes earlier chunks had; then add the others."""
        with self._cond:
            if chunk is not None:
                self._cond.wait_for(lambda: self._turn(name) >= chunk)
            seen = self._seen.get(name, np.zeros(0, dtype=np.int64))
            pos = np.searchsorted(seen, distinct)
            earlier = seen[np.minimum(pos, len(seen) - 1)] == distinct if len(seen) else np.zeros(len(distinct), bool)
            self._seen[name] = np.insert(seen, pos[~earlier], distinct[~earlier])
            if chunk is not None:
                self._checked.setdefault(name, set()).add(chunk)
                self._cond.notify_all()
            return earlier

    def finish(self, chunk: int) -> None:
        with self._cond:
            self._finished.add(chunk)
            self._cond.notify_all()

    def _turn(self, name: str) -> int:
        n, checked = self._next.get(name, 0), self._checked.get(name, set())
        while n in checked or n in self._finished:
            n += 1
        self._next[name] = n
        return n


def combine(*reasons: pa.Array) -> pa.Array:
    """First non-null reason per row."""
    return pc.coalesce(*reasons)
