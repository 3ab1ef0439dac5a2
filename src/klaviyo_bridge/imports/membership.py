"""``list_memberships`` / ``segment_memberships``: who is in each group now, and since when.

Klaviyo answers "who is in this list now" (with ``joined_group_at``) but never "who left": a
departure is only visible as an absence. So every run reads the complete membership of its
groups (one request per 100 members, windows over ``joined_group_at`` fetched side by side under
the rate limits) and the store compares it with the history (``store/membership.py``): a
profile that left gets ``left_at``, one that came back gets a new row, and ``TABLE_current``
holds the members as of this run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from ..api.client import KlaviyoClient
from ..api.query import Query
from ..config import ImportConfig
from ..store.membership import MembershipWriter
from ..store.warehouse import Warehouse
from .fetch import Fetcher, plan_tasks
from .partition import Window
from .streams import Stream

GROUPS = {"list_id": ("get_lists", "list_id"), "segment_id": ("get_segments", "segment_id")}
ONE = {"list_id": ("get_list", "list"), "segment_id": ("get_segment", "segment")}
#: Each window costs at least one request: a group gets one window per this many members
#: (4 pages of 100), so a 400-member list is one request sequence and a big one gets them all.
MEMBERS_PER_WINDOW = 400

#: (client, stream, API time field, lo, hi, now, window count, path params) -> the windows to fetch
WindowsFor = Callable[
    [KlaviyoClient, Stream, str | None, datetime | None, datetime | None, datetime, int, dict[str, str]],
    Awaitable[list[Window]],
]


class MembershipResult(Protocol):
    """What a membership run fills in of the import's result (``runner.ImportResult``)."""

    rows: int
    pages: int
    committed: bool
    joined: int | None
    left: int | None


def _group_key(s: Stream) -> str:
    """The group column of a membership stream (``list_id`` / ``segment_id``)."""
    if s.membership is None:
        raise ValueError(f"{s.name} is not a membership stream")
    return s.membership


async def member_count(client: KlaviyoClient, s: Stream, group: str) -> int | None:
    operation, kind = ONE[_group_key(s)]
    doc = await client.request(operation, path_params={"id": group}, query=Query(additional_fields={kind: ["profile_count"]}))
    count = (((doc or {}).get("data") or {}).get("attributes") or {}).get("profile_count")
    return count if isinstance(count, int) else None


async def group_ids(client: KlaviyoClient, s: Stream, config: ImportConfig) -> tuple[list[str], bool]:
    """(the groups to read, whether they are all the account's groups)."""
    operation, setting = GROUPS[_group_key(s)]
    chosen = getattr(config.source, setting)
    if chosen:
        return [chosen], False
    return [record["id"] async for record in client.records(operation)], True


async def run_membership(
    client: KlaviyoClient,
    s: Stream,
    config: ImportConfig,
    warehouse: Warehouse,
    database: str,
    table: str,
    job: str,
    now: datetime,
    concurrency: int,
    window_count: int,
    on_batch: Callable[..., None] | None,
    result: MembershipResult,
    windows_for: WindowsFor,
) -> None:
    groups, every_group = await group_ids(client, s, config)
    columns = s.columns()
    with MembershipWriter(warehouse, database, table, _group_key(s)) as writer:
        for group in groups:
            path = {"id": group}
            count = await member_count(client, s, group)
            parts = window_count if count is None else max(1, min(window_count, count // MEMBERS_PER_WINDOW))
            windows = await windows_for(client, s, "joined_group_at", None, None, now, parts, path)
            tasks = plan_tasks(s, time_field="joined_group_at" if windows else None, windows=windows)
            fetcher = Fetcher(
                client,
                s,
                columns,
                time_column="joined_at",
                path_params=path,
                concurrency=concurrency,
                marks={"_parent_id": group},
            )
            async for batch in fetcher.batches(tasks):
                await asyncio.to_thread(writer.write, batch)
                result.rows += batch.num_rows
                if on_batch:
                    on_batch(batch.num_rows, fetcher.stats.pages, (fetcher.stats.tasks_done, fetcher.stats.tasks))
            result.pages += fetcher.stats.pages
        changes = await asyncio.to_thread(writer.commit, groups, now, every_group=every_group, cursors={job: now.isoformat()})
    result.committed = True
    result.joined, result.left = changes.joined, changes.left
