"""The weekly log review: each server's journal entries of priority err and above, counted per
day. The servers are real peers answering the collector's own poll script: OpenSSH running the
real journalctl over journal files the test wrote (systemd-journal-remote makes them from the
export format), and the asyncssh Linux simulation answering journalctl as systemd 252 does.
The counts land in the machine-room log on both stores, once, and read back as the software
register's weekly section in English and Chinese."""

from __future__ import annotations

import asyncio
import calendar
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from dutyd.agent.cli import main as cli_main
from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.agent.demo.ssh_server import JournalEntry, LinuxState, SimulatedLinux, demo_state
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.ssh import SshCollector, SshTarget
from dutyd.collectors.ssh.collector import journal_of_poll
from dutyd.collectors.ssh.commands import JOURNAL_LINES, journal_section
from dutyd.collectors.ssh.journal import (
    JournalError,
    JournalReading,
    parse_journal,
    read_journal,
)
from dutyd.collectors.ssh.parsers import SectionOutput
from dutyd.collectors.ssh.readings import PollOutput
from dutyd.core.clock import FakeClock
from dutyd.duty.logerrors import KIND, ServerErrorsRegister
from dutyd.duty.registers import build_register
from dutyd.duty.report import to_markdown
from dutyd.storage.sqlite import SqliteStorage
from tests.daemon_fixtures import run_until
from tests.peers import require_binary
from tests.ssh_fixtures import SshdServer, simulated_collector, simulated_site
from tests.test_storage_contract import Store, store  # noqa: F401 - both stores

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"


def utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def test_parser_reads_short_iso_and_leaves_the_rest_out() -> None:
    text = (
        "2026-12-06T23:59:59+0000 db1 kernel: ata2.00: failed command: READ FPDMA QUEUED\n"
        "2026-12-07T08:00:00+08:00 db1 postgres[812]: ERROR: deadlock detected\n"
        "                                             DETAIL: Process 812 waits for ShareLock\n"
        "2026-12-07T01:00:00+0000 sshd[9]: error: kex_exchange_identification: banner\n"
        "-- Boot 0123456789abcdef0123456789abcdef --\n"
        "2026-12-07T02:00:00Z db1 systemd[1]: nginx.service: Failed with result 'exit-code'.\n"
        "2026-12-07T23:00:00+0000 db1 late: after the window's end\n"
        "2026-13-45T99:00:00+0000 db1 bad: not a time\n"
        "garbage\n"
    )
    errors, printed = parse_journal(text, utc("2026-12-06 00:00:00"), utc("2026-12-07 12:00:00"))
    assert errors == [
        JournalError(utc("2026-12-06 23:59:59"), "kernel"),
        JournalError(utc("2026-12-07 00:00:00"), "postgres"),  # 08:00 at +08:00
        JournalError(utc("2026-12-07 01:00:00"), "sshd"),  # no host field
        JournalError(utc("2026-12-07 02:00:00"), "systemd"),
    ]
    assert printed == 6  # the entry after the window and the bad time were printed too
    assert parse_journal("-- No entries --\n", 0.0, 4e9) == ([], 0)


def test_what_journalctl_could_not_read_is_a_problem_never_zero() -> None:
    hint = (
        "Hint: You are currently not seeing messages from other users and the system.\n"
        "      Users in groups 'adm', 'systemd-journal' can see all messages.\n"
    )
    reading = read_journal("-- No entries --\n", hint, 0.0, 10.0)
    assert reading.problem is not None and "systemd-journal" in reading.problem
    assert reading.errors == []
    empty = read_journal("-- No entries --\n", "No journal files were found.\n", 0.0, 10.0)
    assert empty.problem is not None and "no journal files" in empty.problem
    assert read_journal("-- No entries --\n", "", 0.0, 10.0).problem is None


def journal(now: float) -> list[JournalEntry]:
    return [
        JournalEntry(now - 9 * 86400, 3, "kernel", "before the first reading's week"),
        JournalEntry(now - 2 * 86400, 3, "kernel", "ata2.00: failed command: READ FPDMA " * 20),
        JournalEntry(now - 2 * 86400 + 60, 3, "kernel", "ata2.00: hard resetting link"),
        JournalEntry(now - 86400, 2, "postgres", "PANIC: could not write to file"),
        JournalEntry(now - 3600, 6, "CRON", "(root) CMD (run-parts /etc/cron.hourly)"),
        JournalEntry(now - 60, 3, "sshd", "error: kex_exchange_identification"),
    ]


async def daily_poll(collector: SshCollector, at: float) -> JournalReading | None:
    collector.facts_due = True
    await collector.collect(Readings({"target": "db1"}, at))
    collector.take_facts()
    return collector.take_journal()


@pytest.mark.peer
async def test_simulated_server_journal_is_read_daily_and_counted_once(tmp_path: Path) -> None:
    now = float(int(time.time()))
    state: LinuxState = demo_state(now)
    state.journal = journal(now)
    server = SimulatedLinux(state)
    await server.start()
    collector = simulated_collector(server, tmp_path)
    try:
        first = await daily_poll(collector, now)
        assert first is not None and first.problem is None and not first.capped
        assert (first.since, first.until) == (now - 8 * 86400, now)
        assert [(e.at, e.source) for e in first.errors] == [
            (now - 2 * 86400, "kernel"),
            (now - 2 * 86400 + 60, "kernel"),
            (now - 86400, "postgres"),
            (now - 60, "sshd"),
        ]
        # Not every poll: the next one reads no journal.
        await collector.collect(Readings({"target": "db1"}, now + 30))
        assert collector.take_journal() is None

        # The next day's reading starts where the first ended: nothing is read twice.
        state.journal.append(JournalEntry(now + 3600, 3, "nginx", "upstream timed out"))
        state.journal.append(JournalEntry(now + 86400 + 5, 3, "nginx", "past the poll: next"))
        second = await daily_poll(collector, now + 86400)
        assert second is not None and second.since == now
        assert [(e.at, e.source) for e in second.errors] == [(now + 3600, "nginx")]

        # A server without systemd: journalctl is not found; said, not counted as zero, and
        # the next reading goes back to where the last good one ended.
        state.journal = None
        third = await daily_poll(collector, now + 2 * 86400)
        assert third is not None and third.errors == []
        assert third.problem is not None and "command not found" in third.problem
        state.journal = journal(now)
        fourth = await daily_poll(collector, now + 3 * 86400)
        assert fourth is not None and fourth.since == now + 86400

        # More than JOURNAL_LINES entries: the newest come, the reading says it was cut.
        state.journal = [
            JournalEntry(now + 3 * 86400 + 1 + i / 1000, 3, "flood", "x") for i in range(2000)
        ] * 6
        fifth = await daily_poll(collector, now + 4 * 86400)
        assert fifth is not None and fifth.capped and len(fifth.errors) == JOURNAL_LINES
    finally:
        await collector.close()
        await collector.context.close()
        await server.stop()


def _write_journal(directory: Path, entries: list[tuple[float, int, str, str]]) -> Path:
    """A journal file the real journalctl reads, made by systemd-journal-remote from the
    export format, under <directory>/<machine id>/ as journald keeps its own."""
    remote = require_binary(JOURNAL_REMOTE)
    machine = Path("/etc/machine-id").read_text().strip()
    (directory / machine).mkdir(parents=True)
    export = "".join(
        f"__REALTIME_TIMESTAMP={int(at * 1_000_000)}\n__MONOTONIC_TIMESTAMP={i + 1}\n"
        f"_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=db1\nPRIORITY={priority}\n"
        f"SYSLOG_IDENTIFIER={ident}\n_PID={100 + i}\nMESSAGE={message}\n\n"
        for i, (at, priority, ident, message) in enumerate(entries)
    )
    (directory / "in.export").write_text(export)
    subprocess.run(
        [
            remote,
            f"--output={directory / machine / 'system.journal'}",
            str(directory / "in.export"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return directory


@pytest.mark.peer
async def test_real_openssh_runs_the_real_journalctl_over_a_journal_the_test_wrote(
    tmp_path: Path,
) -> None:
    now = float(int(time.time()))
    entries = [
        (now - 9 * 86400, 3, "kernel", "older than the first reading's window"),
        (now - 2 * 86400, 3, "kernel", "ata2.00: failed command: READ FPDMA QUEUED " * 40),
        (now - 86400, 2, "postgres", "PANIC: could not write to file"),
        (now - 86400 + 1, 4, "postgres", "WARNING: only a warning"),
        (now - 3600, 0, "kernel", "emerg: the sky falls"),
        (now - 600, 6, "CRON", "(root) CMD (run-parts /etc/cron.hourly)"),
        (now - 60, 3, "sshd", "error: kex_exchange_identification"),
    ]
    journal_dir = await asyncio.to_thread(_write_journal, tmp_path / "journal", entries)
    sshd = SshdServer(tmp_path, journal_dir=journal_dir)
    sshd.start()
    context = CollectorContext()
    try:
        sshd.write_known_hosts()
        cfg = SshTarget.model_validate(sshd.target(timeout=8))
        collector = SshCollector(cfg, context)
        try:
            await collector.collect(Readings({"target": "srv"}, now))
            reading = collector.take_journal()
            assert reading is not None and reading.problem is None, sshd.log()
            assert [(e.at, e.source) for e in reading.errors] == [
                (now - 2 * 86400, "kernel"),
                (now - 86400, "postgres"),
                (now - 3600, "kernel"),
                (now - 60, "sshd"),
            ]
            assert not reading.capped
        finally:
            await collector.close()
    finally:
        await context.close()
        sshd.kill_all()


async def test_real_journalctl_refusing_an_account_outside_the_journal_groups(
    tmp_path: Path,
) -> None:
    """The poll script's journal command, run by the real journalctl as `nobody` (neither root
    nor in group systemd-journal) over journal files it may not read: what it prints becomes
    a problem that says what to do, never zero errors."""
    now = float(int(time.time()))
    journal_dir = await asyncio.to_thread(
        _write_journal, tmp_path / "journal", [(now - 60, 3, "sshd", "error: x")]
    )
    # As journald keeps them: the directories open, the file root:systemd-journal 0640.
    for path in (journal_dir, *journal_dir.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for path in journal_dir.glob("*/*.journal"):
        path.chmod(0o640)
        shutil.chown(path, "root", "systemd-journal")
    section = journal_section(now - 86400)
    script = 'mount --bind "$0" /var/log/journal && exec runuser -u nobody -- "$@"'
    done = await asyncio.to_thread(
        subprocess.run,
        [require_binary("/usr/bin/unshare"), "--mount", "--propagation", "private", "sh", "-c",
         script, str(journal_dir), *section.argv],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "not seeing messages" in done.stderr, done.stderr
    poll = PollOutput(
        {"journal": section},
        {"journal": SectionOutput(done.stdout, done.stderr, done.returncode)},
        10.0,
        5.0,
    )
    got = journal_of_poll(poll, now - 86400, now)
    assert got.errors == [] and got.problem == (
        "the account may not read the system journal (journalctl shows only its own "
        "entries): add it to group systemd-journal or adm"
    )


def reading(since: float, until: float, *errors: tuple[float, str]) -> JournalReading:
    return JournalReading(since, until, [JournalError(at, s) for at, s in errors])


async def settle(register: ServerErrorsRegister) -> None:
    await asyncio.gather(*register._writes)


@pytest.mark.peer
async def test_counts_are_kept_once_and_read_back_per_day_on_both_stores(
    store: Store,  # noqa: F811
) -> None:
    """Two daily readings, a restart that reads the week again, a failed reading: the weekly
    review shows each day's count and sources once, partial days and unread days said."""
    noon = utc("2026-12-07 12:00:00")
    register = ServerErrorsRegister(store.s, lambda: "Asia/Shanghai", FakeClock(noon))
    await register.start()
    week = noon - 8 * 86400
    errors = [
        (utc("2026-12-05 15:59:59"), "kernel"),  # 23:59:59 in Shanghai: the 5th
        (utc("2026-12-05 16:00:00"), "kernel"),  # 00:00 in Shanghai: the 6th
        (utc("2026-12-06 01:00:00"), "postgres"),
        (utc("2026-12-06 02:00:00"), "postgres"),
        (utc("2026-12-06 03:00:00"), "sshd"),
    ]
    register.observe("db1", reading(week, noon, *errors))
    await settle(register)
    # The collector restarted and reads the whole week again, with one new error: only the
    # part after the recorded window counts.
    s = await store.reopen()
    again = ServerErrorsRegister(s, lambda: "Asia/Shanghai", FakeClock(noon + 86400))
    await again.start()
    again.observe("db1", reading(week, noon + 86400, *errors, (noon + 3600, "nginx")))
    await settle(again)
    # db2 has no journalctl: said once, however many days it is read; every day its reading
    # tried says why it is not counted.
    missing = JournalReading(week, noon, problem="journalctl: command not found on the server")
    again.observe("db2", missing)
    await settle(again)
    again.observe("db2", missing)
    await settle(again)
    written = await s.log.read(kinds=[KIND], limit=None)
    assert [(e.subject, sorted(e.data.get("days", {}))) for e in written] == [
        ("db1", ["2026-12-05", "2026-12-06"]),
        ("db1", ["2026-12-07"]),
        ("db2", []),
    ]
    assert written[1].data["from"] == noon

    start, end = utc("2026-12-04 16:00:00"), utc("2026-12-08 16:00:00")  # the 5th to the 8th
    en = await build_register(s, "software", start, end, "en", "Asia/Shanghai")
    title, columns, rows = en.more[-1]
    assert title == "Errors in the servers' logs (journal, priority err and above)"
    assert columns == ["Day", "Server", "Errors", "Most frequent sources", "Note"]
    missing_note = "not read: journalctl: command not found on the server"
    assert rows == [
        ["2026-12-05", "db1", 1, "kernel ×1", ""],
        ["2026-12-05", "db2", "", "", missing_note],
        ["2026-12-06", "db1", 4, "postgres ×2, kernel ×1, sshd ×1", ""],
        ["2026-12-06", "db2", "", "", missing_note],
        ["2026-12-07", "db1", 1, "nginx ×1", ""],
        ["2026-12-07", "db2", "", "", missing_note],
        ["2026-12-08", "db1", 0, "", "read 00:00–20:00 only"],
        ["2026-12-08", "db2", "", "", missing_note],
    ]
    zh = to_markdown(await build_register(s, "software", start, end, "zh", "Asia/Shanghai"))
    assert "服务器日志错误统计（journal，err 及以上级别）" in zh
    assert "| 2026-12-06 | db1 | 4 | postgres ×2, kernel ×1, sshd ×1 |" in zh
    assert "仅读取 00:00–20:00" in zh
    # The machine-room log register leaves the readings out (they are this register's).
    log = await build_register(s, "log", start, end, "en", "Asia/Shanghai")
    assert not any(row[1] == KIND for row in log.rows)


async def test_a_node_taking_over_counts_nothing_the_other_recorded(tmp_path: Path) -> None:
    """Two nodes on one store: B started before A recorded its reading; B's collector reads
    the same week after the takeover, and only what A did not cover is added."""
    async with SqliteStorage(tmp_path / "d.db") as storage:
        a = ServerErrorsRegister(storage, clock=FakeClock(utc("2026-12-07 00:10:00")))
        b = ServerErrorsRegister(storage, clock=FakeClock(utc("2026-12-08 00:10:00")))
        await a.start()
        await b.start()
        week = utc("2026-11-30 00:00:00")
        seen = [(utc("2026-12-06 10:00:00"), "kernel"), (utc("2026-12-07 10:00:00"), "sshd")]
        a.observe("db1", reading(week, utc("2026-12-07 00:10:00"), seen[0]))
        await settle(a)
        b.observe("db1", reading(week, utc("2026-12-08 00:10:00"), *seen))
        await settle(b)
        written = await storage.log.read(kinds=[KIND], limit=None)
        assert [sorted(e.data["days"]) for e in written] == [["2026-12-06"], ["2026-12-07"]]
        assert written[1].data["from"] == utc("2026-12-07 00:10:00")


async def test_a_capped_reading_says_its_counts_are_lower_bounds(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path / "d.db") as storage:
        register = ServerErrorsRegister(storage, clock=FakeClock(utc("2026-12-08 00:00:00")))
        flood = reading(utc("2026-12-07 00:00:00"), utc("2026-12-08 00:00:00"))
        flood.errors = [JournalError(utc("2026-12-07 10:00:00"), "flood")] * JOURNAL_LINES
        flood.capped = True
        register.observe("db1", flood)
        await settle(register)
        en = await build_register(
            storage, "software", utc("2026-12-07 00:00:00"), utc("2026-12-08 00:00:00")
        )
        assert en.more[-1][2] == [
            [
                "2026-12-07",
                "db1",
                JOURNAL_LINES,
                f"flood ×{JOURNAL_LINES}",
                f"at least: a reading stopped at {JOURNAL_LINES} entries",
            ]
        ]


async def test_a_stale_node_writes_no_journal_count(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path / "d.db") as storage:
        await storage.outbox.raise_fence(2)  # the new active node took the lease at epoch 2
        epoch = 1
        register = ServerErrorsRegister(storage, fence=lambda: epoch)
        register.observe("db1", reading(0.0, 100.0, (50.0, "kernel")))
        await settle(register)
        assert await storage.log.read(limit=None) == []
        assert "db1" not in register.covered  # not written: the next reading tries again
        epoch = 2
        register.observe("db1", reading(0.0, 100.0, (50.0, "kernel")))
        await settle(register)
        (entry,) = await storage.log.read(limit=None)
        assert (entry.kind, entry.data["days"]["1970-01-01"]["count"]) == (KIND, 1)
        # A standby records nothing at all.
        standby = ServerErrorsRegister(storage, active=lambda: False)
        standby.observe("db2", reading(0.0, 100.0, (50.0, "kernel")))
        assert not standby._writes


@pytest.mark.peer
async def test_daemon_records_the_daily_journal_reading_and_the_cli_exports_it(
    tmp_path: Path,
) -> None:
    now = float(int(time.time()))
    state = demo_state(now)
    state.journal = journal(now)
    server = SimulatedLinux(state)
    await server.start()
    clock = FakeClock(now)
    daemon = Daemon(load_from_dict(simulated_site(server, tmp_path)), clock=clock)
    await daemon.start()
    try:
        register = daemon.log_errors
        await run_until(clock, lambda: "db1" in register.covered)
        (entry,) = await daemon.storage.log.read(kinds=[KIND], limit=None)
        counts = {day: per["count"] for day, per in entry.data["days"].items()}
        assert sum(counts.values()) == 4  # the err/crit entries of the week; not CRON's info
    finally:
        await daemon.stop()
        await server.stop()
    site = {"http": {"port": 0}, "storage": {"path": str(tmp_path / "d.db")}}
    (tmp_path / "dutyd.yaml").write_text(yaml.safe_dump(site))
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 2 * 86400))
    to = time.strftime("%Y-%m-%d", time.gmtime(now + 86400))
    out = tmp_path / "software.md"
    argv = ["report", "-c", str(tmp_path / "dutyd.yaml"), "--register", "software"]
    argv += ["--from", day, "--to", to, "--format", "md", "-o", str(out)]
    assert await asyncio.to_thread(cli_main, argv) == 0
    text = out.read_text()
    assert "Errors in the servers' logs" in text
    assert f"| {day} | db1 | 2 | kernel ×2 |" in text
