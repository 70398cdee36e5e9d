"""The machine room's entry register and its rules, on the real daemon: `dutyd entry in|out`
through the API, who is in each room (also after a restart), and each rule of the duty pack
paging through real notification channels (a loopback receiver) and resolving, or staying
quiet. The door contact is a coil of a real pyModbusTCP server polled by the Modbus collector,
or a room's webhook with its own token.

The daemon runs on a FakeClock, so two minutes alone or a door held open for five minutes
take a moment, not minutes."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pyModbusTCP.server import DataBank, ModbusServer

from dutyd.agent.cli import main as cli_main
from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.core.clock import FakeClock
from dutyd.core.errors import ConfigError
from dutyd.storage import NewRoomEntry
from tests.peers import free_port
from tests.test_notify_delivery import Receiver

TOKEN = "entry-api-token"
DOOR_TOKEN = "door-b-webhook-token-0123"
PEOPLE = {"Zhang Wei": "zhang", "Li Na": "li", "Wang Fang": "wang"}
# Mid-shift: the next hand-over (20:30 UTC) is hours away.
START = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()
# A minute before the hand-over.
BEFORE_HANDOVER = dt.datetime(2026, 3, 2, 20, 29, tzinfo=dt.UTC).timestamp()


class DoorSensor:
    """A real Modbus TCP server whose coil 0 is room-a's door contact (1 open)."""

    def __init__(self) -> None:
        self.bank = DataBank()
        self.port = free_port()
        self.server = ModbusServer(
            host="127.0.0.1", port=self.port, no_block=True, data_bank=self.bank
        )
        self.server.start()

    def set(self, is_open: bool) -> None:
        self.bank.set_coils(0, [is_open])

    def stop(self) -> None:
        self.server.stop()


def site(tmp: Path, receiver: Receiver, door: DoorSensor | None, **extra: Any) -> dict[str, Any]:
    targets = []
    if door is not None:
        targets.append(
            {
                "name": "door-a",
                "kind": "modbus",
                "address": f"127.0.0.1:{door.port}",
                "interval": "1s",
                "timeout": "1s",
                "labels": {"room": "room-a"},
                "registers": [{"name": "room_door_open", "address": 0, "table": "coil"}],
            }
        )
    return {
        "targets": targets,
        "http": {"port": 0},
        "storage": {"path": str(tmp / "d.db")},
        "api": {"token": TOKEN},
        "rooms": [
            {"name": "room-a", "approved": ["Zhang Wei", "Li Na"]},
            {"name": "room-b", "door": {"kind": "webhook", "token": DOOR_TOKEN}},
        ],
        "oncall": {
            "timezone": "UTC",
            "handovers": ["08:30", "20:30"],
            "start": "2026-03-01",
            "pairs": [["Zhang Wei", "Li Na"]],
            "people": [{"name": n, "contacts": [c]} for n, c in PEOPLE.items()],
            "roles": {"manager": ["Wang Fang"]},
        },
        "escalation": {
            "policies": [
                {
                    # The machine room's people rules: the on-duty pair, then the manager.
                    "name": "machine-room",
                    "match": {"room": ["room-a", "room-b"]},
                    "steps": [
                        {"after": 0, "oncall": True},
                        {"after": "5m", "roles": ["manager"]},
                    ],
                }
            ]
        },
        "notify": {
            "channels": {c: {"url": receiver.url(c)} for c in PEOPLE.values()},
            "group_wait": 0,
        },
        **extra,
    }


class Site:
    def __init__(
        self, daemon: Daemon, clock: FakeClock, receiver: Receiver, door: DoorSensor | None
    ) -> None:
        self.daemon, self.clock, self.receiver = daemon, clock, receiver
        self._door = door
        self.entries = daemon.entries

    async def until(self, done: Callable[[], bool], within: float = 15.0) -> None:
        """Run the daemon until `done()`, the fake clock moving as fast as the real one."""
        deadline = time.monotonic() + within
        while not done():
            assert time.monotonic() < deadline, f"not done in time; got {self.pages()}"
            await self.clock.advance(0.01)
            await asyncio.sleep(0.01)

    async def run_for(self, seconds: float) -> None:
        """Let `seconds` of real time pass with the clock keeping pace (nothing due is lost)."""
        for _ in range(int(seconds / 0.01)):
            await self.clock.advance(0.01)
            await asyncio.sleep(0.01)

    @property
    def door(self) -> DoorSensor:
        assert self._door is not None
        return self._door

    def pages(self) -> list[tuple[str, str]]:
        """(who, first words of the message) of each message the receiver got."""
        return [(r["path"].strip("/"), r["body"]["message"]) for r in self.receiver.received]

    def to(self, *who: str) -> bool:
        got = [p for p, _ in self.pages()]
        return all(w in got for w in who)

    def alerts(self, rule: str) -> list[dict[str, Any]]:
        return [a for a in self.daemon.operations.list_alerts() if a["rule"] == rule]


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Site] = []

    async def make(door: bool = False, start: float = START, **extra: Any) -> Site:
        receiver = Receiver()
        await receiver.start()
        sensor = DoorSensor() if door else None
        clock = FakeClock(wall_start=start)
        daemon = Daemon(load_from_dict(site(tmp_path, receiver, sensor, **extra)), clock=clock)
        one = Site(daemon, clock, receiver, sensor)
        started.append(one)
        await daemon.start()
        return one

    yield make
    for one in started:  # the daemon it runs now (a test may have restarted it)
        await one.daemon.stop()
        await one.receiver.stop()
        if one._door is not None:
            one._door.stop()


async def test_room_entered_alone_pages_the_pair_then_the_manager_and_resolves(make_site) -> None:
    s: Site = await make_site()
    await s.entries.enter("room-a", "Zhang Wei", "Zhang Wei", purpose="disk swap")
    # Within the two-minute grace: pending, nobody paged.
    await s.clock.advance(100)
    await s.run_for(0.3)
    assert s.pages() == []
    assert [a["state"] for a in s.alerts("room_entered_alone")] == ["pending"]
    await s.clock.advance(21)
    await s.until(lambda: s.to("zhang", "li"))
    assert sorted(p for p, _ in s.pages()) == ["li", "zhang"]
    assert "alone in machine room room-a" in s.pages()[0][1]
    # Nobody took it: five minutes on, the manager.
    await s.clock.advance(300)
    await s.until(lambda: s.to("wang"))
    assert len(s.pages()) == 3
    # The second person comes in: resolved, and everyone paged is told.
    await s.entries.enter("room-a", "Li Na", "Li Na", purpose="disk swap")
    await s.until(lambda: len(s.pages()) == 6)
    resolves = sorted(p for p, m in s.pages()[3:])
    assert resolves == ["li", "wang", "zhang"]
    assert all("no longer occupied by one person" in m for _, m in s.pages()[3:])
    assert [a["state"] for a in s.alerts("room_entered_alone")] == ["resolved"]


async def test_two_people_together_stay_quiet(make_site) -> None:
    s: Site = await make_site()
    await s.entries.enter("room-a", "Zhang Wei", "Zhang Wei", ["Li Na"], "cabling", "patch cords")
    await s.clock.advance(600)
    # Both leave together: never one alone.
    await s.entries.leave("room-a", "Li Na", "Li Na", ["Zhang Wei"])
    await s.clock.advance(600)
    await s.run_for(0.5)
    assert s.pages() == []
    assert s.daemon.operations.list_alerts() == []


async def test_modbus_door_opening_with_nobody_registered_pages_at_once(make_site) -> None:
    s: Site = await make_site(door=True)
    s.door.set(True)
    await s.until(lambda: s.to("zhang", "li"), within=20)
    assert "door of machine room room-a is open" in s.pages()[0][1]
    (alert,) = s.alerts("room_door_open_unregistered")
    assert alert["state"] == "firing" and alert["labels"]["room"] == "room-a"
    # Zhang Wei registers (he is on the room's approved list): resolved.
    await s.entries.enter("room-a", "Zhang Wei", "Zhang Wei", ["Li Na"], "fan alarm")
    await s.until(lambda: len(s.pages()) == 4)
    assert [a["state"] for a in s.alerts("room_door_open_unregistered")] == ["resolved"]


async def test_modbus_door_with_an_approved_person_in_stays_quiet(make_site) -> None:
    s: Site = await make_site(door=True)
    await s.entries.enter("room-a", "Zhang Wei", "Zhang Wei", ["Li Na"], "fan alarm")
    s.door.set(True)
    await s.until(lambda: s.entries.state["room-a"].door_open is True, within=20)
    s.door.set(False)
    await s.until(lambda: s.entries.state["room-a"].door_open is False, within=20)
    await s.run_for(0.5)
    assert s.pages() == []
    assert s.alerts("room_door_open_unregistered") == []


async def test_a_visitor_without_approval_does_not_open_the_door_unnoticed(make_site) -> None:
    s: Site = await make_site(door=True)
    # Not on room-a's approved list, and nobody approved the visit.
    await s.entries.enter("room-a", "Vendor Engineer", "Zhang Wei", purpose="array firmware")
    s.door.set(True)
    await s.until(lambda: s.to("zhang", "li"), within=20)
    assert [a["state"] for a in s.alerts("room_door_open_unregistered")] == ["firing"]
    (view,) = [r for r in s.entries.rooms_view() if r["room"] == "room-a"]
    assert [(p["person"], p["approved"]) for p in view["people"]] == [("Vendor Engineer", False)]


async def test_door_webhook_held_open_pages_after_five_minutes_and_resolves(make_site) -> None:
    s: Site = await make_site()
    await s.entries.enter("room-b", "Zhang Wei", "Zhang Wei", ["Li Na"], "rack move")
    async with aiohttp.ClientSession() as http:
        url = f"{s.daemon.http.url}/api/v1/doors/room-b"
        async with http.post(url, json={"open": True}, headers={"X-Dutyd-Token": DOOR_TOKEN}) as r:
            assert r.status == 200, await r.text()
        await s.clock.advance(240)
        await s.run_for(0.3)
        assert s.pages() == []  # four minutes: not yet
        await s.clock.advance(61)
        await s.until(lambda: s.to("zhang", "li"))
        assert "door of machine room room-b has been open" in s.pages()[0][1]
        async with http.post(url, json={"open": False}, headers={"X-Dutyd-Token": DOOR_TOKEN}) as r:
            assert r.status == 200
        await s.until(lambda: len(s.pages()) == 4)
        assert all("shut again" in m for _, m in s.pages()[2:])
    log = await s.daemon.storage.log.read(kinds=["door."])
    assert [(e.kind, e.actor) for e in log] == [
        ("door.open", "door:room-b"),
        ("door.shut", "door:room-b"),
    ]


async def test_door_webhook_needs_the_doors_own_token(make_site) -> None:
    s: Site = await make_site()
    async with aiohttp.ClientSession() as http:
        base = f"{s.daemon.http.url}/api/v1/doors"

        async def post(path: str, token: str, body: Any) -> int:
            async with http.post(
                f"{base}/{path}", json=body, headers={"X-Dutyd-Token": token}
            ) as r:
                return r.status

        assert await post("room-b", TOKEN, {"open": True}) == 401  # the API token is not it
        assert await post("room-a", DOOR_TOKEN, {"open": True}) == 401  # room-a has no webhook
        assert await post("nowhere", DOOR_TOKEN, {"open": True}) == 401
        assert await post("room-b", DOOR_TOKEN, {"open": "yes"}) == 400
        assert s.entries.state["room-b"].door_open is None
        assert await post("room-b", DOOR_TOKEN, {"open": False}) == 200
        assert s.entries.state["room-b"].door_open is False


async def test_room_occupied_at_handover_pages_and_resolves_when_the_room_empties(
    make_site,
) -> None:
    s: Site = await make_site(start=BEFORE_HANDOVER)
    await s.entries.enter("room-a", "Zhang Wei", "Zhang Wei", ["Li Na"], "night work")
    await s.run_for(0.2)
    assert s.pages() == []
    await s.clock.advance(61)  # past 20:30
    await s.until(lambda: s.to("zhang", "li"))
    assert "still registered in machine room room-a at the end of the shift" in s.pages()[0][1]
    await s.entries.leave("room-a", "Zhang Wei", "Zhang Wei", ["Li Na"])
    await s.until(lambda: len(s.pages()) == 4)
    assert [a["state"] for a in s.alerts("room_occupied_at_handover")] == ["resolved"]


async def test_an_empty_room_at_handover_stays_quiet(make_site) -> None:
    s: Site = await make_site(start=BEFORE_HANDOVER)
    await s.entries.enter("room-a", "Zhang Wei", "Zhang Wei", ["Li Na"], "check")
    await s.entries.leave("room-a", "Zhang Wei", "Zhang Wei", ["Li Na"])
    await s.clock.advance(61)
    await s.run_for(1.5)
    assert s.pages() == []
    assert s.alerts("room_occupied_at_handover") == []


async def test_entry_in_and_out_through_the_cli_and_who_is_in_after_a_restart(
    make_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s: Site = await make_site()
    url = s.daemon.http.url
    monkeypatch.setenv("DUTYD_API_TOKEN", TOKEN)
    monkeypatch.delenv("DUTYD_CONFIG", raising=False)

    def dutyd(*argv: str) -> int:
        return cli_main(["entry", *argv, "--url", url])

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(dutyd, *argv)
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = await run(
        "in", "--room", "room-a", "--person", "Zhang Wei", "--with", "Li Na",
        "--purpose", "更换硬盘", "--items", "2 × SAS disk", "--actor", "Zhang Wei",
    )  # fmt: skip
    assert code == 0 and "Zhang Wei in room-a" in out and "Li Na in room-a" in out
    # Refusals say why, and nothing is written.
    with pytest.raises(SystemExit, match="Li Na is registered in room-a already"):
        await run("in", "--room", "room-a", "--person", "Li Na", "--purpose", "x")
    with pytest.raises(SystemExit, match="no room 'room-z'"):
        await run("in", "--room", "room-z", "--person", "Li Na", "--purpose", "x")
    with pytest.raises(SystemExit, match="purpose"):
        await run("in", "--room", "room-b", "--person", "Li Na")
    with pytest.raises(SystemExit, match="Wang Fang is not registered in room-a"):
        await run("out", "--room", "room-a", "--person", "Wang Fang")
    code, out, _ = await run("out", "--room", "room-a", "--person", "Li Na", "--items", "old disk")
    assert code == 0 and "Li Na out room-a" in out
    code, out, _ = await run("who")
    assert "room-a: door unknown, 1 in" in out
    assert "Zhang Wei since 2026-03-02 12:00:00 UTC: 更换硬盘 (carrying 2 × SAS disk)" in out
    assert "room-b: door unknown, 0 in" in out

    # The register: one line per person, each naming the others.
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{url}/api/v1/entries?room=room-a", headers={"X-Dutyd-Token": TOKEN}
        ) as r:
            lines = (await r.json())["entries"]
        async with http.post(f"{url}/api/v1/entries", json={"room": "room-a"}) as r:
            assert r.status in (401, 403)  # writes need the API token
    assert [(e["person"], e["direction"], e["with"], e["items"]) for e in lines] == [
        ("Zhang Wei", "in", ["Li Na"], "2 × SAS disk"),
        ("Li Na", "in", ["Zhang Wei"], "2 × SAS disk"),
        ("Li Na", "out", [], "old disk"),
    ]
    log = await s.daemon.storage.log.read(kinds=["entry."])
    assert [(e.kind, e.actor, e.data["people"]) for e in log] == [
        ("entry.in", "Zhang Wei", ["Zhang Wei", "Li Na"]),
        ("entry.out", getpass.getuser(), ["Li Na"]),
    ]

    # A restart rebuilds who is in from the register.
    await s.daemon.stop()
    s.daemon = Daemon(s.daemon.settings, clock=s.clock)
    await s.daemon.start()
    (room_a,) = [r for r in s.daemon.entries.rooms_view() if r["room"] == "room-a"]
    assert [p["person"] for p in room_a["people"]] == ["Zhang Wei"]
    assert room_a["people"][0]["purpose"] == "更换硬盘"


@pytest.mark.parametrize(
    ("rooms", "problem"),
    [
        ([{"name": "A"}, {"name": "A"}], "rooms: room names must be unique: A"),
        ([{"name": "A/../b"}], "rooms[0].name"),
        ([{"name": "A", "door": {"kind": "webhook"}}], "needs its token"),
        ([{"name": "A", "door": {"kind": "webhook", "token": "short"}}], "at least 16"),
        ([{"name": "A", "doors": []}], "rooms[0].doors"),
    ],
)
def test_bad_rooms_are_refused_with_their_key_path(rooms: list[Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_from_dict({"rooms": rooms}, "dutyd.yaml")
    assert problem in err.value.report()


async def test_an_entry_written_by_another_node_is_seen_and_paged(make_site) -> None:
    """In a cluster the store is shared: a registration made through another node reaches
    this node's rules within the sync period."""
    s: Site = await make_site()
    await s.daemon.storage.room_entries.append(
        [NewRoomEntry(s.clock.time(), "room-a", "Zhang Wei", "in", (), "cabling", "", "", "x")]
    )
    await s.clock.advance(11)
    await s.until(lambda: bool(s.entries.state["room-a"].inside))
    (room_a,) = [r for r in s.entries.rooms_view() if r["room"] == "room-a"]
    assert [p["person"] for p in room_a["people"]] == ["Zhang Wei"]
    await s.clock.advance(121)
    await s.until(lambda: s.to("zhang", "li"))
    assert "alone in machine room room-a" in s.pages()[0][1]
