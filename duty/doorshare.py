"""A machine-room door's state shared between the nodes of a cluster, through the duty log.

A node knows a door from what reaches it: the polls of the targets it polls (in a shard, only
its own), the traps its listener takes, the webhooks posted to it. The alert that a door is
open with nobody approved registered in (`room_door_open_unregistered`, labelled
`target="dutyd"`) is recorded by one node only (in a pair the active one, sharded the lease
holder), which may not be the node that saw the door: a webhook posted to the standby, a door
contact polled by another shard's agent. Unshared, that alert never paged.

So in a cluster each door change a node sees is written to the duty log (`door.open` /
`door.shut`, the room, the node, how it was seen) by the node that stands for it: the one
that records the target whose poll or trap showed it (the active node, or the target's shard
owner: the other nodes of a pair poll the same contact and write nothing), and whichever
node a webhook reached. Every node reads the others' entries at its register's sync and takes
the newest state of each room as its own. A node alone writes what it wrote before (its
webhooks' changes) and reads nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dutyd.storage import DutyLogRepository, NewLogEntry

DOOR_KINDS = ("door.open", "door.shut")
# The newest entries read at each sync: more door changes than this between two syncs (10 s)
# are not a door but a broken contact, and the newest are the ones that count.
READ_AT_MOST = 200


@dataclass(frozen=True)
class DoorChange:
    room: str
    is_open: bool
    at: float
    webhook: bool  # seen through a room's webhook (else a poll or a trap of a target)


def door_entry(change: DoorChange, source: str, node: str) -> NewLogEntry:
    data: dict[str, object] = {"room": change.room}
    if node:
        data |= {"node": node, "via": "webhook" if change.webhook else "target"}
    kind = "door.open" if change.is_open else "door.shut"
    return NewLogEntry(change.at, kind, source, f"room:{change.room}", data)


class DoorShare:
    """The duty-log side of a cluster node's door state (see the module docstring)."""

    def __init__(
        self, log: DutyLogRepository, node: str, records_target: Callable[[str], bool]
    ) -> None:
        self._log = log
        self.node = node
        self.records_target = records_target
        self._unwritten: list[NewLogEntry] = []
        self._seen = 0  # the newest door entry read (duty-log id)
        self._started = False  # read once: later reads take every change, in order

    @property
    def shared(self) -> bool:
        return bool(self.node)

    def seen_on_target(self, change: DoorChange, target: str) -> None:
        """A poll's or a trap's change: written at the next `flush` when this node stands for
        the target (polls run outside the event loop's async code)."""
        if self.shared and self.records_target(target):
            self._unwritten.append(door_entry(change, target, self.node))

    async def flush(self) -> None:
        while self._unwritten:
            await self._log.append_entry(self._unwritten[0])
            self._unwritten.pop(0)

    async def others(self) -> list[DoorChange]:
        """The other nodes' door changes since the last call, oldest first (the first call:
        the newest of each room, so a node that starts knows a door opened before)."""
        if not self.shared:
            return []
        entries = await self._log.read(kinds=DOOR_KINDS, limit=READ_AT_MOST, newest_first=True)
        first, self._started = not self._started, True
        fresh = [e for e in entries if e.id > self._seen]
        if fresh:
            self._seen = max(e.id for e in fresh)
        changes = []
        rooms: set[str] = set()
        for e in fresh:  # newest first
            node, room = e.data.get("node"), e.data.get("room")
            if not isinstance(room, str):
                continue
            if first:
                if room in rooms:
                    continue  # an older change of a room whose newest is taken (or is ours)
                rooms.add(room)
            if not node or node == self.node:
                continue
            webhook = e.data.get("via") == "webhook"
            changes.append(DoorChange(room, e.kind == "door.open", e.timestamp, webhook))
        return changes[::-1]
