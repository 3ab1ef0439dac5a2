"""Arrow's allocator: which one a process should use, chosen by the process, not by an engine.

Exports build many short-lived Arrow arrays a chunk at a time; with Arrow's default pool
(mimalloc) a 1M-row export peaked about 25 MB higher than with jemalloc, which hands freed
pages back sooner. Arrow's default pool is process-wide, so the engines never set it: the
process entry points do, once, with ``use_lean_arrow_pool()``: the ``klaviyo-bridge`` command once
a verb that uses Arrow has loaded it (``cli/__init__.py``; its ``main`` fixes malloc, below, for
every verb), the console verb after loading the web app, the benchmarks standing in for them.
An ``ARROW_DEFAULT_MEMORY_POOL`` set by the user wins.

glibc's malloc raises its mmap threshold to the size of the largest mmapped block freed (up to
32 MB): after the first request body of a few MB is freed, every later body, response and
DuckDB/orjson buffer of that size comes from the heap, whose freed holes are seldom handed back.
A fixed threshold keeps blocks over it in their own mappings, returned to the system on
``free``: a 1M-row export peaked 20-50 MB lower (docs/benchmarks.md). Not glibc's initial
128 KiB: an import copies each ~2 MB page several times on its way in (socket chunks, the HTTP
parser, the body), and with every such copy in a fresh mapping the kernel's page faults and
unmaps cost a 1M-event import 8-10 CPU-seconds of 12 (1.6x its wall time); at 4 MiB the import
is as fast as with glibc's default and the export as small as at 128 KiB. A
``MALLOC_MMAP_THRESHOLD_`` (or ``MALLOC_TRIM_THRESHOLD_``) set by the user wins.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

#: mallopt(3) parameter number (malloc.h) and the value (see above).
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024

_malloc_done = False


def lean_arrow_pool() -> pa.MemoryPool | None:
    """The pool a process that exports should allocate from (jemalloc), or None to keep Arrow's
    default: the user chose one (``ARROW_DEFAULT_MEMORY_POOL``), or this build has no jemalloc."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return None
    # Deferred (tests/test_layers.py ALLOWED): the CLI fixes malloc before any verb, and loads
    # Arrow only with the verbs that use it.
    import pyarrow as pa

    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return None


def use_lean_arrow_pool() -> None:
    """Make ``lean_arrow_pool()`` this process's default pool, and fix glibc's mmap threshold
    (``use_lean_malloc``). For process entry points only."""
    use_lean_malloc()
    pool = lean_arrow_pool()
    if pool is None:
        return
    import pyarrow as pa  # deferred, as above

    if pa.default_memory_pool().backend_name != pool.backend_name:
        pa.set_memory_pool(pool)


def use_lean_malloc() -> bool:
    """Fix glibc's mmap threshold (once per process); False where it does not apply."""
    global _malloc_done
    if _malloc_done:
        return True
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _malloc_done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _malloc_done


_trim: Callable[[int], int] | None = None
_trim_looked_up = False


def release_free_memory() -> None:
    """Hand the free pages inside glibc's heaps back to the system (``malloc_trim``; nothing
    elsewhere). Blocks under the mmap threshold come from the heaps, and glibc returns only the
    free space at a heap's top: the holes a batch's request body, payloads and row outcomes
    leave stay resident. An export calls this after each batch, off its event loop (~0.7 ms):
    a 1M-row export peaked 10-18 MB lower (docs/benchmarks.md)."""
    global _trim, _trim_looked_up
    if not _trim_looked_up:
        _trim_looked_up = True
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                trim = ctypes.CDLL(None).malloc_trim
            except (OSError, AttributeError):
                pass
            else:
                trim.argtypes = [ctypes.c_size_t]
                trim.restype = ctypes.c_int
                _trim = trim
    if _trim is not None:
        _trim(0)
