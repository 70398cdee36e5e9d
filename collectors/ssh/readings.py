"""Turning what the poll script printed into samples, one reading at a time.

Each reading (load, memory, each filesystem table, each backup, each user command) is taken on
its own: one that fails is reported as `ssh_reading_ok{reading=...} 0` with its reason, the
others still count. Everything here is plain computation on text already received (no I/O), so
the collector runs it in the thread pool: a large or hostile output cannot stall the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dutyd.collectors.base import Readings
from dutyd.collectors.ssh import commands as cmd
from dutyd.collectors.ssh.config import SshBackup, SshCommand, SshTarget
from dutyd.collectors.ssh.parsers import (
    ParseError,
    SectionOutput,
    backup_stats,
    excerpt,
    parse_backup_files,
    parse_command_output,
    parse_df,
    parse_epoch,
    parse_is_active,
    parse_loadavg,
    parse_meminfo,
    parse_nproc,
    parse_uptime,
    real_filesystems,
)
from dutyd.core.configtypes import format_duration

# Exit statuses of a command cut off by `timeout -s KILL` (137 = 128 + SIGKILL; 124 when
# timeout itself survives to report it).
_KILLED = frozenset({124, 137})

ReadingKey = tuple[str, ...]


class ReadingDown(Exception):
    """One reading could not be taken; `reason` is shown to people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class PollOutput:
    """The sections one poll ran and what they printed."""

    specs: dict[str, cmd.Section]
    outputs: dict[str, SectionOutput]
    budget: float
    command_timeout: float

    def output(self, sid: str, *, what: str | None = None, any_status: bool = False) -> str:
        """What section `sid` printed on stdout; ReadingDown if it failed to run."""
        spec = self.specs[sid]
        what = what or f"`{cmd.describe(spec)}`"
        sec = self.outputs.get(sid)
        if sec is None:
            raise ReadingDown(f"{what} did not run: the poll script stopped before reaching it")
        if sec.status is None:
            raise ReadingDown(
                f"{what} was cut off: the poll script was killed at its "
                f"{format_duration(self.budget)} limit or the connection dropped"
            )
        err = excerpt(sec.stderr)
        if spec.timed and sec.status in _KILLED:
            raise ReadingDown(
                f"{what} did not finish within {format_duration(self.command_timeout)} "
                "(command_timeout) and was killed on the server"
            )
        if sec.status == 127:
            raise ReadingDown(
                f"{what}: command not found on the server ({err or 'exit status 127'})"
            )
        if sec.status != 0 and not any_status:
            raise ReadingDown(
                f"{what} exited with status {sec.status}" + (f": {err}" if err else "")
            )
        return sec.stdout

    def parse(
        self,
        sid: str,
        parser: Callable[[str], Any],
        *,
        what: str | None = None,
        any_status: bool = False,
    ) -> Any:
        """`parser` applied to section `sid`'s output; a ParseError becomes ReadingDown."""
        text = self.output(sid, what=what, any_status=any_status)
        try:
            return parser(text)
        except ParseError as exc:
            err = excerpt(self.outputs[sid].stderr)
            raise ReadingDown(str(exc) + (f" (stderr: {err})" if err else "")) from None


# --- one function per reading ----------------------------------------------------------------


def add_load(readings: Readings, poll: PollOutput) -> None:
    l1, l5, l15 = poll.parse("loadavg", parse_loadavg)
    readings.add("node_load1", l1)
    readings.add("node_load5", l5)
    readings.add("node_load15", l15)


def add_cpus(readings: Readings, poll: PollOutput) -> None:
    readings.add("node_cpus", poll.parse("nproc", parse_nproc))


def add_memory(readings: Readings, poll: PollOutput) -> None:
    mem = poll.parse("meminfo", parse_meminfo)
    readings.add("node_memory_total_bytes", mem.total_bytes)
    readings.add("node_memory_available_bytes", mem.available_bytes)
    readings.add("node_swap_total_bytes", mem.swap_total_bytes)
    readings.add("node_swap_free_bytes", mem.swap_free_bytes)


def add_uptime(readings: Readings, poll: PollOutput, previous: float | None) -> float:
    """Adds uptime and whether the server rebooted since `previous`; returns the uptime."""
    up: float = poll.parse("uptime", parse_uptime)
    rebooted = previous is not None and up < previous
    readings.add("node_uptime_seconds", up)
    readings.add("node_rebooted", 1.0 if rebooted else 0.0)
    return up


def _filesystems(text: str) -> list[Any]:
    return real_filesystems(parse_df(text))


def _filesystems_inodes(text: str) -> list[Any]:
    return real_filesystems(parse_df(text, inodes=True))


def add_filesystems(readings: Readings, poll: PollOutput) -> None:
    # df exits 1 when one mount cannot be read (a stale NFS handle) but still lists the others;
    # the rows decide.
    for row in poll.parse("df", _filesystems, any_status=True):
        labels = {"mount": row.mount, "fstype": row.fstype or ""}
        if row.total is not None:
            readings.add_labelled("node_filesystem_size_bytes", row.total, labels)
        if row.available is not None:
            readings.add_labelled("node_filesystem_avail_bytes", row.available, labels)
        if row.used_ratio is not None:
            readings.add_labelled("node_filesystem_used_ratio", row.used_ratio, labels)


def add_inodes(readings: Readings, poll: PollOutput) -> None:
    for row in poll.parse("df_inodes", _filesystems_inodes, any_status=True):
        # Filesystems without a fixed inode table (btrfs, vfat) report 0 inodes.
        if row.total and row.used_ratio is not None:
            readings.add(
                "node_filesystem_inodes_used_ratio",
                row.used_ratio,
                mount=row.mount,
                fstype=row.fstype or "",
            )


def add_units(readings: Readings, poll: PollOutput, services: list[str]) -> None:
    # is-active exits non-zero whenever a unit is not active: the lines decide.
    states = poll.parse("systemd", partial(parse_is_active, units=services), any_status=True)
    for unit, state in states.items():
        readings.add("systemd_unit_active", 1.0 if state == "active" else 0.0, service=unit)


def add_backup(readings: Readings, poll: PollOutput, index: int, backup: SshBackup) -> None:
    try:
        now = poll.parse("clock", parse_epoch)
    except ReadingDown as down:
        raise ReadingDown(f"no server clock to date backups against: {down.reason}") from None
    files = poll.parse(f"backup.{index}", parse_backup_files)
    stats = backup_stats(files, now)
    labels = {"backup": backup.name, "copy": backup.location}
    readings.add_labelled("backup_files", stats.count, labels)
    if stats.newest_age_seconds is not None:
        readings.add_labelled("backup_newest_age_seconds", stats.newest_age_seconds, labels)
    if stats.newest_size_bytes is not None:
        readings.add_labelled("backup_newest_size_bytes", stats.newest_size_bytes, labels)
    if stats.oldest_age_seconds is not None:
        readings.add_labelled("backup_oldest_age_seconds", stats.oldest_age_seconds, labels)
        readings.add_labelled("backup_retention_seconds", stats.oldest_age_seconds, labels)
    if backup.required_retention_days is not None:
        required = backup.required_retention_days * 86400.0
        kept = stats.oldest_age_seconds or 0.0
        readings.add_labelled("backup_retention_required_seconds", required, labels)
        readings.add_labelled(
            "backup_retention_shortfall_seconds", max(0.0, required - kept), labels
        )
    age = stats.newest_age_seconds
    stale = age is None or age > backup.max_age
    readings.add_labelled("backup_max_age_seconds", backup.max_age, labels)
    readings.add_labelled("backup_stale", 1.0 if stale else 0.0, labels)


def add_command(readings: Readings, poll: PollOutput, index: int, command: SshCommand) -> None:
    # Named, never echoed: a user's argv may hold a secret.
    values = poll.parse(f"command.{index}", parse_command_output, what=f"command {command.name!r}")
    for name, value in values:
        if name is None:
            readings.add("command_value", value, command=command.name)
        else:
            readings.add("command_value", value, command=command.name, name=name)


# --- the whole poll ----------------------------------------------------------------------------


@dataclass(slots=True)
class TakenReadings:
    """What `take_readings` found besides the samples: each reading's outcome (None: taken,
    else why not) and the uptime, if read, to detect a reboot on the next poll."""

    outcomes: dict[ReadingKey, str | None] = field(default_factory=dict)
    uptime: float | None = None


def _take(
    readings: Readings,
    taken: TakenReadings,
    reading: str,
    labels: Mapping[str, str],
    add: Callable[..., Any],
    *args: Any,
) -> Any:
    """`add(readings, poll, *args)` for one reading, recording its outcome and ssh_reading_ok."""
    key = (reading, *labels.values())
    try:
        result = add(readings, *args)
    except ReadingDown as down:
        taken.outcomes[key] = down.reason
        readings.add("ssh_reading_ok", 0.0, reading=reading, **labels)
        return None
    taken.outcomes[key] = None
    readings.add("ssh_reading_ok", 1.0, reading=reading, **labels)
    return result


def take_readings(
    readings: Readings, poll: PollOutput, config: SshTarget, previous_uptime: float | None
) -> TakenReadings:
    """Add every configured reading of one poll to `readings`. Blocking (parses the whole
    output): run it in the thread pool."""
    taken = TakenReadings()
    _take(readings, taken, "loadavg", {}, add_load, poll)
    _take(readings, taken, "nproc", {}, add_cpus, poll)
    _take(readings, taken, "meminfo", {}, add_memory, poll)
    taken.uptime = _take(readings, taken, "uptime", {}, add_uptime, poll, previous_uptime)
    _take(readings, taken, "df", {}, add_filesystems, poll)
    _take(readings, taken, "df_inodes", {}, add_inodes, poll)
    if config.services:
        _take(readings, taken, "systemd", {}, add_units, poll, config.services)
    for i, backup in enumerate(config.backups):
        labels = {"backup": backup.name, "copy": backup.location}
        _take(readings, taken, "backup", labels, add_backup, poll, i, backup)
    for i, command in enumerate(config.commands):
        _take(readings, taken, "command", {"command": command.name}, add_command, poll, i, command)
    return taken
