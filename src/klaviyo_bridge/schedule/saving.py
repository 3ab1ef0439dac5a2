"""Saving a new schedule together with the keys it references: both are stored, or neither."""

from __future__ import annotations

import copy
import json

from ..errors import ConfigError
from ..secrets import TOKEN_KEYS, ApiKey, CredentialStore
from ..store.state import ScheduleRecord
from ..store.warehouse import Warehouse
from .workflow_push import move_keys


def create_schedule(
    wh: Warehouse,
    credentials: CredentialStore | None,
    record: ScheduleRecord,
    keys: dict[str, str] | None = None,
    *,
    hint: str = "update or delete it",
) -> None:
    """Store ``record`` and move ``keys`` (authentication name -> key) into the credential store.

    Keys never go into the warehouse: a schedule's settings name a saved authentication. If
    the schedule cannot be stored, the keys saved for it are removed again.
    """
    if wh.state.schedule(record.name) is not None:
        raise ConfigError(f"schedule {record.name!r} already exists ({hint})", key="name")
    keys = keys or {}
    if keys and credentials is None:
        raise ConfigError("a schedule with an inline key needs the credential store", key="api_token")
    if credentials is not None:  # (not None whenever there are keys)
        for auth, key in keys.items():
            credentials.save(auth, key, replace=True)
    try:
        wh.state.create_schedule(record)
    except BaseException:
        if credentials is not None:
            for auth in keys:
                credentials.delete(auth, missing_ok=True)
        raise


def migrate_stored_keys(wh: Warehouse, credentials: CredentialStore) -> list[str]:
    """Schedules stored by an older version with a key inside their settings: the key is moved to
    the credential store (``connector:NAME`` / ``sched:NAME`` / ``workflow:NAME``, as creating them
    does today) and the stored settings name it instead. Returns the schedules changed. A record
    whose key cannot be moved (an unreadable key, a key left where push refuses one) is left as it
    is: every page and command that shows settings masks keys on read (``secrets.redact_config``)."""
    changed = []
    for record in wh.state.schedules():
        config = copy.deepcopy(record.config)
        moved: dict[str, ApiKey] = {}
        try:
            if record.kind in ("import", "export"):
                section = config.get("in") if record.kind == "import" else config.get("result_settings")
                ref_key = "connection" if record.kind == "import" else "result_connection"
                auth = f"{'connector' if record.kind == 'import' else 'sched'}:{record.name}"
                if isinstance(section, dict):
                    present = [k for k in TOKEN_KEYS if section.get(k) not in (None, "")]
                    if present:
                        token = ApiKey.parse(section[present[0]])
                        for k in TOKEN_KEYS:
                            section.pop(k, None)
                        if not isinstance(section.get(ref_key) or section.get("connection"), str):
                            moved[auth] = token
                            section[ref_key] = auth
            elif record.kind == "workflow":
                stored = config.get("workflow") or {}
                doc = stored.get("document")
                if isinstance(doc, dict):
                    moved, _ = move_keys(
                        doc,
                        str(stored.get("name") or record.name),
                        record.name,
                        credentials,
                        stored.get("files") or {},
                        f"workflow {record.name}",
                    )
        except ConfigError:
            continue
        if json.dumps(config, sort_keys=True, default=str) == json.dumps(record.config, sort_keys=True, default=str):
            continue
        for auth, key in moved.items():
            credentials.save(auth, key, replace=True)
        wh.state.update_schedule(record.name, config=config)
        changed.append(record.name)
    return changed
