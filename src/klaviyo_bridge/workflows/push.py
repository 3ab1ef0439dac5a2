"""``workflow push``: a .dig file and the SQL files its ``td>`` tasks name, stored by content.

What is stored is the parsed workflow plus the text of every ``td>`` file, so later edits of the
files on disk do not change a pushed workflow (push again to change it). Nothing secret is
stored: an inline ``api_token`` in a task's ``result_settings`` is moved into the saved
authentications (``workflow:NAME``, then ``workflow:NAME.2``, ... for further distinct keys) and
the task names it with ``result_connection``. When the task's ``result_connection`` already names
a saved authentication, that one supplies the key at run time anyway and the inline key is
dropped. A key anywhere else in the file (``_export`` variables, ...) is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..secrets import CredentialStore
from .dig import _merge, interpolate, load_workflow
from .schedule import WorkflowSchedule, parse_schedule

TOKEN_KEYS = ("api_token", "api_key")


@dataclass
class PushedWorkflow:
    name: str
    schedule: WorkflowSchedule | None
    config: dict[str, Any]  # what the schedule row stores: {"workflow": {...}}
    keys: dict[str, str] = field(default_factory=dict)  # authentication name -> key, to save first
    dropped: list[str] = field(default_factory=list)  # tasks whose inline key a saved one overrides


def _literal_key(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "${" not in value


def _tasks(group: Mapping[str, Any], prefix: str):
    """(name, task body, parent groups' _export chain) for every +task, in file order."""
    for key, body in group.items():
        if not str(key).startswith("+") or not isinstance(body, Mapping):
            continue
        name = f"{prefix}{key}"
        if any(str(k).startswith("+") for k in body) and "td>" not in body:
            yield from _tasks(body, name)
        else:
            yield name, group, key, body


def _collect_files(group: Mapping[str, Any], variables: dict[str, Any], folder: Path, prefix: str,
                   files: dict[str, str]) -> None:
    """Read every td> file the tasks name (interpolated as the runner does), relative to the .dig."""
    if isinstance(group.get("_export"), Mapping):
        variables = _merge(variables, interpolate(group["_export"], variables, f"{prefix}._export"))
    for key, body in group.items():
        if not str(key).startswith("+") or not isinstance(body, Mapping):
            continue
        name = f"{prefix}{key}"
        if any(str(k).startswith("+") for k in body) and "td>" not in body:
            _collect_files(body, variables, folder, name, files)
            continue
        if "td>" not in body:
            continue
        local = variables
        if isinstance(body.get("_export"), Mapping):
            local = _merge(variables, interpolate(body["_export"], variables, f"{name}._export"))
        relative = str(interpolate(body["td>"], local, name))
        path = folder / relative
        try:
            files[relative] = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}", key="td>") from None


def _find_keys(node: Any, where: str) -> list[str]:
    found = []
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k in TOKEN_KEYS and _literal_key(v):
                found.append(f"{where}{k}")
            found += _find_keys(v, f"{where}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _find_keys(v, f"{where}{i}.")
    return found


def snapshot(path: str | Path, name: str, credentials: CredentialStore, *,
             warn: Any = None) -> PushedWorkflow:
    """Load, validate and copy a workflow for pushing (raises ConfigError on any problem)."""
    p = Path(path)
    doc = copy.deepcopy(load_workflow(p, warn))
    schedule = parse_schedule(doc, str(p))
    if not any(str(k).startswith("+") for k in doc):
        raise ConfigError(f"{p}: the workflow has no +tasks to run", key="workflow")
    files: dict[str, str] = {}
    _collect_files(doc, {}, p.parent, p.stem, files)

    keys: dict[str, str] = {}  # key -> authentication name
    dropped = []
    for task, _group, _key, body in _tasks(doc, p.stem):
        settings = body.get("result_settings")
        if not isinstance(settings, dict):
            continue
        inline = [k for k in TOKEN_KEYS if _literal_key(settings.get(k))]
        if not inline:
            continue
        connection = body.get("result_connection") or settings.get("result_connection") or settings.get("connection")
        if isinstance(connection, str) and connection in credentials:
            dropped.append(task)  # the saved authentication wins at run time anyway
        else:
            token = str(settings[inline[0]]).strip()
            if token not in keys:
                keys[token] = f"workflow:{name}" if not keys else f"workflow:{name}.{len(keys) + 1}"
            body["result_connection"] = keys[token]
            settings.pop("result_connection", None)
            settings.pop("connection", None)
        for k in TOKEN_KEYS:
            settings.pop(k, None)
    left = _find_keys(doc, "")
    if left:
        raise ConfigError(f"{p}: an API key is written at {', '.join(left)}; keys are only moved out of a task's "
                          "result_settings. Save it with auth:create NAME and use result_connection: NAME",
                          key=left[0])
    config = {"workflow": {
        "name": p.stem, "document": doc, "files": files, "source": str(p.resolve()),
        "sha256": hashlib.sha256(json.dumps([doc, files], sort_keys=True, default=str).encode()).hexdigest(),
        "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }}
    return PushedWorkflow(name, schedule, config, {v: k for k, v in keys.items()}, dropped)
