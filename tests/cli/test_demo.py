"""README's demo command runs end to end: emulator -> import -> DuckDB -> export back."""

import re

from klaviyo_bridge.cli import main


def test_demo_round_trip(tmp_path, capsys):
    try:
        main(["--home", str(tmp_path / "home"), "demo", "--profiles", "300", "--events", "3000", "--lists", "2"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "profiles -> demo.profiles (merge): 300 rows" in out
    assert "events -> demo.events (merge): 3000 rows" in out
    # the imported rows are shown: a query on the warehouse, metric names and counts
    assert "top metrics" in out and re.search(r"Received Email\s*│\s*\d+", out)
    exported = re.search(r"run \w+: (\d+) rows: (\d+) accepted", out)
    members = re.search(r"now has (\d+) members", out)
    assert exported and members
    assert exported.group(1) == exported.group(2) == members.group(1)
    assert (tmp_path / "home" / "warehouse.duckdb").exists()
