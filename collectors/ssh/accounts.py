"""The software usage register's reading of a server: its accounts, its password policy and
who logged in when (pure parsers, no I/O here).

Read on the same polls as the equipment facts (at start, then daily: `Collector.facts_due`),
by the sections of `commands.ACCOUNT_SECTIONS`: `/etc/passwd`, `/etc/login.defs`,
`/etc/security/pwquality.conf` (all world-readable) and `last -F -w -n 2000` under `TZ=UTC` (wtmp is
world-readable too). Nothing needs root. An account "can log in" when its shell is a login
shell (a locked password does not stop an SSH key). Where the account may read /etc/shadow (root,
or group shadow), each password's state is read too (`parse_shadow`: locked, empty or set, from
the field's first character alone); elsewhere the reading says it could not.

Server text is hostile input: each parser reads at most `MAX_LINES` lines of at most
`MAX_LINE_CHARS` characters, splits on fixed characters and matches anchored patterns only, so
its time is linear in the text and its result bounded.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from dutyd.collectors.ssh.parsers import SectionOutput

MAX_LINES = 5000
MAX_LINE_CHARS = 1024
MAX_NAME_CHARS = 64

# Shells that let nobody in (nologin, false and the special accounts of old passwd files).
NO_LOGIN_SHELLS = frozenset({"nologin", "false", "sync", "shutdown", "halt", "true"})

_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
# `last -F`: "Mon Dec  7 10:00:01 2026" (C locale, full times).
_FULL_TIME = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})"
)
_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@$-]{0,63}")
_NOT_LOGINS = frozenset({"reboot", "shutdown", "runlevel", "wtmp", "btmp"})


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    shell: str

    @property
    def can_log_in(self) -> bool:
        return self.shell.rsplit("/", 1)[-1] not in NO_LOGIN_SHELLS

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "uid": self.uid, "shell": self.shell}


@dataclass(frozen=True, slots=True)
class Login:
    """One login session from wtmp: who, on which line, from where, when (UTC epoch)."""

    user: str
    line: str
    host: str
    start: float

    def as_dict(self) -> dict[str, object]:
        return {"user": self.user, "line": self.line, "host": self.host, "start": self.start}


@dataclass(slots=True)
class AccountsReading:
    """One server's accounts, password policy and logins as read on one poll. A part that
    could not be read is None (a missing pwquality.conf is normal; a missing passwd is not)."""

    accounts: list[Account] | None = None
    pass_max_days: int | None = None
    min_length: int | None = None
    logins: list[Login] | None = None
    problems: list[str] = field(default_factory=list)
    # account -> "locked" | "empty" | "set" (from /etc/shadow); None: not read, and why.
    passwords: dict[str, str] | None = None
    passwords_unread: str | None = None


def _lines(text: str) -> list[str]:
    return [line[:MAX_LINE_CHARS] for line in text.split("\n", MAX_LINES)[:MAX_LINES]]


def _clean(word: str) -> str:
    return "".join(ch for ch in word if ch.isprintable())[:MAX_NAME_CHARS]


def parse_passwd(text: str) -> list[Account]:
    """passwd(5) lines `name:password:uid:gid:gecos:home:shell`; malformed lines left out."""
    accounts: list[Account] = []
    for line in _lines(text):
        parts = line.split(":")
        if len(parts) != 7 or not _NAME.fullmatch(parts[0]):
            continue
        uid = parts[2]
        if not (uid.isascii() and uid.isdigit() and len(uid) <= 10):
            continue
        # An empty shell field means /bin/sh.
        accounts.append(Account(parts[0], int(uid), _clean(parts[6].strip()) or "/bin/sh"))
    return accounts


def _int_setting(text: str, key: str, sep: str) -> int | None:
    """The last `KEY value` (login.defs) or `key = value` (pwquality.conf) not commented out."""
    found: int | None = None
    for line in _lines(text):
        line = line.strip()
        if not line or line[0] == "#":
            continue
        name, _, value = line.partition(sep) if sep != " " else _split_ws(line)
        value = value.strip().split("#", 1)[0].strip()
        digits = value.isascii() and value.lstrip("-").isdigit() and len(value) <= 12
        if name.strip() == key and digits:
            found = int(value)
    return found


def _split_ws(line: str) -> tuple[str, str, str]:
    parts = line.split(None, 1)
    return (parts[0], " ", parts[1]) if len(parts) == 2 else (line, "", "")


def parse_login_defs(text: str) -> tuple[int | None, int | None]:
    """(PASS_MAX_DAYS, PASS_MIN_LEN) of login.defs(5); unset: None."""
    return _int_setting(text, "PASS_MAX_DAYS", " "), _int_setting(text, "PASS_MIN_LEN", " ")


def parse_pwquality(text: str) -> int | None:
    """`minlen` of pwquality.conf(5); unset: None."""
    return _int_setting(text, "minlen", "=")


def _epoch(m: re.Match[str]) -> float | None:
    month = _MONTHS.get(m.group(1))
    if month is None:
        return None
    year, day, hour, minute, second = (int(m.group(i)) for i in (6, 2, 3, 4, 5))
    try:
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()
    except (ValueError, OverflowError):
        return None


def parse_last(text: str) -> list[Login]:
    """`last -F -w` (util-linux, run under TZ=UTC): `user line [host] <full start time> ...`;
    reboot/shutdown pseudo-users and the `wtmp begins` trailer are left out."""
    logins: list[Login] = []
    for line in _lines(text):
        words = line.split(None, 2)
        if len(words) < 3 or words[0] in _NOT_LOGINS or not _NAME.fullmatch(words[0]):
            continue
        m = _FULL_TIME.search(words[2])
        if m is None or (start := _epoch(m)) is None:
            continue
        host = words[2][: m.start()].strip()
        logins.append(Login(words[0], _clean(words[1]), _clean(host), start))
    return logins


def parse_shadow(text: str) -> dict[str, str]:
    """`name:<first character of the password field>` lines (commands.SHADOW_PROGRAM): `!` or
    `*` locked, nothing empty (a login without a password where PAM allows it), else set."""
    states: dict[str, str] = {}
    for line in _lines(text):
        name, sep, first = line.partition(":")
        if not sep or not _NAME.fullmatch(name) or len(first) > 1:
            continue
        states[name] = "locked" if first in ("!", "*") else "empty" if not first else "set"
    return states


def _shadow_unread(out: SectionOutput | None) -> str:
    if out is None or out.status is None:
        return "/etc/shadow was not read (the poll stopped before it)"
    said = " ".join(out.stderr.split())[:200]
    if "denied" in said.lower():
        return "/etc/shadow is readable by root or group shadow only: password locks not known"
    return f"/etc/shadow could not be read (exit status {out.status}" + (
        f": {said})" if said else ")"
    )


def read_accounts(outputs: Mapping[str, SectionOutput]) -> AccountsReading:
    """The reading from the account sections of one poll's output."""
    reading = AccountsReading()

    def text(sid: str) -> str | None:
        out = outputs.get(sid)
        return out.stdout if out is not None and out.status == 0 else None

    if (passwd := text("passwd")) is not None:
        reading.accounts = parse_passwd(passwd)
    else:
        reading.problems.append("/etc/passwd could not be read")
    if (defs := text("login_defs")) is not None:
        reading.pass_max_days, reading.min_length = parse_login_defs(defs)
    if (quality := text("pwquality")) is not None and (minlen := parse_pwquality(quality)):
        # pam_pwquality's minlen is the one PAM enforces; login.defs' PASS_MIN_LEN is older.
        reading.min_length = minlen
    if (shadow := text("shadow")) is not None:
        reading.passwords = parse_shadow(shadow)
    else:
        reading.passwords_unread = _shadow_unread(outputs.get("shadow"))
    if (last := text("last")) is not None:
        reading.logins = parse_last(last)
    else:
        reading.problems.append("last (wtmp) could not be read")
    return reading
