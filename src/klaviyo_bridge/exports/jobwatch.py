"""Waiting for many bulk import jobs at once: one list request a round, not one GET per job.

An export of a million rows makes a hundred jobs at up to ten a second, and the per-job GET
shares a 10/s, 150/min limit: polled one by one, the last jobs queued behind each other's
polls. ``get_bulk_import_profiles_jobs`` sorted newest first shows up to 100 jobs a page, so a
round usually answers for every job of this export that is still in flight (they are the newest).
When some are missing (another export or client made jobs since), the round reads the next pages,
up to ``max_pages`` in all, and only a job still missing then is read by its id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..api.client import KlaviyoClient

FINISHED = ("complete", "cancelled", "failed")
#: The most a round waits when no job has finished for a while (Klaviyo's jobs can take minutes):
#: a run's end is seen at most this long after its last job ended. Up to 12 rounds a minute of
#: one to three pages, of the 150 a minute the endpoint allows (was 15 s: 20 s jobs ended up to
#: 15 s before the run saw them).
MAX_ROUND_WAIT = 5.0
#: Pages of the newest jobs a round reads at most before reading the missing jobs one by one.
MAX_PAGES = 3


@dataclass
class _Waiter:
    future: asyncio.Future[dict[str, Any] | None]  # the finished job's attributes, None at the deadline
    deadline: float
    status: str = "queued"


class JobWatcher:
    """Answers ``wait(job_id, deadline)`` with the job's attributes once it has finished, or
    None when the deadline comes first (the caller reports its rows as submitted)."""

    def __init__(
        self,
        client: KlaviyoClient,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        first_wait: float,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.client, self.sleep, self.clock = client, sleep, clock
        self.max_pages = max_pages
        self.floor = first_wait
        self.round_wait = first_wait
        self._waiters: dict[str, _Waiter] = {}
        self._task: asyncio.Task[None] | None = None
        #: A job was added since the last round's request left (that round cannot have seen it).
        self._added_since_round = False
        #: ``all_added`` was called: no job will be added until ``more_coming``.
        self._all_added = False
        self._wake = asyncio.Event()

    async def wait(self, job_id: str, deadline: float) -> tuple[str, dict[str, Any] | None]:
        """(last status seen, attributes when finished else None)."""
        waiter = _Waiter(asyncio.get_running_loop().create_future(), deadline)
        self._waiters[job_id] = waiter
        self._added_since_round = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._rounds())
        attrs = await waiter.future
        return waiter.status, attrs

    def all_added(self) -> None:
        """No more jobs will be waited for (every batch has its answer): when a job came after the
        last round left, the next round leaves now instead of after its pause, so the run's end is
        seen one round trip after its last job finished, not up to a pause later."""
        self._all_added = True
        self._wake.set()

    def more_coming(self) -> None:
        """Jobs will be added again (a follow-up phase): rounds keep their pauses."""
        self._all_added = False
        self._wake.clear()

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _rounds(self) -> None:
        try:
            while self._waiters:
                first_deadline = min(w.deadline for w in self._waiters.values())
                await self._pause(max(0.0, min(self.round_wait, first_deadline - self.clock())))
                self._added_since_round = False
                finished = await self._round()
                # Sooner while jobs finish between rounds, later (up to 15 s) while none do.
                self.round_wait = (
                    max(self.floor, self.round_wait * 0.8) if finished else min(self.round_wait * 1.5, MAX_ROUND_WAIT)
                )
        except Exception as exc:  # a failed poll fails every job waiting on it
            self._fail_waiters(exc)
        except asyncio.CancelledError:
            self._fail_waiters(asyncio.CancelledError())
            raise

    def _last_jobs_unseen(self) -> bool:
        return self._all_added and self._added_since_round

    async def _pause(self, seconds: float) -> None:
        """``sleep(seconds)`` between rounds, cut short when ``all_added`` leaves a job unseen."""
        if self._last_jobs_unseen():
            return
        if self._all_added or seconds <= 0:
            await self.sleep(seconds)
            return
        started = self.clock()
        sleeping = asyncio.ensure_future(self.sleep(seconds))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            woken.cancel()
        if sleeping.done() and not sleeping.cancelled():
            sleeping.result()  # a sleep that failed fails the round, as it did before
        if not sleeping.done() or sleeping.cancelled():
            if not self._last_jobs_unseen():  # woken, but the last round saw every job: the rest of the pause
                await self.sleep(max(0.0, seconds - (self.clock() - started)))

    def _fail_waiters(self, exc: BaseException) -> None:
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.set_exception(exc)
        self._waiters.clear()

    async def _round(self) -> int:
        listed = await self._newest_jobs()
        finished = 0
        for job_id in list(self._waiters):
            attrs = listed.get(job_id)
            if attrs is None:
                attrs = await self._one_job(job_id)
            finished += self._settle(job_id, attrs)
        return finished

    def _settle(self, job_id: str, attrs: dict[str, Any]) -> int:
        waiter = self._waiters[job_id]
        waiter.status = attrs.get("status", "")
        if waiter.status in FINISHED:
            del self._waiters[job_id]
            waiter.future.set_result(attrs)
            return 1
        if self.clock() >= waiter.deadline:
            del self._waiters[job_id]
            waiter.future.set_result(None)
        return 0

    async def _newest_jobs(self) -> dict[str, dict[str, Any]]:
        """The newest jobs, a page at a time until every waited-for job is among them (at most
        ``max_pages`` pages)."""
        found: dict[str, dict[str, Any]] = {}
        pages = self.client.pages("get_bulk_import_profiles_jobs", params=[("sort", "-created_at"), ("page[size]", "100")])
        try:
            async for page in pages:
                found.update((item["id"], item.get("attributes") or {}) for item in page.data)
                if page.number >= self.max_pages or all(job_id in found for job_id in self._waiters):
                    break
        finally:
            await pages.aclose()  # type: ignore[attr-defined]
        return found

    async def _one_job(self, job_id: str) -> dict[str, Any]:
        doc = await self.client.request("get_bulk_import_profiles_job", path_params={"job_id": job_id})
        return ((doc or {}).get("data") or {}).get("attributes") or {}
