"""Pure parsers for the standard Linux tool output the SSH collector reads (no I/O here).

Each parser takes the text one command printed and returns plain values, or raises `ParseError`
with a message a duty engineer can act on (what was expected, the line that did not fit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dutyd.core.errors import shown


class ParseError(ValueError):
    """The output was not in the format the parser knows."""


def excerpt(text: str, limit: int = 200) -> str:
    """`text` on one line, whitespace collapsed, cut to `limit` characters: how device output
    appears in an error message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --- the section protocol -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SectionOutput:
    """What one section of the poll script printed. `status` is None when the section began
    but its end marker never came (the script was killed or the connection dropped)."""

    stdout: str
    stderr: str
    status: int | None


_EXIT_STATUS = re.compile(r"[0-9]{1,3}")


def _scan(text: str, marker: str) -> dict[str, tuple[str, int | None]]:
    found: dict[str, tuple[str, int | None]] = {}
    begin = f"{marker} begin "
    pos = 0
    while True:
        i = text.find(begin, pos)
        if i < 0:
            return found
        if i > 0 and text[i - 1] != "\n":
            pos = i + 1
            continue
        eol = text.find("\n", i)
        if eol < 0:
            found[text[i + len(begin) :]] = ("", None)
            return found
        sid = text[i + len(begin) : eol]
        end_tag = f"\n{marker} end {sid} "
        j = text.find(end_tag, eol)
        if j < 0:
            found[sid] = (text[eol + 1 :], None)
            return found
        status_start = j + len(end_tag)
        status_end = text.find("\n", status_start)
        if status_end < 0:
            status_end = len(text)
        raw_status = text[status_start:status_end].strip()
        # The script prints one "\n" before the end marker so that it always starts a line;
        # the search above consumed it, so the content is exactly what the command printed.
        content = text[eol + 1 : j] if j > eol else ""
        # An exit status is 0-255; anything else (a huge or non-ASCII digit string, which int()
        # refuses) is not the script's end marker talking: treat the section as cut off.
        status = int(raw_status) if _EXIT_STATUS.fullmatch(raw_status) else None
        found[sid] = (content, status)
        pos = status_end


def split_sections(stdout: str, stderr: str, marker: str) -> dict[str, SectionOutput]:
    """Cut the script's two output streams into sections by their begin/end markers."""
    out = _scan(stdout, marker)
    err = _scan(stderr, marker)
    return {
        sid: SectionOutput(text, err.get(sid, ("", None))[0], status)
        for sid, (text, status) in out.items()
    }


# --- kernel files and small commands --------------------------------------------------------


def _float(word: str, what: str) -> float:
    try:
        value = float(word)
    except ValueError:
        raise ParseError(f"{what}: {shown(word)} is not a number") from None
    if not math.isfinite(value):
        raise ParseError(f"{what}: {shown(word)} is not a finite number")
    return value


def _first_line(text: str, what: str) -> str:
    line = text.strip().split("\n", 1)[0].strip()
    if not line:
        raise ParseError(f"{what} printed nothing")
    return line


def parse_os_release(text: str) -> str:
    """PRETTY_NAME (else NAME and VERSION) of os-release(5): shell-style KEY=value lines."""
    fields: dict[str, str] = {}
    for line in text.split("\n")[:200]:
        key, sep, value = line.strip().partition("=")
        if sep and key.isidentifier():
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            fields[key] = value.replace('\\"', '"')
    return fields.get("PRETTY_NAME") or " ".join(
        v for v in (fields.get("NAME"), fields.get("VERSION")) if v
    )


def server_facts(outputs: Mapping[str, SectionOutput]) -> dict[str, str]:
    """The equipment register's facts from the fact sections that ran cleanly."""
    facts: dict[str, str] = {}

    def text(sid: str) -> str:
        out = outputs.get(sid)
        return out.stdout.strip() if out is not None and out.status == 0 else ""

    if (os_release := text("os")) and (name := parse_os_release(os_release)):
        facts["os"] = name
    for fact, sid in (("kernel", "kernel"), ("vendor", "vendor"), ("model", "product")):
        line = text(sid).split("\n", 1)[0].strip()
        if line:
            facts[fact] = line
    return facts


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """`/proc/loadavg`: `0.52 0.58 0.59 1/389 12345` -> the 1, 5 and 15 minute averages."""
    words = _first_line(text, "/proc/loadavg").split()
    if len(words) < 3:
        raise ParseError(f"/proc/loadavg: expected three load averages, got {shown(text.strip())}")
    one, five, fifteen = (_float(w, "/proc/loadavg") for w in words[:3])
    return one, five, fifteen


def parse_nproc(text: str) -> int:
    """`nproc`: the number of processing units available."""
    line = _first_line(text, "nproc")
    # Digits bounded before int(): Python refuses to convert more than 4300 of them.
    if not line.isdigit() or not line.isascii() or len(line) > 9 or int(line) < 1:
        raise ParseError(f"nproc: expected a positive whole number, got {shown(line)}")
    return int(line)


def parse_uptime(text: str) -> float:
    """`/proc/uptime`: `350735.47 234388.90` -> seconds since boot."""
    words = _first_line(text, "/proc/uptime").split()
    return _float(words[0], "/proc/uptime")


def parse_epoch(text: str) -> float:
    """`date +%s`: seconds since 1970 on the server's clock."""
    line = _first_line(text, "date +%s")
    if len(line) > 40 or not re.fullmatch(r"\d+(\.\d+)?", line):
        raise ParseError(f"date +%s: expected seconds since 1970, got {shown(line)}")
    return float(line)


@dataclass(frozen=True, slots=True)
class MemInfo:
    total_bytes: float
    available_bytes: float
    swap_total_bytes: float
    swap_free_bytes: float


# 20 digits hold any 64-bit counter; more would read as infinity.
_MEMINFO_LINE = re.compile(r"^(\w[\w()]*):\s+([0-9]{1,20})(?:\s+kB)?\s*$")


def parse_meminfo(text: str) -> MemInfo:
    """`/proc/meminfo` (values in kB). Kernels before 3.14 have no MemAvailable: it is then
    estimated as MemFree + Buffers + Cached + SReclaimable, as `free` did."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        m = _MEMINFO_LINE.match(line.strip())
        if m:
            values[m.group(1)] = float(m.group(2)) * 1024
    if "MemTotal" not in values:
        raise ParseError(f"/proc/meminfo has no MemTotal line (got {shown(text)})")
    if "MemAvailable" in values:
        available = values["MemAvailable"]
    elif "MemFree" in values:
        available = sum(values.get(k, 0.0) for k in ("MemFree", "Buffers", "Cached"))
        available += values.get("SReclaimable", 0.0)
    else:
        raise ParseError("/proc/meminfo has neither MemAvailable nor MemFree")
    return MemInfo(
        total_bytes=values["MemTotal"],
        available_bytes=available,
        swap_total_bytes=values.get("SwapTotal", 0.0),
        swap_free_bytes=values.get("SwapFree", 0.0),
    )


# --- df ---------------------------------------------------------------------------------------

# Filesystems that are not disks: memory-backed, kernel interfaces, container layers, read-only
# images. Their use says nothing about a disk filling up.
PSEUDO_FSTYPES = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "fuse.gvfsd-fuse",
        "fuse.lxcfs",
        "fuse.portal",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "overlay",
        "proc",
        "pstore",
        "ramfs",
        "rootfs",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tmpfs",
        "tracefs",
        "iso9660",
    }
)
# Without a type column (plain `df -P`), the device name of pseudo filesystems is their type.
PSEUDO_DEVICES = frozenset({"tmpfs", "devtmpfs", "udev", "overlay", "shm", "none", "proc"})


@dataclass(frozen=True, slots=True)
class DfRow:
    """One filesystem. For `df -P` the numbers are bytes (size, used, available); for
    `df -Pi` they are inode counts (total, used, free). None: df printed `-` (unknown)."""

    device: str
    fstype: str | None
    mount: str
    total: float | None
    used: float | None
    available: float | None

    @property
    def used_ratio(self) -> float | None:
        # used / (used + available), as df's Capacity column: blocks reserved for root are
        # neither, and a disk is full for ordinary users when available reaches 0.
        if self.used is None or self.available is None or self.used + self.available <= 0:
            return None
        return self.used / (self.used + self.available)


# A df row is at most a device name and a mount path (PATH_MAX 4096 each on Linux) and six short
# columns; a longer line is not df talking.
MAX_DF_LINE_CHARS = 8192
_TOKEN = re.compile(r"\S+")
_BLOCK_SIZE = re.compile(r"(\d{1,9})([kK])?-")


def _is_count(word: str) -> bool:
    return word == "-" or (word.isdigit() and word.isascii() and len(word) <= 30)


def _is_capacity(word: str) -> bool:
    return word == "-" or (word.endswith("%") and _is_count(word[:-1]) and word != "-%")


def _count(word: str) -> float | None:
    return None if word == "-" else float(word)


@dataclass(frozen=True, slots=True)
class _DfFields:
    device: str
    fstype: str | None
    counts: tuple[str, str, str]
    mount: str


def _df_columns(w: Sequence[str], skip: int) -> bool:
    """Whether words `w` are [type] blocks used available capacity% /mount..."""
    return (
        _is_count(w[skip])
        and _is_count(w[skip + 1])
        and _is_count(w[skip + 2])
        and _is_capacity(w[skip + 3])
        and w[skip + 4].startswith("/")
    )


def _df_fields(line: str, with_type: bool) -> _DfFields | None:
    """Split one row into its columns, or None if it is not a POSIX df row.

    Device names and mount points may hold spaces, so the row is read by whitespace-separated
    words: the first place where [type] blocks used available capacity% are followed by a word
    starting with '/' ends the device name (the shortest device, as `df` prints it) and starts
    the mount, which runs to the end of the line. Each word is looked at a bounded number of
    times: linear in the line, whatever a device (or whoever mounts a FUSE filesystem) prints.
    """
    skip = 1 if with_type else 0
    # The usual row: device and mount without spaces, one word each (5x faster than below,
    # which counts at the output cap: 4 MiB of rows took 2.8 s of CPU the long way).
    simple = line.split()
    if len(simple) == skip + 6 and _df_columns(simple[1:], skip):
        return _DfFields(
            device=simple[0],
            fstype=simple[1] if with_type else None,
            counts=(simple[skip + 1], simple[skip + 2], simple[skip + 3]),
            mount=simple[-1],
        )
    words = [(m.start(), m.group()) for m in _TOKEN.finditer(line)]
    # words[i] is the first word after the device; the device is words[:i] (at least one).
    for i in range(1, len(words) - skip - 4):
        w = [word for _, word in words[i : i + skip + 5]]
        if not _df_columns(w, skip):
            continue
        device = line[: words[i - 1][0] + len(words[i - 1][1])].strip()
        return _DfFields(
            device=device,
            fstype=w[0] if with_type else None,
            counts=(w[skip], w[skip + 1], w[skip + 2]),
            mount=line[words[i + skip + 4][0] :],
        )
    return None


def parse_df(text: str, *, with_type: bool = True, inodes: bool = False) -> list[DfRow]:
    """`df -PTk` / `df -PTki` (or without -T when `with_type` is False), GNU or busybox. The
    header must be the C-locale one (`Filesystem ...`); the block size is read from it
    (`1024-blocks`, busybox's `1K-blocks`, `512-blocks`). Every other line must be a POSIX row,
    or the whole output is refused: a row misread as another disk would be worse than none."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParseError("df printed nothing")
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_DF_LINE_CHARS:
            raise ParseError(
                f"df line {number} is {len(line)} characters long, more than a df row can be "
                f"({MAX_DF_LINE_CHARS}): {shown(line)}"
            )
    header, body = lines[0], lines[1:]
    if _df_fields(header, with_type) is not None:
        raise ParseError(f"df printed no header line; first line was {shown(header)}")
    if header.split()[0] != "Filesystem":
        # The collector runs df under LC_ALL=C. A translated header means that was not
        # honoured, and translated output may also differ in its rows: refuse it whole.
        raise ParseError(
            f"df printed a header in another language or format ({shown(header)}); "
            "expected the C-locale POSIX header starting 'Filesystem'"
        )
    scale = 1.0
    if not inodes:
        scale = 1024.0
        for word in header.split():
            if m := _BLOCK_SIZE.match(word):
                scale = float(m.group(1)) * (1024 if m.group(2) else 1)
                break
    rows: list[DfRow] = []
    expected = (
        "filesystem type blocks used available capacity% mount"
        if with_type
        else ("filesystem blocks used available capacity% mount")
    )
    for number, line in enumerate(body, start=2):
        fields = _df_fields(line, with_type)
        if fields is None:
            raise ParseError(
                f"df line {number} is not in the POSIX format ({expected}): {shown(line)}"
            )
        total, used, avail = (_count(c) for c in fields.counts)
        rows.append(
            DfRow(
                device=fields.device,
                fstype=fields.fstype,
                mount=fields.mount,
                total=None if total is None else total * scale,
                used=None if used is None else used * scale,
                available=None if avail is None else avail * scale,
            )
        )
    if not rows:
        raise ParseError(f"df printed only a header: {shown(header)}")
    return rows


def real_filesystems(rows: Sequence[DfRow]) -> list[DfRow]:
    """Leave out pseudo filesystems and keep one row per mount point (the last, which is the
    one mounted on top, as the kernel sees it)."""
    by_mount: dict[str, DfRow] = {}
    for row in rows:
        if row.fstype is not None and row.fstype in PSEUDO_FSTYPES:
            continue
        if row.fstype is None and row.device in PSEUDO_DEVICES:
            continue
        if row.total == 0:
            continue
        by_mount.pop(row.mount, None)
        by_mount[row.mount] = row
    return list(by_mount.values())


# --- systemctl, find, user commands -----------------------------------------------------------

UNIT_STATES = frozenset(
    {
        "active",
        "inactive",
        "failed",
        "activating",
        "deactivating",
        "reloading",
        "refreshing",
        "maintenance",
        "unknown",
    }
)


def parse_is_active(text: str, units: Sequence[str]) -> dict[str, str]:
    """`systemctl is-active -- a b c`: one state word per unit, in order."""
    states = [line.strip() for line in text.splitlines() if line.strip()]
    if len(states) != len(units):
        raise ParseError(
            f"systemctl is-active printed {len(states)} state(s) for {len(units)} unit(s)"
        )
    for unit, state in zip(units, states, strict=True):
        if state not in UNIT_STATES:
            raise ParseError(f"systemctl is-active: unexpected state {shown(state)} for {unit}")
    return dict(zip(units, states, strict=True))


_FIND_LINE = re.compile(r"^(\d{1,20}(?:\.\d{1,20})?) (\d{1,30})$")


def parse_backup_files(text: str) -> list[tuple[float, int]]:
    """`find ... -exec stat -c '%Y %s' {} +`: one `mtime size` pair per file (a fractional
    mtime, as GNU `find -printf '%T@'` prints it, is read too)."""
    files: list[tuple[float, int]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _FIND_LINE.match(line.strip())
        if not m:
            raise ParseError(f"backup files: expected 'mtime size', got {shown(line.strip())}")
        files.append((float(m.group(1)), int(m.group(2))))
    return files


@dataclass(frozen=True, slots=True)
class BackupStats:
    count: int
    newest_age_seconds: float | None
    newest_size_bytes: float | None
    oldest_age_seconds: float | None


def backup_stats(files: Sequence[tuple[float, int]], now: float) -> BackupStats:
    """Age and size of the newest file, count and age of the oldest, on the server's clock.
    A file dated in the future (clock trouble) counts as age 0, not as a negative age."""
    if not files:
        return BackupStats(0, None, None, None)
    newest = max(files, key=lambda f: f[0])
    oldest = min(f[0] for f in files)
    return BackupStats(
        count=len(files),
        newest_age_seconds=max(0.0, now - newest[0]),
        newest_size_bytes=float(newest[1]),
        oldest_age_seconds=max(0.0, now - oldest),
    )


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SINGLE = re.compile(rf"^\s*({_NUMBER})\s*$")
_NAMED = re.compile(rf"^\s*([A-Za-z_][A-Za-z0-9_.:-]{{0,63}})\s+({_NUMBER})\s*$")
MAX_COMMAND_VALUES = 100


def parse_command_output(text: str) -> list[tuple[str | None, float]]:
    """A user command's output: one number (name None), or `name value` lines (names of
    letters, digits, `_ . : -`, at most 100 of them, each once)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParseError("the command printed nothing; expected a number or 'name value' lines")
    if len(lines) == 1 and (m := _SINGLE.match(lines[0])):
        return [(None, _float(m.group(1), "the command's value"))]
    if len(lines) > MAX_COMMAND_VALUES:
        raise ParseError(f"the command printed {len(lines)} lines; at most 100 values are read")
    values: list[tuple[str | None, float]] = []
    seen: set[str] = set()
    for line in lines:
        m = _NAMED.match(line)
        if not m:
            raise ParseError(f"expected a number or 'name value' lines, got {shown(line.strip())}")
        if m.group(1) in seen:
            raise ParseError(f"name {m.group(1)!r} printed twice")
        seen.add(m.group(1))
        values.append((m.group(1), _float(m.group(2), f"value of {m.group(1)!r}")))
    return values
