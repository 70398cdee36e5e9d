"""CPU time of one call, for the bounded-time tests of hostile device output.

The time is the calling thread's CPU time (`time.thread_time()`), never the process's: the
suite's process also runs other threads (a Modbus server, executor threads of earlier tests)
whose CPU `time.process_time()` would charge to the decode. CI once failed a 6 ms df parse at
167 ms that way. The garbage collector is held off around the call (a collection of
Hypothesis' heap is not the decoder's work), and a call over its bound is timed twice more,
keeping the least: a linear decoder is fast at least once, a super-linear one never is.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from typing import Any


def least_cpu_seconds(
    bound: float, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Any, float]:
    """(result or the exception raised, least thread CPU seconds of up to three calls)."""
    best = math.inf
    result: Any = None
    for _ in range(3):
        collecting = gc.isenabled()
        gc.disable()
        try:
            started = time.thread_time()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                result = exc
            best = min(best, time.thread_time() - started)
        finally:
            if collecting:
                gc.enable()
        if best < bound:
            break
    return result, best
