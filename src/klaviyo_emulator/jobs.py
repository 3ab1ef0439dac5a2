"""Async jobs and delayed state changes, driven by the app's injectable clock.

A job is ``queued`` for ``job_queued_seconds``, then ``processing`` at
``job_profiles_per_second`` until every item is done, then ``complete``; its
effect on the account is applied once, at completion. Nothing runs in the
background: ``JobBook.advance(clock)`` is called at the start of every request
(and by ``snapshot()``) and applies whatever fell due, in (due time, submission)
order, so a fake clock gives exactly reproducible states.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from . import ids
from .timefmt import iso

S_JOB, S_ERROR = 910, 911
JOB_LIFETIME = 7 * 86400


class ImportProblem(TypedDict):
    """One profile a bulk import job could not import (an import-error resource)."""

    index: int  # of the profile in the request
    code: str
    title: str
    detail: str
    pointer: str
    payload: Any  # the profile as sent (JSON)


@dataclass
class Job:
    """One async job (bulk import or suppression)."""

    type: str
    id: str
    seq: int
    clock_created: float
    created: int  # emulator wall seconds
    total: int
    rate: float
    queued_seconds: float
    list_ids: list[str] = field(default_factory=list)
    segment_ids: list[str] = field(default_factory=list)
    #: import errors, sorted by the index of the item they belong to
    errors: list[ImportProblem] = field(default_factory=list)
    profile_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # int64, once applied
    skipped: int = 0
    applied: bool = False

    @property
    def duration(self) -> float:
        return self.queued_seconds + self.total / self.rate

    def processed(self, clock: float) -> int:
        elapsed = clock - self.clock_created - self.queued_seconds
        if elapsed < 0:
            return 0
        return min(self.total, int(math.floor(elapsed * self.rate + 1e-9)))

    def status(self, clock: float) -> str:
        if self.applied:
            return "complete"
        return "queued" if clock - self.clock_created < self.queued_seconds else "processing"

    def visible_errors(self, clock: float) -> list[ImportProblem]:
        if self.applied:
            return self.errors
        done = self.processed(clock)
        return self.errors[: bisect_left([e["index"] for e in self.errors], done)]

    def attributes(self, clock: float) -> dict[str, Any]:
        processed = self.total if self.applied else self.processed(clock)
        failed = len(self.visible_errors(clock))
        started = clock - self.clock_created >= self.queued_seconds
        attrs: dict[str, Any] = {
            "status": self.status(clock),
            "created_at": iso(self.created),
            "total_count": self.total,
            "completed_count": processed - failed if self.type == "profile-bulk-import-job" else processed,
            "completed_at": iso(self.created + math.ceil(self.duration)) if self.applied else None,
        }
        if self.type == "profile-bulk-import-job":
            attrs.update(
                failed_count=failed,
                expires_at=iso(self.created + JOB_LIFETIME),
                started_at=iso(self.created + math.ceil(self.queued_seconds)) if started else None,
            )
        else:
            attrs["skipped_count"] = self.skipped
        return attrs


class JobBook:
    """All jobs of the account plus the queue of state changes not yet due."""

    def __init__(self, seed: int, now: int) -> None:
        self.seed, self.now = seed, now
        self.jobs: dict[str, Job] = {}
        self.order: list[Job] = []
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def job_id(self, seq: int) -> str:
        return ids.ulid(self.now * 1000 + seq, int(ids.mix(self.seed, S_JOB, seq)) >> 24, seq, 0)

    def error_id(self, job: Job, index: int) -> str:
        return ids.uuid_text(self.seed, S_ERROR + job.seq * 16, index)

    def submit(
        self,
        type_: str,
        clock: float,
        created: int,
        total: int,
        rate: float,
        queued_seconds: float,
        apply: Callable[[Job], None],
        *,
        list_ids: list[str] | None = None,
        segment_ids: list[str] | None = None,
        errors: list[ImportProblem] | None = None,
    ) -> Job:
        """A job finishing (``apply(job)``) after its queue time and ``total / rate`` seconds; what it
        works on is ``apply``'s (released once it ran)."""
        seq = self._next()
        job = Job(
            type_,
            self.job_id(seq),
            seq,
            clock,
            created,
            total,
            rate,
            queued_seconds,
            list_ids=list_ids or [],
            segment_ids=segment_ids or [],
            errors=errors or [],
        )
        self.jobs[job.id] = job
        self.order.append(job)

        def finish() -> None:
            apply(job)
            job.applied = True

        self.later(clock + job.duration, finish)
        return job

    def later(self, due: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._pending, (due, self._next(), action))

    def advance(self, clock: float) -> int:
        """Apply every action due by ``clock``; returns how many ran."""
        ran = 0
        while self._pending and self._pending[0][0] <= clock + 1e-9:
            _, _, action = heapq.heappop(self._pending)
            action()
            ran += 1
        return ran
