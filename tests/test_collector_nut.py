"""The NUT collector against real upsd + dummy-ups, and against scripted misbehaving servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from dutyd.agent.demo import DEVICES
from dutyd.agent.demo.nut_ups import (
    LOW_BATTERY_AT,
    MAINS_BACK_AT,
    MAINS_LOST_AT,
    UPS_NAME,
    NutUpsDevice,
    quote,
)
from dutyd.agent.scheduler import POLL_CANCEL_GRACE, Scheduler
from dutyd.collectors import COLLECTORS
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.nut import (
    MAX_LINE_BYTES,
    MAX_LIST_LINES,
    STATUS_FLAGS,
    NutCollector,
    NutTarget,
    parse_address,
    quote_arg,
    split_line,
)
from dutyd.core.errors import (
    BadCredentials,
    BadResponse,
    CollectError,
    ReadingUnavailable,
    TargetTimeout,
    TargetUnreachable,
)
from tests.nut_fixtures import OL_VARS, FakeNutServer, UpsdPeer, upsd_like
from tests.peers import free_port

FLAG_SAMPLES = list(STATUS_FLAGS.values())


# ----- helpers -----------------------------------------------------------------------------


@pytest.fixture
async def make(context: CollectorContext) -> AsyncIterator[Callable[..., NutCollector]]:
    made: list[NutCollector] = []

    def factory(address: str, **options: Any) -> NutCollector:
        cfg = NutTarget.model_validate(
            {"name": "ups-test", "kind": "nut", "address": address, "timeout": 2, **options}
        )
        collector = NutCollector(cfg, context)
        made.append(collector)
        return collector

    yield factory
    for c in made:
        await c.close()


@pytest.fixture
async def fake() -> AsyncIterator[Callable[..., Any]]:
    servers: list[FakeNutServer] = []

    async def start(script: Callable[[str], bytes | None]) -> FakeNutServer:
        server = await FakeNutServer(script).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        await s.stop()


async def poll(collector: NutCollector) -> dict[tuple[str, str], float]:
    """One poll -> {(sample name, ups label): value}; raises what the collector raises.

    Called without the scheduler, so bounded here as the scheduler bounds it: a poll that
    outlives its timeout fails the test at once instead of hanging it."""
    readings = Readings({"target": collector.config.name, "kind": "nut"}, time.time())
    try:
        async with asyncio.timeout(collector.config.timeout + POLL_CANCEL_GRACE):
            await collector.collect(readings)
    except TimeoutError:
        pytest.fail(f"the NUT poll outlived its {collector.config.timeout}s timeout")
    out: dict[tuple[str, str], float] = {}
    for s in readings.samples:
        assert s.label("target") == collector.config.name
        out[(s.name, s.label("ups"))] = s.value
    return out


async def poll_until(
    collector: NutCollector, want: dict[str, float]
) -> dict[tuple[str, str], float]:
    """Poll (for up to 10 s) until the unlabelled samples include `want`; the last result."""
    deadline = time.monotonic() + 10.0
    last: dict[tuple[str, str], float] | Exception = {}
    while time.monotonic() < deadline:
        try:
            last = await poll(collector)
        except CollectError as exc:
            last = exc
        else:
            if all(last.get((k, "")) == v for k, v in want.items()):
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"never saw {want}; last poll: {last!r}")


async def failure(collector: NutCollector) -> CollectError:
    with pytest.raises(CollectError) as info:
        await poll(collector)
    return info.value


def flags(sample: dict[tuple[str, str], float], ups: str = "") -> dict[str, float]:
    return {name: sample[(name, ups)] for name in FLAG_SAMPLES}


def expect_flags(*on: str) -> dict[str, float]:
    return {name: 1.0 if name in on else 0.0 for name in FLAG_SAMPLES}


# ----- config and parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ups1.example", ("ups1.example", 3493)),
        ("127.0.0.1:3500", ("127.0.0.1", 3500)),
        ("[::1]:3494", ("::1", 3494)),
        ("[::1]", ("::1", 3493)),
        ("::1", ("::1", 3493)),
    ],
)
def test_address_forms(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["host:0", "host:99999", "host:abc", ":3493", "[::1"])
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValidationError):
        NutTarget.model_validate({"name": "u", "kind": "nut", "address": address})


def test_config_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"name": "u", "kind": "nut", "address": "127.0.0.1"}
    with pytest.raises(ValidationError, match="UPS name only"):
        NutTarget.model_validate({**base, "ups": "rack@host"})
    with pytest.raises(ValidationError, match="needs a username"):
        NutTarget.model_validate({**base, "password": "x"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        NutTarget.model_validate({**base, "upsname": "rack"})
    monkeypatch.setenv("NUT_TEST_PW", "from-env")
    with pytest.raises(ValidationError, match="only one of"):
        NutTarget.model_validate(
            {**base, "username": "u", "password": "x", "password_env": "NUT_TEST_PW"}
        )
    cfg = NutTarget.model_validate({**base, "username": "mon", "password_env": "NUT_TEST_PW"})
    assert cfg.password_env is not None
    assert cfg.password_env.get_secret_value() == "from-env"
    assert "from-env" not in repr(cfg)
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = NutTarget.model_validate({**base, "username": "mon", "password_file": str(secret)})
    assert cfg.password_file is not None
    assert cfg.password_file.get_secret_value() == "from-file"
    assert COLLECTORS["nut"] is NutCollector


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('VAR rack ups.status "OL CHRG"', ["VAR", "rack", "ups.status", "OL CHRG"]),
        ('VAR rack ups.mfr "A \\"B\\" \\\\ C"', ["VAR", "rack", "ups.mfr", 'A "B" \\ C']),
        ('VAR rack x ""', ["VAR", "rack", "x", ""]),
        ('VAR rack x "ends in \\\\"', ["VAR", "rack", "x", "ends in \\"]),
        ("END LIST VAR rack", ["END", "LIST", "VAR", "rack"]),
    ],
)
def test_split_line(line: str, words: list[str]) -> None:
    assert split_line(line) == words


@pytest.mark.parametrize(
    "line", ['VAR rack x "open', 'VAR rack x "a\\"', 'VAR rack x "a"b"', 'VAR rack "x" y']
)
def test_split_line_refuses_broken_quotes(line: str) -> None:
    with pytest.raises(ValueError, match="quote"):
        split_line(line)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40))
def test_quoting_round_trips(value: str) -> None:
    # The demo server's quoting (upsd's rule) and the collector's parser agree on any value.
    assert split_line(f"VAR rack some.var {quote(value)}") == ["VAR", "rack", "some.var", value]


# ----- real upsd + dummy-ups ---------------------------------------------------------------


@pytest.fixture
def upsd(tmp_path: Path) -> Iterator[UpsdPeer]:
    peer = UpsdPeer(
        tmp_path,
        {"rack": OL_VARS, "spare": {**OL_VARS, "battery.charge": "88"}},
        users={"monuser": "s3cret"},
    )
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()


@pytest.mark.peer
async def test_power_cut_through_real_upsd(upsd: UpsdPeer, make) -> None:
    nut = make(f"127.0.0.1:{upsd.port}", ups="rack", username="monuser", password="s3cret")
    first = await poll(nut)
    assert flags(first) == expect_flags("ups_on_line")
    assert first[("ups_battery_charge_percent", "")] == 100.0
    assert first[("ups_battery_runtime_seconds", "")] == 2400.0
    assert first[("ups_input_voltage_volts", "")] == 231.5
    assert first[("ups_output_load_percent", "")] == 27.0
    assert first[("ups_battery_temperature_celsius", "")] == 29.5
    # With `ups:` named, no ups label and no per-UPS data_ok sample.
    assert all(ups == "" for _, ups in first)
    assert ("ups_data_ok", "") not in first

    steps = [
        ({"ups.status": "OB DISCHRG", "battery.charge": "64", "input.voltage": "0"},
         ("ups_on_battery",)),
        ({"ups.status": "OB DISCHRG LB", "battery.charge": "18", "battery.runtime": "240"},
         ("ups_on_battery", "ups_battery_low")),
        ({"ups.status": "OL CHRG", "input.voltage": "229", "battery.charge": "20"},
         ("ups_on_line", "ups_charging")),
        ({"ups.status": "OL"}, ("ups_on_line",)),
    ]  # fmt: skip
    for changes, on in steps:
        upsd.update("rack", **changes)
        seen = await poll_until(nut, expect_flags(*on))
        for key, sample in (
            ("battery.charge", "ups_battery_charge_percent"),
            ("battery.runtime", "ups_battery_runtime_seconds"),
            ("input.voltage", "ups_input_voltage_volts"),
        ):
            assert seen[(sample, "")] == float(upsd.upses["rack"][key])
    # The other flags show up too.
    upsd.update("rack", **{"ups.status": "OL BYPASS OVER RB FSD"})
    await poll_until(
        nut, expect_flags("ups_on_line", "ups_on_bypass", "ups_overloaded",
                          "ups_replace_battery", "ups_forced_shutdown"),
    )  # fmt: skip


@pytest.mark.peer
async def test_every_ups_of_the_server_with_a_ups_label(upsd: UpsdPeer, make) -> None:
    err = await failure(make(f"127.0.0.1:{upsd.port}", ups="nosuch"))
    assert isinstance(err, BadResponse)
    assert "knows no UPS named 'nosuch'" in err.message

    nut = make(f"127.0.0.1:{upsd.port}")
    seen = await poll(nut)
    assert {ups for _, ups in seen} == {"rack", "spare"}
    assert seen[("ups_battery_charge_percent", "rack")] == 100.0
    assert seen[("ups_battery_charge_percent", "spare")] == 88.0
    assert seen[("ups_data_ok", "rack")] == seen[("ups_data_ok", "spare")] == 1.0
    # One UPS's driver gone: the other is still read, the gone one shows as data_ok 0.
    upsd.stop_driver("spare")
    deadline = time.monotonic() + 10
    while seen.get(("ups_data_ok", "spare")) != 0.0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        seen = await poll(nut)
    assert seen[("ups_data_ok", "spare")] == 0.0
    assert seen[("ups_on_line", "rack")] == 1.0
    assert not [k for k in seen if k[1] == "spare" and k[0] != "ups_data_ok"]
    # Every UPS gone: now the target itself is down, with the driver reason.
    upsd.stop_driver("rack")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            await poll(nut)
        except ReadingUnavailable as exc:
            assert "'rack'" in exc.message
            assert "'spare'" in exc.message
            assert "driver not running" in exc.message
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the target never went down with both drivers stopped")


@pytest.mark.peer
async def test_upsd_stopped_then_restarted(upsd: UpsdPeer, make) -> None:
    nut = make(f"127.0.0.1:{upsd.port}", ups="rack")
    assert (await poll(nut))[("ups_on_line", "")] == 1.0
    upsd.stop_upsd()
    err = await failure(nut)
    assert isinstance(err, TargetUnreachable)
    assert err.reason == "unreachable"
    assert f"NUT server 127.0.0.1:{upsd.port} refused the connection" in err.message
    upsd.start_upsd()
    upsd.wait_status("rack", "OL")
    assert (await poll(nut))[("ups_on_line", "")] == 1.0
    # Restarted between two polls: the kept connection is dead, the next poll still reads.
    upsd.stop_upsd()
    upsd.start_upsd()
    upsd.wait_status("rack", "OL")
    upsd.update("rack", **{"ups.status": "OB"})
    await asyncio.to_thread(upsd.wait_status, "rack", "OB")
    assert flags(await poll(nut)) == expect_flags("ups_on_battery")


@pytest.mark.peer
async def test_stale_data_and_missing_driver(upsd: UpsdPeer, make) -> None:
    nut = make(f"127.0.0.1:{upsd.port}", ups="rack")
    await poll(nut)
    upsd.pause_driver("rack")
    deadline = time.monotonic() + 15
    err: CollectError | None = None
    while time.monotonic() < deadline:
        try:
            await poll(nut)
        except CollectError as exc:
            err = exc
            break
        await asyncio.sleep(0.3)
    assert isinstance(err, ReadingUnavailable), err
    assert err.reason == "unavailable"
    assert err.message == "upsd reports UPS 'rack' data is stale (driver not updating)"
    upsd.resume_driver("rack")
    await poll_until(nut, {"ups_on_line": 1.0})

    upsd.stop_driver("rack")
    # A driver that shuts down may first publish status WAIT; either way the UPS is unavailable,
    # and once upsd has lost the driver it says so.
    deadline = time.monotonic() + 10
    while True:
        err = await failure(nut)
        assert isinstance(err, ReadingUnavailable), err
        if "driver not running" in err.message or time.monotonic() > deadline:
            break
        assert "status 'WAIT'" in err.message, err.message
        await asyncio.sleep(0.3)
    assert "driver not running" in err.message
    upsd.start_driver("rack")
    await poll_until(nut, {"ups_on_line": 1.0})


# ----- misbehaving servers -----------------------------------------------------------------

RACK = {"rack": {"ups.status": "OL", "battery.charge": "97"}}


async def test_connection_kept_between_polls_and_logout_on_close(fake, make) -> None:
    server = await fake(upsd_like(RACK))
    nut = make(server.address, ups="rack", username="mon", password="pw")
    for _ in range(3):
        assert (await poll(nut))[("ups_battery_charge_percent", "")] == 97.0
    assert server.connections == 1
    assert server.requests == ["USERNAME mon", "PASSWORD pw"] + ["LIST VAR rack"] * 3
    await nut.close()
    assert server.requests[-1] == "LOGOUT"


async def test_connection_dropped_by_server_reconnects(fake, make) -> None:
    server = await fake(upsd_like(RACK))
    nut = make(server.address)
    await poll(nut)
    await server.drop_clients()
    seen = await poll(nut)
    assert seen[("ups_on_line", "rack")] == 1.0
    assert server.connections == 2


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        ("DATA-STALE", ReadingUnavailable, "data is stale (driver not updating)"),
        ("DRIVER-NOT-CONNECTED", ReadingUnavailable, "no driver connected"),
        ("UNKNOWN-UPS", BadResponse, "knows no UPS named 'rack'"),
        ("ACCESS-DENIED", BadCredentials, "ERR ACCESS-DENIED"),
        ("PASSWORD-REQUIRED", BadCredentials, "ERR PASSWORD-REQUIRED"),
        ("FEATURE-NOT-CONFIGURED", BadResponse, "'ERR FEATURE-NOT-CONFIGURED'"),
    ],
)
async def test_err_lines(fake, make, code: str, error: type[CollectError], words: str) -> None:
    server = await fake(upsd_like(RACK, LIST_VAR_rack=f"ERR {code}\n".encode()))
    nut = make(server.address, ups="rack")
    for _ in range(2):
        err = await failure(nut)
        assert type(err) is error
        assert words in err.message
    # An ERR answer leaves the stream in step: the connection is kept.
    assert server.connections == 1


@pytest.mark.parametrize("request_key", ["LIST_VAR_rack", "USERNAME_mon"])
async def test_a_long_err_code_is_cut_short_in_the_message(fake, make, request_key: str) -> None:
    """The code of an ERR line is the device's text: up to a whole line (4 KiB) of it must not
    land in every log line and status page that shows the reason."""
    code = "E" * (MAX_LINE_BYTES - 10)
    server = await fake(upsd_like(RACK, **{request_key: f"ERR {code}\n".encode()}))
    err = await failure(make(server.address, ups="rack", username="mon", password="pw"))
    assert isinstance(err, BadResponse)
    assert code not in err.message
    assert len(err.message) < 300, err.message
    assert f"({len(code) + 4} characters)" in err.message


async def test_refused_credentials_never_show_the_password(fake, make) -> None:
    server = await fake(upsd_like(RACK, PASSWORD_hunter2=b"ERR INVALID-PASSWORD\n"))
    err = await failure(make(server.address, ups="rack", username="mon", password="hunter2"))
    assert isinstance(err, BadCredentials)
    assert err.reason == "auth"
    assert "'mon'" in err.message
    assert "INVALID-PASSWORD" in err.message
    assert "hunter2" not in err.message
    assert "hunter2" not in str(err)


async def test_half_a_line_then_silence_times_out_clearly(fake, make) -> None:
    requests: list[str] = []

    def script(request: str) -> bytes | None:
        # The first answer stops mid-line; nothing is ever answered after it.
        requests.append(request)
        return b"BEGIN LIST VAR rack\nVAR rack ups.stat" if len(requests) == 1 else None

    server = await fake(script)
    nut = make(server.address, ups="rack", timeout=1)
    t0 = time.monotonic()
    err = await failure(nut)
    took = time.monotonic() - t0
    assert isinstance(err, TargetTimeout)
    assert "half a line" in err.message
    assert "VAR rack ups.stat" in err.message
    assert 0.5 < took < 1.0  # within the target's timeout, before the scheduler's own
    # The out-of-step connection was dropped: the next poll opens a new one.
    err = await failure(nut)
    assert isinstance(err, TargetTimeout)
    assert server.connections == 2


async def test_silent_server_times_out(fake, make) -> None:
    server = await fake(lambda _request: None)
    err = await failure(make(server.address, ups="rack", timeout=0.5))
    assert isinstance(err, TargetTimeout)
    assert err.reason == "timeout"
    assert "gave no answer" in err.message
    assert "LIST VAR rack" in err.message


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "not the NUT protocol"),
        (b"\xff\xfe\x00garbage\x01\n", "not the NUT protocol"),
        (b"BEGIN LIST VAR rack\nVAR rack ups.status\nEND LIST VAR rack\n", "VAR rack ups"),
        (b"BEGIN LIST VAR rack\nVAR rack ups.status \"OL\nEND LIST VAR rack\n", "not the NUT"),
        (b"BEGIN LIST VAR rack\nVAR other ups.status \"OL\"\n", "not the NUT protocol"),
        (b"x" * (MAX_LINE_BYTES + 10), f"more than {MAX_LINE_BYTES} bytes"),
        (b"BEGIN LIST VAR rack\n" + b"y" * (MAX_LINE_BYTES + 10) + b"\n", "longer than"),
        (
            b"BEGIN LIST VAR rack\n"
            + b"".join(b'VAR rack v%d "1"\n' % i for i in range(MAX_LIST_LINES + 5)),
            f"did not end its answer to 'LIST VAR rack' after {MAX_LIST_LINES} lines",
        ),
    ],
    ids=["http", "binary", "no-value", "open-quote", "wrong-ups", "no-newline", "long-line",
         "endless"],
)  # fmt: skip
async def test_garbage_is_a_bad_response(fake, make, reply: bytes, words: str) -> None:
    server = await fake(upsd_like(RACK, LIST_VAR_rack=reply))
    nut = make(server.address, ups="rack")
    err = await failure(nut)
    assert isinstance(err, BadResponse)
    assert err.reason == "bad_response"
    assert words in err.message
    assert len(err.message) < 300  # a person reads it: no dump of the garbage


async def test_server_hangs_up_mid_answer(fake, make) -> None:
    server = await fake(upsd_like(RACK))
    nut = make(server.address, ups="rack", timeout=1)
    await poll(nut)
    # Now half the list, then the connection closes: as upsd killed mid-reply.
    server.script = upsd_like(RACK, LIST_VAR_rack=b"BEGIN LIST VAR rack\n")
    server.close_after = {"LIST VAR rack"}
    err = await failure(nut)
    assert isinstance(err, TargetUnreachable)
    assert "closed the connection" in err.message
    assert "LIST VAR rack" in err.message
    # Bytes had come back on the kept connection, so it was not retried.
    assert server.connections == 1


async def test_nothing_listening_is_refused(make) -> None:
    port = free_port()
    err = await failure(make(f"127.0.0.1:{port}", ups="rack"))
    assert isinstance(err, TargetUnreachable)
    assert err.message.startswith(f"NUT server 127.0.0.1:{port} refused the connection")


async def test_a_bad_server_marks_only_its_own_target_down(fake, context) -> None:
    good = await fake(upsd_like(RACK))
    hung = await fake(lambda _request: None)
    garbage = await fake(lambda _request: b"SSH-2.0-OpenSSH_9.2\r\n")
    stale = await fake(upsd_like(RACK, LIST_VAR_rack=b"ERR DATA-STALE\n"))
    scheduler = Scheduler(lambda _r: None)
    collectors = {
        name: NutCollector(
            NutTarget(name=name, kind="nut", address=server.address, ups="rack", timeout=0.6),
            context,
        )
        for name, server in (("good", good), ("hung", hung), ("garbage", garbage),
                             ("stale", stale))
    }  # fmt: skip
    results = await asyncio.gather(*(scheduler.poll_once(c) for c in collectors.values()))
    by_name = {r.target: r for r in results}
    assert by_name["good"].ok
    assert by_name["good"].duration < 0.3
    assert {s.name for s in by_name["good"].samples} >= {"ups_on_line", "target_up"}
    assert (by_name["hung"].ok, by_name["hung"].reason) == (False, "timeout")
    # The collector's own message, not the scheduler's generic one, reaches people.
    assert "gave no answer" in by_name["hung"].message
    assert (by_name["garbage"].ok, by_name["garbage"].reason) == (False, "bad_response")
    assert (by_name["stale"].ok, by_name["stale"].reason) == (False, "unavailable")
    for c in collectors.values():
        await c.close()


# ----- the demo UPS ------------------------------------------------------------------------


async def test_demo_ups_plays_the_power_cut(make) -> None:
    assert NutUpsDevice in DEVICES
    device = NutUpsDevice(speed=10.0)
    await device.start()
    try:
        (target,) = device.targets()
        cfg = NutTarget.model_validate(target)
        assert (cfg.name, cfg.interval, cfg.timeout, cfg.ups) == ("ups-nut", 2.0, 1.0, UPS_NAME)
        assert cfg.labels == {"site": "demo", "room": "A", "role": "ups"}
        nut = make(cfg.address, ups=cfg.ups)
        timeline = [
            (0.0, ("ups_on_line",)),
            (MAINS_LOST_AT + 1, ("ups_on_battery",)),
            (LOW_BATTERY_AT + 1, ("ups_on_battery", "ups_battery_low")),
            (MAINS_BACK_AT + 1, ("ups_on_line", "ups_charging")),
            (MAINS_BACK_AT + 200, ("ups_on_line",)),
        ]
        charges = []
        for scenario_t, on in timeline:
            device.advance(scenario_t / device.speed)  # wall seconds at speed 10
            seen = await poll(nut)
            assert flags(seen) == expect_flags(*on), scenario_t
            charges.append(seen[("ups_battery_charge_percent", "")])
            on_battery = "ups_on_battery" in on
            assert (seen[("ups_input_voltage_volts", "")] == 0.0) is on_battery
        # Charge falls on battery, is lowest when mains returns, then recovers to full.
        assert charges[0] == 100.0 > charges[1] > charges[2] > charges[3]
        assert charges[4] == 100.0
        # Runtime falls with the charge.
        device.advance((MAINS_LOST_AT + 5) / device.speed)
        early = (await poll(nut))[("ups_battery_runtime_seconds", "")]
        device.advance((LOW_BATTERY_AT - 1) / device.speed)
        late = (await poll(nut))[("ups_battery_runtime_seconds", "")]
        assert early > late > 0
        story = "\n".join(device.story())
        assert "4s" in story and "OB LB" in story  # at speed 10, mains fails at 4 s
    finally:
        await device.stop()


def test_line_breaks_in_credentials_are_refused() -> None:
    # A line break would end USERNAME/PASSWORD early and send the rest as another command.
    base = {"name": "u", "kind": "nut", "address": "127.0.0.1"}
    with pytest.raises(ValidationError, match="control characters"):
        NutTarget.model_validate({**base, "username": "mon\nFSD rack"})
    with pytest.raises(ValidationError, match="control characters") as info:
        NutTarget.model_validate({**base, "username": "mon", "password": "pw\nFSD rack"})
    assert "pw\nFSD" not in str(info.value)


@pytest.mark.parametrize("password", ['pa ss"w\\rd', "two words"])
def test_credentials_are_quoted_as_one_argument(password: str) -> None:
    quoted = quote_arg(password)
    assert split_line(f"PASSWORD {quoted}") == ["PASSWORD", password]
    assert quote_arg("plain") == "plain"


@pytest.mark.peer
async def test_password_with_space_is_accepted_by_real_upsd(tmp_path: Path, make) -> None:
    peer = UpsdPeer(tmp_path, {"rack": OL_VARS}, users={"monuser": '"s3 cr\\"et"'})
    try:
        peer.start()
        nut = make(f"127.0.0.1:{peer.port}", ups="rack", username="monuser", password='s3 cr"et')
        first = await poll(nut)
        assert first[("ups_battery_charge_percent", "")] == 100.0
    finally:
        peer.stop()
