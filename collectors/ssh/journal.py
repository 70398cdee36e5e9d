"""A server's errors for the weekly log review: the journal's entries of priority err and above
(`journalctl --priority=err`, i.e. err, crit, alert and emerg), read on the daily polls over the
same SSH connection (`commands.journal_section`) and parsed here (pure, no I/O).

Each reading covers a window [since, until): `since` is where the last good reading ended (the
first one goes back `FIRST_DAYS`), `until` the poll's time in whole seconds; an entry stamped at
or after `until` is left to the next reading, so no entry counts twice and none falls between.
What a reading could not see is said, never counted as zero: journalctl missing (a server
without systemd), no journal files at all, an account that may not read the system journal
(journalctl then shows only the account's own entries: not in group `systemd-journal` or `adm`),
and a reading cut at `JOURNAL_LINES` entries (then its counts are lower bounds).

The text is hostile input: at most `MAX_LINES` lines of at most `MAX_LINE_CHARS` characters,
each matched by one anchored pattern, so the time is linear in the text and the result bounded.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from dutyd.collectors.ssh.commands import JOURNAL_LINES

# The window of the first reading after a start: a week and a day, so the weekly review has
# its days from the start (the journal keeps them unless it rotated them away).
FIRST_DAYS = 8
# A multi-line message shows at most 3 lines under --no-full; the cap leaves room for them.
MAX_LINES = 4 * JOURNAL_LINES
MAX_LINE_CHARS = 1024
MAX_SOURCE_CHARS = 64

# short-iso: `2026-12-07T10:00:01+0000 host ident[pid]: message` (systemd 252; newer ones write
# the offset as +00:00). The host is left out when the entry has none.
_ENTRY = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d{1,9})?(Z|[+-]\d\d:?\d\d) (\S[^\n]*)"
)
_PID = re.compile(r"\[\d{1,10}\]$")

# What journalctl says on stderr when it read less than the system journal.
_NO_ACCESS = "not seeing messages from other users and the system"
_NO_PERMISSION = "insufficient permissions"
_NO_FILES = "No journal files were found"


@dataclass(frozen=True, slots=True)
class JournalError:
    """One entry of priority err and above: when (UTC epoch, whole seconds) and its source
    (SYSLOG_IDENTIFIER as journalctl shows it: `sshd`, `kernel`, `postgres`)."""

    at: float
    source: str


@dataclass(slots=True)
class JournalReading:
    """One server's journal errors in [since, until). `problem` set: nothing was read (why)."""

    since: float
    until: float
    errors: list[JournalError] = field(default_factory=list)
    capped: bool = False  # JOURNAL_LINES entries came: there may have been more
    problem: str | None = None


def _epoch(m: re.Match[str]) -> float | None:
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    zone = m.group(7)
    offset = 0
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = (int(digits[:2]) * 60 + int(digits[2:])) * 60 * (-1 if zone[0] == "-" else 1)
    try:
        stamp = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError:
        return None
    return stamp.timestamp() - offset


def _source(rest: str) -> str:
    """The identifier of `host ident[pid]: message` (or `ident[pid]: message`)."""
    head = rest[: MAX_SOURCE_CHARS * 4].split(": ", 1)[0].rstrip(":")
    word = head.rsplit(" ", 1)[-1]
    word = _PID.sub("", word)
    return "".join(ch for ch in word if ch.isprintable())[:MAX_SOURCE_CHARS] or "-"


def parse_journal(text: str, since: float, until: float) -> tuple[list[JournalError], int]:
    """The entries of `journalctl --output=short-iso` stamped in [since, until), and how many
    entries journalctl printed in all (to tell a reading cut at `--lines`). Informational lines
    (`-- No entries --`, `-- Boot ... --`) and a message's continuation lines are skipped."""
    errors: list[JournalError] = []
    printed = 0
    for line in text.split("\n", MAX_LINES)[:MAX_LINES]:
        m = _ENTRY.match(line[:MAX_LINE_CHARS])
        if m is None:
            continue
        printed += 1
        at = _epoch(m)
        if at is not None and since <= at < until:
            errors.append(JournalError(at, _source(m.group(8))))
    return errors, printed


def journal_problem(stderr: str) -> str | None:
    """What journalctl's stderr says it could not read, as a duty engineer reads it."""
    if _NO_ACCESS in stderr or _NO_PERMISSION in stderr:
        return (
            "the account may not read the system journal (journalctl shows only its own "
            "entries): add it to group systemd-journal or adm"
        )
    if _NO_FILES in stderr:
        return "journalctl found no journal files on the server (journald keeps no log?)"
    return None


def read_journal(text: str, stderr: str, since: float, until: float) -> JournalReading:
    """The reading from what journalctl printed (it ran and exited 0)."""
    reading = JournalReading(since, until)
    if (problem := journal_problem(stderr)) is not None:
        reading.problem = problem
        return reading
    reading.errors, printed = parse_journal(text, since, until)
    reading.capped = printed >= JOURNAL_LINES
    return reading
