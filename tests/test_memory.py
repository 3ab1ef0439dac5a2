"""Allocator policy (memory.py), in fresh processes: what a process holds is measured, not assumed."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


@glibc
def test_release_free_memory_hands_back_the_holes_a_heap_keeps():
    """60 MB of freed 1 KB blocks below a block still in use stay resident (glibc trims only a
    heap's free top) until ``release_free_memory``."""
    code = (
        "import gc\n"
        "from klaviyo_bridge.memory import release_free_memory\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "blocks = [bytes(1000) for _ in range(60_000)]\n"
        "keep = bytes(1000)  # allocated after them: the heap's top stays in use\n"
        "del blocks\n"
        "gc.collect()\n"
        "held = rss()\n"
        "release_free_memory()\n"
        "print(held - rss())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 40 * 2**20, f"only {int(done.stdout) >> 20} MB handed back"


def test_release_free_memory_is_harmless_to_call_again():
    from klaviyo_bridge.memory import release_free_memory

    release_free_memory()
    release_free_memory()
