"""How the viewer's process gives memory back: a long-running server's footprint should be that of the
query at hand, not of the largest it ever ran.

Two allocators hold the memory of a query: polars' (jemalloc), told through its environment variable
before polars loads to return freed pages at once; and the C library's, which numpy's arrays come from.
glibc raises its threshold for serving a large block from its own mapping each time such a block is freed
(up to 32 MB), after which large arrays come from heaps that it keeps, one per thread of the server's
pool. A fixed threshold keeps every large array in a mapping of its own, unmapped when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter; setting it also turns its dynamic raising off
_MMAP_THRESHOLD = 1 << 20  # blocks of 1 MB and more: arrays of a query, not the small objects around them


def return_freed_memory() -> None:
    """Before polars or numpy allocate: freed memory goes back to the system (a no-op off glibc)."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
    if not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): its own policy stands
        return
