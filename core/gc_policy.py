"""How the daemon's process uses Python's cyclic garbage collector.

A big site keeps most of its memory in objects that are never part of a reference cycle: the
latest samples (one object per series, ~800,000 at 5,000 devices), replaced poll after poll
and freed by reference counting. With CPython's default thresholds (700, 10, 10) those
samples kept reaching the oldest generation, and each full collection walked all of them
with the event loop stopped. Measured on the bench fleet at 5,000 devices (`python -m
bench.fleet`, `dutyd run`, 2 cores): 22 full collections in five minutes, up to 1.1 s each;
over three minutes after warm-up 2.5 % of polls started more than 25 ms late and 0.9 % more
than 0.25 s (/metrics, escalation and HTTP waited as long).

So `dutyd run` changes two things (the `gc` module's documented knobs):
* what start-up built (imported modules, the validated config) is moved out of the
  collector's sight with `gc.freeze()`: it lives as long as the process;
* the youngest generation is collected every 50,000 net allocations instead of 700, and the
  oldest is considered only after 100 collections of the middle one. Cycles (asyncio's
  futures and exceptions) are still found in the young generations, where they nearly all
  die. (10,000 was tried: collections of the youngest generation then came every 30-50 s
  and took up to 0.5 s each.)

The same run with this policy: no full collection after start-up, 0.4 % of polls more than
25 ms late and 0.13 % more than 0.25 s, 20.8 % of a core instead of 24.8 %, RSS within 1 %
(435.0 vs 430.4 MiB; at 1,000 devices 147.4 vs 146.5 MiB).
"""

from __future__ import annotations

import gc

# (youngest, middle, oldest): see the module docstring for the measurements behind them.
DAEMON_THRESHOLDS = (50_000, 20, 100)


def configure_for_daemon() -> None:
    """Collect start-up garbage, freeze what is left, and set the daemon's thresholds.
    Call once, after the configuration is loaded and before the event loop starts."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*DAEMON_THRESHOLDS)
