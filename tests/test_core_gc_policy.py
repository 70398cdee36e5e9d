"""The daemon's garbage-collector policy, in a fresh interpreter (it changes process-wide
state that the test process must not inherit)."""

from __future__ import annotations

import json
import subprocess
import sys

from dutyd.core.gc_policy import DAEMON_THRESHOLDS

PROBE = """
import gc, json, weakref
import dutyd.agent.config  # what `dutyd run` has imported when it applies the policy
from dutyd.core import gc_policy

tracked_before = len(gc.get_objects())
gc_policy.configure_for_daemon()
tracked_after = len(gc.get_objects())

class Node:
    pass

# Reference cycles made after start-up (as asyncio's futures and exceptions make them) are
# still found by the collector on its own, with no gc.collect().
freed = [0]
def count(_ref):
    freed[0] += 1
refs = []
for _ in range(200_000):
    a, b = Node(), Node()
    a.other, b.other = b, a
    refs.append(weakref.ref(a, count))
    del a, b
print(json.dumps({
    "threshold": gc.get_threshold(),
    "frozen": gc.get_freeze_count(),
    "tracked_before": tracked_before,
    "tracked_after": tracked_after,
    "cycles_freed": freed[0],
}))
"""


def test_start_up_objects_are_frozen_and_cycles_are_still_collected() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout)
    assert tuple(result["threshold"]) == DAEMON_THRESHOLDS
    # The imported modules' objects are out of the collector's sight.
    assert result["frozen"] > 10_000
    assert result["tracked_after"] < result["tracked_before"] / 10
    # All but the last young generation's worth of the 200,000 cycles were collected.
    assert result["cycles_freed"] >= 200_000 - DAEMON_THRESHOLDS[0]
