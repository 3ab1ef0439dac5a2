"""``workflow push``: a .dig file and the SQL files its ``td>`` tasks name, stored by content.

What is stored is the parsed workflow plus the text of every ``td>`` file, so later edits of the
files on disk do not change a pushed workflow (push again to change it). Nothing secret is
stored: an inline ``api_token`` in a task's ``result_settings`` is moved into the saved
authentications (``workflow:NAME``, then ``workflow:NAME.2``, ... for further distinct keys) and
the task names it with ``result_connection``. A task whose ``api_token`` is a variable
(``api_token: ${klaviyo.key}`` with the key in an ``_export`` block) is treated the same way: the
key is saved, the variable is removed from every ``_export`` that holds it. When the task's
``result_connection`` already names a saved authentication, that one supplies the key at run time
anyway and the inline key is dropped. A key left anywhere else (any ``api_token``/``api_key``
value, any string that is or contains a key moved here, any ``pk_...`` value, a use of a removed
variable) is refused with a pointer to ``auth:create``: a pushed workflow never stores a key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..secrets import KLAVIYO_KEY_RE, ApiKey, CredentialStore
from ..workflows.document import VAR, interpolate, load_workflow, merge
from .workflow_block import WorkflowSchedule, parse_schedule

TOKEN_KEYS = ("api_token", "api_key")


@dataclass
class PushedWorkflow:
    name: str
    schedule: WorkflowSchedule | None
    config: dict[str, Any]  # what the schedule row stores: {"workflow": {...}}
    keys: dict[str, ApiKey] = field(default_factory=dict)  # authentication name -> key, to save first
    dropped: list[str] = field(default_factory=list)  # tasks whose inline key a saved one overrides


def _literal_key(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "${" not in value


def _collect_files(group: Mapping[str, Any], variables: dict[str, Any], folder: Path, prefix: str, files: dict[str, str]) -> None:
    """Read every td> file the tasks name (interpolated as the runner does), relative to the .dig."""
    if isinstance(group.get("_export"), Mapping):
        variables = merge(variables, interpolate(group["_export"], variables, f"{prefix}._export"))
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
            local = merge(variables, interpolate(body["_export"], variables, f"{name}._export"))
        relative = str(interpolate(body["td>"], local, name))
        path = folder / relative
        try:
            files[relative] = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}", key="td>") from None


def _tasks_with_variables(
    group: Mapping[str, Any], variables: dict[str, Any], prefix: str
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, task body, the variables it sees) for every +task, ``_export`` chains applied.
    Bodies are the document's own dicts (as YAML loads them): ``move_keys`` edits them in place."""
    if isinstance(group.get("_export"), Mapping):
        try:
            variables = merge(variables, interpolate(group["_export"], variables, f"{prefix}._export"))
        except ConfigError:
            variables = merge(variables, group["_export"])
    for key, body in group.items():
        if not str(key).startswith("+") or not isinstance(body, dict):
            continue
        name = f"{prefix}{key}"
        if any(str(k).startswith("+") for k in body) and "td>" not in body:
            yield from _tasks_with_variables(body, variables, name)
            continue
        local = variables
        if isinstance(body.get("_export"), Mapping):
            try:
                local = merge(variables, interpolate(body["_export"], variables, f"{name}._export"))
            except ConfigError:
                local = merge(variables, body["_export"])
        yield name, body, local


def _drop_variables(node: Any, dotted: set[str]) -> None:
    """Remove each dotted variable from every ``_export`` block (empty parents go too)."""
    if isinstance(node, dict):
        export = node.get("_export")
        if isinstance(export, dict):
            for var in dotted:
                parts = var.split(".")
                parent: dict[Any, Any] = export
                chain: list[tuple[dict[Any, Any], str]] = []
                found = True
                for part in parts[:-1]:
                    child = parent.get(part)
                    if not isinstance(child, dict):
                        found = False
                        break
                    chain.append((parent, part))
                    parent = child
                if found and parts[-1] in parent:
                    del parent[parts[-1]]
                    for holder, part in reversed(chain):
                        if holder[part] == {}:
                            del holder[part]
            if not export:
                del node["_export"]
        for v in list(node.values()):
            _drop_variables(v, dotted)
    elif isinstance(node, list):
        for v in node:
            _drop_variables(v, dotted)


def _find_uses(node: Any, dotted: set[str], where: str) -> list[str]:
    """Places that still use a variable that held a key (they would get the key at run time)."""
    found = []
    if isinstance(node, Mapping):
        for k, v in node.items():
            found += _find_uses(v, dotted, f"{where}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _find_uses(v, dotted, f"{where}{i}.")
    elif isinstance(node, str) and any(m.group(1) in dotted for m in VAR.finditer(node)):
        found.append(where.rstrip("."))
    return found


def _find_values(node: Any, keys: list[ApiKey], where: str, secret_name: bool = False) -> list[str]:
    """Strings that contain a moved key, are shaped like a Klaviyo private key, or are a ``pk_...``
    value under a name that says key/token/secret (``_export: {klaviyo: {apikey: pk_...}}``)."""
    found = []
    if isinstance(node, Mapping):
        for k, v in node.items():
            found += _find_values(v, keys, f"{where}{k}.", bool(_SECRET_NAME.search(str(k))))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _find_values(v, keys, f"{where}{i}.", secret_name)
    elif isinstance(node, str):
        value = node.strip()
        if (
            any(k.occurs_in(node) for k in keys)
            or KLAVIYO_KEY_RE.match(value)
            or (secret_name and value.startswith("pk_") and "${" not in value)
        ):
            found.append(where.rstrip("."))
    return found


_SECRET_NAME = re.compile(r"key|token|secret|password", re.I)


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


def snapshot(path: str | Path, name: str, credentials: CredentialStore, *, warn: Any = None) -> PushedWorkflow:
    """Load, validate and copy a workflow for pushing (raises ConfigError on any problem)."""
    p = Path(path)
    doc = copy.deepcopy(load_workflow(p, warn))
    schedule = parse_schedule(doc, str(p))
    if not any(str(k).startswith("+") for k in doc):
        raise ConfigError(f"{p}: the workflow has no +tasks to run", key="workflow")
    files: dict[str, str] = {}
    _collect_files(doc, {}, p.parent, p.stem, files)

    keys, dropped = move_keys(doc, p.stem, name, credentials, files, str(p))
    config = {
        "workflow": {
            "name": p.stem,
            "document": doc,
            "files": files,
            "source": str(p.resolve()),
            "sha256": hashlib.sha256(json.dumps([doc, files], sort_keys=True, default=str).encode()).hexdigest(),
            "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    }
    return PushedWorkflow(name, schedule, config, keys, dropped)


def move_keys(
    doc: dict[str, Any], stem: str, name: str, credentials: CredentialStore, files: Mapping[str, str], where: str
) -> tuple[dict[str, ApiKey], list[str]]:
    """Take every key out of a workflow document, in place: returns (authentication name -> key to
    save, tasks whose saved result_connection makes their inline key moot). Raises ConfigError
    (naming places, never the key) when a key would be left in the document."""
    keys: dict[ApiKey, str] = {}  # key -> authentication name
    dropped = []
    key_vars: set[str] = set()  # dotted _export variables that held a key
    for task, body, variables in _tasks_with_variables(doc, {}, stem):
        settings = body.get("result_settings")
        if not isinstance(settings, dict):
            continue
        inline = [k for k in TOKEN_KEYS if isinstance(settings.get(k), str) and settings[k].strip()]
        if not inline:
            continue
        raw = settings[inline[0]]
        names = [m.group(1) for m in VAR.finditer(raw)]
        if names:
            try:
                raw = interpolate(raw, variables, task)
            except ConfigError:
                continue  # a run-time parameter: nothing stored here holds the key
            key_vars.update(names)
        if not isinstance(raw, str) or not raw.strip():
            continue
        token = ApiKey.parse(raw.strip(), field=f"{task}.result_settings.{inline[0]}")
        connection = body.get("result_connection") or settings.get("result_connection") or settings.get("connection")
        if isinstance(connection, str) and connection in credentials:
            dropped.append(task)  # the saved authentication wins at run time anyway
        else:
            if token not in keys:
                keys[token] = f"workflow:{name}" if not keys else f"workflow:{name}.{len(keys) + 1}"
            body["result_connection"] = keys[token]
            settings.pop("result_connection", None)
            settings.pop("connection", None)
        for k in TOKEN_KEYS:
            settings.pop(k, None)
    _drop_variables(doc, key_vars)
    left = _find_keys(doc, "") + _find_uses(doc, key_vars, "") + _find_values(doc, list(keys), "")
    left += [f"{relative} (a td> file)" for relative, text in files.items() if any(k.occurs_in(text) for k in keys)]
    if left:
        raise ConfigError(
            f"{where}: an API key is written at {', '.join(left[:5])} (not shown); a pushed workflow "
            "stores no key. Save it with 'klaviyo-bridge auth:create NAME' and give the task "
            "result_connection: NAME (or api_token: ${var} from an _export block, which push "
            "moves into the saved authentications)",
            key=left[0],
        )
    return {v: k for k, v in keys.items()}, dropped
