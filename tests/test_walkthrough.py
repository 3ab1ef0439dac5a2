"""The newcomer's walk-through: the README's "First steps" block, run as written, step by step,
from a clean home folder (an emulator on 127.0.0.1 stands in for `klaviyo-bridge emulator &`).

Each step's output must name what the user needs next, and the read-only commands those `next:`
lines name are run too: a hint that does not work is a bug.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings

README = Path(__file__).resolve().parent.parent / "README.md"
#: Verbs whose `next:` hints are safe to follow (they only read).
READ_ONLY = ("tables", "sql", "job:show", "sched:history", "connector:history", "auth:list", "job:list")


def walkthrough_steps() -> list[str]:
    """The README's walk-through block: one command per step, a heredoc (file) as one step."""
    text = README.read_text()
    block = re.search(r"<!-- walkthrough -->\s*```sh\n(.*?)```\s*<!-- /walkthrough -->", text, re.S)
    assert block, "README.md has no walk-through block"
    steps, lines = [], block.group(1).splitlines()
    while lines:
        line = lines.pop(0)
        heredoc = re.search(r"<<'(\w+)'", line)
        if heredoc:
            body = []
            while lines[0] != heredoc.group(1):
                body.append(lines.pop(0))
            lines.pop(0)
            line = "\n".join([line, *body, heredoc.group(1)])
        if line.strip():
            steps.append(line)
    return steps


def verb(step: str) -> str:
    words = shlex.split(step.split("|")[-1], comments=True)
    return words[1] if words and words[0] == "klaviyo-bridge" else words[0] if words else ""


def expectations() -> dict[str, list[str]]:
    """What each step must print (stdout and stderr together), by verb."""
    return {
        "auth:create": ["Saved authentication 'my_account'", "next: use it with 'connection: my_account'"],
        "connector:preview": ["email:string", "next: import it: klaviyo-bridge connector:issue profiles.yml"],
        "connector:issue": [
            "profiles -> klaviyo.profiles (merge): 1000 rows",
            "next: look at it: klaviyo-bridge tables -d klaviyo",
            'klaviyo-bridge sql "SELECT * FROM klaviyo.profiles LIMIT 10"',
        ],
        "tables": ["profiles", "1000", 'look inside one with: klaviyo-bridge sql "SELECT * FROM klaviyo.profiles'],
        "sql": ["email", "first_name", "created", "(5 rows)"],
        "query --dry-run": ["100 would be sent", "0 invalid\n", "dry run: nothing was sent", "next: send it"],
        "query": [
            "100 rows: 100 accepted",
            "next: each row's outcome: klaviyo-bridge job:show",
            "next: run it on a schedule: klaviyo-bridge sched:create",
        ],
        "sched:create": [
            "Export schedule 'weekly_export' created",
            "next: run it now: klaviyo-bridge sched:run weekly_export",
            "its jobs: klaviyo-bridge sched:history weekly_export",
        ],
        "sched:run": ["100 records exported", "next: its history: klaviyo-bridge sched:history weekly_export"],
        "sched:history": ["JobID", "success", "next: one job's details: klaviyo-bridge job:show"],
    }


@pytest.fixture
def shell_env(tmp_path):
    """A clean HOME, the installed command first on PATH, no bridge settings from this shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "FORCE_COLOR", "COLUMNS"))}
    env["HOME"] = str(tmp_path / "user")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    (tmp_path / "user").mkdir()
    return env


def sh(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", "set -e -o pipefail\n" + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def test_the_readme_walkthrough_from_a_clean_home(tmp_path, shell_env):
    steps = walkthrough_steps()
    work = tmp_path / "work"
    work.mkdir()
    prelude: list[str] = []
    seen: list[str] = []
    with running_emulator(EmulatorSettings()) as url:  # `klaviyo-bridge emulator`'s defaults, rate limits on
        port = int(url.rsplit(":", 1)[1])
        want = expectations()
        for step in steps:
            step = step.replace("127.0.0.1:8765", f"127.0.0.1:{port}")
            name = verb(step)
            if name == "export":
                prelude.append(step)
                continue
            if name == "emulator":
                assert step.rstrip().split("#")[0].rstrip().endswith("&")  # the README starts it in the background
                continue
            done = sh("\n".join([*prelude, step]), work, shell_env)
            said = done.stdout + done.stderr
            assert done.returncode == 0, f"{step}\n{said}"
            assert "Traceback" not in said and "WARNING" not in said, f"{step}\n{said}"
            key = "query --dry-run" if name == "query" and "--dry-run" in step else name
            if name != "cat":  # a file written with a heredoc
                seen.append(key)
            for needle in want.get(key, []):
                assert needle in said, f"{step}\n--- missing: {needle!r}\n{said}"
            for hint in re.findall(r"^next: .*?klaviyo-bridge (.+)$", done.stderr, re.M):
                command = re.sub(r"\s+\(.*\)$", "", hint).strip()
                if verb("klaviyo-bridge " + command) in READ_ONLY and not re.search(r"\b[A-Z]{4,}\b", command):
                    followed = sh("\n".join([*prelude, "klaviyo-bridge " + command]), work, shell_env)
                    assert followed.returncode == 0, f"the hint {command!r} after {step!r} fails:\n{followed.stderr}"
    assert seen == [
        "auth:create",
        "connector:preview",
        "connector:issue",
        "tables",
        "sql",
        "query --dry-run",
        "query",
        "sched:create",
        "sched:run",
        "sched:history",
    ]
    assert not (Path(shell_env["HOME"]) / ".klaviyo-bridge").exists()  # everything in the home the README set
    assert not (Path(shell_env["HOME"]) / ".local" / "share" / "klaviyo-bridge").exists()  # not the default one
    if shell_env.get("XDG_DATA_HOME"):
        assert not (Path(shell_env["XDG_DATA_HOME"]) / "klaviyo-bridge").exists()
    assert (work / ".klaviyo-bridge" / "warehouse.duckdb").exists()
