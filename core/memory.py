"""Handing freed memory back to the operating system.

A /metrics scrape of a large site writes ~20 MB of text in chunks of a few hundred KB. glibc
serves such blocks from its heap once a bigger block was freed (its mmap threshold adapts
upward), and keeps the freed pages: the daemon's RSS rose by a few MiB per scrape pattern and
stayed. `malloc_trim` returns free heap pages; it costs about a millisecond.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        # The process's own symbols: libc is loaded already (find_library would run ldconfig).
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> None:
    """Return the C heap's free pages to the OS, where the C library can (glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
