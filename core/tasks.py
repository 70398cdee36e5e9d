"""Stopping a component's background loop: cancelled, then waited for until it has ended, so
nothing of it runs once the component's `close` has returned."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (None: none was started) and wait for it to end; its cancellation is not
    raised here."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
