"""What the registers that write duty-log lines share: they record as the active node only, off
the polls' path (each write a task of its own, one at a time), fenced by the node's epoch, and
wait for their writes on close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.storage import Storage


class RegisterRecorder:
    def __init__(
        self,
        storage: Storage,
        clock: Clock = SYSTEM_CLOCK,
        active: Callable[[], bool] = lambda: True,
        fence: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._active = active
        self._fence = fence  # a node that lost the lease writes no register line
        self._writes: set[asyncio.Task[None]] = set()
        # One write at a time: each compares with what the one before recorded.
        self._lock = asyncio.Lock()

    def _spawn(self, write: Coroutine[Any, Any, None]) -> None:
        """Run a write off the caller's path; `close` waits for it."""
        task = asyncio.create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
