"""NUT peers for tests: real upsd with dummy-ups drivers, and a scripted misbehaving server.

`UpsdPeer` runs Debian's upsd and one dummy-ups driver per UPS in a temporary config dir on a
free loopback port; each UPS reads its variables from a `.dev` file that the test rewrites.
`FakeNutServer` is a TCP server on loopback whose every answer the test scripts, for the
replies real upsd never sends (garbage, half a line then silence, ERR codes on demand).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.peers import PeerProcess, free_port, require_binary, wait_for_tcp

UPSD = "/lib/nut/upsd"  # /usr/sbin/upsd is a wrapper that refuses to run unless nut.conf allows
DUMMY_UPS = "/lib/nut/dummy-ups"
# upsd calls a UPS stale after MAXAGE seconds without news from its driver (default 15).
MAXAGE = 3

OL_VARS: dict[str, str] = {
    "ups.status": "OL",
    "battery.charge": "100",
    "battery.runtime": "2400",
    "input.voltage": "231.5",
    "ups.load": "27",
    "ups.temperature": "29.5",
    "ups.mfr": 'Acme "Power" \\ Co',
}


def _dev_text(variables: Mapping[str, str]) -> str:
    lines = []
    for key, value in variables.items():
        # dummy-ups parses its file with NUT's config parser: quotes, backslash escapes.
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}: "{escaped}"')
    return "\n".join(lines) + "\n"


def nut_query(port: int, request: str, timeout: float = 2.0, host: str = "127.0.0.1") -> str:
    """One request line to a NUT server, its first answer line (blocking; for fixtures)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        with contextlib.suppress(OSError):
            sock.sendall(b"LOGOUT\n")
    return data.decode(errors="replace").split("\n", 1)[0]


class UpsdPeer:
    """upsd on 127.0.0.1:<free port> serving dummy-ups UPSes, all under `root` (a temp dir)."""

    def __init__(
        self,
        root: Path,
        upses: Mapping[str, Mapping[str, str]],
        users: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.upsd_bin = require_binary(UPSD)
        self.driver_bin = require_binary(DUMMY_UPS)
        self.root = root
        self.state = root / "state"
        self.state.mkdir(mode=0o770, exist_ok=True)
        self.port = free_port()
        self.upses = {name: dict(v) for name, v in upses.items()}
        self.env = {"NUT_CONFPATH": str(root), "NUT_STATEPATH": str(self.state)}
        # As root the daemons must be told whom to run as; root keeps the temp dir readable.
        self.user_args = ["-u", "root"] if os.geteuid() == 0 else []
        self.upsd: PeerProcess | None = None
        self.drivers: dict[str, PeerProcess] = {}
        self._mtime = time.time()
        sections = []
        for name in self.upses:
            # pollinterval 1: dummy-ups looks at its file each second.
            sections.append(
                f'[{name}]\n  driver = dummy-ups\n  port = {name}.dev\n  desc = "test {name}"\n'
                "  pollinterval = 1\n"
            )
            self.write(name, self.upses[name])
        (root / "ups.conf").write_text("\n".join(sections))
        (root / "upsd.conf").write_text(f"LISTEN {host} {self.port}\nMAXAGE {MAXAGE}\n")
        user_text = "".join(
            f"[{u}]\n  password = {p}\n  upsmon secondary\n" for u, p in (users or {}).items()
        )
        users_path = root / "upsd.users"
        users_path.write_text(user_text)
        users_path.chmod(0o600)

    # -- the UPS data ---------------------------------------------------------------------

    def write(self, ups: str, variables: Mapping[str, str]) -> None:
        """Replace what dummy-ups serves for `ups` (it rereads its file when the mtime moves)."""
        self.upses[ups] = dict(variables)
        path = self.root / f"{ups}.dev"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(_dev_text(variables))
        # dummy-ups compares whole-second mtimes: step it by a second each write so two
        # writes within one second are both seen.
        self._mtime = max(self._mtime + 1.0, time.time())
        os.utime(tmp, (self._mtime, self._mtime))
        tmp.replace(path)

    def update(self, ups: str, **changes: str) -> None:
        """`update("rack", **{"ups.status": "OB"})`: change some variables, keep the rest."""
        self.write(ups, {**self.upses[ups], **changes})

    # -- processes ------------------------------------------------------------------------

    def start_driver(self, ups: str, wait: bool = True) -> None:
        old = self.drivers.get(ups)
        if old is not None and old.alive():
            raise RuntimeError(f"driver for {ups} already runs")
        self.drivers[ups] = PeerProcess(
            [self.driver_bin, "-a", ups, *self.user_args, "-F"],
            cwd=self.root,
            env=self.env,
            log_name=f"driver-{ups}.log",
        )
        if wait:
            self.wait_driver(ups)

    def wait_driver(self, ups: str) -> None:
        """Until the driver's socket for upsd exists (about a second after it starts)."""
        socket_path = self.state / f"dummy-ups-{ups}"
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if time.monotonic() > deadline or not self.drivers[ups].alive():
                raise RuntimeError(f"dummy-ups {ups} did not start:\n{self.drivers[ups].log()}")
            time.sleep(0.05)

    def stop_driver(self, ups: str) -> None:
        proc = self.drivers.pop(ups)
        proc.stop()

    def pause_driver(self, ups: str) -> None:
        """SIGSTOP: the driver stays connected but says nothing, so upsd calls the data stale."""
        os.kill(self.drivers[ups].pid, signal.SIGSTOP)

    def resume_driver(self, ups: str) -> None:
        os.kill(self.drivers[ups].pid, signal.SIGCONT)

    def start_upsd(self) -> None:
        if self.upsd is not None and self.upsd.alive():
            raise RuntimeError("upsd already runs")
        self.upsd = PeerProcess(
            [self.upsd_bin, *self.user_args, "-F"], cwd=self.root, env=self.env, log_name="upsd.log"
        )
        try:
            wait_for_tcp(self.port, timeout=10, host=self.host)
        except TimeoutError:
            raise RuntimeError(f"upsd did not listen:\n{self.upsd.log()}") from None

    def stop_upsd(self) -> None:
        if self.upsd is not None:
            self.upsd.stop()
            self.upsd = None

    def start(self) -> None:
        # The drivers start side by side: each takes about a second to open its socket.
        for ups in self.upses:
            self.start_driver(ups, wait=False)
        for ups in self.upses:
            self.wait_driver(ups)
        self.start_upsd()
        for ups in self.upses:
            self.wait_status(ups, self.upses[ups]["ups.status"])

    def stop(self) -> None:
        self.stop_upsd()
        for ups in list(self.drivers):
            with contextlib.suppress(ProcessLookupError):
                self.resume_driver(ups)  # a stopped process ignores SIGTERM until continued
            self.stop_driver(ups)

    def wait_status(self, ups: str, status: str, timeout: float = 10.0) -> None:
        """Until upsd itself (asked over a separate connection) serves `status` for `ups`."""
        want = f'VAR {ups} ups.status "{status}"'
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                last = nut_query(self.port, f"GET VAR {ups} ups.status", host=self.host)
                if last == want:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"upsd never served {want!r} (last: {last!r})\n{self.logs()}")

    def logs(self) -> str:
        parts = [f"--- upsd\n{self.upsd.log()}" if self.upsd else "--- upsd not running"]
        parts += [f"--- driver {u}\n{p.log()}" for u, p in self.drivers.items()]
        return "\n".join(parts)


# A reply script: request line -> bytes to send back, or None to say nothing more at all.
Script = Callable[[str], bytes | None]


class FakeNutServer:
    """A loopback TCP server that answers each request line with what `script` returns.

    It records every request and counts connections; `None` from the script means: go silent
    and keep the connection open (until the server stops)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        # Request lines after whose answer the server hangs up.
        self.close_after: set[str] = set()
        self.requests: list[str] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeNutServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def drop_clients(self) -> None:
        """Close every open connection (as a restarting upsd would)."""
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0.05)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                request = raw.decode(errors="replace").strip()
                self.requests.append(request)
                reply = self.script(request)
                if reply is None:
                    await asyncio.Event().wait()  # silent until stopped (cancelled)
                    return
                writer.write(reply)
                await writer.drain()
                if request == "LOGOUT" or request in self.close_after:
                    return
        except (ConnectionError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


def good_list(ups: str, variables: Mapping[str, str]) -> bytes:
    """The LIST VAR answer upsd would send for these variables."""
    lines = [f"BEGIN LIST VAR {ups}"]
    for key, value in variables.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'VAR {ups} {key} "{escaped}"')
    lines.append(f"END LIST VAR {ups}")
    return ("\n".join(lines) + "\n").encode()


def upsd_like(upses: Mapping[str, Mapping[str, str]], **overrides: bytes | None) -> Script:
    """A script answering like upsd for `upses`; `overrides` maps a request line (spaces as
    underscores, e.g. LIST_VAR_rack) to a different reply."""

    def script(request: str) -> bytes | None:
        key = request.replace(" ", "_")
        if key in overrides:
            return overrides[key]
        words = request.split()
        if request == "LIST UPS":
            body = "".join(f'UPS {n} "fake {n}"\n' for n in upses)
            return f"BEGIN LIST UPS\n{body}END LIST UPS\n".encode()
        if len(words) == 3 and words[:2] == ["LIST", "VAR"]:
            if words[2] not in upses:
                return b"ERR UNKNOWN-UPS\n"
            return good_list(words[2], upses[words[2]])
        if words and words[0] in ("USERNAME", "PASSWORD"):
            return b"OK\n"
        if request == "LOGOUT":
            return b"OK Goodbye\n"
        return b"ERR UNKNOWN-COMMAND\n"

    return script
