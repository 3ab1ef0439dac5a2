"""Arrow's allocator: which one a process should use, chosen by the process, not by an engine.

Exports build many short-lived Arrow arrays a chunk at a time; with Arrow's default pool
(mimalloc) a 1M-row export peaked about 25 MB higher than with jemalloc, which hands freed
pages back sooner. Arrow's default pool is process-wide, so the engines never set it: the
process entry points do (``klaviyo-bridge``'s ``main``, the benchmarks standing in for it), once,
with ``use_lean_arrow_pool()``. An ``ARROW_DEFAULT_MEMORY_POOL`` set by the user wins.
"""

from __future__ import annotations

import os

import pyarrow as pa


def lean_arrow_pool() -> pa.MemoryPool | None:
    """The pool a process that exports should allocate from (jemalloc), or None to keep Arrow's
    default: the user chose one (``ARROW_DEFAULT_MEMORY_POOL``), or this build has no jemalloc."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return None
    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return None


def use_lean_arrow_pool() -> None:
    """Make ``lean_arrow_pool()`` this process's default pool. For process entry points only."""
    pool = lean_arrow_pool()
    if pool is not None and pa.default_memory_pool().backend_name != pool.backend_name:
        pa.set_memory_pool(pool)
