"""A real OpenSSH sshd on a loopback port, with its own config, host key and authorized key.

Started as `/usr/sbin/sshd -D -e -f <conf>` in a temp dir and stopped by PID. Logins are for the
user running the tests (root in CI, allowed with `PermitRootLogin prohibit-password`: keys only).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from dutyd.agent.demo.ssh_server import SimulatedLinux
from dutyd.collectors.base import CollectorContext
from dutyd.collectors.ssh import SshCollector, SshTarget
from tests.peers import PeerProcess, free_port, require_binary, wait_for_tcp

SSHD = "/usr/sbin/sshd"


def write_key(path: Path, key: asyncssh.SSHKey) -> None:
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; fields after the last ')' are fixed.
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> list[int]:
    """Every live process whose ancestry includes `root`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def simulated_target(
    server: SimulatedLinux, key: Path, known: Path, trusted: Path, **more: Any
) -> dict[str, Any]:
    """The config of an `ssh` target `db1` on the demo's simulated Linux server, with the key
    and known_hosts its `write_files` wrote; `more` adds keys."""
    return {
        "name": "db1",
        "kind": "ssh",
        "address": "127.0.0.1",
        "port": server.port,
        "username": server.username,
        "client_keys": [str(key)],
        "known_hosts": str(known),
        "trusted_hosts_file": str(trusted),
        **more,
    }


def simulated_collector(server: SimulatedLinux, directory: Path) -> SshCollector:
    """An SSH collector of target `db1` on the simulated server, its key and known_hosts
    written to `directory` (timeout 8 s)."""
    key, known = server.write_files(directory)
    cfg = SshTarget.model_validate(
        simulated_target(server, key, known, directory / "trusted", timeout=8)
    )
    return SshCollector(cfg, CollectorContext())


def simulated_site(server: SimulatedLinux, directory: Path) -> dict[str, Any]:
    """A daemon config that polls the simulated server only (`db1`, every 2 s), its key,
    known_hosts and store in `directory`."""
    key, known = server.write_files(directory)
    return {
        "targets": [
            simulated_target(
                server, key, known, directory / "trusted", interval="2s", timeout="10s"
            )
        ],
        "http": {"port": 0},
        "storage": {"path": str(directory / "d.db")},
    }


class SshdServer:
    """One sshd. `restart()` keeps port and host key (unless told to make a new key), as a
    real server restarted by its admin."""

    def __init__(
        self, directory: Path, host: str = "127.0.0.1", journal_dir: Path | None = None
    ) -> None:
        self.host = host
        self.journal_dir = journal_dir
        self.sshd = require_binary(SSHD)
        self.dir = directory
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key_path = directory / "ssh_host_ed25519_key"
        self.client_key_path = directory / "client_ed25519"
        self.authorized_keys_path = directory / "authorized_keys"
        self.known_hosts_path = directory / "known_hosts"
        self.config_path = directory / "sshd_config"
        self.proc: PeerProcess | None = None
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        write_key(self.client_key_path, self.client_key)
        self.authorized_keys_path.write_bytes(self.client_key.export_public_key())
        self.new_host_key()

    def new_host_key(self) -> None:
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        write_key(self.host_key_path, self.host_key)

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        public = (key or self.host_key).export_public_key().decode().strip()
        return f"[127.0.0.1]:{self.port} {public}\n"

    def write_known_hosts(self) -> Path:
        self.known_hosts_path.write_text(self.known_hosts_line())
        return self.known_hosts_path

    def target(self, **more: Any) -> dict[str, Any]:
        """The config of an `ssh` target `srv` that logs in to this server with the client key,
        its host key from `known_hosts` (call `write_known_hosts` first); `more` adds keys."""
        return {
            "name": "srv",
            "kind": "ssh",
            "address": "127.0.0.1",
            "port": self.port,
            "username": self.user,
            "client_keys": [str(self.client_key_path)],
            "known_hosts": str(self.known_hosts_path),
            "trusted_hosts_file": str(self.dir / "dutyd_known_hosts"),
            **more,
        }

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key_path}",
            f"AuthorizedKeysFile {self.authorized_keys_path}",
            f"PidFile {self.dir / 'sshd.pid'}",
            "UsePAM no",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "LogLevel VERBOSE",
            # The benchmark opens hundreds of connections; the tests only a few.
            "MaxStartups 200:30:400",
            "MaxSessions 20",
        ]
        if os.geteuid() == 0:
            lines.append("PermitRootLogin prohibit-password")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        if os.geteuid() == 0:
            # sshd's privilege separation directory; missing in containers.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._write_config()
        argv = [self.sshd, "-D", "-e", "-f", str(self.config_path)]
        if self.journal_dir is not None:
            # A mount namespace of sshd's own with the test's journal files over
            # /var/log/journal (and nothing in /run/log): the sessions' real journalctl reads
            # what the test wrote, and the host's journal is neither read nor touched.
            # `exec` keeps the PID sshd's, so it is stopped by PID as ever.
            mask = (
                'mkdir -p /var/log/journal && mount --bind "$0" /var/log/journal && '
                '{ [ ! -d /run/log ] || mount -t tmpfs tmpfs /run/log; } && exec "$@"'
            )
            unshare = require_binary("/usr/bin/unshare")
            argv = [unshare, "--mount", "--propagation", "private", "sh", "-c", mask,
                    str(self.journal_dir), *argv]  # fmt: skip
        self.proc = PeerProcess(argv, self.dir, log_name="sshd.log")
        try:
            wait_for_tcp(self.port, timeout=10, host=self.host)
        except TimeoutError:
            log = self.proc.log()
            self.stop()
            pytest.fail(f"sshd did not start on port {self.port}:\n{log}")

    def log(self) -> str:
        return self.proc.log() if self.proc else ""

    def kill_all(self) -> None:
        """SIGKILL the listener and every session process it forked (a crashed server)."""
        if self.proc is None:
            return
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.stop()
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        for pid in descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.proc.stop()
        self.proc = None

    def restart(self, *, new_host_key: bool = False) -> None:
        self.stop()
        if new_host_key:
            self.new_host_key()
        self.start()
