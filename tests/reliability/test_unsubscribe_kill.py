"""kill -9 of a real ``klaviyo-bridge query`` list unsubscribe at several points, then ``--resume``.

The input: every profile of a small emulator account (some members of the list, most not) plus
addresses Klaviyo has never seen, so most rows are non-members. The run is killed at random
points (before the run is recorded, during membership reads, while unsubscribes are posted,
between state writes), resumed with ``--resume RUN_ID``, and then:

* nobody is unsubscribed from all marketing (the invariant: a list unsubscribe never sends a
  non-member, and a batch that was being sent at the kill is read back, never resent blind);
* every input row has exactly one outcome; the non-members are ``skipped`` with the reason;
* a member whose batch was unclear at the kill and that reading back does not show done is
  ``unconfirmed`` and still in the list; a plain rerun then unsubscribes it from the list.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from .export_ledger import PostLedger
from .helpers import FIGURES, serve_app

EMU = dict(
    seed=62, profiles=400, events=0, lists=2, segments=1, campaigns=1, templates=1, flows=1, rate_limits=False, latency_ms=15
)
SQL = "SELECT email FROM people ORDER BY email"


def emulator():
    app = PostLedger(create_app(EmulatorSettings(**EMU)))
    emu = app.emulator
    list_id = max(emu.account.records["list"], key=lambda r: len(emu.account.list_members[r.id].profiles)).id
    return app, list_id


def consent(app) -> dict[str, str]:
    emu = app.emulator
    emu.advance()
    state = emu.state
    rows = np.arange(state.base.count, dtype=np.int64)
    return {
        state.base.email(int(r)): a["subscriptions"]["email"]["marketing"]["consent"]
        for r, a in zip(rows, state.profile_attributes(rows, True, False))
    }


def members(app, list_id) -> set[str]:
    emu = app.emulator
    state = emu.state
    return {state.base.email(state.row_for_id(p)) for p in emu.snapshot()["list_members"][list_id]}


def query_cmd(home: Path, url: str, list_id: str, resume: str | None = None) -> list[str]:
    settings = {
        "type": "klaviyo",
        "api_token": DEFAULT_API_KEY,
        "base_url": url,
        "operation": "batch_consent",
        "consent_type": "unsubscribed",
        "subscription_type": "email_marketing_only",
        "list_value": list_id,
        "skip_invalid_records": True,
        "consent_settle_seconds": 0.2,
        "retry_limit": 2,
        "concurrency": 4,
    }
    conf = home.parent / f"{home.name}-settings.json"  # a file: a key on the command line is refused
    conf.write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), "query", "-d", "crm", "--result-settings", str(conf)]
    return cmd + (["--resume", resume] if resume else []) + [SQL]


def newest_run(home: Path):
    with open_warehouse(home / "warehouse.duckdb") as wh:
        runs = [r for r in wh.state.runs(limit=1000) if r.kind == "export"]
        if not runs:
            return None, None
        return runs[0], wh.state.export_rows(run_id=runs[0].run_id)


def test_kill_9_during_a_list_unsubscribe_then_resume_unsubscribes_nobody_globally(tmp_path, full):
    app0, _ = emulator()
    emails = sorted(app0.emulator.state.base.email(r) for r in range(app0.emulator.state.base.count))
    emails += [f"stranger.{i:04d}@example.org" for i in range(2600)]
    template = tmp_path / "template.duckdb"
    with open_warehouse(template) as wh:
        wh.write("crm", "people", pa.table({"email": emails}))
    rng = random.Random(int(os.environ.get("RELIABILITY_KILL_SEED", "20261205")))
    points = 12 if full else 4
    seen: Counter = Counter()
    for point in range(points):
        home = tmp_path / f"kill{point}"
        home.mkdir()
        (home / "warehouse.duckdb").write_bytes(template.read_bytes())
        app, list_id = emulator()
        before, in_list = consent(app), members(app, list_id)
        with serve_app(app) as url:
            proc = subprocess.Popen(query_cmd(home, url, list_id), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            delay = rng.uniform(0.3, 1.4)
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                seen["killed"] += 1
            proc.wait(timeout=30)
            time.sleep(0.3)  # a request cut by the kill is handled (or not) by now
            run, _ = newest_run(home)
            again = subprocess.run(
                query_cmd(home, url, list_id, resume=run.run_id if run else None), capture_output=True, text=True, timeout=180
            )
            where = f"kill point {point} at {delay:.2f}s"
            assert again.returncode in (0, 3), f"{where}: {again.stderr}"
            run2, rows = newest_run(home)
            after = consent(app)
            harmed = [e for e, c in after.items() if c == "UNSUBSCRIBED" and before[e] != "UNSUBSCRIBED"]
            assert harmed == [], f"{where}: globally unsubscribed by a list unsubscribe: {harmed[:5]}"
            assert sorted(rows.column("row_index").to_pylist()) == list(range(len(emails))), where
            by = {r["identifier"].split(":", 1)[1]: r["outcome"] for r in rows.to_pylist()}
            assert all(by[e] == "skipped" for e in emails if e not in in_list), where
            unconfirmed = [e for e, o in by.items() if o == "unconfirmed"]
            assert set(unconfirmed) <= members(app, list_id), f"{where}: an unconfirmed row left the list"
            seen["unconfirmed after resume"] += len(unconfirmed)
            if unconfirmed:  # a plain rerun finishes them
                rerun = subprocess.run(query_cmd(home, url, list_id), capture_output=True, text=True, timeout=180)
                assert rerun.returncode == 0, rerun.stderr
            assert not (in_list & members(app, list_id)), f"{where}: members left in the list"
            assert [e for e, c in consent(app).items() if c == "UNSUBSCRIBED" and before[e] != "UNSUBSCRIBED"] == []
        FIGURES["rows checked (list unsubscribe kill -9 + resume)"] += len(emails)
    for key, n in seen.items():
        FIGURES[f"list unsubscribe kill: {key}"] += n
    assert seen["killed"] >= 1, seen
