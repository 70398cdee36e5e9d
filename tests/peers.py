"""Helpers for test fixtures that run real protocol peers on loopback.

Peers bind to free ports chosen by the OS, run in a temporary directory and are stopped by
PID. Nothing here mocks a protocol.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

# The ports handed out lately by this process: not handed out again while a peer may still be
# about to bind one.
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=512)


def _worker_slot() -> tuple[int, int]:
    """(this pytest-xdist worker's index, the number of workers); (0, 1) without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return index, max(1, count)


def free_port(kind: str = "tcp") -> int:
    """A port the OS says is free on 127.0.0.1 now (tcp or udp), for a peer to bind.

    The port is released before the peer binds it. With several pytest-xdist workers each takes
    only ports of its own class (port // 2 % workers == its index: Linux hands bind() ports of
    one parity), so a port one worker picked and released cannot be picked by another before
    its peer binds it (seen once: a daemon's HTTP port taken by another worker's sshd)."""
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    index, count = _worker_slot()
    for _ in range(10_000):  # the OS's picks are spread: about `count` tries
        with socket.socket(socket.AF_INET, sock_type) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port // 2 % count == index and port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port
    raise RuntimeError(f"no free {kind} port for worker {index} of {count}")


def require_binary(path_or_name: str) -> str:
    """The binary's path; fails (never skips) when a peer the suite needs is not installed,
    because CI installs every peer and a missing one must be seen."""
    found = shutil.which(path_or_name) or (path_or_name if Path(path_or_name).exists() else None)
    if found is None:
        pytest.fail(
            f"{path_or_name} is not installed; run the README's test command, "
            "which installs tests/debian-packages.txt"
        )
    return found


def wait_for_tcp(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class PeerProcess:
    """A started peer process, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        log_name: str = "peer.log",
        piped: bool = False,
    ) -> None:
        """`piped`: the peer writes its output into a pipe that this process copies to the
        log file, so limits on the peer's own file writes (RLIMIT_FSIZE) do not reach its log."""
        self.argv = list(argv)
        self.cwd = cwd
        self.log_path = cwd / log_name
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE if piped else self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._copier: threading.Thread | None = None
        if piped:
            self._copier = threading.Thread(target=self._copy_output, daemon=True)
            self._copier.start()

    def _copy_output(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):  # ends at EOF: the peer exited
            self._log.write(line)
            self._log.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._close_output(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._close_output(5.0)

    def _close_output(self, timeout: float) -> None:
        if self._copier is not None:
            self._copier.join(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
