"""The SSH collector against a real OpenSSH sshd on loopback, and an asyncssh server for the
cases sshd cannot be made to act out (a connection dropped in the middle of a command)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dutyd.agent.demo import DEVICES
from dutyd.agent.demo.ssh_server import LinuxServerDevice, LinuxState, SimulatedLinux, demo_state
from dutyd.agent.scheduler import Scheduler
from dutyd.collectors import COLLECTORS
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.ssh import DEFAULT_CONNECT_SLOTS, SshCollector, SshTarget
from dutyd.core.errors import BadCredentials, CollectError, TargetUnreachable
from tests.peers import free_port
from tests.ssh_fixtures import SshdServer, cmdline, descendants

Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshdServer]:
    server = SshdServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill_all()


async def touch_back(path: Path, when: str) -> None:
    """`touch -d <when>`: the way an admin (or a broken cron job) dates a file."""
    await asyncio.to_thread(subprocess.run, ["touch", "-d", when, str(path)], check=True)


def read_text(path: str) -> str:
    return Path(path).read_text()


@pytest.fixture
async def make(context: CollectorContext) -> AsyncIterator[Callable[..., SshCollector]]:
    made: list[SshCollector] = []

    def factory(server: SshdServer | SimulatedLinux, **options: Any) -> SshCollector:
        base: dict[str, Any] = {"name": "srv", "kind": "ssh", "address": "127.0.0.1"}
        if isinstance(server, SshdServer):
            base |= {
                "port": server.port,
                "username": server.user,
                "client_keys": [str(server.client_key_path)],
                "known_hosts": str(server.known_hosts_path),
                "trusted_hosts_file": str(server.dir / "dutyd_known_hosts"),
            }
        cfg = SshTarget.model_validate({**base, "timeout": 8, **options})
        collector = SshCollector(cfg, context)
        made.append(collector)
        return collector

    yield factory
    for c in made:
        await c.close()


async def poll(collector: SshCollector) -> Values:
    readings = Readings({"target": collector.config.name}, time.time())
    await collector.collect(readings)
    out: Values = {}
    for s in readings.samples:
        labels = tuple((k, v) for k, v in s.labels if k != "target")
        out[(s.name, labels)] = s.value
    return out


def value(values: Values, metric: str, /, **labels: str) -> float:
    return values[(metric, tuple(sorted(labels.items())))]


def ok(values: Values, reading: str, **labels: str) -> float:
    return value(values, "ssh_reading_ok", reading=reading, **labels)


def logins(server: SshdServer) -> int:
    return server.log().count("Accepted publickey")


# ----- readings from the real commands ------------------------------------------------------


async def test_readings_from_real_commands_over_one_kept_connection(
    sshd: SshdServer, make: Callable[..., SshCollector], tmp_path: Path
) -> None:
    sshd.write_known_hosts()
    backups = tmp_path / "backup"
    backups.mkdir()
    for i, age_days in enumerate([16, 9, 1]):
        f = backups / f"db-{i}.sql.gz"
        f.write_bytes(b"x" * (100 + i))
        await touch_back(f, f"{age_days} days ago")
    (backups / "notes.txt").write_text("not a backup")
    c = make(
        sshd,
        backups=[
            {"name": "db", "path": str(backups), "pattern": "db-*.sql.gz", "retention_days": 15}
        ],
        commands=[
            {"name": "one", "argv": ["echo", "42.5"]},
            {"name": "named", "argv": ["printf", "queue 3\\nerrors 0\\n"]},
        ],
    )
    v = await poll(c)
    proc_load = read_text("/proc/loadavg").split()
    assert abs(value(v, "node_load15") - float(proc_load[2])) < 0.5
    assert value(v, "node_cpus") == len(os.sched_getaffinity(0))
    assert value(v, "node_memory_total_bytes") > 0
    assert 0 < value(v, "node_memory_available_bytes") <= value(v, "node_memory_total_bytes")
    assert value(v, "node_uptime_seconds") > 0 and value(v, "node_rebooted") == 0
    # The filesystem holding / is a real disk here; /proc, /sys, tmpfs are left out.
    mounts = {dict(labels)["mount"] for name, labels in v if name.startswith("node_filesystem")}
    assert "/proc" not in mounts and "/sys" not in mounts and "/dev/shm" not in mounts
    root = next(labels for name, labels in v if name == "node_filesystem_used_ratio")
    stat = os.statvfs(dict(root)["mount"])
    used = (stat.f_blocks - stat.f_bfree) / (stat.f_blocks - stat.f_bfree + stat.f_bavail)
    assert abs(v[("node_filesystem_used_ratio", root)] - used) < 0.02
    assert 0 <= v[("node_filesystem_inodes_used_ratio", root)] <= 1
    b = {"backup": "db", "copy": "local"}
    assert value(v, "backup_files", **b) == 3
    assert abs(value(v, "backup_newest_age_seconds", **b) - 86400) < 120
    assert value(v, "backup_newest_size_bytes", **b) == 102
    assert abs(value(v, "backup_oldest_age_seconds", **b) - 16 * 86400) < 120
    assert abs(value(v, "backup_retention_seconds", **b) - 16 * 86400) < 0.01 * 86400
    assert value(v, "backup_retention_required_seconds", **b) == 15 * 86400
    assert value(v, "backup_retention_shortfall_seconds", **b) == 0  # 16 days kept
    assert value(v, "backup_stale", **b) == 0
    assert value(v, "command_value", command="one") == 42.5
    assert value(v, "command_value", command="named", name="queue") == 3
    assert value(v, "command_value", command="named", name="errors") == 0
    for reading in ("loadavg", "nproc", "meminfo", "uptime", "df", "df_inodes"):
        assert ok(v, reading) == 1, c.problems
    # Polls reuse the connection: one login for three polls.
    await poll(c)
    await poll(c)
    assert c.connects == 1 and logins(sshd) == 1


async def test_backup_made_30_hours_ago_is_stale(
    sshd: SshdServer, make: Callable[..., SshCollector], tmp_path: Path
) -> None:
    sshd.write_known_hosts()
    backups = tmp_path / "nightly"
    backups.mkdir()
    old = backups / "www-1.tar"
    old.write_bytes(b"y" * 2048)
    await touch_back(old, "30 hours ago")
    empty = tmp_path / "offsite"
    empty.mkdir()
    c = make(
        sshd,
        backups=[
            {"name": "www", "path": str(backups)},
            {"name": "www", "path": str(empty), "copy": "offsite"},
            {"name": "gone", "path": str(tmp_path / "not-mounted")},
        ],
    )
    v = await poll(c)
    local = {"backup": "www", "copy": "local"}
    assert abs(value(v, "backup_newest_age_seconds", **local) - 30 * 3600) < 120
    assert value(v, "backup_stale", **local) == 1
    # No file at all is stale too, with a count of 0.
    offsite = {"backup": "www", "copy": "offsite"}
    assert value(v, "backup_files", **offsite) == 0 and value(v, "backup_stale", **offsite) == 1
    # An off-site copy must keep 15 days unless told otherwise: an empty one misses all of it.
    assert value(v, "backup_retention_required_seconds", **offsite) == 15 * 86400
    assert value(v, "backup_retention_shortfall_seconds", **offsite) == 15 * 86400
    # A local copy has no retention requirement unless one is set.
    assert ("backup_retention_shortfall_seconds", tuple(sorted(local.items()))) not in v
    # A missing directory (off-site mount gone) is that reading down, with find's reason.
    assert ok(v, "backup", backup="gone", copy="local") == 0
    assert "No such file or directory" in c.problems[("backup", "gone", "local")]
    # A fresh backup clears it.
    (backups / "www-2.tar").write_bytes(b"z")
    (empty / "www-1.tar").write_bytes(b"w")
    await touch_back(empty / "www-1.tar", "5 days ago")
    v = await poll(c)
    assert value(v, "backup_stale", **local) == 0
    assert value(v, "backup_newest_age_seconds", **local) < 60
    shortfall = value(v, "backup_retention_shortfall_seconds", **offsite)
    assert abs(shortfall - 10 * 86400) < 120  # 5 of the 15 days kept


async def test_config_text_is_never_shell_syntax(
    sshd: SshdServer, make: Callable[..., SshCollector], tmp_path: Path
) -> None:
    sshd.write_known_hosts()
    # A shell running this text would create the canary in the login's home directory.
    name = f"dutyd-pwned-{os.getpid()}"
    canary = Path.home() / name
    weird = tmp_path / f"b; touch {name}; $(touch {name}) `touch {name}`"
    weird.mkdir()
    (weird / "it's a backup.tar").write_bytes(b"1")
    c = make(
        sshd,
        backups=[{"name": "weird", "path": str(weird), "pattern": "*'*"}],
        commands=[{"name": "echoed", "argv": ["echo", f"1; touch {name}"]}],
    )
    v = await poll(c)
    assert value(v, "backup_files", backup="weird", copy="local") == 1
    # echo printed its one argument as text, which is not a number: reading down, not run.
    assert ok(v, "command", command="echoed") == 0
    assert not canary.exists()


async def test_sleep_600_is_cut_off_and_killed_on_the_server(
    sshd: SshdServer, make: Callable[..., SshCollector]
) -> None:
    sshd.write_known_hosts()
    c = make(
        sshd,
        command_timeout=1,
        commands=[
            {"name": "hangs", "argv": ["sleep", "600"]},
            {"name": "after", "argv": ["echo", "7"]},
        ],
    )
    started = time.monotonic()
    v = await poll(c)
    assert time.monotonic() - started < 4
    assert ok(v, "command", command="hangs") == 0
    reason = c.problems[("command", "hangs")]
    assert "did not finish within 1s" in reason and "killed on the server" in reason
    # The other readings of the same poll are unaffected.
    assert value(v, "command_value", command="after") == 7 and ok(v, "df") == 1
    assert sshd.proc is not None
    for _ in range(50):
        left = [p for p in descendants(sshd.proc.pid) if cmdline(p)[:2] == ["sleep", "600"]]
        if not left:
            break
        await asyncio.sleep(0.1)
    assert left == []


async def test_poll_through_the_scheduler_with_a_hung_command_keeps_the_target_up(
    sshd: SshdServer, context: CollectorContext
) -> None:
    sshd.write_known_hosts()
    cfg = SshTarget.model_validate(
        {
            "name": "srv",
            "kind": "ssh",
            "address": "127.0.0.1",
            "port": sshd.port,
            "username": sshd.user,
            "client_keys": [str(sshd.client_key_path)],
            "known_hosts": str(sshd.known_hosts_path),
            "timeout": 5,
            "command_timeout": 1,
            "commands": [{"name": "a", "argv": ["sleep", "600"]}],
        }
    )
    collector = SshCollector(cfg, context)
    scheduler = Scheduler(lambda _: None)
    try:
        result = await scheduler.poll_once(collector)
    finally:
        await collector.close()
    assert result.ok, result.message
    assert result.duration < 4


# ----- host keys ----------------------------------------------------------------------------


async def test_changed_host_key_is_refused_with_a_clear_reason(
    sshd: SshdServer, make: Callable[..., SshCollector]
) -> None:
    sshd.write_known_hosts()
    c = make(sshd)
    await poll(c)
    sshd.restart(new_host_key=True)
    await asyncio.sleep(1.1)  # past the first reconnect backoff
    with pytest.raises(BadCredentials) as err:
        await poll(c)
    text = err.value.message
    assert "does not match known_hosts" in text and "man-in-the-middle" in text
    assert sshd.host_key.get_fingerprint() in text
    # trust_on_first_use does not make a changed key acceptable.
    tofu = make(sshd, trust_on_first_use=True)
    with pytest.raises(BadCredentials, match="does not match known_hosts"):
        await poll(tofu)


async def test_unknown_host_key_is_refused_unless_trust_on_first_use(
    sshd: SshdServer, make: Callable[..., SshCollector]
) -> None:
    c = make(sshd)
    with pytest.raises(BadCredentials) as err:
        await poll(c)
    assert "is not in known_hosts" in err.value.message
    assert "ssh-keyscan" in err.value.message and "trust_on_first_use" in err.value.message
    tofu = make(sshd, trust_on_first_use=True)
    await poll(tofu)
    recorded = (sshd.dir / "dutyd_known_hosts").read_text()
    assert sshd.known_hosts_line().strip() in recorded.splitlines()
    # The recorded key is now trusted without the opt-in, and a new key is refused.
    plain = make(sshd)
    await poll(plain)
    sshd.restart(new_host_key=True)
    again = make(sshd, trust_on_first_use=True)
    with pytest.raises(BadCredentials, match="does not match known_hosts"):
        await poll(again)


# ----- failures -----------------------------------------------------------------------------


async def test_kill_sshd_mid_run_and_restart_reconnects(
    sshd: SshdServer, make: Callable[..., SshCollector]
) -> None:
    sshd.write_known_hosts()
    c = make(
        sshd,
        command_timeout=3,
        commands=[{"name": "slow", "argv": ["sh", "-c", "sleep 2; echo 5"]}],
    )
    first = asyncio.create_task(poll(c))
    await asyncio.sleep(0.8)  # the poll script is running `sleep 2`
    sshd.kill_all()
    with pytest.raises(TargetUnreachable, match="lost during the poll"):
        await first
    with pytest.raises(TargetUnreachable, match="refused"):
        await poll(c)
    sshd.start()
    # Within the backoff, the last error is repeated without an attempt ...
    with pytest.raises(TargetUnreachable, match="retrying within"):
        await poll(c)
    await asyncio.sleep(2.1)
    v = await poll(c)
    assert ok(v, "loadavg") == 1 and value(v, "command_value", command="slow") == 5
    assert c.connects == 2


async def test_wrong_key_and_refused_port(
    sshd: SshdServer, make: Callable[..., SshCollector], tmp_path: Path
) -> None:
    sshd.write_known_hosts()
    sshd.authorized_keys_path.write_text("")
    with pytest.raises(BadCredentials, match="refused: the server accepted none"):
        await poll(make(sshd))
    with pytest.raises(TargetUnreachable, match="refused the SSH connection"):
        await poll(make(sshd, port=free_port()))


async def test_not_an_ssh_server_is_a_clear_error(
    make: Callable[..., SshCollector], tmp_path: Path
) -> None:
    async def chatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 smtp.example ESMTP\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(chatter, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    key = tmp_path / "k"
    key.write_bytes(SimulatedLinux(LinuxState()).client_key.export_private_key())
    try:
        c = make(
            SimulatedLinux(LinuxState()),
            port=port,
            username="x",
            client_keys=[str(key)],
            known_hosts=str(tmp_path / "kh"),
        )
        with pytest.raises(CollectError) as err:
            await poll(c)
        assert f"127.0.0.1:{port}" in err.value.message
    finally:
        server.close()
        await server.wait_closed()


# ----- the simulated server: what sshd cannot act out ---------------------------------------


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[tuple[SimulatedLinux, dict[str, Any]]]:
    server = SimulatedLinux(demo_state(time.time()))
    await server.start()
    key, known = server.write_files(tmp_path)
    options = {
        "port": server.port,
        "username": server.username,
        "client_keys": [str(key)],
        "known_hosts": str(known),
        "trusted_hosts_file": str(tmp_path / "trusted"),
    }
    try:
        yield server, options
    finally:
        await server.stop()


async def test_server_closing_mid_command_marks_the_target_down_then_recovers(
    sim: tuple[SimulatedLinux, dict[str, Any]], make: Callable[..., SshCollector]
) -> None:
    server, options = sim
    c = make(server, **options, services=["nginx.service"])
    await poll(c)
    server.state.drop_at_section = "df"
    with pytest.raises(TargetUnreachable, match="lost during the poll"):
        await poll(c)
    server.state.drop_at_section = None
    await asyncio.sleep(1.1)
    v = await poll(c)
    assert ok(v, "df") == 1 and c.connects == 2


GERMAN_DF = """\
Dateisystem    Typ      1024-Blöcke  Benutzt Verfügbar Kapazität Eingehängt auf
/dev/sda1      ext4        50620216 35790708  12224068       75% /
"""


async def test_unparseable_output_is_that_reading_down_and_reboot_is_seen(
    sim: tuple[SimulatedLinux, dict[str, Any]], make: Callable[..., SshCollector]
) -> None:
    server, options = sim
    c = make(server, **options)
    v = await poll(c)
    assert value(v, "node_rebooted") == 0 and ok(v, "df") == 1
    # A server whose df ignores LC_ALL=C (a localizing wrapper), and one that rebooted.
    server.state.outputs["df -PTk"] = (GERMAN_DF, "", 0)
    server.state.uptime = 120.0
    v = await poll(c)
    assert ok(v, "df") == 0 and ok(v, "df_inodes") == 1 and ok(v, "loadavg") == 1
    assert not any(name == "node_filesystem_used_ratio" for name, _ in v)
    assert "header in another language" in c.problems[("df",)]
    assert value(v, "node_rebooted") == 1 and value(v, "node_uptime_seconds") == 120
    del server.state.outputs["df -PTk"]
    server.state.uptime = 180.0
    v = await poll(c)
    assert ok(v, "df") == 1 and value(v, "node_rebooted") == 0 and ("df",) not in c.problems


async def max_loop_lag(during: Any) -> float:
    """Run the awaitable `during` while a concurrent task ticks every 10 ms (as /healthz would
    be answered); the longest the loop left that task waiting beyond its tick, in seconds."""
    lag = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        loop = asyncio.get_running_loop()
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(0.01)
            lag = max(lag, loop.time() - before - 0.01)

    task = asyncio.create_task(ticker())
    try:
        await during
    finally:
        done.set()
        await task
    return lag


async def test_hostile_df_line_does_not_stall_the_event_loop(
    sim: tuple[SimulatedLinux, dict[str, Any]], make: Callable[..., SshCollector]
) -> None:
    """Issue 12: an asyncssh server answering df with a 12 KB header of spaces made /healthz
    take 4.65 s (the row regex retried at every space, on the event loop)."""
    server, options = sim
    c = make(server, **options)
    await poll(c)
    hostile = "Filesystem" + " " * 12_000 + "x\n"
    server.state.outputs["df -PTk"] = (hostile, "", 0)
    server.state.outputs["df -PTki"] = (hostile, "", 0)
    result: dict[str, Values] = {}

    async def one_poll() -> None:
        result["v"] = await poll(c)

    lag = await max_loop_lag(one_poll())
    # Generous for a loaded machine; the old parser held the loop for seconds.
    assert lag < 0.5, f"the event loop stalled {lag:.2f}s during the poll"
    v = result["v"]
    assert ok(v, "df") == 0 and ok(v, "df_inodes") == 0 and ok(v, "loadavg") == 1
    reason = c.problems[("df",)]
    assert "12011 characters" in reason and len(reason) < 300


async def test_connections_opened_at_once_are_bounded(
    sim: tuple[SimulatedLinux, dict[str, Any]], context: CollectorContext
) -> None:
    server, options = sim
    collectors = [
        SshCollector(
            SshTarget.model_validate(
                {"name": f"s{i}", "kind": "ssh", "address": "127.0.0.1", "timeout": 20, **options}
            ),
            context,
        )
        for i in range(3 * DEFAULT_CONNECT_SLOTS)
    ]
    try:
        results = await asyncio.gather(*(poll(c) for c in collectors))
    finally:
        for c in collectors:
            await c.close()
    assert all(ok(v, "df") == 1 for v in results)
    assert server.logins == 3 * DEFAULT_CONNECT_SLOTS
    assert 1 < server.max_opening <= DEFAULT_CONNECT_SLOTS


async def test_systemd_states_and_password_from_env(
    sim: tuple[SimulatedLinux, dict[str, Any]],
    make: Callable[..., SshCollector],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, options = sim
    server.password = "s3cret-pw"
    monkeypatch.setenv("SRV_SSH_PASSWORD", "s3cret-pw")
    server.state.units["postgresql.service"] = "failed"
    options = {k: v for k, v in options.items() if k != "client_keys"}
    c = make(
        server,
        **options,
        password_env="SRV_SSH_PASSWORD",
        services=["nginx.service", "postgresql.service", "cron.service"],
    )
    v = await poll(c)
    assert value(v, "systemd_unit_active", service="nginx.service") == 1
    assert value(v, "systemd_unit_active", service="postgresql.service") == 0
    assert value(v, "systemd_unit_active", service="cron.service") == 0
    assert "s3cret-pw" not in repr(c.config) and "s3cret-pw" not in c.config.model_dump_json()
    monkeypatch.setenv("SRV_SSH_PASSWORD", "wrong")
    bad = make(server, **options, password_env="SRV_SSH_PASSWORD")
    with pytest.raises(BadCredentials) as err:
        await poll(bad)
    assert "wrong" not in err.value.message and "password" in err.value.message


async def test_systemd_missing_on_the_server_is_a_reading_down(
    sshd: SshdServer, make: Callable[..., SshCollector]
) -> None:
    # This test host (a container) has no systemd as PID 1, like many servers' chroots.
    sshd.write_known_hosts()
    c = make(sshd, services=["ssh.service"])
    v = await poll(c)
    if os.path.isdir("/run/systemd/system"):  # noqa: ASYNC240
        assert ("systemd_unit_active", (("service", "ssh.service"),)) in v
    else:
        assert ok(v, "systemd") == 0 and ok(v, "loadavg") == 1
        assert "systemctl" in c.problems[("systemd",)]


async def test_demo_server_disk_fills_and_backup_goes_stale(
    context: CollectorContext,
) -> None:
    device = LinuxServerDevice(speed=1.0)
    await device.start()
    collector = SshCollector(SshTarget.model_validate(device.targets()[0]), context)
    try:
        root = {"mount": "/", "fstype": "ext4"}
        seen: list[tuple[float, float, float]] = []
        for t in (0.0, 55.0, 90.0, 120.0):
            device.advance(t)
            v = await poll(collector)
            age = value(v, "backup_newest_age_seconds", backup="db", copy="offsite")
            seen.append((value(v, "node_filesystem_used_ratio", **root), age, t))
            assert value(v, "backup_retention_seconds", backup="db", copy="offsite") >= 15 * 86400
        assert seen[0][0] < 0.85 < seen[1][0] < 0.95 < seen[2][0]
        assert seen[1][1] < 26 * 3600 < seen[3][1]
        assert value(v, "backup_stale", backup="db", copy="local") == 1
        assert value(v, "command_value", command="queues", name="mail") == 3
        assert collector.connects == 1
    finally:
        await collector.close()
        await device.stop()
    assert LinuxServerDevice in DEVICES


# ----- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "give client_keys or one of password"),
        ({"password": "x", "command_timeout": 29.5}, "command_timeout"),
        ({"password": "x", "backups": [{"name": "a", "path": "rel/dir"}]}, "absolute path"),
        (
            {"password": "x", "backups": [{"name": "a", "path": "/b", "pattern": "x/y"}]},
            "without '/'",
        ),
        ({"password": "x", "commands": [{"name": "a", "argv": ["a\nb"]}]}, "newlines"),
        ({"password": "x", "services": ["a b"]}, "not a systemd unit name"),
        ({"password": "x", "client_keys": ["/nonexistent/key"]}, "does not exist"),
        ({"password": "x", "shell": "df -h"}, "Extra inputs"),
    ],
)
def test_config_refuses(options: dict[str, Any], message: str) -> None:
    base = {"name": "s", "kind": "ssh", "address": "10.0.0.5", "username": "mon"}
    with pytest.raises(ValidationError, match=message):
        SshTarget.model_validate({**base, **options})


@pytest.mark.parametrize(
    ("options", "command_timeout"),
    [
        ({"timeout": "5s"}, 3.0),  # refused before: "command_timeout (5s) must leave ..."
        ({"timeout": 4}, 2.0),
        ({"timeout": "8s"}, 5.0),
        ({}, 5.0),  # the kind's 30 s timeout
        ({"timeout": "5s", "command_timeout": "1s"}, 1.0),
    ],
)
def test_command_timeout_default_follows_timeout(
    options: dict[str, Any], command_timeout: float
) -> None:
    base = {"name": "s", "kind": "ssh", "address": "h", "username": "u", "password": "p"}
    assert SshTarget.model_validate({**base, **options}).command_timeout == command_timeout


def test_only_timeout_set_loads_through_the_config_loader() -> None:
    from dutyd.agent.config import load_from_dict

    target = {"name": "s", "kind": "ssh", "address": "h", "username": "u", "password": "p"}
    settings = load_from_dict({"targets": [{**target, "timeout": "5s"}]}, "<test>")
    assert settings.targets[0].command_timeout == 3.0


def test_too_short_timeout_names_timeout_not_an_unset_key() -> None:
    base = {"name": "s", "kind": "ssh", "address": "h", "username": "u", "password": "p"}
    with pytest.raises(ValidationError, match=r"timeout \(2s\) must be more than 2s") as caught:
        SshTarget.model_validate({**base, "timeout": "2s"})
    assert "command_timeout" not in str(caught.value)


def test_registered() -> None:
    assert COLLECTORS["ssh"] is SshCollector
    assert "node_filesystem_used_ratio" in SshCollector.emits(
        SshTarget.model_validate(
            {"name": "s", "kind": "ssh", "address": "h", "username": "u", "password": "p"}
        )
    )
