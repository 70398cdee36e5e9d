"""A simulated Linux server reached over real SSH: its disk fills up and its backup stops arriving.

The server is an asyncssh server in-process with its own host key; the demo writes a known_hosts
file holding that key and a client key, so the SSH collector verifies the host key exactly as
it does for a real server. The server understands the one exec request the collector sends
(`env LC_ALL=C LANG=C timeout -s KILL <n> sh -s`, see `collectors/ssh/commands.py`), reads the
poll script from stdin and answers each of its commands (`cat /proc/loadavg`, `df -PTk`,
`find ... -exec stat`, `systemctl is-active`, ...) from a simulated state, in the output format of
the real tools. Anything else is answered as a shell would: `not found`, exit status 127.

The server's clock runs `CLOCK_FACTOR` times faster than the scenario, so a backup a day old is a
matter of seconds in the demo. Tests use `SimulatedLinux` for the hard cases too (a server that
drops the connection in the middle of a command, password logins).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import fnmatch
import math
import re
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from dutyd.agent.demo.base import DemoDevice

# The scenario, in scenario seconds (wall seconds × speed).
CLOCK_FACTOR = 1800.0  # one scenario second is 30 minutes on the server's clock
DAY = 86400.0
FIRST_BACKUP_AT = 8.0  # the nightly backup runs at 8 s, 56 s, ... (every 48 scenario s)
BACKUP_STOPS_AT = 60.0  # the backup job breaks: no backup after this
DISK_START_PERCENT = 70.0
DISK_FILL_RATE = 0.3  # percent per scenario second: 85 % at 50 s, 95 % at 83 s
DISK_MAX_PERCENT = 98.5
STALE_AFTER = 26 * 3600.0  # the demo target's backup max_age
RETENTION_DAYS = 15.0
BACKUP_SIZE = 734_003_200  # bytes

_COMMAND = re.compile(r"^env LC_ALL=C LANG=C timeout -s KILL (\d+(?:\.\d+)?) sh -s$")
_TIMED = re.compile(r"timeout -s KILL (\d+(?:\.\d+)?) \"\$@\"")
_DF_HEADER = "Filesystem     Type     1024-blocks      Used Available Capacity Mounted on"
_DFI_HEADER = "Filesystem     Type      Inodes   IUsed    IFree IUse% Mounted on"


@dataclass
class Filesystem:
    device: str
    fstype: str
    mount: str
    size_kb: int
    used_kb: int
    inodes: int = 0
    inodes_used: int = 0


@dataclass
class LinuxState:
    """What the simulated server reports. Tests and the scenario change it between polls."""

    clock: float = field(default_factory=time.time)
    uptime: float = 40 * DAY
    load: tuple[float, float, float] = (0.42, 0.38, 0.35)
    cpus: int = 4
    mem_total_kb: int = 16_318_480
    mem_available_kb: int = 9_874_112
    swap_total_kb: int = 2_097_148
    swap_free_kb: int = 2_097_148
    filesystems: list[Filesystem] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    # directory -> file name -> (mtime on the server's clock, size in bytes)
    files: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)
    # argv[0] of a user command -> its output
    programs: dict[str, str] = field(default_factory=dict)
    # Misbehaviour for tests: drop the connection when this section begins; answer a command
    # line (as `shlex.join(argv)`) with this (stdout, stderr, exit status) instead.
    drop_at_section: str | None = None
    outputs: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # The systemd journal as journalctl shows it: (time, priority 0-7, identifier, message);
    # None: a server without systemd (journalctl not found).
    journal: list[JournalEntry] | None = None
    # What `awk ... /etc/shadow` prints (name:first character of the password field); None:
    # refused, as for an account that is not root or in group shadow.
    shadow: str | None = None
    hostname: str = "app01"


@dataclass(frozen=True)
class JournalEntry:
    at: float
    priority: int
    identifier: str
    message: str
    pid: int = 1234


def _journalctl(state: LinuxState, env: list[str], args: list[str]) -> tuple[str, str, int]:
    """`journalctl --priority=... --since=... --lines=... --output=short-iso --no-full` as
    systemd 252 answers it under TZ=UTC: the newest entries within --since, oldest first."""
    if state.journal is None:
        return "", "env: 'journalctl': No such file or directory\n", 127
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    levels = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5}
    top = levels.get(opts.get("priority", ""), 7)
    since = float("-inf")
    if "since" in opts:
        since = calendar.timegm(time.strptime(opts["since"], "%Y-%m-%d %H:%M:%S"))
    entries = sorted(
        (e for e in state.journal if e.priority <= top and e.at >= since), key=lambda e: e.at
    )
    if "lines" in opts:
        entries = entries[-int(opts["lines"]) :] if int(opts["lines"]) else []
    if not entries:
        return "-- No entries --\n", "", 0
    columns = next((int(v[8:]) for v in env if v.startswith("COLUMNS=")), 80)
    lines = []
    for e in entries:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(e.at))
        head = f"{stamp} {state.hostname} {e.identifier}[{e.pid}]: "
        message = e.message
        if "--no-full" in args and len(head) + len(message) > columns:
            message = message[: max(0, columns - len(head) - 3)] + "..."
        lines.append(head + message + "\n")
    return "".join(lines), "", 0


def _df(state: LinuxState, inodes: bool) -> str:
    lines = [_DFI_HEADER if inodes else _DF_HEADER]
    for fs in state.filesystems:
        if inodes:
            total, used = fs.inodes, fs.inodes_used
        else:
            total, used = fs.size_kb, fs.used_kb
        free = max(0, total - used)
        pct = "-" if total == 0 else f"{math.ceil(100 * used / total)}%"
        lines.append(
            f"{fs.device:<14} {fs.fstype:<8} {total:>11} {used:>9} {free:>9} {pct:>8} {fs.mount}"
        )
    return "\n".join(lines) + "\n"


def _meminfo(state: LinuxState) -> str:
    rows = [
        ("MemTotal", state.mem_total_kb),
        ("MemFree", state.mem_available_kb // 3),
        ("MemAvailable", state.mem_available_kb),
        ("Buffers", 211_804),
        ("Cached", 6_102_332),
        ("SwapCached", 0),
        ("SwapTotal", state.swap_total_kb),
        ("SwapFree", state.swap_free_kb),
    ]
    return "".join(f"{name + ':':<16}{value:>8} kB\n" for name, value in rows)


def _find(state: LinuxState, argv: list[str]) -> tuple[str, str, int]:
    # find -H <dir> -maxdepth 1 -name <glob> -type f -exec stat -c '%Y %s' {} +
    if (
        len(argv) != 15
        or argv[1] != "-H"
        or argv[5] != "-name"
        or argv[10:13] != ["stat", "-c", "%Y %s"]
    ):
        return "", f"find: unsupported arguments {shlex.join(argv[1:])}\n", 1
    directory, pattern = argv[2], argv[6]
    entries = state.files.get(directory)
    if entries is None:
        return "", f"find: '{directory}': No such file or directory\n", 1
    out = "".join(
        f"{int(mtime)} {size}\n"
        for name, (mtime, size) in sorted(entries.items())
        if fnmatch.fnmatchcase(name, pattern)
    )
    return out, "", 0


def run_command(state: LinuxState, argv: list[str]) -> tuple[str, str, int]:
    """One command of the poll script -> (stdout, stderr, exit status), as on a real server."""
    if (canned := state.outputs.get(shlex.join(argv))) is not None:
        return canned
    match argv:
        case ["cat", "/proc/loadavg"]:
            one, five, fifteen = state.load
            return f"{one:.2f} {five:.2f} {fifteen:.2f} 2/311 48213\n", "", 0
        case ["nproc"]:
            return f"{state.cpus}\n", "", 0
        case ["cat", "/proc/meminfo"]:
            return _meminfo(state), "", 0
        case ["cat", "/proc/uptime"]:
            return f"{state.uptime:.2f} {state.uptime * state.cpus * 0.9:.2f}\n", "", 0
        case ["date", "+%s"]:
            return f"{int(state.clock)}\n", "", 0
        case ["df", "-PTk"]:
            return _df(state, inodes=False), "", 0
        case ["df", "-PTki"]:
            return _df(state, inodes=True), "", 0
        case ["systemctl", "is-active", "--", *units]:
            states = [state.units.get(u, "inactive") for u in units]
            status = 0 if all(s == "active" for s in states) else 3
            return "".join(s + "\n" for s in states), "", status
        case ["find", *_]:
            return _find(state, argv)
        case ["awk", "-F:", _, "/etc/shadow"]:
            if state.shadow is None:
                return "", "awk: cannot open /etc/shadow (Permission denied)\n", 2
            return state.shadow, "", 0
        case ["env", *_] if "journalctl" in argv:
            at = argv.index("journalctl")
            return _journalctl(state, argv[1:at], argv[at + 1 :])
        case [program, *_] if program in state.programs:
            return state.programs[program], "", 0
        case _:
            return "", f"sh: 1: {argv[0] if argv else ''}: not found\n", 127


class SimulatedLinux:
    """An asyncssh server on a free loopback port answering the SSH collector's poll script."""

    def __init__(self, state: LinuxState, username: str = "dutyd") -> None:
        self.state = state
        self.username = username
        self.password: str | None = None
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.port = 0
        self.polls = 0
        self.logins = 0
        # Connections between TCP accept and login, now and at most (tests check the bound on
        # connections opened at once).
        self.opening = 0
        self.max_opening = 0
        self._server: asyncssh.SSHAcceptor | None = None
        self._conns: set[asyncssh.SSHServerConnection] = set()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncssh.create_server(
            lambda: _ServerSide(self),
            "127.0.0.1",
            port,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                self.client_key.export_public_key().decode()
            ),
            process_factory=self._serve,
            encoding="utf-8",
            allow_pty=False,
            x11_forwarding=False,
            agent_forwarding=False,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    def write_files(self, directory: Path) -> tuple[Path, Path]:
        """The client key and a known_hosts file with this server's host key."""
        key_path = directory / "client_ed25519"
        key_path.write_bytes(self.client_key.export_private_key())
        key_path.chmod(0o600)
        known = directory / "known_hosts"
        public = self.host_key.export_public_key().decode().strip()
        known.write_text(f"[127.0.0.1]:{self.port} {public}\n")
        return key_path, known

    async def _serve(self, process: asyncssh.SSHServerProcess[str]) -> None:
        try:
            status = await self._run(process)
        except (asyncssh.Error, OSError, asyncio.IncompleteReadError):
            return
        with contextlib.suppress(asyncssh.Error, OSError):
            process.exit(status)

    async def _run(self, process: asyncssh.SSHServerProcess[str]) -> int:
        m = _COMMAND.match(process.command or "")
        if m is None:
            process.stderr.write(f"sh: 1: {(process.command or '').split(' ')[0]}: not found\n")
            return 127
        self.polls += 1
        script = await process.stdin.read()
        # Output goes out in one write per stream, as sshd forwards a pipe it reads in chunks.
        out_parts: list[str] = []
        err_parts: list[str] = []
        try:
            return await self._sections(process, script, out_parts, err_parts)
        finally:
            process.stdout.write("".join(out_parts))
            process.stderr.write("".join(err_parts))

    async def _sections(
        self,
        process: asyncssh.SSHServerProcess[str],
        script: str,
        out_parts: list[str],
        err_parts: list[str],
    ) -> int:
        marker, command_timeout = "", 0.0
        for line in script.splitlines():
            if line.startswith("M="):
                marker = shlex.split(line)[0][2:]
                continue
            if (t := _TIMED.search(line)) is not None:
                command_timeout = float(t.group(1))
                continue
            words = shlex.split(line)
            if len(words) < 3 or words[0] not in ("s", "t"):
                continue
            sid, argv = words[1], words[2:]
            out_parts.append(f"{marker} begin {sid}\n")
            err_parts.append(f"{marker} begin {sid}\n")
            if sid == self.state.drop_at_section:
                process.stdout.write("".join(out_parts))
                out_parts.clear()
                err_parts.clear()
                await asyncio.sleep(0.05)  # the begin marker reaches the client first
                process.channel.get_connection().abort()
                return 0
            out, err, status = run_command(self.state, argv)
            if argv[:1] == ["sleep"] and words[0] == "t":
                # A hung command, cut off by the script's `timeout -s KILL`.
                await asyncio.sleep(command_timeout)
                out, err, status = "", "", 137
            out_parts.append(f"{out}\n{marker} end {sid} {status}\n")
            err_parts.append(f"{err}\n{marker} end {sid} {status}\n")
        return 0

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for conn in list(self._conns):
            conn.abort()
        self._conns.clear()


class _ServerSide(asyncssh.SSHServer):
    def __init__(self, owner: SimulatedLinux) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None
        self._opening = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._conns.add(conn)
        self._opening = True
        self._owner.opening += 1
        self._owner.max_opening = max(self._owner.max_opening, self._owner.opening)

    def _opened(self) -> None:
        if self._opening:
            self._opening = False
            self._owner.opening -= 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._opened()
        if self._conn is not None:
            self._owner._conns.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return self._owner.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        return username == self._owner.username and password == self._owner.password

    def auth_completed(self) -> None:
        self._opened()
        self._owner.logins += 1


def demo_state(clock: float) -> LinuxState:
    return LinuxState(
        clock=clock,
        filesystems=[
            Filesystem("/dev/sda1", "ext4", "/", 51_343_840, 0, 3_276_800, 412_377),
            Filesystem("/dev/sdb1", "xfs", "/srv", 524_032_000, 187_411_200, 262_144_000, 91_212),
            Filesystem("nas01:/backup", "nfs4", "/mnt/offsite", 2_147_483_648, 990_000_000),
            Filesystem("tmpfs", "tmpfs", "/run", 1_631_848, 1_412),
            Filesystem("udev", "devtmpfs", "/dev", 8_137_408, 0),
        ],
        units={"nginx.service": "active", "postgresql.service": "active"},
        programs={"/usr/local/bin/queue-depth": "mail 3\nprint 0\n"},
        journal=[
            JournalEntry(
                clock - 2 * DAY, 3, "kernel", "ata2.00: failed command: READ FPDMA QUEUED"
            ),
            JournalEntry(clock - DAY, 3, "postgres", "ERROR: canceling statement due to timeout"),
            JournalEntry(clock - 3600, 2, "nginx", "worker process exited on signal 11"),
            JournalEntry(clock - 600, 6, "CRON", "(root) CMD (run-parts /etc/cron.hourly)"),
        ],
    )


class LinuxServerDevice(DemoDevice):
    """`app-server`: a Linux server watched over SSH. Its root disk fills up and its nightly
    database backup (local and off-site copy) stops arriving."""

    name = "app-server"

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__(speed)
        self._epoch = time.time()
        self.server = SimulatedLinux(demo_state(self._epoch))
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.key_path = Path()
        self.known_hosts = Path()
        self.advance(0.0)

    async def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="dutyd-demo-ssh-")
        await self.server.start()
        self.key_path, self.known_hosts = self.server.write_files(Path(self._tmp.name))

    def targets(self) -> list[dict[str, Any]]:
        backup = {"pattern": "db-*.sql.gz", "retention_days": RETENTION_DAYS, "max_age": "26h"}
        return [
            {
                "name": self.name,
                "kind": "ssh",
                "address": "127.0.0.1",
                "port": self.server.port,
                "username": self.server.username,
                "client_keys": [str(self.key_path)],
                "known_hosts": str(self.known_hosts),
                "interval": "2s",
                "timeout": "5s",
                "connect_timeout": "3s",
                "command_timeout": "2s",
                "labels": {"site": "demo", "role": "server"},
                "services": ["nginx.service", "postgresql.service"],
                "backups": [
                    {"name": "db", "path": "/srv/backup/db", "copy": "local", **backup},
                    {"name": "db", "path": "/mnt/offsite/db", "copy": "offsite", **backup},
                ],
                "commands": [{"name": "queues", "argv": ["/usr/local/bin/queue-depth"]}],
            }
        ]

    def advance(self, elapsed: float) -> None:
        elapsed *= self.speed  # scenario seconds
        state = self.server.state
        state.clock = self._epoch + elapsed * CLOCK_FACTOR
        state.uptime = 40 * DAY + elapsed * CLOCK_FACTOR
        wobble = math.sin(elapsed * 0.7)
        state.load = (0.6 + 0.3 * wobble, 0.5 + 0.1 * wobble, 0.45)
        root = state.filesystems[0]
        percent = min(DISK_MAX_PERCENT, DISK_START_PERCENT + DISK_FILL_RATE * elapsed)
        root.used_kb = int(root.size_kb * percent / 100.0)
        state.files = {
            "/srv/backup/db": self._backups(elapsed),
            "/mnt/offsite/db": self._backups(elapsed),
        }

    def _backups(self, elapsed: float) -> dict[str, tuple[float, int]]:
        """Nightly backups on the server's clock: the 16 before the demo began (15 days kept,
        as the duty rules ask), then one every 48 scenario seconds (a day) until the job
        breaks."""
        first = self._epoch + FIRST_BACKUP_AT * CLOCK_FACTOR
        last_run = min(elapsed, BACKUP_STOPS_AT)
        runs = -1
        if last_run >= FIRST_BACKUP_AT:
            runs = int((last_run - FIRST_BACKUP_AT) * CLOCK_FACTOR // DAY)
        files: dict[str, tuple[float, int]] = {}
        for day in range(-16, runs + 1):
            made = first + day * DAY
            stamp = time.strftime("%Y%m%d", time.gmtime(made))
            files[f"db-{stamp}.sql.gz"] = (made, BACKUP_SIZE + 1_048_576 * (day % 7))
        return files

    def story(self) -> list[str]:
        def at(t: float) -> str:
            return f"{t / self.speed:.0f}s"

        full85 = (85.0 - DISK_START_PERCENT) / DISK_FILL_RATE
        full95 = (95.0 - DISK_START_PERCENT) / DISK_FILL_RATE
        every = DAY / CLOCK_FACTOR
        last = FIRST_BACKUP_AT + (BACKUP_STOPS_AT - FIRST_BACKUP_AT) // every * every
        stale = last + STALE_AFTER / CLOCK_FACTOR
        return [
            f"app-server (SSH 127.0.0.1:{self.server.port}, host key checked against "
            "known_hosts): a Linux server, its clock running 30 min per scenario second",
            f"  its root disk passes 85 % at {at(full85)} and 95 % at {at(full95)} "
            '(filesystem_used_ratio{mount="/"})',
            f"  its nightly db backup stops after {at(BACKUP_STOPS_AT)}; the newest copy is "
            f"older than 26 h from {at(stale)} (backup_stale 1, backup_newest_age_seconds)",
        ]

    async def stop(self) -> None:
        await self.server.stop()
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.cleanup()
