"""Reading the YAML and JSON documents the product takes (import configs, result settings,
workflows): bounded in size, depth and alias expansion, with errors that name the line.

A leaf module (it imports only ``errors``), so every layer that reads a document uses it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

_MISSING_SPACE = re.compile(r"^\s*([A-Za-z_][\w-]*):(?![\s/]|$)(\S.*)$")


def missing_space_line(text: str) -> tuple[int, str] | None:
    """First ``key:value`` line (no space after the colon), as (line number, line)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if _MISSING_SPACE.match(line):
            return number, line.strip()
    return None


def _yaml_error(exc: yaml.YAMLError, origin: str, text: str) -> ConfigError:
    culprit = missing_space_line(text)
    if culprit:
        number, line = culprit
        return ConfigError(f"{origin}, line {number}: {line!r} needs a space after the colon ('key: value')")
    if isinstance(exc, yaml.reader.ReaderError):
        line_number = text.count("\n", 0, exc.position) + 1
        what = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        return ConfigError(
            f"{origin}, line {line_number}: invalid YAML: the control character {what} is not allowed "
            "(remove it; write it as an escape in a double-quoted string if it is meant)"
        )
    mark = getattr(exc, "problem_mark", None)
    where = f"{origin}, line {mark.line + 1}, column {mark.column + 1}" if mark else origin
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigError(f"{where}: invalid YAML: {problem}")


#: Limits of every YAML or JSON document the product reads (configs, result settings, workflows):
#: far above any real one, far below what hangs or exhausts the machine.
MAX_DOCUMENT_BYTES = 1 << 20
MAX_DOCUMENT_DEPTH = 64
#: Values after expanding YAML aliases: a "billion laughs" document is a few hundred bytes with
#: a handful of aliases that expand to 10^9 values, and whatever walks it (validation, storing
#: it as JSON) never ends.
MAX_DOCUMENT_VALUES = 100_000


def read_text_bounded(path: str | Path, what: str = "file") -> str:
    """A config-like file's text, read at most ``MAX_DOCUMENT_BYTES`` (+1) bytes: a huge file or
    ``/dev/zero`` is refused, not read whole. Raises OSError as ``read_text`` does (the callers
    word it), ConfigError when too large or not UTF-8."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ConfigError(
            f"{path}: the {what} is larger than {MAX_DOCUMENT_BYTES // 1024} KiB; "
            "a config, result settings or workflow file is a few KiB"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: the {what} is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})"
        ) from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that measures what it composed before constructing it: depth, and the number
    of values once aliases are expanded (aliases keep sharing nodes, so the walk is linear)."""


def check_document_size(text: str, origin: str) -> None:
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ConfigError(
            f"{origin}: larger than {MAX_DOCUMENT_BYTES // 1024} KiB; a config, result settings or workflow document is a few KiB"
        )


def _measure(root: yaml.Node, origin: str) -> None:
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DOCUMENT_DEPTH:
            mark = node.start_mark
            raise ConfigError(f"{origin}, line {mark.line + 1}: nested more than {MAX_DOCUMENT_DEPTH} levels deep")
        if key in busy:
            mark = node.start_mark
            raise ConfigError(
                f"{origin}, line {mark.line + 1}: a YAML alias refers to a value that contains it (a recursive document)"
            )
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    if k.value in seen:
                        raise ConfigError(
                            f"{origin}, line {k.start_mark.line + 1}: {k.value[:80]!r} is given twice "
                            "in the same mapping (YAML would keep only the last one)"
                        )
                    seen.add(k.value)
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            busy.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [c for pair in node.value for c in pair]
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_DOCUMENT_VALUES:
                    break
            busy.discard(key)
        sizes[key] = total
        return total

    if size(root, 0) > MAX_DOCUMENT_VALUES:
        raise ConfigError(
            f"{origin}: more than {MAX_DOCUMENT_VALUES:,} values once YAML aliases are expanded "
            "(an alias bomb?); write the settings out instead of nesting aliases"
        )


def load_yaml(text: str, origin: str = "config") -> dict[str, Any]:
    """Parse one YAML document, bounded in size, depth and alias expansion (clear errors)."""
    check_document_size(text, origin)
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters at once
        node = loader.get_single_node()
        if node is not None:
            _measure(node, origin)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, origin, text) from None
    except RecursionError:
        raise ConfigError(f"{origin}: nested too deeply (more than {MAX_DOCUMENT_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()
    culprit = missing_space_line(text)
    if culprit:  # YAML may accept 'key:value' as a plain string; it is never what the user meant
        number, line = culprit
        raise ConfigError(f"{origin}, line {number}: {line!r} needs a space after the colon ('key: value')")
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of settings at the top level")
    return data


def load_json_document(text: str, origin: str) -> Any:
    """Parse JSON with the same bounds as ``load_yaml`` (size, depth)."""
    check_document_size(text, origin)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: nested too deeply (more than {MAX_DOCUMENT_DEPTH} levels)") from None
    if _json_depth(data) > MAX_DOCUMENT_DEPTH:
        raise ConfigError(f"{origin}: nested more than {MAX_DOCUMENT_DEPTH} levels deep")
    return data


def _json_depth(value: Any, depth: int = 0) -> int:
    if depth > MAX_DOCUMENT_DEPTH:
        return depth
    if isinstance(value, dict):
        return max((_json_depth(v, depth + 1) for v in value.values()), default=depth)
    if isinstance(value, list):
        return max((_json_depth(v, depth + 1) for v in value), default=depth)
    return depth
