"""Named locks shared by every process that uses one state store: one writer per Klaviyo list.

``warehouse.named_lock(name)`` gives a lock that other processes (and other threads of this
one) using the same state see: a PostgreSQL session-level advisory lock when the state lives in
PostgreSQL (so it holds across machines), an ``flock`` on a file beside the DuckDB warehouse
otherwise. ``try_acquire`` never blocks; the caller waits with its own clock and sleep, so it can
say what it is waiting for and give up after its timeout.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any


class NamedLock:
    #: What ``try_acquire`` took (a file descriptor, a session) while the lock is held; else None.
    _held: Any = None

    def try_acquire(self, holder: dict[str, Any]) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        """Let the lock go (a second call does nothing): unlock, then close what was taken, even if
        unlocking failed."""
        if self._held is not None:
            held, self._held = self._held, None
            try:
                self._unlock(held)
            finally:
                self._close(held)

    def _unlock(self, held: Any) -> None:
        raise NotImplementedError

    def _close(self, held: Any) -> None:
        raise NotImplementedError

    def holder(self) -> dict[str, Any] | None:
        """Who holds it, when known (run id, pid, host)."""
        return None


class FileLock(NamedLock):
    """``flock`` on ``folder/<sha1 of name>.lock``; the holder's description is written in the file."""

    def __init__(self, folder: Path, name: str) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / (hashlib.sha1(name.encode()).hexdigest() + ".lock")

    def try_acquire(self, holder: dict[str, Any]) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._held = fd
        return True

    def _unlock(self, held: Any) -> None:
        os.ftruncate(held, 0)

    def _close(self, held: Any) -> None:
        os.close(held)  # closing the descriptor drops the flock

    def holder(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
            return json.loads(text) if text else None
        except (OSError, ValueError):
            return None


class AdvisoryLock(NamedLock):
    """A PostgreSQL session-level advisory lock on a session of its own, held until ``release``."""

    def __init__(self, open_session: Any, name: str) -> None:
        self._open_session = open_session
        self.name = f"klaviyo-bridge:lock:{name}"

    def try_acquire(self, holder: dict[str, Any]) -> bool:
        session = self._open_session()
        try:
            got = session.fetch("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", [self.name])[0][0]
            # The lock is the session's, not the transaction's: end the transaction, so the
            # connection waits "idle", which idle_in_transaction_session_timeout does not end.
            session.commit()
        except BaseException:
            session.close()
            raise
        if not got:
            session.close()
            return False
        self._held = session
        return True

    def _unlock(self, held: Any) -> None:
        held.fetch("SELECT pg_advisory_unlock(hashtextextended($1, 0))", [self.name])

    def _close(self, held: Any) -> None:
        held.close()

    def holder(self) -> dict[str, Any] | None:
        session = self._open_session()
        try:
            rows = session.fetch(
                "SELECT l.pid, a.application_name FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND "
                "((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0) LIMIT 1",
                [self.name],
            )
        except Exception:  # noqa: BLE001 - who holds it is a courtesy in a message
            return None
        finally:
            session.close()
        return {"postgres_pid": rows[0][0]} if rows else None
