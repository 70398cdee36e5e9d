"""The machine room's entry register and the rules about people in the room.

Who goes in or out of which room (with whom, why, carrying what) is written to the
append-only register (`storage.room_entries`) and to the duty log; who is in each room now is
kept here, rebuilt from the register at start. The duty pack's rules see it as samples dutyd
produces itself, labelled `{target="dutyd", kind="register", room=...}`, through
`DutyOperations.ingest_samples`, as drills do:

- `room_people_inside`: how many are registered in (`room_entered_alone`: 1 for 2 minutes);
- `room_door_open_unregistered`: 1 while the door is open and no approved person is in (a
  person on the room's `approved` list, or let in with `approved_by`);
- `room_occupied_at_handover`: 1 from a shift hand-over that found someone in, until the
  room is empty.

The door contact is the sample `room_door_open{room=...}` of any target (a Modbus coil, an
SNMP value), observed on every poll, or of an SNMP trap (`traps.maps`; the daemon hands a
trap's samples here as they reach the rules), or a room's webhook (`door_event`), which also feeds
`room_door_open` to the rules (`room_door_held_open`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.records import Sample
from dutyd.core.tasks import cancel_and_wait
from dutyd.duty.config import RoomConfig
from dutyd.duty.doorshare import DoorChange, DoorShare, door_entry
from dutyd.duty.operations import DutyOperations
from dutyd.notify.oncall import Rota
from dutyd.storage import NewRoomEntry, RoomEntry, Storage

log = logging.getLogger("dutyd.entries")

PEOPLE_INSIDE = "room_people_inside"
DOOR_OPEN = "room_door_open"
DOOR_UNREGISTERED = "room_door_open_unregistered"
OCCUPIED_AT_HANDOVER = "room_occupied_at_handover"
# How often the hand-over watch looks at the rota.
HANDOVER_CHECK = 1.0
# How often who is in is read again from the store: in a cluster another node may have
# registered someone (the store is shared).
SYNC_EVERY = 10.0
MAX_TEXT = 500
MAX_COMPANIONS = 20


def room_labels(room: str) -> dict[str, str]:
    return {"target": "dutyd", "kind": "register", "room": room}


@dataclass
class RoomState:
    inside: dict[str, RoomEntry] = field(default_factory=dict)  # person -> their "in" line
    door_open: bool | None = None  # None: no door contact heard from yet
    door_since: float | None = None
    occupied_at_handover: bool = False


def _text(value: str, what: str, required: bool = False) -> str:
    value = (value or "").strip()
    if required and not value:
        raise ValueError(f"{what} is required")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} is longer than {MAX_TEXT} characters")
    return value


class EntryRegister:
    def __init__(
        self,
        rooms: Callable[[], Sequence[RoomConfig]],
        people: Callable[[], Collection[str]],
        rota: Callable[[], Rota],
        operations: DutyOperations,
        storage: Storage,
        clock: Clock = SYSTEM_CLOCK,
        doors: DoorShare | None = None,
    ) -> None:
        """`doors`: in a cluster, the door changes this node writes for the others and reads
        from them (`duty.doorshare`); None alone."""
        # Callables: a reload changes the rooms, the people and the rota.
        self._rooms = rooms
        self._people = people
        self._rota = rota
        self._operations = operations
        self._storage = storage
        self._clock = clock
        self.state: dict[str, RoomState] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._shift: int | None = None
        self._doors = doors or DoorShare(storage.log, "", lambda target: True)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild who is in from the register, tell the rules, watch the hand-overs."""
        for line in await self._storage.room_entries.inside():
            self._room(line.room).inside[line.person] = line
        for name in self._configured():
            self._room(name)
        for name in list(self.state):
            self._publish(name)
        for change in await self._doors.others():  # a door another node saw open
            self._apply_remote(change)
        if self._task is None:
            self._task = asyncio.create_task(self._watch_handovers(), name="handover-watch")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # -- the register ---------------------------------------------------------------------------

    async def enter(
        self,
        room: str,
        person: str,
        actor: str,
        companions: Iterable[str] = (),
        purpose: str = "",
        items: str = "",
        approved_by: str = "",
    ) -> list[RoomEntry]:
        """Register `person` and each companion in: one line each (each names the others as
        companions), in one transaction, then the duty log. Refused (ValueError) for a room
        not configured or someone already in."""
        return await self._write(room, person, actor, companions, purpose, items, approved_by, "in")

    async def leave(
        self,
        room: str,
        person: str,
        actor: str,
        companions: Iterable[str] = (),
        purpose: str = "",
        items: str = "",
    ) -> list[RoomEntry]:
        """Register `person` (and companions) out; refused for someone not registered in."""
        return await self._write(room, person, actor, companions, purpose, items, "", "out")

    async def _write(
        self,
        room: str,
        person: str,
        actor: str,
        companions: Iterable[str],
        purpose: str,
        items: str,
        approved_by: str,
        direction: str,
    ) -> list[RoomEntry]:
        room = _text(room, "room", required=True)
        if room not in self._configured():
            known = ", ".join(sorted(self._configured())) or "none configured (rooms:)"
            raise ValueError(f"no room {room!r}; rooms: {known}")
        person = _text(person, "person (who)", required=True)
        actor = _text(actor, "actor", required=True)
        others = [_text(c, "companion") for c in companions]
        others = [c for c in dict.fromkeys(others) if c and c != person]
        if len(others) > MAX_COMPANIONS:
            raise ValueError(f"at most {MAX_COMPANIONS} companions in one registration")
        purpose, items = _text(purpose, "purpose"), _text(items, "items")
        approved_by = _text(approved_by, "approved_by")
        if direction == "in" and not purpose:
            raise ValueError("purpose (why you enter) is required")
        everyone = [person, *others]
        async with self._lock:
            state = self._room(room)
            for who in everyone:
                if direction == "in" and who in state.inside:
                    raise ValueError(f"{who} is registered in {room} already")
                if direction == "out" and who not in state.inside:
                    raise ValueError(f"{who} is not registered in {room}")
            now = self._clock.time()
            lines = [
                NewRoomEntry(
                    now,
                    room,
                    who,
                    direction,
                    tuple(w for w in everyone if w != who),
                    purpose,
                    items,
                    approved_by,
                    actor,
                )
                for who in everyone
            ]
            ids = await self._storage.room_entries.append(lines)
            written = [RoomEntry(i, *_fields(line)) for i, line in zip(ids, lines, strict=True)]
            for line in written:
                if direction == "in":
                    state.inside[line.person] = line
                else:
                    state.inside.pop(line.person, None)
            if not state.inside:
                state.occupied_at_handover = False
            self._publish(room)
        await self._storage.log.append(
            now,
            f"entry.{direction}",
            actor,
            f"room:{room}",
            {
                "room": room,
                "people": everyone,
                "purpose": purpose,
                "items": items,
                "approved_by": approved_by,
            },
        )
        return written

    # -- the door -------------------------------------------------------------------------------

    def observe(self, samples: Iterable[Sample]) -> None:
        """A poll's samples: the door contacts among them (`room_door_open{room=...}`)."""
        rooms = None
        for s in samples:
            if s.name != DOOR_OPEN:
                continue
            rooms = rooms if rooms is not None else self._configured()
            room = s.label("room")
            if room in rooms and s.label("kind") != "register":
                is_open = s.value >= 0.5
                first = self._room(room).door_open is None
                # A door first heard of as shut (every start) is no news to the others.
                if self._door(room, is_open) and not (first and not is_open):
                    change = DoorChange(room, is_open, self._clock.time(), webhook=False)
                    self._doors.seen_on_target(change, s.label("target"))

    async def door_event(self, room: str, is_open: bool, source: str) -> None:
        """The door reported by a room's webhook: fed to the rules as `room_door_open` (its
        held-open rule) and to the register's rules; a change goes to the duty log."""
        now = self._clock.time()
        changed = self._door(room, is_open)
        self._operations.ingest_samples(
            [Sample.of(DOOR_OPEN, 1.0 if is_open else 0.0, now, room_labels(room))]
        )
        if changed:
            change = DoorChange(room, is_open, now, webhook=True)
            await self._storage.log.append_entry(door_entry(change, source, self._doors.node))

    def _apply_remote(self, change: DoorChange) -> None:
        """A door change another node of the cluster saw (`duty.doorshare`). One that came by
        webhook feeds `room_door_open` to the rules too, as `door_event` does (a polled
        contact's own sample is the polling node's: fed here too, its held-open alert would
        page twice)."""
        if change.room not in self._configured():
            return
        self._door(change.room, change.is_open, change.at)
        if change.webhook:
            self._operations.ingest_samples(
                [
                    Sample.of(
                        DOOR_OPEN,
                        1.0 if change.is_open else 0.0,
                        self._clock.time(),
                        room_labels(change.room),
                    )
                ]
            )

    def _door(self, room: str, is_open: bool, at: float | None = None) -> bool:
        state = self._room(room)
        if state.door_open is is_open:
            return False
        state.door_open = is_open
        state.door_since = self._clock.time() if at is None else at
        self._publish(room)
        return True

    # -- hand-overs -----------------------------------------------------------------------------

    async def _watch_handovers(self) -> None:
        synced = self._clock.monotonic()
        while True:
            try:
                self.check_handover(self._clock.time())
                await self._doors.flush()
                if self._clock.monotonic() - synced >= SYNC_EVERY:
                    synced = self._clock.monotonic()
                    await self.sync()
            except Exception:
                log.exception("checking the rooms failed")
            await self._clock.sleep(HANDOVER_CHECK)

    async def sync(self) -> None:
        """Who is in, as the store says (another node of a cluster may have written), and the
        doors the other nodes saw change."""
        for change in await self._doors.others():
            self._apply_remote(change)
        async with self._lock:
            lines = await self._storage.room_entries.inside()
            now: dict[str, dict[str, RoomEntry]] = {}
            for line in lines:
                now.setdefault(line.room, {})[line.person] = line
            for name in set(self.state) | set(now):
                state = self._room(name)
                inside = now.get(name, {})
                if state.inside != inside:
                    state.inside = inside
                    if not inside:
                        state.occupied_at_handover = False
                    self._publish(name)

    def check_handover(self, now: float) -> None:
        """At a shift boundary, mark each room someone is still registered in."""
        rota = self._rota()
        if not rota.config.pairs:
            return
        index = rota.shift_at(now).index
        previous, self._shift = self._shift, index
        if previous is None or previous == index:
            return
        for name, state in self.state.items():
            if state.inside and not state.occupied_at_handover:
                state.occupied_at_handover = True
                self._publish(name)

    # -- views ----------------------------------------------------------------------------------

    def approved(self, room: str, line: RoomEntry) -> bool:
        if line.approved_by:
            return True
        cfg = next((r for r in self._rooms() if r.name == room), None)
        allowed = cfg.approved if cfg is not None and cfg.approved else self._people()
        return line.person in allowed

    def rooms_view(self) -> list[dict[str, Any]]:
        """Each room: its door, and who is in since when, with whom, why, carrying what."""
        out = []
        for name in sorted(set(self._configured()) | set(self.state)):
            state = self._room(name)
            out.append(
                {
                    "room": name,
                    "door_open": state.door_open,
                    "door_since": state.door_since,
                    "occupied_at_handover": state.occupied_at_handover,
                    "people": [
                        {
                            "person": line.person,
                            "since": line.timestamp,
                            "companions": list(line.companions),
                            "purpose": line.purpose,
                            "items": line.items,
                            "approved_by": line.approved_by,
                            "approved": self.approved(name, line),
                        }
                        for line in sorted(state.inside.values(), key=lambda x: x.id)
                    ],
                }
            )
        return out

    # -- inside ---------------------------------------------------------------------------------

    def _configured(self) -> list[str]:
        return [r.name for r in self._rooms()]

    def _room(self, name: str) -> RoomState:
        return self.state.setdefault(name, RoomState())

    def _publish(self, room: str) -> None:
        state = self._room(room)
        approved_in = any(self.approved(room, line) for line in state.inside.values())
        unregistered = bool(state.door_open) and not approved_in
        now = self._clock.time()
        labels = room_labels(room)
        self._operations.ingest_samples(
            [
                Sample.of(PEOPLE_INSIDE, len(state.inside), now, labels),
                Sample.of(DOOR_UNREGISTERED, 1.0 if unregistered else 0.0, now, labels),
                Sample.of(OCCUPIED_AT_HANDOVER, float(state.occupied_at_handover), now, labels),
            ]
        )


def _fields(line: NewRoomEntry) -> tuple[Any, ...]:
    return (
        line.timestamp,
        line.room,
        line.person,
        line.direction,
        line.companions,
        line.purpose,
        line.items,
        line.approved_by,
        line.actor,
    )
