"""Event loop lag: a timer that should fire every `tick` seconds, and how late it fires. A
stalled loop (a blocking call, a CPU hog, a frozen process) delays every poll, escalation and
heartbeat; it is logged and counted so it is seen."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("dutyd.cluster")


class LoopLag:
    def __init__(
        self,
        stall_after: float = 2.0,
        tick: float = 0.5,
        on_stall: Callable[[float], None] = lambda lag: None,
    ) -> None:
        self.stall_after = stall_after
        self.tick = tick
        self.on_stall = on_stall
        self.lag = 0.0  # the last measurement, seconds
        self.stalls = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.tick)
            self.lag = max(0.0, time.monotonic() - before - self.tick)
            if self.lag >= self.stall_after:
                self.stalls += 1
                self.on_stall(self.lag)
                log.error("event loop stalled", extra={"fields": {"late_s": round(self.lag, 3)}})
