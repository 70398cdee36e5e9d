"""The fencing epoch the notification service's writes carry in a pair, and their refusal.

Every write on a message (claim, reschedule, drop, delivered) and every duty-log entry of a
delivery carries the epoch of the lease this node sends under; once another node holds the
lease, the store refuses them (`FencedOut`). A node that lost the lease keeps writing with
the last epoch it had, so it is refused rather than let through; each refusal is counted
(`dutyd_cluster_fenced_writes_total`) and logged once per epoch, not once per write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dutyd.storage import FencedOut

log = logging.getLogger("dutyd.notify")


class WriteEpochs:
    """The epoch of this node's writes; None for a node alone, whose writes are not fenced."""

    def __init__(
        self,
        sender: Callable[[], tuple[str, int] | None] | None,
        count_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self.sender = sender  # (node, epoch) while the active notifier, else None
        self._count_refused = count_refused  # dutyd_cluster_fenced_writes_total
        self.last = 0  # the epoch this node last sent under
        self._refused: int | None = None

    def current(self) -> int | None:
        """The epoch this node's writes carry: the one it sends under, else the last one;
        None alone."""
        if self.sender is None:
            return None
        who = self.sender()
        if who is not None:
            self.last = who[1]
        return self.last

    def refused(self, epoch: int | None, exc: FencedOut) -> None:
        """A write of `epoch` was refused: counted each time, logged once per epoch (every
        write after the first is refused for the same reason)."""
        self._count_refused()
        if self._refused == epoch:
            return
        self._refused = epoch
        log.warning(
            "this node's outbox writes are fenced: another node holds the notifier lease",
            extra={"fields": {"epoch": epoch, "error": str(exc)}},
        )
