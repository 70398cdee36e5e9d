"""dutyd's own disk fails: a real `dutyd run` on a small tmpfs (mounted here, as root) that is
filled while alerts fire, or read-only at start; on an ext4 image on a loop device that is shut
down under it (every I/O an error); paging a real HTTP receiver. A tmpfs cannot be remounted
read-only under a process that holds files open for writing ("mount point is busy"), so the
disk that goes bad while dutyd runs is the ext4 shutdown (EIO), and the read-only case is a
disk that is read-only when dutyd starts.

Issue 22 measured on the old code: new pages stopped (waiting in memory for the outbox
write), /healthz said ok, no metric said so, a page whose reschedule or mark-delivered write
failed was due again at once (about 8,800 sends in 15 s to a receiver answering 503,
2 MB/s of tracebacks), each queued page reached the phone 7 to 17 times once the receiver
came back, and the events of the fault were missing from the duty log for good. A read-only
disk at start: exit 2, nothing watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sqlite3
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from dutyd.agent.config import load_config
from dutyd.core.errors import ConfigError
from dutyd.core.records import Sample
from dutyd.duty import rulestate
from dutyd.rules.config import RuleConfig
from dutyd.rules.engine import RuleEngine
from dutyd.storage import NewLogEntry, OutboxMessage, StorageUnavailable, held, open_storage
from dutyd.storage.sqlite.database import is_fault
from tests.daemon_fixtures import DaemonProcess
from tests.peers import free_port
from tests.test_notify_chaos import Portal, daemon_config

APPS = 5


class Gateway:
    """A webhook receiver answering `status`; records each request with the status given."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.requests: list[tuple[str, str, int, dict[str, Any]]] = []  # path, id, status, body
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = self.status
        self.requests.append((request.path, body.get("message_id", ""), status, body))
        return web.Response(status=status, text="ok" if status == 200 else "busy")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def accepted(self, path_prefix: str = "/p") -> Counter[str]:
        return Counter(
            i for p, i, status, _ in self.requests if status == 200 and p.startswith(path_prefix)
        )


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root in the test container; unmounted after)."""
    where.mkdir(mode=0o700)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs (the test needs root): {done.stderr}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the file system is full (no byte left)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


@contextlib.contextmanager
def ext4_disk(tmp: Path, size: str) -> Iterator[Path]:
    """An ext4 file system image on a loop device, mounted at tmp/disk (root; unmounted
    after, which frees the loop device)."""
    image, where = tmp / "disk.img", tmp / "disk"
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    where.mkdir(mode=0o700)
    done = subprocess.run(
        ["mount", "-o", "loop", str(image), str(where)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"cannot mount a loop device (the test needs root): {done.stderr}"
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def shut_down(disk: Path) -> None:
    """Make every later read and write on the file system fail with EIO, as a dying disk
    does (the ioctl behind `xfs_io -c shutdown`); only unmounting ends it."""
    fd = os.open(disk, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


@pytest.fixture
def portal() -> Iterator[Portal]:
    p = Portal()
    yield p
    p.stop()


def config(disk: Path, portal: Portal, gateway: Gateway, **storage: Any) -> dict[str, Any]:
    cfg = daemon_config(portal, gateway, APPS, retry_initial="0.2s", retry_max="1s")  # type: ignore[arg-type]
    cfg["notify"]["channels"]["ops"] = {
        "url": gateway.url("ops"),
        "rate_limit": {"count": 100, "per": "1s"},
    }
    cfg["notify"]["fallback_channel"] = "ops"
    cfg["storage"] = {"path": str(disk / "dutyd.db"), **storage}
    return cfg


async def wait(daemon: DaemonProcess, check: Any, within: float, what: str) -> None:
    await asyncio.to_thread(daemon.wait_until, check, within, what)


async def apps_answering(daemon: DaemonProcess) -> None:
    await wait(
        daemon,
        lambda: daemon.metric_value("probe_success", target=f"app{APPS - 1}") == 1.0,
        20,
        "the apps answering",
    )


async def storage_writable(daemon: DaemonProcess, writable: bool, what: str) -> None:
    """Until `dutyd_storage_writable` says `writable`."""
    value = 1.0 if writable else 0.0
    await wait(daemon, lambda: daemon.metric_value("dutyd_storage_writable") == value, 20, what)


async def outbox_drained(daemon: DaemonProcess) -> None:
    await wait(
        daemon,
        lambda: (daemon.metric_value("dutyd_notify_outbox_depth") or 0.0) == 0.0,
        10,
        "an empty outbox",
    )


async def each_accepted_once(gateway: Gateway, count: int) -> Counter[str]:
    """After 2 s more (anything sent again would arrive by then): `count` messages accepted,
    each once."""
    await asyncio.sleep(2)
    accepted = gateway.accepted()
    assert len(accepted) == count and set(accepted.values()) == {1}, accepted
    return accepted


def fault_notices(gateway: Gateway) -> list[dict[str, Any]]:
    """The storage-fault notices the fallback channel (`ops`) accepted."""
    return [b for p, _, s, b in gateway.requests if p == "/ops" and s == 200]


def assert_fault_logged_once(log: str) -> None:
    assert log.count("storage cannot be written; keeping") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def assert_fault_in_duty_log(entries: list[Any], accepted: Counter[str]) -> None:
    """The fault's alerts, escalations and sends in the duty log: nothing missing."""
    kinds = Counter(e.kind for e in entries)
    assert kinds["alert.firing"] == APPS, kinds
    assert kinds["alert.resolved"] == APPS, kinds
    assert kinds["escalation.firing"] == APPS, kinds
    assert kinds["notify.sent"] == 4 * APPS, kinds
    sent = {e.subject for e in entries if e.kind == "notify.sent"}
    assert sent == set(accepted), (sent, set(accepted))


async def test_full_disk_while_alerts_fire_pages_once_and_the_duty_log_is_complete(
    tmp_path: Path, portal: Portal
) -> None:
    gateway = Gateway()
    await gateway.start()
    with small_disk(tmp_path / "disk", "4m") as disk:
        daemon = await asyncio.to_thread(DaemonProcess, tmp_path, config(disk, portal, gateway))
        try:
            await apps_answering(daemon)
            assert daemon.metric_value("dutyd_storage_writable") == 1.0
            filler = await asyncio.to_thread(fill, disk)
            gateway.status = 503
            portal.set(500)  # every app fails: 5 alerts, 2 people each
            await storage_writable(daemon, False, "fault")
            code, ready = daemon.get("/readyz")
            assert code == 503 and "storage cannot be written" in ready, ready
            code, health = daemon.get("/healthz")
            assert code == 200 and health.startswith("degraded: storage cannot be written"), health
            # The pages go out from memory although the outbox cannot take them.
            await wait(
                daemon,
                lambda: (
                    len({i for p, i, _, _ in gateway.requests if p.startswith("/p")}) >= 2 * APPS
                ),
                20,
                "every page tried while the disk is full",
            )
            await asyncio.sleep(4)  # the gateway answers 503: retries back off
            attempts_503 = sum(1 for r in gateway.requests if r[2] == 503)
            assert attempts_503 < 40 * 2 * APPS, f"{attempts_503} sends to a gateway answering 503"
            gateway.status = 200  # back, the disk still full
            await asyncio.to_thread(
                daemon.wait_until,
                lambda: len(gateway.accepted()) == 2 * APPS,
                20,
                "every page accepted",
            )
            portal.set(200)  # the alerts resolve, the disk still full
            await wait(
                daemon, lambda: len(gateway.accepted()) == 4 * APPS, 20, "every resolve accepted"
            )
            await asyncio.sleep(3)  # a page delivered in memory must not go out again
            assert set(gateway.accepted().values()) == {1}, gateway.accepted()
            assert daemon.metric_value("dutyd_storage_writable") == 0.0
            errors = daemon.metric_value("dutyd_storage_errors_total") or 0.0
            assert errors > 0
            filler.unlink()  # the disk takes writes again
            await storage_writable(daemon, True, "healed")
            code, ready = daemon.get("/readyz")
            assert code == 200, ready
            assert daemon.get("/healthz") == (200, "ok\n")
            await outbox_drained(daemon)
            accepted = await each_accepted_once(gateway, 4 * APPS)
            # "dutyd cannot write its database": once, to the fallback channel.
            fault_pages = fault_notices(gateway)
            assert len(fault_pages) == 1, fault_pages
            assert fault_pages[0]["title"] == "dutyd cannot write its database"
            code, _ = await asyncio.to_thread(daemon.terminate, 10)
            assert code == 0
        finally:
            daemon.stop()
            await gateway.stop()
        # Nothing missing from the duty log: the firings, resolves and sends of the fault.
        async with open_storage(disk / "dutyd.db", read_only=True) as store:
            entries = await store.log.read(limit=None)
        assert_fault_in_duty_log(entries, accepted)
        # In order: each alert's firing before its resolve.
        order = [(e.kind, e.data.get("labels", {}).get("target")) for e in entries]
        for n in range(APPS):
            fired = order.index(("alert.firing", f"app{n}"))
            assert fired < order.index(("alert.resolved", f"app{n}"))
    log = daemon.peer.log()
    assert_fault_logged_once(log)
    assert log.count("storage writable again") == 1
    assert len(log) < 200_000, f"{len(log)} bytes of log"


async def test_disk_full_under_queued_pages_retries_back_off_and_each_goes_once(
    tmp_path: Path, portal: Portal
) -> None:
    """Pages already in the outbox when the disk fills: their reschedule and mark-delivered
    writes fail. Before: due again at once (8,800 sends in 15 s), 7 to 17 copies each."""
    gateway = Gateway()
    gateway.status = 503
    await gateway.start()
    with small_disk(tmp_path / "disk", "4m") as disk:
        daemon = await asyncio.to_thread(DaemonProcess, tmp_path, config(disk, portal, gateway))
        try:
            portal.set(500)
            await wait(
                daemon,
                lambda: (daemon.metric_value("dutyd_notify_outbox_depth") or 0) >= 2 * APPS,
                30,
                "the pages queued in the outbox",
            )
            filler = await asyncio.to_thread(fill, disk)
            await storage_writable(daemon, False, "fault")
            before = len(gateway.requests)
            await asyncio.sleep(5)
            attempts = len(gateway.requests) - before
            # 10 messages backing off to `retry_max` 1 s: about 60 in 5 s, never a hot loop.
            assert attempts < 150, f"{attempts} sends in 5 s to a gateway answering 503"
            gateway.status = 200
            await wait(daemon, lambda: len(gateway.accepted()) == 2 * APPS, 20, "accepted")
            await asyncio.sleep(3)  # their deletion failed: they must not go out again
            assert set(gateway.accepted().values()) == {1}, gateway.accepted()
            filler.unlink()
            await storage_writable(daemon, True, "healed")
            await outbox_drained(daemon)
            accepted = await each_accepted_once(gateway, 2 * APPS)
            code, _ = await asyncio.to_thread(daemon.terminate, 10)
            assert code == 0
        finally:
            daemon.stop()
            await gateway.stop()
        async with open_storage(disk / "dutyd.db", read_only=True) as store:
            sent = Counter(
                e.subject for e in await store.log.read(kinds=["notify.sent"], limit=None)
            )
        assert sent == Counter(set(accepted)), sent
    assert_fault_logged_once(daemon.peer.log())


async def test_disk_failing_under_a_running_dutyd_pages_and_stop_says_what_is_lost(
    tmp_path: Path, portal: Portal
) -> None:
    """The disk fails under a running dutyd (every read and write an I/O error). Before (a
    read-only remount): new alerts and a resolve never paged, and on stop the held pages
    were dropped without a log line."""
    gateway = Gateway()
    await gateway.start()
    with ext4_disk(tmp_path, "16M") as disk:
        daemon = await asyncio.to_thread(DaemonProcess, tmp_path, config(disk, portal, gateway))
        try:
            await apps_answering(daemon)
            shut_down(disk)
            portal.set(500)
            await wait(daemon, lambda: len(gateway.accepted()) == 2 * APPS, 20, "the pages")
            code, ready = daemon.get("/readyz")
            assert code == 503 and "storage cannot be written" in ready, ready
            portal.set(200)
            await wait(daemon, lambda: len(gateway.accepted()) == 4 * APPS, 20, "the resolves")
            await asyncio.sleep(2)
            assert set(gateway.accepted().values()) == {1}, gateway.accepted()
            code, _ = await asyncio.to_thread(daemon.terminate, 15)
            assert code == 0
        finally:
            daemon.stop()
            await gateway.stop()
    log = daemon.peer.log()
    assert_fault_logged_once(log)
    # The stop says what the disk never got, instead of dropping it in silence.
    assert "stopping with notifications the disk refused: they are lost" in log, log[-3000:]
    assert "closing with duty log entries the disk refused: they are lost" in log, log[-3000:]


async def test_read_only_disk_at_start_runs_without_durable_state_and_pages(
    tmp_path: Path, portal: Portal
) -> None:
    gateway = Gateway()
    await gateway.start()
    with small_disk(tmp_path / "disk", "2m") as disk:
        remount(disk, "ro")
        daemon = await asyncio.to_thread(DaemonProcess, tmp_path, config(disk, portal, gateway))
        try:
            await wait(
                daemon,
                lambda: daemon.get("/readyz")[1].startswith("running without durable state"),
                20,
                "started without durable state",
            )
            code, ready = daemon.get("/readyz")
            assert code == 503 and "Read-only file system" in ready, ready
            assert daemon.get("/healthz")[1].startswith("degraded: running without durable")
            assert daemon.metric_value("dutyd_storage_durable") == 0.0
            portal.set(500)
            await wait(daemon, lambda: len(gateway.accepted()) == 2 * APPS, 20, "the pages")
            await asyncio.sleep(1)
            assert set(gateway.accepted().values()) == {1}
            fault = [b["title"] for b in fault_notices(gateway)]
            assert fault == ["dutyd cannot write its database"]
            code, _ = await asyncio.to_thread(daemon.terminate, 10)
            assert code == 0
        finally:
            daemon.stop()
            await gateway.stop()
            remount(disk, "rw")
        assert not (disk / "dutyd.db").exists()
    assert "running WITHOUT durable state" in daemon.peer.log()


async def test_read_only_disk_at_start_with_refuse_exits_2_naming_it(
    tmp_path: Path, portal: Portal
) -> None:
    gateway = Gateway()
    with small_disk(tmp_path / "disk", "2m") as disk:
        remount(disk, "ro")
        cfg = config(disk, portal, gateway, when_unwritable="refuse")
        cfg_path = tmp_path / "dutyd.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "dutyd.agent.cli", "run", "-c", str(cfg_path)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        remount(disk, "rw")
    assert done.returncode == 2, done.stderr
    assert "cannot write the database" in done.stderr
    assert "storage.when_unwritable: refuse" in done.stderr


def test_storage_fault_settings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "dutyd.yaml"
    path.write_text(
        "storage: {when_unwritable: ignore, write_deadline: 0s,"
        " retention: {environment: 0s, batch: 1}}\n"
        "notify:\n  channels: {sms: {url: 'json://127.0.0.1:9/x'}}\n  fallback_channel: pager\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = "\n".join(info.value.problems)
    assert "storage.when_unwritable" in found and "'run' or 'refuse'" in found, found
    assert "storage.retention.environment" in found, found
    assert "storage.write_deadline" in found, found
    assert "storage.retention.batch" in found, found
    assert "notify.fallback_channel: unknown channel 'pager'" in found, found
    path.write_text(
        "storage: {retention: {duty_log: 3650d, environment: null}}\n"
        "notify:\n  channels: {sms: {url: 'json://127.0.0.1:9/x'}}\n  fallback_channel: sms\n"
    )
    settings = load_config(path)
    assert settings.storage.when_unwritable == "run"
    assert settings.storage.write_deadline == 5.0
    assert settings.storage.retention.duty_log == 3650 * 86400.0
    assert settings.storage.retention.environment is None
    assert settings.storage.retention.overlays == 90 * 86400.0
    assert settings.notify.fallback_channel == "sms"


async def test_duty_log_entries_held_in_a_fault_are_written_in_order_by_the_probe(
    tmp_path: Path,
) -> None:
    async with open_storage(tmp_path / "d.db") as store:
        await store.log.append(1.0, "alert.firing", "dutyd", "a", {})
        store.health.failed("database or disk is full")  # as the store reports a fault
        await store.log.append(2.0, "alert.firing", "dutyd", "b", {})
        await store.log.append_many(
            [
                NewLogEntry(3.0, "escalation.firing", "dutyd", "b", {}),
                NewLogEntry(4.0, "x", "d", "c", {}),
            ]
        )
        assert [e.subject for e in await store.log.read()] == ["a"]  # held, not written
        assert not store.health.writable
        assert await store.probe()  # the disk takes writes: the held entries go first
        assert store.health.writable
        await store.log.append(5.0, "alert.resolved", "dutyd", "b", {})
        entries = await store.log.read()
        assert [(e.timestamp, e.subject) for e in entries] == [
            (1.0, "a"),
            (2.0, "b"),
            (3.0, "b"),
            (4.0, "c"),
            (5.0, "b"),
        ]


async def test_many_held_entries_are_written_in_chunks_in_order_with_the_loss_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks, each well inside the write deadline; the "entries lost" line is made once, so
    a chunk written again after a write that timed out and landed does not say it twice."""
    monkeypatch.setattr(held, "MAX_HELD", 25)
    monkeypatch.setattr(held, "FLUSH_CHUNK", 4)
    async with open_storage(tmp_path / "d.db") as store:
        store.health.failed("a write has not returned within 5s")
        for n in range(30):  # 5 more than may be held: the oldest 5 are dropped
            await store.log.append(float(n), "alert.firing", "dutyd", f"a{n}", {})
        assert await store.probe()
        written = await store.log.read(limit=None)
        assert await store.log.flush()  # nothing left: a no-op
    assert [e.kind for e in written[:1]] == ["storage.log_entries_lost"]
    assert written[0].data == {"count": 5}
    assert [e.subject for e in written[1:]] == [f"a{n}" for n in range(5, 30)]


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (sqlite3.OperationalError("database or disk is full"), True),
        (sqlite3.OperationalError("disk I/O error"), True),
        (sqlite3.OperationalError("attempt to write a readonly database"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.DatabaseError("database disk image is malformed"), True),
        (OSError(errno.EROFS, "Read-only file system"), True),
        (sqlite3.OperationalError("no such table: outbox"), False),  # a bug, not the disk
        (sqlite3.OperationalError('near "SELEC": syntax error'), False),
        (sqlite3.IntegrityError("UNIQUE constraint failed: outbox.id"), False),
    ],
)
def test_what_counts_as_a_fault_of_the_disk(error: BaseException, fault: bool) -> None:
    assert is_fault(error) is fault


async def test_event_counts_the_disk_refused_are_written_when_it_is_back(tmp_path: Path) -> None:
    rule = RuleConfig.model_validate(
        {
            "name": "resets",
            "metric": "if_resets_total",
            "events": {"more_than": 3, "over": "1d"},
            "severity": "warning",
            "summary": "{target} resets",
        }
    )
    engine = RuleEngine([rule])
    with small_disk(tmp_path / "disk", "1m") as disk:
        async with open_storage(disk / "d.db") as store:
            await asyncio.to_thread(fill, disk)
            for t, v in enumerate([1.0, 2.0, 5.0, 6.0]):
                engine.ingest([Sample.of("if_resets_total", v, float(t), {"target": "sw1"})], t)
            with pytest.raises(StorageUnavailable):
                await rulestate.save_counts(engine, store)
            os.unlink(disk / "filler")
            await rulestate.save_counts(engine, store)
            rows = await store.rule_events.load(0.0)
    # Every increase (the first reading is a baseline `load` leaves out) and the last value.
    assert [(r[2], r[3], r[4]) for r in rows] == [
        (1.0, 1.0, 2.0),
        (2.0, 3.0, 5.0),
        (3.0, 1.0, 6.0),
    ]


def freeze(disk: Path, frozen: bool) -> None:
    """`fsfreeze`: every write to the file system blocks (no error) until it is thawed."""
    subprocess.run(["fsfreeze", "-f" if frozen else "-u", str(disk)], check=True)


async def test_frozen_disk_is_a_fault_pages_from_memory_and_the_late_writes_add_nothing_twice(
    tmp_path: Path, portal: Portal
) -> None:
    """The file system is frozen under a running dutyd: its writes hang, they do not fail.
    Before: polling went on and paging waited for the thaw. Now a write not back within
    `storage.write_deadline` is a storage fault; the pages go out from memory; after the thaw
    the writes that hung land, and the held copies of the same entries add nothing twice."""
    gateway = Gateway()
    await gateway.start()
    with ext4_disk(tmp_path, "16M") as disk:
        cfg = config(disk, portal, gateway, write_deadline="2s")
        daemon = await asyncio.to_thread(DaemonProcess, tmp_path, cfg)
        frozen = False
        try:
            await apps_answering(daemon)
            freeze(disk, True)
            frozen = True
            portal.set(500)
            await wait(daemon, lambda: len(gateway.accepted()) == 2 * APPS, 20, "the pages")
            code, ready = daemon.get("/readyz")
            assert code == 503 and "has not returned within 2s" in ready, ready
            assert daemon.metric_value("dutyd_storage_writable") == 0.0
            assert (daemon.metric_value("dutyd_storage_errors_total") or 0.0) > 0
            portal.set(200)
            await wait(daemon, lambda: len(gateway.accepted()) == 4 * APPS, 20, "the resolves")
            freeze(disk, False)
            frozen = False
            await storage_writable(daemon, True, "thawed")
            await outbox_drained(daemon)
            accepted = await each_accepted_once(gateway, 4 * APPS)
            fault_pages = fault_notices(gateway)
            assert len(fault_pages) == 1, fault_pages
            code, _ = await asyncio.to_thread(daemon.terminate, 15)
            assert code == 0
        finally:
            if frozen:
                freeze(disk, False)
            daemon.stop()
            await gateway.stop()
        async with open_storage(disk / "dutyd.db", read_only=True) as store:
            entries = await store.log.read(limit=None)
    # Each entry of the fault once: the writes that hung landed, the held copies did not
    # add them again.
    assert_fault_in_duty_log(entries, accepted)
    seen = Counter((e.timestamp, e.kind, e.subject) for e in entries)
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1]
    log = daemon.peer.log()
    assert_fault_logged_once(log)
    assert log.count("storage writable again") == 1, log[-3000:]


async def thaw_and_probe(store: Any, disk: Path) -> None:
    freeze(disk, False)
    for _ in range(50):
        if await store.probe():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the store did not take writes again after the thaw")


async def test_writes_that_hang_on_a_frozen_disk_are_held_and_land_once_after_the_thaw(
    tmp_path: Path,
) -> None:
    """The store itself on a frozen ext4: a duty-log append, a delivery record (with its
    duty-log entry) and an `events` count hang in turn; each is a fault at the deadline; after
    the thaw each lands, and the copy written again (the probe's flush, the notification
    service's retry, the counts put back) adds nothing twice."""
    with ext4_disk(tmp_path, "16M") as disk:
        store = open_storage(disk / "dutyd.db", write_deadline=0.5)
        await store.open()
        try:
            await store.log.append(1.0, "before", "dutyd", "", {})
            await store.outbox.enqueue([OutboxMessage("m1", "Li Na", "firing", "sms", {})])
            freeze(disk, True)
            try:
                assert await store.log.append(2.0, "hung", "dutyd", "", {}) == 0  # held
                assert not store.health.writable
                assert "has not returned within 0.5s" in store.health.reason
                await store.log.append(3.0, "held", "dutyd", "", {})
                assert not await store.probe()  # at once: the hung write is still out
            finally:
                await thaw_and_probe(store, disk)
            assert store.health.writable
            sent = NewLogEntry(4.0, "notify.sent", "dutyd", "m1", {})
            freeze(disk, True)
            try:
                with pytest.raises(StorageUnavailable):
                    await store.outbox.mark_delivered("m1", 4.0, [], sent)
            finally:
                await thaw_and_probe(store, disk)
            await store.outbox.mark_delivered("m1", 4.0, [], sent)  # the service's retry
            counts = [("logins", {"target": "fw"}, 5.0, 2.0, 7.0)]
            freeze(disk, True)
            try:
                with pytest.raises(StorageUnavailable):
                    await store.rule_events.append(counts)
            finally:
                await thaw_and_probe(store, disk)
            await store.rule_events.append(counts)  # put back and written again
            assert await store.rule_events.load(0.0) == counts
            entries = await store.log.read(limit=None)
            assert await store.outbox.sent_among(["m1"]) == {"m1"}
        finally:
            await store.close()
    assert [e.kind for e in entries] == ["before", "hung", "held", "notify.sent"], entries
