"""A workflow file's document: reading a ``.dig`` and its ``${...}`` variables.

Apart from the runner (``dig``) so that what only reads or rewrites workflow documents (``workflow
push``, moving keys out of stored schedules, which every schedule and job verb does on opening the
state) loads neither the export engine nor its HTTP client.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..documents import load_yaml, read_text_bounded
from ..errors import ConfigError
from ..exports.settings import lenient_yaml, setting_keys

VAR = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*\}")
TASK_KEYS = {"td>", "database", "result_connection", "result_settings", "_export", "query"}


def lookup(variables: Mapping[str, Any], dotted: str, where: str) -> Any:
    value: Any = variables
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise ConfigError(f"{where}: ${{{dotted}}} is not defined (define it under _export)", key=dotted)
        value = value[part]
    return value


def interpolate(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    """Replace ``${a.b}`` in strings (recursively in mappings and lists)."""
    if isinstance(value, str):
        whole = VAR.fullmatch(value.strip())
        if whole:
            return lookup(variables, whole.group(1), where)
        return VAR.sub(lambda m: str(lookup(variables, m.group(1), where)), value)
    if isinstance(value, Mapping):
        return {k: interpolate(v, variables, where) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables, where) for v in value]
    return value


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in (extra or {}).items():
        out[k] = merge(out[k], v) if isinstance(out.get(k), Mapping) and isinstance(v, Mapping) else v
    return out


def load_workflow(path: str | Path, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    p = Path(path)
    try:
        text = read_text_bounded(p, "workflow")
    except OSError as exc:
        raise ConfigError(f"cannot read workflow {p}: {exc.strerror}") from None
    fixed, warnings = lenient_yaml(text, str(p), setting_keys())
    for w in warnings:
        if warn:
            warn(w)
    return load_yaml(fixed, str(p))
