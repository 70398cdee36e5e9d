"""The SSH collector: one poll of a Linux server is one remote script over the kept connection
(`session.py`), its output cut into sections and turned into samples (`readings.py`)."""

from __future__ import annotations

import logging
import secrets
import time
from typing import ClassVar

from dutyd.collectors.base import Collector, CollectorContext, Readings
from dutyd.collectors.ssh import commands as cmd
from dutyd.collectors.ssh.accounts import AccountsReading, read_accounts
from dutyd.collectors.ssh.config import POLL_MARGIN, SshTarget
from dutyd.collectors.ssh.journal import (
    FIRST_DAYS,
    JournalReading,
    journal_problem,
    read_journal,
)
from dutyd.collectors.ssh.parsers import excerpt, server_facts, split_sections
from dutyd.collectors.ssh.readings import PollOutput, ReadingDown, ReadingKey, take_readings
from dutyd.collectors.ssh.session import SshSession
from dutyd.core.errors import BadResponse

log = logging.getLogger(__name__)


class SshCollector(Collector[SshTarget]):
    """Polls one Linux server over a kept SSH connection."""

    kind = "ssh"
    config_model = SshTarget
    metric_help: ClassVar[dict[str, str]] = {
        "node_load1": "1-minute load average (/proc/loadavg).",
        "node_load5": "5-minute load average (/proc/loadavg).",
        "node_load15": "15-minute load average (/proc/loadavg).",
        "node_cpus": "Processing units available (nproc).",
        "node_memory_total_bytes": "Total memory (MemTotal, /proc/meminfo).",
        "node_memory_available_bytes": "Memory available without swapping (MemAvailable).",
        "node_swap_total_bytes": "Total swap (SwapTotal).",
        "node_swap_free_bytes": "Free swap (SwapFree).",
        "node_filesystem_size_bytes": "Filesystem size (df -PTk), by mount and fstype.",
        "node_filesystem_avail_bytes": "Space available to ordinary users (df -PTk).",
        "node_filesystem_used_ratio": "Used / (used + available), 0..1, as df's Capacity.",
        "node_filesystem_inodes_used_ratio": "Inodes used / (used + free), 0..1 (df -PTki).",
        "node_uptime_seconds": "Seconds since boot (/proc/uptime).",
        "node_rebooted": "1 on the poll where uptime went backwards (the server rebooted).",
        "systemd_unit_active": "1 if `systemctl is-active` says active, else 0; by service.",
        "backup_newest_age_seconds": "Age of the newest backup file, on the server's clock.",
        "backup_newest_size_bytes": "Size of the newest backup file.",
        "backup_files": "Backup files matching the pattern (0: none at all).",
        "backup_oldest_age_seconds": "Age of the oldest kept backup file (retention).",
        "backup_retention_seconds": "Time span of backups kept: age of the oldest kept file.",
        "backup_retention_required_seconds": "Configured retention_days the copies must cover, "
        "in seconds.",
        "backup_retention_shortfall_seconds": "How much of the required retention the kept "
        "copies miss (0: covered; the whole of it when no file is left).",
        "backup_max_age_seconds": "Configured age after which the newest backup is stale.",
        "backup_stale": "1 if no backup file is younger than max_age (none at all counts).",
        "command_value": "Value printed by a user-defined command; by command and name.",
        "ssh_reading_ok": "1 if this reading was taken, 0 if it failed (reason in the log).",
    }

    def __init__(self, config: SshTarget, context: CollectorContext) -> None:
        super().__init__(config, context)
        self.session = SshSession(config, context)
        self._prev_uptime: float | None = None
        # (reading, labels...) -> reason, for readings currently down; read by status pages.
        self.problems: dict[ReadingKey, str] = {}
        # The software usage register's reading, taken on the fact polls (`take_accounts`).
        self._accounts: AccountsReading | None = None
        # The journal's errors for the weekly log review, read on the fact polls
        # (`take_journal`): where the last good reading ended, and the window of this poll's.
        self._journal_since: float | None = None
        self._journal_window: tuple[float, float] | None = None
        self._journal: JournalReading | None = None

    @property
    def connects(self) -> int:
        """SSH connections opened so far (one per login)."""
        return self.session.connects

    def _sections(self, now: float | None = None) -> list[cmd.Section]:
        """The poll's sections; `now` (the poll's wall time) ends the journal reading's window."""
        cfg = self.config
        self._journal_window = None
        sections = cmd.standard_sections(with_clock=bool(cfg.backups))
        if cfg.services:
            sections.append(cmd.systemd_section(cfg.services))
        for i, backup in enumerate(cfg.backups):
            sections.append(cmd.backup_section(i, backup.path, backup.pattern))
        for i, command in enumerate(cfg.commands):
            sections.append(cmd.command_section(i, command.argv))
        if self.facts_due:
            sections += cmd.FACT_SECTIONS
            sections += cmd.ACCOUNT_SECTIONS
            # Back FIRST_DAYS at most: after a long gap the journal may have rotated anyway,
            # and the reading stays bounded.
            until = float(int(time.time() if now is None else now))
            since = max(self._journal_since or 0.0, until - FIRST_DAYS * 86400.0)
            self._journal_window = (since, until)
            sections.append(cmd.journal_section(since))
        return sections

    async def collect(self, readings: Readings) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.timeout - POLL_MARGIN
        sections = self._sections(readings.timestamp)
        nonce = secrets.token_hex(8)
        script = cmd.render_script(sections, nonce, cfg.command_timeout)
        stdout, stderr, status = await self.session.run_script(script, sections, deadline)
        # Up to MAX_OUTPUT_CHARS of device text to cut and parse: off the event loop.
        outputs = await self.context.run_blocking(
            split_sections, stdout, stderr, cmd.marker_for(nonce)
        )
        if not outputs:
            said = excerpt(stderr or stdout) or "nothing"
            raise BadResponse(
                f"{self.session.where}: the poll script ran no command (exit status {status}); "
                f"the server said: {said}"
            )
        budget = self.session.script_budget(sections, deadline)
        poll = PollOutput({s.id: s for s in sections}, outputs, budget, cfg.command_timeout)
        taken = await self.context.run_blocking(
            take_readings, readings, poll, cfg, self._prev_uptime
        )
        if taken.uptime is not None:
            self._prev_uptime = taken.uptime
        if self.facts_due:
            self.note_facts(await self.context.run_blocking(server_facts, outputs))
            self._accounts = await self.context.run_blocking(read_accounts, outputs)
            if self._journal_window is not None:
                since, until = self._journal_window
                journal = await self.context.run_blocking(journal_of_poll, poll, since, until)
                if journal.problem is None:
                    self._journal_since = until
                self._journal = journal
        for key, reason in taken.outcomes.items():
            self._note(key, reason)

    def take_accounts(self) -> AccountsReading | None:
        """The accounts read on the last poll, once; none read: None."""
        reading, self._accounts = self._accounts, None
        return reading

    def take_journal(self) -> JournalReading | None:
        """The journal errors read on the last poll, once; none read: None."""
        reading, self._journal = self._journal, None
        return reading

    def _note(self, key: ReadingKey, reason: str | None) -> None:
        old = self.problems.get(key)
        if reason is None:
            if old is not None:
                del self.problems[key]
                if self._allow("reading back", key):
                    log.info("%s: %s reading is back", self.config.name, " ".join(key))
        elif reason != old:
            self.problems[key] = reason
            if self._allow("reading down", key):
                log.warning("%s: %s reading down: %s", self.config.name, " ".join(key), reason)

    def _allow(self, kind: str, key: ReadingKey) -> bool:
        """Whether to log this change of a reading (a reading that flaps every poll is
        summed up once a minute instead)."""
        limiter = self.context.loglimit
        what = {"target": self.config.name, "reading": " ".join(key)}
        return limiter is None or limiter.allow(kind, f"{self.config.name} {key}", what)

    async def close(self) -> None:
        await self.session.close()


def journal_of_poll(poll: PollOutput, since: float, until: float) -> JournalReading:
    """The journal reading of one poll; a journalctl that did not run or failed (missing on a
    server without systemd, killed at command_timeout) is a problem, not zero errors."""
    section = poll.outputs.get("journal")
    # An account that may not read the system journal: journalctl says so on stderr, exiting
    # 1 when it could open no file at all (0 when it shows the account's own entries).
    if section is not None and (problem := journal_problem(section.stderr)) is not None:
        return JournalReading(since, until, problem=problem)
    try:
        text = poll.output("journal", what="journalctl")
    except ReadingDown as down:
        return JournalReading(since, until, problem=down.reason)
    assert section is not None
    return read_journal(text, section.stderr, since, until)
