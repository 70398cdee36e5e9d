"""A real PostgreSQL server for the tests: Debian's `postgresql` package, `initdb` into a temp
dir and `postgres` on a free loopback port, stopped by PID.

initdb and postgres refuse to run as root; CI runs as root, so there they run as the
unprivileged `postgres` user the Debian package creates (`setpriv`, which execs, so the PID we
hold is the server's own), with the temp dir given to that user. The superuser has a password
(scram-sha-256 over TCP), so the tests exercise the password path dutyd uses in production.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import free_port, wait_for_tcp

USER = "dutyd"
PASSWORD = "s3cret-Pg-pass"


def pg_bin(name: str) -> str:
    """A PostgreSQL binary from /usr/lib/postgresql/<version>/bin (newest version), else PATH;
    fails (never skips) when the package is not installed."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    path = found[-1] if found else shutil.which(name)
    if path is None:
        pytest.fail(
            f"PostgreSQL's {name} is not installed; install the `postgresql` package "
            "(tests/debian-packages.txt)"
        )
    return path


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit())


def _as_server_user() -> list[str]:
    """The prefix that runs a command as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no `postgres` user to run the server as")
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


class PostgresServer:
    """One initdb'd cluster; `start`/`stop` may be called again (an outage in a test)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dutyd-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "postgres.log"
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        result = subprocess.run(
            [
                *_as_server_user(),
                pg_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            capture_output=True,
            check=False,
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise AssertionError(
                f"initdb failed:\n{result.stdout.decode()}{result.stderr.decode()}"
            )

    @property
    def url(self) -> str:
        """The URL dutyd is configured with (no password: that comes from env or file)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                *_as_server_user(),
                pg_bin("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                # A throwaway server: durability is not under test, speed is welcome.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                wait_for_tcp(self.port, timeout=1)
                # accepting TCP is not yet accepting logins: wait for the ready line
                if "ready to accept connections" in self.log():
                    return
            except TimeoutError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"postgres did not start:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), then SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                pg_bin("psql"),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            env={**os.environ, "PGPASSWORD": PASSWORD},
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"psql {sql!r} failed: {result.stderr.decode()}")
        return result.stdout.decode()

    def create_database(self, name: str) -> str:
        """A fresh empty database; its URL."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class FreezingProxy:
    """A TCP proxy between one node and the database that can freeze: it then forwards
    nothing either way and holds every connection open, new ones too (a black hole that
    accepts, as a partitioned network or a stuck firewall does), until it heals."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self.closed.is_set():
                if self.frozen.is_set():
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready or self.frozen.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)

    def freeze(self) -> None:
        self.frozen.set()

    def heal(self) -> None:
        self.frozen.clear()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One server for the session; tests take their own database (`create_database`)."""
    with postgres_server() as server:
        yield server
