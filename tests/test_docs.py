"""The documentation's examples cannot rot: every `klaviyo-bridge ...` line of a shell block in
README.md, CONTRIBUTING.md and docs/*.md parses against the real command line (the command
exists, its options exist, its arguments fit), every config and result-settings YAML block
validates with the product's own loaders, and every relative link points at a file.

(The README's walk-through block is also run as written, by tests/test_walkthrough.py.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from klaviyo_bridge.cli import cli
from klaviyo_bridge.config import parse_import_config
from klaviyo_bridge.exports.settings import parse_export_settings, parse_settings_text

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
EXAMPLE_KEY = "pk_" + "0123456789abcdef" * 2 + "01"  # Klaviyo-shaped, built so no key-shaped text is committed


def blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for lang, body in FENCE.findall(path.read_text()):
            if lang == kind:
                found.append((path.relative_to(ROOT).as_posix(), body))
    return found


def command_lines() -> list[tuple[str, str]]:
    """(doc, command line) for every line of a shell block that runs klaviyo-bridge."""
    lines = []
    for doc, body in blocks("sh"):
        joined = re.sub(r"\\\n\s*", " ", body)  # continuation lines
        for line in joined.splitlines():
            line = line.strip()
            if "klaviyo-bridge " not in line or line.startswith("#"):
                continue
            lines.append((doc, line))
    return lines


def argv_of(line: str) -> list[str] | None:
    """The klaviyo-bridge arguments of a shell line (env assignments, paths, comments, pipes and
    redirections dropped); None when the line only mentions the command."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        raise AssertionError(f"unbalanced quotes in {line!r}") from exc
    words, open_brackets = list(words), 0
    for i, word in enumerate(words):  # optional parts written [--option VALUE] are taken as given
        if word.startswith("[-"):
            open_brackets += 1
            word = word[1:]
        if open_brackets and word.endswith("]"):
            open_brackets -= 1
            word = word[:-1]
        words[i] = word
    for i, word in enumerate(words):
        if word.endswith("klaviyo-bridge") and (
            i == 0 or "=" in words[i - 1] or words[i - 1] in ("&&", ";") or all("=" in w for w in words[:i])
        ):
            rest = words[i + 1 :]
            for stop, item in enumerate(rest):
                if item in ("|", ">", "<", "&", "&&", ";", "2>&1") or item.startswith((">", "<")):
                    return rest[:stop]
            return rest
    return None


def parse(argv: list[str]) -> None:
    """Parse argv as the CLI would, down to the subcommand, without running anything."""
    ctx = cli.make_context("klaviyo-bridge", list(argv), resilient_parsing=False)
    group: click.Command = cli
    while isinstance(group, click.Group) and [*getattr(ctx, "_protected_args", ()), *ctx.args]:
        name, cmd, rest = group.resolve_command(ctx, [*getattr(ctx, "_protected_args", ()), *ctx.args])
        assert cmd is not None, f"unknown command {name!r}"
        ctx = cmd.make_context(name, rest, parent=ctx, resilient_parsing=False)
        group = cmd


LINES = command_lines()


def test_the_docs_have_examples_to_check():
    assert len(LINES) >= 60, len(LINES)


@pytest.mark.parametrize("doc,line", LINES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(LINES)])
def test_every_documented_command_parses(doc, line, tmp_path, monkeypatch):
    argv = argv_of(line)
    if argv is None:
        pytest.skip("mentions the command without running it")
    monkeypatch.chdir(tmp_path)  # files the example names exist (empty) in its working folder
    for word in argv:
        if re.fullmatch(r"[\w./-]+\.(yml|yaml|sql|dig|json|txt)", word) and "/" not in word:
            (tmp_path / word).write_text("")
    try:
        parse(argv)
    except click.exceptions.Exit:
        pass
    except click.UsageError as exc:
        pytest.fail(f"{doc}: `{line}` does not parse: {exc.format_message()}")


def test_a_broken_example_is_caught():
    """The check above can fail: a wrong option and a wrong command are refused."""
    with pytest.raises(click.UsageError):
        parse(["connector:issue", "config.yml", "--no-such-option"])
    with pytest.raises((click.UsageError, AssertionError)):
        parse(["connector:isue", "config.yml"])


def yaml_examples() -> list[tuple[str, dict]]:
    found = []
    for doc, body in blocks("yaml"):
        data = yaml.safe_load(body)
        if isinstance(data, dict):
            found.append((doc, data))
    return found


def test_import_config_examples_validate():
    checked = 0
    for doc, data in yaml_examples():
        if "in" not in data:
            continue
        source = dict(data["in"])
        if "connection" in source:  # a saved authentication, resolved by name at run time
            source.pop("connection")
            source["api_token"] = EXAMPLE_KEY
        parse_import_config({**data, "in": source}, origin=doc)
        checked += 1
    assert checked >= 2


def test_result_settings_examples_validate():
    checked = 0
    for doc, body in blocks("sh"):
        for text in re.findall(r"<<'YAML'\n(.*?)\nYAML", body, re.S):
            data, _ = parse_settings_text(text, origin=doc)
            if data.get("type") != "klaviyo" or "in" in data:
                continue
            if "result_connection" in data:
                data.pop("result_connection")
                data["api_token"] = EXAMPLE_KEY
            parse_export_settings(data, origin=doc)
            checked += 1
    assert checked >= 2


def test_relative_links_point_at_files():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(ROOT)} links to missing {target}"
