"""Big collection pages (events, profiles) rendered straight to JSON bytes.

Why: a 1000-event page with included profiles is ~2000 resource objects with
up to seven links each. Building nested dicts for them and letting orjson walk
them cost more than drawing the data. Here each resource shape gets a
*template* (kept per shape): the exact bytes orjson writes for a resource built
by the ordinary ``Renderer`` (so links, key order and relationship shapes have
one source of truth), with sentinels where the id, attributes and related ids
go. Runs of literal text and fixed-width columns are laid out for the whole
page as one byte matrix; variable-width values are interleaved as pieces, and
the document is joined once (``encode_document``): the response is
byte-identical to serialising the dicts, and its megabyte is copied once.
The columns themselves come from per-block caches (``blockcache.py``).
"""

from __future__ import annotations

import re

import numpy as np
import orjson

from .events import EventTable
from .jsontypes import JSON
from .profiles import ATTRIBUTES, Profiles, ProfileTable
from .resources import PROFILE_RELATIONSHIPS, Renderer, prune
from .state import LiveProfiles
from .timefmt import iso_many

#: a page column: numpy ``S`` values, or each record's JSON bytes
Column = np.ndarray | list[bytes]

#: Placeholders: private-use characters orjson writes unescaped and no base URL contains.
#: Text slots sit inside a JSON string (ids, datetimes); raw slots replace a whole JSON value.
ID, METRIC, PROFILE, DATETIME, UUID = "\ue000", "\ue002", "\ue003", "\ue004", "\ue005"
ATTRS, TIMESTAMP, PROPERTIES = "\ue001", "\ue006", "\ue007"
_TEXT_SLOTS = {ID: "id", METRIC: "metric", PROFILE: "profile", DATETIME: "datetime", UUID: "uuid"}
#: One raw slot per top-level profile attribute, for pages that render them as columns.
PROFILE_SLOTS = {name: chr(0xE100 + i) for i, name in enumerate(ATTRIBUTES)}
_RAW_SLOTS = {
    ATTRS: "attributes",
    TIMESTAMP: "timestamp",
    PROPERTIES: "event_properties",
    **{s: n for n, s in PROFILE_SLOTS.items()},
}
_SLOT_NAMES = {**{s.encode(): n for s, n in _TEXT_SLOTS.items()}, **{f'"{s}"'.encode(): n for s, n in _RAW_SLOTS.items()}}
_SLOT_RE = re.compile(b"|".join(re.escape(s) for s in _SLOT_NAMES))
_FAST_PROFILE_FIELDS = frozenset(ATTRIBUTES) | {"joined_group_at"}


def template(resource: JSON) -> "Template":
    """The ``Template`` of a resource shape, kept (a page asks for the same few shapes again and again)."""
    raw = orjson.dumps(resource)
    found = _TEMPLATES.get(raw)
    if found is None:
        if len(_TEMPLATES) >= 256:
            _TEMPLATES.clear()
        found = _TEMPLATES[raw] = Template(resource, raw)
    return found


_TEMPLATES: dict[bytes, "Template"] = {}


class Template:
    """The bytes of one resource shape, cut at its slots, and which column fills each slot.

    Columns are numpy ``S`` arrays whose values all have one width (ids) or
    lists of bytes (attributes). Runs of literal text and fixed-width columns
    are assembled for the whole page at once as an (n, width) byte matrix;
    only the variable-width columns are interleaved per record, by one join.
    """

    def __init__(self, resource: JSON, raw: bytes | None = None) -> None:
        raw = raw if raw is not None else orjson.dumps(resource)
        self.slots: list[str] = []
        self.literals: list[bytes] = []
        last = 0
        for m in _SLOT_RE.finditer(raw):
            self.literals.append(raw[last : m.start()])
            self.slots.append(_SLOT_NAMES[m.group(0)])
            last = m.end()
        self.literals.append(raw[last:] + b",")

    def render(self, columns: dict[str, Column], n: int) -> bytes:
        """Records ``0..n-1`` as JSON objects joined by commas (b'' for none)."""
        return b"".join(self.pieces(columns, n))

    def pieces(self, columns: dict[str, Column], n: int) -> list[bytes]:
        """``render``'s text as the pieces that join to it ([] for none): a page's megabyte is
        then copied once, when the whole document is joined (``encode_document``)."""
        if not n:
            return []
        fixed = {name: col for name, col in columns.items() if isinstance(col, np.ndarray) and _uniform(col)}
        pieces: list[list[bytes]] = []
        run: list[bytes | np.ndarray] = [self.literals[0]]
        for name, literal in zip(self.slots, self.literals[1:]):
            if name in fixed:
                run += [fixed[name], literal]
            else:
                pieces.append(_matrix(run, n))
                col = columns[name]
                pieces.append(col if isinstance(col, list) else col.tolist())
                run = [literal]
        pieces.append(_matrix(run, n))
        out: list[bytes] = [b""] * (n * len(pieces))  # every item is one piece's
        for i, piece in enumerate(pieces):
            out[i :: len(pieces)] = piece
        out[-1] = out[-1][:-1]  # no comma after the last record
        return out


def _uniform(col: np.ndarray) -> bool:
    """Whether every value fills the ``S`` width (no value is shorter)."""
    width = col.dtype.itemsize
    return col.dtype.kind == "S" and bool((np.strings.str_len(col) == width).all())


def _matrix(run: list[bytes | np.ndarray], n: int) -> list[bytes]:
    """Literals and fixed-width columns side by side, for all ``n`` records at once."""
    first = run[0]
    if len(run) == 1 and isinstance(first, bytes):  # a literal alone (a run always starts with one)
        return [first] * n
    widths = [len(x) if isinstance(x, bytes) else x.dtype.itemsize for x in run]
    # Every row starts as the literals (one broadcast copy), then each column is written in.
    row = b"".join(x if isinstance(x, bytes) else bytes(w) for x, w in zip(run, widths))
    matrix = np.empty((n, len(row)), dtype=np.uint8)
    matrix[:] = np.frombuffer(row, dtype=np.uint8)
    at = 0
    for x, w in zip(run, widths):
        if not isinstance(x, bytes):
            matrix[:, at : at + w] = np.ascontiguousarray(x).view(np.uint8).reshape(n, w)
        at += w
    records: list[bytes] = matrix.view(f"S{at}").ravel().tolist() if at else [b""] * n
    return records


class RawArray:
    """A JSON array given as the pieces of its text, for a top-level member of a document.

    Each group is a list of pieces that join to comma-separated records (``Template.pieces``);
    groups are separated by commas. ``encode_document`` joins everything once.
    """

    __slots__ = ("groups",)

    def __init__(self, *groups: list[bytes]) -> None:
        self.groups = [g for g in groups if g]


def encode_document(document: JSON) -> bytes:
    """``orjson.dumps(document)``, with ``RawArray`` members written from their pieces: one join,
    one copy of the page's text."""
    parts: list[bytes] = []
    for key, value in document.items():
        parts.append((b"," if parts else b"{") + orjson.dumps(key) + b":")
        if isinstance(value, RawArray):
            parts.append(b"[")
            for i, group in enumerate(value.groups):
                if i:
                    parts.append(b",")
                parts += group
            parts.append(b"]")
        else:
            parts.append(orjson.dumps(value))
    parts.append(b"}" if parts else b"{}")
    return b"".join(parts)


def dump_attributes(dicts: list[JSON], wanted: tuple[str, ...] | None) -> list[bytes]:
    """Each record's attributes as JSON, pruned to the sparse fieldset like ``Renderer.resource``."""
    dumps = orjson.dumps
    if not wanted:
        return [dumps(d) for d in dicts]
    if any("." in w for w in wanted):
        return [dumps(prune(d, wanted)) for d in dicts]
    return [dumps({k: d[k] for k in wanted if k in d}) for d in dicts]


# ----- profiles ---------------------------------------------------------------------------
def profile_attribute_dicts(
    profiles: Profiles, rows: np.ndarray, subscriptions: bool, predictive: bool, wanted: tuple[str, ...] | None
) -> list[JSON]:
    """Attributes of ``rows``, computing only the top-level fields ``wanted`` needs.

    Rows the write overlay touched (new profiles, changed attributes or
    ``updated``) always take the full overlay path, so writes stay visible.
    """
    tops = None if not wanted else list(dict.fromkeys(w.split(".")[0] for w in wanted))
    if tops is None or not set(tops) <= _FAST_PROFILE_FIELDS:
        return profiles.attributes(rows, subscriptions, predictive)
    names = [t for t in ATTRIBUTES if t in tops]
    base, special = _overlay_rows(profiles, rows)
    plain = rows[~special]
    cols = base.columns(plain, names)
    out = [dict(zip(names, values)) for values in zip(*(cols[n] for n in names))] if names else [{} for _ in range(len(plain))]
    if not special.any():
        return out
    overlay = iter(profiles.attributes(rows[special], subscriptions, predictive))
    fast = iter(out)
    return [next(overlay) if s else next(fast) for s in special.tolist()]


def _base(profiles: Profiles) -> ProfileTable:
    """The synthetic table under ``profiles``."""
    if isinstance(profiles, LiveProfiles):
        return profiles.base
    if not isinstance(profiles, ProfileTable):
        raise TypeError(f"no synthetic profile table under {type(profiles).__name__}")
    return profiles


def _overlay_rows(profiles: Profiles, rows: np.ndarray) -> tuple[ProfileTable, np.ndarray]:
    """The base table, and which ``rows`` the write overlay touched (new, changed or re-``updated``)."""
    state = profiles.state if isinstance(profiles, LiveProfiles) else None
    base = _base(profiles)
    special = np.zeros(len(rows), dtype=bool)
    if state is not None and state.touched:
        touched = np.fromiter([*state.changes, *state.new_updated], dtype=np.int64)
        special = (rows >= base.count) | np.isin(rows, touched)
    return base, special


def profile_attribute_columns(
    profiles: Profiles, rows: np.ndarray, wanted: tuple[str, ...] | None
) -> dict[str, list[bytes]] | None:
    """Each wanted top-level attribute of ``rows`` as a column of JSON values (None: not this way).

    A sparse page (an events page's included profiles want three fields) then
    needs no dict per profile: each field is drawn as a column and each value
    dumped on its own, for the page template's per-attribute slots. Overlay rows
    take their values from the overlay's attributes, so writes stay visible.
    """
    if not wanted or any("." in w for w in wanted):
        return None
    names = [n for n in ATTRIBUTES if n in wanted]
    base, special = _overlay_rows(profiles, rows)
    dumps = orjson.dumps
    cols = base.json_columns(rows[~special], names)
    if not special.any():
        return cols
    overlay = profiles.attributes(rows[special], False, False)
    if any(n not in a for a in overlay for n in names):
        return None
    for n in names:
        col = np.empty(len(rows), dtype=object)
        col[~special] = cols[n]
        col[special] = [dumps(a[n]) for a in overlay]
        cols[n] = col.tolist()
    return cols


def profile_ids(profiles: Profiles, rows: np.ndarray) -> np.ndarray:
    """Profile ids as ``S26`` (new profiles' ids come from the overlay)."""
    base = _base(profiles)
    if isinstance(profiles, LiveProfiles) and len(rows) and rows.max() >= base.count:
        return np.array([i.encode() for i in profiles.ids_for(rows)], dtype="S26")
    return base.id_bytes(rows)


def profiles_page(
    r: Renderer,
    rows: np.ndarray,
    joined: np.ndarray | None = None,
    relationships: tuple[str, ...] = PROFILE_RELATIONSHIPS,
    extras: bool = True,
    related_data: dict[str, list[JSON]] | None = None,
) -> bytes:
    """``Renderer.profiles`` as comma-joined JSON objects (same arguments, same output)."""
    return b"".join(profiles_pieces(r, rows, joined, relationships, extras, related_data))


def profiles_pieces(
    r: Renderer,
    rows: np.ndarray,
    joined: np.ndarray | None = None,
    relationships: tuple[str, ...] = PROFILE_RELATIONSHIPS,
    extras: bool = True,
    related_data: dict[str, list[JSON]] | None = None,
) -> list[bytes]:
    """``profiles_page`` as the pieces that join to it."""
    rows = np.asarray(rows, dtype=np.int64)
    p, q = r.account.profiles, r.query
    subs = extras and q.wants("profile", "subscriptions")
    pred = extras and q.wants("profile", "predictive_analytics")
    wanted = q.fields.get("profile")
    rels = {name: r.relationship("profile", ID, name, (related_data or {}).get(name, ...)) for name in relationships}
    columns = profile_attribute_columns(p, rows, wanted) if joined is None and not subs and not pred else None
    if columns is not None:
        shape = template(r.resource("profile", ID, PROFILE_SLOTS, rels))
        return shape.pieces({"id": profile_ids(p, rows), **columns}, len(rows))
    attrs = profile_attribute_dicts(p, rows, subs, pred, wanted)
    if joined is not None:
        for a, when in zip(attrs, iso_many(joined)):
            a["joined_group_at"] = when
    shape = template({**r.resource("profile", ID, {}, rels), "attributes": ATTRS})
    return shape.pieces({"id": profile_ids(p, rows), "attributes": dump_attributes(attrs, wanted)}, len(rows))


# ----- events -------------------------------------------------------------------------------
#: Each event attribute's slot in the page template (the resource's sparse fieldset prunes them).
EVENT_SLOTS = {"timestamp": TIMESTAMP, "event_properties": PROPERTIES, "datetime": DATETIME, "uuid": UUID}


def events_page(r: Renderer, rows: np.ndarray) -> bytes:
    """``Renderer.events`` as comma-joined JSON objects."""
    return b"".join(events_pieces(r, rows))


def events_pieces(r: Renderer, rows: np.ndarray) -> list[bytes]:
    """``events_page`` as the pieces that join to it.

    Every attribute is a slot of the page template, so only ``event_properties``
    (variable width) is formatted per event; ids, timestamps, datetimes and
    uuids are fixed-width columns laid out for the whole page at once.
    """
    rows = np.asarray(rows, dtype=np.int64)
    acc, q = r.account, r.query
    e = acc.events
    rels = {
        "attributions": r.relationship("event", ID, "attributions", [], "attributions" in q.include),
        "metric": r.relationship("event", ID, "metric", {"type": "metric", "id": METRIC}),
        "profile": r.relationship("event", ID, "profile", {"type": "profile", "id": PROFILE}),
    }
    resource = r.resource("event", ID, EVENT_SLOTS, rels)
    shape = template(resource)
    metric_ids = np.array([m.id.encode() for m in acc.records["metric"]])
    columns = {
        "id": e.id_bytes(rows),
        "metric": metric_ids[e.metric[rows]],
        "profile": profile_ids(acc.profiles, e.profile[rows].astype(np.int64)),
    }
    return shape.pieces({**columns, **_event_attributes(e, rows, resource["attributes"])}, len(rows))


def _event_attributes(e: EventTable, rows: np.ndarray, kept: JSON) -> dict[str, Column]:
    """The attribute columns the (pruned) template ``kept``, and only those."""
    cols: dict[str, Column] = {}
    if "timestamp" in kept:
        cols["timestamp"] = e.timestamp_text(rows)
    if "event_properties" in kept:
        cols["event_properties"] = e.properties_json(rows)
    if "datetime" in kept:
        cols["datetime"] = e.datetime_text(rows)
    if "uuid" in kept:
        cols["uuid"] = e.uuid_bytes(rows)
    return cols
