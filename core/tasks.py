"""The background loops of a component: started watched, stopped waited for.

`LoopWatch` starts a long-lived loop as a task and watches its end: a loop ends only when it
is cancelled (a stop). One that ends otherwise (an error nothing inside it caught, or a
return) is a fault of dutyd's own: said at once, with its traceback, and handed to `on_end`
(the daemon stops with a failure status, so its supervisor restarts it and, in a cluster, the
standby takes over). Unwatched, such a task ends in silence: its error is kept in the task
until the stop's `gather` discards it, and the daemon goes on looking healthy without, say,
sending a page.

`cancel_and_wait` stops one loop: cancelled, then waited for until it has ended, so nothing of
it runs once the component's `close` has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("dutyd")


class LoopWatch:
    def __init__(self, on_end: Callable[[str, str], None] = lambda name, why: None) -> None:
        self.on_end = on_end
        self.ended: dict[str, str] = {}  # loop name -> why it ended

    def start(self, loop: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(loop, name=name)
        task.add_done_callback(self._ended)
        return task

    def problem(self) -> str | None:
        """What ended, for /readyz; None while every loop runs."""
        if not self.ended:
            return None
        return "a loop of dutyd ended: " + "; ".join(
            f"{name} ({why})" for name, why in sorted(self.ended.items())
        )

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        why = f"{type(exc).__name__}: {exc}"[:300] if exc is not None else "it returned"
        name = task.get_name()
        self.ended[name] = why
        log.critical(
            "a loop of dutyd ended: what it does is no longer done",
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
            extra={"fields": {"loop": name, "why": why}},
        )
        self.on_end(name, why)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (None: none was started) and wait for it to end; its cancellation is not
    raised here."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
