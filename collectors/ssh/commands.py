"""The exact remote commands the SSH collector runs, as one POSIX sh script per poll.

What runs on the server (documented for the people who audit it; nothing is installed there):

    env LC_ALL=C LANG=C timeout -s KILL <budget> sh -s     <- the SSH exec request, fixed text

and on its standard input a script of sections, each one line `s <id> <argv...>` (untimed) or
`t <id> <argv...>` (run under `timeout -s KILL <command_timeout>`):

    s loadavg   cat /proc/loadavg
    s nproc     nproc
    s meminfo   cat /proc/meminfo
    s uptime    cat /proc/uptime
    t df        df -PTk                      POSIX format, with fs type, 1024-byte blocks
    t df_inodes df -PTki
    s clock     date +%s                     only with backups: ages use the server's clock
    t systemd   systemctl is-active -- <unit>...          only with `services`
    t backup.N  find -H <dir> -maxdepth 1 -name <glob> -type f -exec stat -c '%Y %s' {} +
    t command.N <the configured argv>
    s os        cat /etc/os-release          at start and daily: the equipment register
    s kernel    uname -srm                   (ditto)
    s vendor    cat /sys/class/dmi/id/sys_vendor       (ditto; readable without root)
    s product   cat /sys/class/dmi/id/product_name     (ditto)
    s passwd    cat /etc/passwd              at start and daily: the software usage register
    s login_defs cat /etc/login.defs         (ditto: PASS_MAX_DAYS, PASS_MIN_LEN)
    s pwquality cat /etc/security/pwquality.conf       (ditto: minlen; may be missing)
    s shadow    awk -F: '{ print $1 ":" substr($2, 1, 1) }' /etc/shadow
                                             (ditto: each account's password field's first
                                             character only, so no hash leaves the server:
                                             locked, empty or set; readable by root or group
                                             shadow alone, said so when refused)
    t last      env TZ=UTC last -F -w -n 2000  (ditto: the newest 2000 logins, times in UTC)
    t journal   env TZ=UTC COLUMNS=120 journalctl --no-pager --no-full --priority=err
                --output=short-iso --since=<YYYY-MM-DD HH:MM:SS> --lines=10000
                                             (ditto: entries of priority err and above since
                                             the last reading, for the weekly log review)

Tools: GNU coreutils/findutils or busybox (`cat`, `nproc`, `df`, `date`, `timeout`, `find`,
`stat`, `sh`), plus systemd's `systemctl` when `services` are configured (and `journalctl` on
the daily polls, where the server has one). Backups are listed with
`stat -c`, not GNU find's `-printf`, so that busybox servers and NAS boxes (often where the
off-site copy lives) are read too; busybox `timeout` kills only the command it started, GNU
`timeout` its whole process group. Nothing runs through `sudo`, and nothing writes on the server.

Every word taken from the config is passed through `shlex.quote`, so a path, glob, unit name or
argument is one word for the remote shell and never shell syntax. The command line itself holds
no config text at all (the script arrives on stdin), so it works whatever the login shell is.
Each section prints `<marker> begin <id>` / `<marker> end <id> <exit status>` lines on stdout
and on stderr; the marker holds a random nonce per poll, so command output cannot forge one.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

# Untimed sections only read kernel files or print a number: they cannot hang, and skipping the
# `timeout` process for them halves the processes started per poll.
LOADAVG = ("cat", "/proc/loadavg")
NPROC = ("nproc",)
MEMINFO = ("cat", "/proc/meminfo")
UPTIME = ("cat", "/proc/uptime")
CLOCK = ("date", "+%s")
# -P: one line per filesystem in the POSIX layout; -T: the type column (to leave out pseudo
# filesystems); -k: 1024-byte blocks whatever POSIXLY_CORRECT or the df flavour says.
DF = ("df", "-PTk")
DF_INODES = ("df", "-PTki")
# Modification time (whole seconds: busybox stat has no sub-second %Y) and size, one file a line.
STAT_FORMAT = "%Y %s"

# Slack for the untimed sections and the shell itself within the whole script's limit.
SCRIPT_SLACK = 2.0


@dataclass(frozen=True, slots=True)
class Section:
    """One command of the poll script: `id` names it in the markers, `timed` wraps it in
    `timeout -s KILL <command_timeout>` on the server."""

    id: str
    argv: tuple[str, ...]
    timed: bool


def systemd_section(units: Sequence[str]) -> Section:
    # `--` so that a unit name can never be read as an option of systemctl.
    return Section("systemd", ("systemctl", "is-active", "--", *units), timed=True)


def backup_section(index: int, path: str, pattern: str) -> Section:
    # -H follows a symlinked backup dir given on the command line (a common layout for an
    # off-site mount) without following links inside it.
    argv = ("find", "-H", path, "-maxdepth", "1", "-name", pattern, "-type", "f")
    # `{} +`: one stat for all the files found, none when there are none.
    return Section(
        f"backup.{index}", (*argv, "-exec", "stat", "-c", STAT_FORMAT, "{}", "+"), timed=True
    )


def command_section(index: int, argv: Sequence[str]) -> Section:
    return Section(f"command.{index}", tuple(argv), timed=True)


# What the server is, for the equipment register (no serial: DMI serials need root).
FACT_SECTIONS = (
    Section("os", ("cat", "/etc/os-release"), timed=False),
    Section("kernel", ("uname", "-srm"), timed=False),
    Section("vendor", ("cat", "/sys/class/dmi/id/sys_vendor"), timed=False),
    Section("product", ("cat", "/sys/class/dmi/id/product_name"), timed=False),
)


# The password field's first character of each /etc/shadow line (`!`/`*` locked, nothing:
# empty, else a hash): the hashes themselves never leave the server. Fixed text, no config in it.
SHADOW_PROGRAM = '{ print $1 ":" substr($2, 1, 1) }'

# The software usage register: accounts, password policy, logins (all readable without root;
# parsed by `accounts.py`).
ACCOUNT_SECTIONS = (
    Section("passwd", ("cat", "/etc/passwd"), timed=False),
    Section("login_defs", ("cat", "/etc/login.defs"), timed=False),
    Section("pwquality", ("cat", "/etc/security/pwquality.conf"), timed=False),
    Section("shadow", ("awk", "-F:", SHADOW_PROGRAM, "/etc/shadow"), timed=False),
    Section("last", ("env", "TZ=UTC", "last", "-F", "-w", "-n", "2000"), timed=True),
)


# The weekly log review: the journal's entries of priority err and above (`journal.py`). The
# output is bounded on the server: at most JOURNAL_LINES entries (`--lines`: the newest ones
# within `--since`), each cut to JOURNAL_COLUMNS (`--no-full` ellipsizes to $COLUMNS, even into
# a pipe; a multi-line message shows 3 lines at most): about 1.2 MB, well within the poll's
# 4 MiB. No `--until`: journalctl 252 combined with `--lines` shows nothing before it; the
# parser drops the entries past the reading's end instead. `-q` is not given, so that the
# notice of a user who may not read the system journal reaches stderr.
JOURNAL_LINES = 10_000
JOURNAL_COLUMNS = 120


def journal_section(since: float) -> Section:
    """journalctl's entries of priority err and above since `since` (UTC epoch, whole seconds:
    both old and new journalctl read this form)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since))
    argv = (
        "env", "TZ=UTC", f"COLUMNS={JOURNAL_COLUMNS}", "journalctl", "--no-pager", "--no-full",
        "--priority=err", "--output=short-iso", f"--since={stamp}", f"--lines={JOURNAL_LINES}",
    )  # fmt: skip
    return Section("journal", argv, timed=True)


def standard_sections(with_clock: bool) -> list[Section]:
    sections = [
        Section("loadavg", LOADAVG, timed=False),
        Section("nproc", NPROC, timed=False),
        Section("meminfo", MEMINFO, timed=False),
        Section("uptime", UPTIME, timed=False),
        Section("df", DF, timed=True),
        Section("df_inodes", DF_INODES, timed=True),
    ]
    if with_clock:
        sections.append(Section("clock", CLOCK, timed=False))
    return sections


def script_budget(sections: Sequence[Section], command_timeout: float) -> float:
    """The longest the whole script may run: each timed section is cut off at its limit."""
    return command_timeout * sum(1 for s in sections if s.timed) + SCRIPT_SLACK


def _seconds(value: float) -> str:
    # GNU and busybox timeout both take a decimal number of seconds.
    return f"{value:.3f}".rstrip("0").rstrip(".")


def remote_command(budget: float) -> str:
    """The fixed exec request. `env` rather than `VAR=x cmd` because the login shell may be csh
    or fish; the C locale keeps headers and numbers in the format the parsers expect."""
    return f"env LC_ALL=C LANG=C timeout -s KILL {_seconds(budget)} sh -s"


def marker_for(nonce: str) -> str:
    return f"@@dutyd {nonce}"


def render_script(sections: Sequence[Section], nonce: str, command_timeout: float) -> str:
    """The script fed to `sh -s`. Every command reads /dev/null: the script itself arrives on
    stdin, and a command reading stdin would swallow the rest of it."""
    lines = [
        f"M={shlex.quote(marker_for(nonce))}",
        "s() { n=$1; shift; "
        'printf \'%s begin %s\\n\' "$M" "$n"; printf \'%s begin %s\\n\' "$M" "$n" >&2; '
        '"$@" </dev/null; r=$?; '
        'printf \'\\n%s end %s %s\\n\' "$M" "$n" "$r"; '
        'printf \'\\n%s end %s %s\\n\' "$M" "$n" "$r" >&2; }',
        f't() {{ n=$1; shift; s "$n" timeout -s KILL {_seconds(command_timeout)} "$@"; }}',
    ]
    for section in sections:
        words = " ".join(shlex.quote(word) for word in section.argv)
        lines.append(f"{'t' if section.timed else 's'} {section.id} {words}")
    return "\n".join(lines) + "\n"


def describe(section: Section) -> str:
    """The command as a person would type it, for error messages."""
    return shlex.join(section.argv)
