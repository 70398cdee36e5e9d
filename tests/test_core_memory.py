"""Freed C-heap memory goes back to the OS after a big scrape (glibc's malloc_trim)."""

from __future__ import annotations

import platform

from dutyd.core import memory


def test_malloc_trim_is_found_on_glibc_and_runs() -> None:
    if platform.libc_ver()[0] == "glibc":
        # The daemon's images and CI are Debian: a missing binding would silently keep the
        # scrape's freed pages, so it must be found here.
        assert memory._malloc_trim() is not None
    # Blocks the size of scrape chunks, freed, then trimmed: must not disturb what is alive.
    kept = [bytearray(300_000) for _ in range(50)][::2]
    memory.release_free_memory()
    assert all(len(b) == 300_000 and not any(b[:16]) for b in kept)
