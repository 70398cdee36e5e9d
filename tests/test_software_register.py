"""The software system usage register, kept by itself: the asyncssh Linux simulation serves
passwd, login.defs, pwquality.conf and `last -F` text the test controls, read by the SSH
collector's own poll script at start and daily; a new login account and a new uid 0 are
machine-room log entries at once; the account review lists what breaks the rules and exports
in English and Chinese, on both stores."""

from __future__ import annotations

import asyncio
import calendar
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from openpyxl import load_workbook

from dutyd.agent.cli import main as cli_main
from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.agent.demo.ssh_server import LinuxState, SimulatedLinux, demo_state
from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.ssh import SshCollector, SshTarget
from dutyd.collectors.ssh.accounts import (
    AccountsReading,
    parse_last,
    parse_login_defs,
    parse_passwd,
    parse_pwquality,
    parse_shadow,
)
from dutyd.collectors.ssh.commands import SHADOW_PROGRAM
from dutyd.core.clock import FakeClock
from dutyd.duty.registers import build_register
from dutyd.duty.report import to_csv, to_markdown
from dutyd.duty.software import SoftwareRegister
from dutyd.storage.sqlite import SqliteStorage
from tests.daemon_fixtures import run_until
from tests.ssh_fixtures import SshdServer, simulated_collector, simulated_site
from tests.test_storage_contract import Store, store  # noqa: F401 - both stores

PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "sync:x:4:65534:sync:/bin:/bin/sync\n"
    "ops:x:1000:1000:Ops,,,:/home/ops:/bin/bash\n"
    "olduser:x:1001:1001::/home/olduser:/bin/bash\n"
    "svc:x:999:999::/var/lib/svc:/bin/false\n"
)
LOGIN_DEFS = "# login.defs\nPASS_MAX_DAYS\t99999\nPASS_MIN_DAYS\t0\nPASS_MIN_LEN 5\n"
PWQUALITY = "# minlen = 9\nminlen = 8\n"
# What the shadow section prints: each password field's first character (no hash).
SHADOW = "root:$\ndaemon:*\nsync:*\nops:$\nolduser:!\nsvc:!\n"

LAST_CMD = "env TZ=UTC last -F -w -n 2000"


def utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def last_output() -> str:
    return (
        "ops      pts/0        192.0.2.10       Mon Dec  7 09:15:02 2026 - "
        "Mon Dec  7 10:00:00 2026  (00:44)\n"
        "reboot   system boot  6.1.0-28-amd64   Mon Dec  7 08:00:00 2026   still running\n"
        "root     tty1                          Sun Aug  2 07:00:00 2026 - "
        "Sun Aug  2 07:05:00 2026  (00:05)\n"
        "\n"
        "wtmp begins Sat Aug  1 00:00:00 2026\n"
    )


def serve(state: LinuxState, passwd: str = PASSWD, shadow: str | None = SHADOW) -> None:
    state.shadow = shadow
    state.outputs |= {
        "cat /etc/passwd": (passwd, "", 0),
        "cat /etc/login.defs": (LOGIN_DEFS, "", 0),
        "cat /etc/security/pwquality.conf": (PWQUALITY, "", 0),
        LAST_CMD: (last_output(), "", 0),
    }


def test_parsers_read_the_formats_and_leave_garbage_out() -> None:
    accounts = parse_passwd(PASSWD + "bad line\n:x:0:0::/:/bin/sh\nx:x:notanumber:0::/:/bin/sh\n")
    assert [(a.name, a.uid, a.can_log_in) for a in accounts] == [
        ("root", 0, True),
        ("daemon", 1, False),
        ("sync", 4, False),
        ("ops", 1000, True),
        ("olduser", 1001, True),
        ("svc", 999, False),
    ]
    assert parse_login_defs(LOGIN_DEFS) == (99999, 5)
    assert parse_login_defs("#PASS_MAX_DAYS 30\n") == (None, None)
    assert parse_pwquality(PWQUALITY) == 8
    logins = parse_last(last_output())
    assert [(x.user, x.line, x.host, x.start) for x in logins] == [
        ("ops", "pts/0", "192.0.2.10", utc("2026-12-07 09:15:02")),
        ("root", "tty1", "", utc("2026-08-02 07:00:00")),
    ]
    assert parse_last("x " * 10_000 + "\n\x00\x01 Mon Foo 99 99:99:99 9999\n") == []


async def settle(register: SoftwareRegister) -> None:
    await asyncio.gather(*register._writes)


@pytest.mark.peer
async def test_accounts_read_over_ssh_are_logged_and_reviewed_on_both_stores(
    store: Store,  # noqa: F811
    tmp_path: Path,
) -> None:
    state = demo_state(time.time())
    serve(state)
    server = SimulatedLinux(state)
    await server.start()
    clock = FakeClock(utc("2026-12-07 12:00:00"))
    register = SoftwareRegister(store.s, clock)
    collector = simulated_collector(server, tmp_path)
    try:
        await collector.collect(Readings({"target": "db1"}, time.time()))
        reading = collector.take_accounts()
        assert reading is not None and reading.problems == []
        assert (reading.pass_max_days, reading.min_length) == (99999, 8)
        assert reading.passwords == {
            "root": "set", "daemon": "locked", "sync": "locked", "ops": "set",
            "olduser": "locked", "svc": "locked",
        }  # fmt: skip
        # Not every poll: the next one reads no accounts.
        collector.take_facts()
        await collector.collect(Readings({"target": "db1"}, time.time()))
        assert collector.take_accounts() is None
        register.observe("db1", reading)
        await settle(register)
        assert await store.s.log.read(kinds=["account."]) == []

        # The next day: someone added a login account and gave a second account uid 0.
        serve(
            state,
            PASSWD + "intruder:x:0:0::/root:/bin/sh\nnewops:x:1002:1002::/h:/bin/zsh\n",
            SHADOW + "intruder:$\nnewops:\n",  # newops has no password at all
        )
        state.outputs[LAST_CMD] = (
            "newops   pts/1        198.51.100.7     Tue Dec  8 03:00:00 2026   still logged in\n"
            + last_output(),
            "",
            0,
        )
        collector.facts_due = True
        await collector.collect(Readings({"target": "db1"}, time.time()))
        second = collector.take_accounts()
        assert second is not None
        await clock.advance(86400)
        register.observe("db1", second)
        await settle(register)
        logged = await store.s.log.read(kinds=["account."])
        assert [(e.kind, e.data["account"]) for e in logged] == [
            ("account.added", "intruder"),
            ("account.added", "newops"),
            ("account.uid0", "intruder"),
        ]
        # The logins already recorded are not written twice.
        written = await store.s.log.read(kinds=["software.logins"])
        assert [len(e.data["logins"]) for e in written] == [2, 1]

        # A restart reads back what was recorded: the same reading writes nothing more.
        s = await store.reopen()
        again = SoftwareRegister(s, clock)
        await again.start()
        again.observe("db1", second)
        await settle(again)
        assert len(await s.log.read(limit=None)) == len(logged) + 4

        # The quarterly review, read back in both languages.
        start, end = utc("2026-09-09 00:00:00"), utc("2026-12-09 00:00:00")
        en = await build_register(s, "software", start, end, "en", "UTC")
        assert en.rows == [
            ["2026-12-07 09:15:02", "db1", "ops", "pts/0", "192.0.2.10"],
            ["2026-12-08 03:00:00", "db1", "newops", "pts/1", "198.51.100.7"],
        ]
        (_, _, review), (_, _, accounts), _journal = en.more
        # root last logged in in August; the others are not watched for 90 days yet.
        assert review == [
            ["db1", "more than one uid 0", "intruder, root"],
            ["db1", "unused for 90 days", "root"],
            ["db1", "empty password (logs in without one)", "newops"],
            ["db1", "PASS_MAX_DAYS unset or above 90", "99999"],
        ]
        assert ["db1", "root", 0, "/bin/bash", "set", "2026-08-02 07:00:00"] in accounts
        assert ["db1", "intruder", 0, "/bin/sh", "set", "never"] in accounts
        assert ["db1", "olduser", 1001, "/bin/bash", "locked", "never"] in accounts
        zh = await build_register(s, "software", start, end, "zh", "UTC")
        text = to_markdown(zh)
        assert "软件系统使用登记簿" in text and "账户检查" in text and "多个uid为0的账户" in text
        assert "newops" in to_csv(en)

        # Watched for 90 days: root's last login (August) and the never-seen accounts are
        # unused; the minimum length rule holds (pwquality's 8).
        later = await build_register(s, "software", end, end + 90 * 86400, "en", "UTC")
        (_, _, review), _, _ = later.more
        unused = sorted(row[2] for row in review if row[1] == "unused for 90 days")
        assert unused == ["intruder", "newops", "olduser", "ops", "root"]
        assert not any(row[1].startswith("minimum") for row in review)
    finally:
        await collector.close()
        await collector.context.close()
        await server.stop()


@pytest.mark.peer
async def test_the_daily_flag_set_while_a_poll_runs_is_kept_for_the_next_poll(
    tmp_path: Path,
) -> None:
    """The daily reading is asked for (`facts_due`) while a poll without it is on the wire: that
    poll's output holds no facts or accounts, so it takes neither and the next poll reads them.
    (It once took the flag with empty facts, and the accounts waited a whole day.)"""
    state = demo_state(time.time())
    serve(state)
    server = SimulatedLinux(state)
    await server.start()
    collector = simulated_collector(server, tmp_path)
    try:
        await collector.collect(Readings({"target": "db1"}, time.time()))
        assert collector.take_facts() is not None and collector.take_accounts() is not None
        assert not collector.facts_due
        serve(state, PASSWD + "newops:x:1002:1002::/h:/bin/zsh\n")
        poll = asyncio.create_task(collector.collect(Readings({"target": "db1"}, time.time())))
        await asyncio.sleep(0)  # the poll chose its sections and waits on the server
        collector.facts_due = True  # the daily timer, meanwhile
        await poll
        assert collector.take_facts() is None and collector.take_accounts() is None
        assert collector.facts_due
        await collector.collect(Readings({"target": "db1"}, time.time()))
        assert collector.take_facts() is not None
        reading = collector.take_accounts()
        assert reading is not None and "newops" in [a.name for a in reading.accounts or []]
        assert not collector.facts_due
    finally:
        await collector.close()
        await collector.context.close()
        await server.stop()


@pytest.mark.peer
async def test_daemon_logs_a_new_login_account_from_the_daily_reading(tmp_path: Path) -> None:
    state = demo_state(time.time())
    serve(state)
    server = SimulatedLinux(state)
    await server.start()
    clock = FakeClock()
    daemon = Daemon(load_from_dict(simulated_site(server, tmp_path)), clock=clock)
    daemon.equipment.every = 30.0
    await daemon.start()
    try:
        register = daemon.software
        await run_until(clock, lambda: "db1" in register.known)
        await run_until(clock, lambda: not register._writes)
        assert await daemon.storage.log.read(kinds=["account."]) == []
        serve(state, PASSWD + "newops:x:1002:1002::/h:/bin/zsh\n")
        await clock.advance(30.0)
        await run_until(clock, lambda: len(register.known["db1"]["accounts"]) == 7)
        await run_until(clock, lambda: not register._writes)
        (added,) = await daemon.storage.log.read(kinds=["account."])
        assert (added.kind, added.subject, added.data["account"]) == (
            "account.added",
            "db1",
            "newops",
        )
    finally:
        await daemon.stop()
        await server.stop()


@pytest.mark.peer
async def test_real_openssh_answers_the_account_commands_as_this_host_reads(
    tmp_path: Path,
) -> None:
    """OpenSSH on loopback runs the same commands a server answers: the accounts are this
    host's /etc/passwd, the logins its wtmp as `last` prints them here."""
    sshd = SshdServer(tmp_path)
    sshd.start()
    context = CollectorContext()
    try:
        sshd.write_known_hosts()
        cfg = SshTarget.model_validate(sshd.target(timeout=8))
        collector = SshCollector(cfg, context)
        try:
            await collector.collect(Readings({"target": "srv"}, time.time()))
            reading = collector.take_accounts()
            assert reading is not None
            passwd = await asyncio.to_thread(Path("/etc/passwd").read_text)
            assert reading.accounts == parse_passwd(passwd)
            assert any(a.name == "root" and a.uid == 0 for a in reading.accounts)
            last = await asyncio.to_thread(
                subprocess.run,
                ["env", "TZ=UTC", "last", "-F", "-w", "-n", "2000"],
                capture_output=True,
                text=True,
                check=False,
            )
            # An exec request without a terminal writes no wtmp line: both reads agree.
            assert last.returncode == 0, last.stderr
            assert reading.logins == parse_last(last.stdout)
            # The password states as this host's awk reads /etc/shadow for this user: root
            # (as CI runs) reads them; any other user is refused, and the reading says so.
            shadow = await asyncio.to_thread(
                subprocess.run,
                ["awk", "-F:", SHADOW_PROGRAM, "/etc/shadow"],
                capture_output=True,
                text=True,
                check=False,
            )
            if shadow.returncode == 0:
                assert reading.passwords == parse_shadow(shadow.stdout)
                assert reading.passwords.get("root") in ("locked", "set", "empty")
                assert all(len(line) <= len(name) + 2 for line in shadow.stdout.splitlines()
                           for name in [line.split(":")[0]])  # fmt: skip
            else:
                assert reading.passwords is None
                assert "root or group shadow" in (reading.passwords_unread or "")
        finally:
            await collector.close()
    finally:
        await context.close()
        sshd.kill_all()


async def test_cli_exports_the_software_register_in_xlsx_and_chinese(tmp_path: Path) -> None:
    """`dutyd report --register software` reads the store and writes the register: the
    logins and the account review, Chinese headings, read back from the XLSX."""
    config = tmp_path / "dutyd.yaml"
    site = {
        "http": {"port": 0},
        "storage": {"path": str(tmp_path / "d.db")},
        "notify": {"timezone": "Asia/Shanghai"},
        "oncall": {"timezone": "Asia/Shanghai"},
    }
    config.write_text(yaml.safe_dump(site))
    async with SqliteStorage(tmp_path / "d.db") as storage:
        register = SoftwareRegister(storage, FakeClock(utc("2026-12-07 12:00:00")))
        reading = AccountsReading(
            parse_passwd(PASSWD + "toor:x:0:0::/root:/bin/sh\n"),
            30,
            5,
            parse_last(last_output()),
        )
        register.observe("db1", reading)
        await settle(register)
    out = tmp_path / "software.xlsx"
    argv = ["report", "-c", str(config), "--register", "software", "--from", "2026-12-01"]
    argv += ["--to", "2026-12-08", "--format", "xlsx", "--lang", "zh", "-o", str(out)]
    assert await asyncio.to_thread(cli_main, argv) == 0
    sheet = load_workbook(out).active
    assert sheet is not None
    cells = [[c for c in row if c is not None] for row in sheet.iter_rows(values_only=True)]
    assert cells[0] == ["软件系统使用登记簿"]
    # The login at 09:15 UTC is 17:15 in Shanghai.
    assert ["2026-12-07 17:15:02", "db1", "ops", "pts/0", "192.0.2.10"] in cells
    assert ["db1", "多个uid为0的账户", "root, toor"] in cells
    assert ["db1", "密码最短长度未设或小于6", "5"] in cells
    assert not any("PASS_MAX_DAYS" in str(row) for row in cells)


@pytest.mark.peer
async def test_an_account_that_may_not_read_shadow_is_said_so_in_the_register(
    store: Store,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The monitoring account is neither root nor in group shadow (the simulation refuses
    /etc/shadow as awk does): no password state is guessed, and the review says why."""
    state = demo_state(time.time())
    serve(state, shadow=None)
    server = SimulatedLinux(state)
    await server.start()
    collector = simulated_collector(server, tmp_path)
    try:
        await collector.collect(Readings({"target": "db1"}, time.time()))
        reading = collector.take_accounts()
        assert reading is not None and reading.passwords is None
        assert reading.passwords_unread == (
            "/etc/shadow is readable by root or group shadow only: password locks not known"
        )
        register = SoftwareRegister(store.s, FakeClock(utc("2026-12-07 12:00:00")))
        register.observe("db1", reading)
        await settle(register)
        start, end = utc("2026-12-01 00:00:00"), utc("2026-12-08 00:00:00")
        en = await build_register(store.s, "software", start, end, "en", "UTC")
        (_, _, review), (_, columns, accounts), _journal = en.more
        assert [
            "db1",
            "password states (/etc/shadow) not read",
            "/etc/shadow is readable by root or group shadow only: password locks not known",
        ] in review
        assert columns[4] == "Password" and {row[4] for row in accounts} == {"not read"}
        zh = to_markdown(await build_register(store.s, "software", start, end, "zh", "UTC"))
        assert "未能读取密码状态（/etc/shadow）" in zh and "| 未读取 |" in zh
    finally:
        await collector.close()
        await collector.context.close()
        await server.stop()
