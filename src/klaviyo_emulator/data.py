"""The deterministic synthetic Klaviyo account: ``build_account(settings)``.

Big collections (profiles, events, list/segment membership) are columnar
(numpy) and rendered lazily per page; small ones are ready-made records. Same
settings -> same account -> byte-identical responses.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import Record, build_catalog
from .events import EventTable
from .members import Membership, build_memberships
from .profiles import Profiles, ProfileTable
from .settings import EmulatorSettings

LIST_FRACTIONS = (0.55, 0.3, 0.18, 0.1, 0.06, 0.04, 0.03, 0.02)
SEGMENT_FRACTIONS = (0.4, 0.15, 0.25, 0.05, 0.1, 0.2)


@dataclass
class Account:
    """Everything one emulated account serves."""

    settings: EmulatorSettings
    #: the synthetic table; an emulator replaces it with the table seen through its writes (``state.LiveProfiles``)
    profiles: Profiles
    events: EventTable
    records: dict[str, list[Record]]
    list_members: dict[str, Membership]
    segment_members: dict[str, Membership]

    def __post_init__(self) -> None:
        self._by_id = {(r.type, r.id): r for recs in self.records.values() for r in recs}

    def record(self, type_: str, id_: str) -> Record | None:
        return self._by_id.get((type_, id_))

    def add_record(self, rec: Record) -> None:
        """A record created through the API (a list, a metric): last of its collection."""
        self.records[rec.type].append(rec)
        self._by_id[(rec.type, rec.id)] = rec


def build_account(settings: EmulatorSettings) -> Account:
    records = build_catalog(settings)
    list_ids = [r.id for r in records["list"]]
    profiles = ProfileTable(settings.seed, settings.profiles, settings.now, list_ids)
    subjects = [(m.values["campaign_name"], m.values["subject"]) for m in records["campaign-message"]]
    events = EventTable(settings.seed, settings.events, profiles, subjects, list_ids)
    if settings.second_store:
        events.second_store()
    events.arrive_late(settings.late_events, settings.arrival_delay)
    list_fractions = [LIST_FRACTIONS[i % len(LIST_FRACTIONS)] for i in range(settings.lists)]
    segment_fractions = [SEGMENT_FRACTIONS[i % len(SEGMENT_FRACTIONS)] for i in range(settings.segments)]
    lists = build_memberships(profiles, list_fractions, stream=0)
    segments = build_memberships(profiles, segment_fractions, stream=5000)
    return Account(
        settings=settings,
        profiles=profiles,
        events=events,
        records=records,
        list_members={r.id: m for r, m in zip(records["list"], lists)},
        segment_members={r.id: m for r, m in zip(records["segment"], segments)},
    )
