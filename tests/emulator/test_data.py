"""The synthetic account: deterministic, invertible ids and contact fields, tie-heavy timestamps."""

import numpy as np

from klaviyo_emulator.data import build_account
from klaviyo_emulator.settings import EmulatorSettings


def test_same_seed_same_account_and_other_seed_differs():
    a = build_account(EmulatorSettings(seed=7, profiles=300, events=900))
    b = build_account(EmulatorSettings(seed=7, profiles=300, events=900))
    c = build_account(EmulatorSettings(seed=8, profiles=300, events=900))
    rows = np.arange(300)
    assert a.profiles.attributes(rows, True, True) == b.profiles.attributes(rows, True, True)
    assert a.profiles.ids_for(rows) == b.profiles.ids_for(rows)
    assert a.profiles.ids_for(rows) != c.profiles.ids_for(rows)
    assert [a.events.event_id(i) for i in range(900)] == [b.events.event_id(i) for i in range(900)]


def test_ids_and_contact_fields_map_back_to_their_rows():
    acc = build_account(EmulatorSettings(profiles=500, events=100))
    p = acc.profiles
    for row in range(0, 500, 7):
        assert p.row_for_id(p.profile_id(row)) == row
        assert p.row_for_email(p.email(row)) == row
        assert p.row_for_exchange_id(p.exchange_id(row)) == row
        if p.phone(row):
            assert p.phone(row).startswith("+") and p.row_for_phone(p.phone(row)) == row
        if p.external_id(row):
            assert p.row_for_external_id(p.external_id(row)) == row
    assert p.row_for_id("01GDDKASAP8TKDDA2GRZDSVP4H") is None
    assert p.row_for_email("nobody@example.com") is None
    ids = p.ids_for(np.arange(500))
    assert len(set(ids)) == 500 and all(len(i) == 26 and i.isupper() for i in ids)
    assert len({r.id for r in acc.records["list"]} | {r.id for r in acc.records["metric"]}) == 5 + 23


def test_timestamps_tie_on_purpose():
    acc = build_account(EmulatorSettings(profiles=2000, events=5000))
    assert len(np.unique(acc.profiles.created)) < 2000 * 0.95
    assert len(np.unique(acc.profiles.updated)) < 2000 * 0.95
    assert len(np.unique(acc.events.datetime)) < 5000 * 0.9
    assert np.all(np.diff(acc.events.datetime) >= 0)
    assert np.all(acc.profiles.updated >= acc.profiles.created)
    biggest = max(acc.list_members.values(), key=len)
    assert len(np.unique(biggest.joined)) < len(biggest.joined)


def test_metric_names_are_klaviyos():
    acc = build_account(EmulatorSettings(profiles=10, events=10))
    names = {r.attributes["name"] for r in acc.records["metric"]}
    assert {"Received Email", "Placed Order", "Active on Site", "Consented to Receive SMS"} <= names
