"""What the HTTP face reads and calls, handed to it by the daemon: never the daemon itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dutyd.collectors.base import TargetConfig
from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.latest import LatestSamples
from dutyd.duty.config import RoomConfig
from dutyd.duty.drill import Drills
from dutyd.duty.entries import EntryRegister
from dutyd.duty.handover import ShiftCheckIn
from dutyd.duty.operations import DutyOperations
from dutyd.notify.service import NotifyService
from dutyd.storage import Storage
from dutyd.web.server import HttpServer


@dataclass(frozen=True, slots=True)
class WebContext:
    operations: DutyOperations
    drills: Drills
    entries: EntryRegister
    handover: ShiftCheckIn
    rooms: Callable[[], Sequence[RoomConfig]]
    notify: NotifyService
    storage: Storage
    latest: LatestSamples
    server: HttpServer
    # Read at each request: a reload changes them.
    api_token: Callable[[], str | None]
    read_token: Callable[[], str | None]
    open_loopback_reads: Callable[[], bool]
    targets: Callable[[], Sequence[TargetConfig]]
    language: Callable[[], str]
    timezone: Callable[[], str]
    # This node's place in the cluster (active or standby, the active node, members).
    cluster: Callable[[], dict[str, Any]] = field(default=lambda: {"enabled": False})
    # Every target's parents (configured, and learned from LLDP or forwarding tables for
    # `depends_on: auto`).
    topology: Callable[[], dict[str, Any]] = field(default=lambda: {"parents": {}, "learned": {}})
    # The daemon's clock: "now" for the API (an ack's expiry, a silence's end, who is on duty,
    # an ack link's expiry) and the status page, so they agree with the engine and escalation.
    clock: Clock = SYSTEM_CLOCK
