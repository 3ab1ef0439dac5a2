"""Saving a new schedule together with the keys it references: both are stored, or neither."""

from __future__ import annotations

from ..errors import ConfigError
from ..secrets import CredentialStore
from ..store.state import ScheduleRecord
from ..store.warehouse import Warehouse


def create_schedule(wh: Warehouse, credentials: CredentialStore | None, record: ScheduleRecord,
                    keys: dict[str, str] | None = None, *, hint: str = "update or delete it") -> None:
    """Store ``record`` and move ``keys`` (authentication name -> key) into the credential store.

    Keys never go into the warehouse: a schedule's settings name a saved authentication. If
    the schedule cannot be stored, the keys saved for it are removed again.
    """
    if wh.state.schedule(record.name) is not None:
        raise ConfigError(f"schedule {record.name!r} already exists ({hint})", key="name")
    keys = keys or {}
    if keys and credentials is None:
        raise ConfigError("a schedule with an inline key needs the credential store", key="api_token")
    for auth, key in keys.items():
        credentials.save(auth, key, replace=True)
    try:
        wh.state.create_schedule(record)
    except BaseException:
        for auth in keys:
            credentials.delete(auth, missing_ok=True)
        raise
