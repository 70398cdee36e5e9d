"""dutyd under systemd: the unit and its snippets verify, and a real `dutyd run` speaks the
notify protocol (READY, watchdog pings that stop when the process is frozen, RELOADING then
READY on SIGHUP, STOPPING on SIGTERM) to a datagram socket of the test's own."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from dutyd.agent.sdnotify import SystemdNotifier
from tests.daemon_fixtures import DaemonProcess
from tests.peers import free_port, require_binary

UNITS = Path(__file__).resolve().parent.parent / "packaging" / "systemd"
INSTALLED_DUTYD = "/opt/dutyd/bin/dutyd"


class NotifyListener:
    """A unix datagram socket (a path, or `@name` abstract) and a thread stamping each
    notification with the monotonic time it arrived."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._lock:
                self.received.append((at, fields))

    def messages(self, since: float = 0.0) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return [(t, m) for t, m in self.received if t >= since]

    def wait_for(self, key: str, since: float, timeout: float) -> tuple[float, dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, fields in self.messages(since):
                if key in fields:
                    return at, fields
            time.sleep(0.02)
        raise AssertionError(f"no {key} within {timeout}s; got {self.messages(since)}")

    def pings(self, since: float, until: float = float("inf")) -> list[float]:
        return [t for t, m in self.messages(since) if "WATCHDOG" in m and t <= until]

    def close(self) -> None:
        self._done.set()
        self._thread.join(2)
        self.sock.close()


# ----- the unit files -----------------------------------------------------------------------


def _verify(unit: Path) -> tuple[int, str]:
    """`systemd-analyze verify` of a copy of `unit` whose ExecStart names this checkout's
    installed `dutyd` (verify insists that the binary exist; /opt/dutyd/bin/dutyd is that
    same console script in the virtualenv the README installs)."""
    analyze = require_binary("systemd-analyze")
    dutyd = shutil.which("dutyd", path=str(Path(sys.executable).parent))
    assert dutyd, f"no dutyd console script beside {sys.executable}: pip install -e . first"
    text = unit.read_text()
    assert f"ExecStart={INSTALLED_DUTYD} " in text
    copy = unit.parent / "checked" / unit.name
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(text.replace(INSTALLED_DUTYD, dutyd))
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def _directives(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "dutyd.service"
    shutil.copy(UNITS / "dutyd.service", unit)
    code, output = _verify(unit)
    # verify reports a bad key or value on stderr and still exits 0: silence is the pass.
    assert (code, output) == (0, ""), output

    d = _directives(unit.read_text())
    assert d["Type"] == "notify"
    assert d["WatchdogSec"] == "30s"
    assert d["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert d["User"] == d["Group"] == "dutyd"
    assert d["StateDirectory"] == "dutyd"
    assert d["ProtectSystem"] == "strict"
    assert d["NoNewPrivileges"] == "yes"
    assert d["CapabilityBoundingSet"] == "" and d["AmbientCapabilities"] == ""
    assert "#CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in unit.read_text()

    # The check has teeth: a misspelt type or key is reported.
    broken = tmp_path / "broken" / "dutyd.service"
    broken.parent.mkdir()
    broken.write_text(
        unit.read_text()
        .replace("Type=notify", "Type=notfy")
        .replace("ProtectSystem=", "ProtectSytem=")
    )
    _, output = _verify(broken)
    assert "Failed to parse service type" in output and "Unknown key 'ProtectSytem'" in output


def test_sysusers_and_tmpfiles_snippets_apply(tmp_path: Path) -> None:
    sysusers = require_binary("systemd-sysusers")
    tmpfiles = require_binary("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        [sysusers, f"--root={root}", str(UNITS / "dutyd.sysusers")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    passwd = (root / "etc" / "passwd").read_text()
    (line,) = [x for x in passwd.splitlines() if x.startswith("dutyd:")]
    _, _, uid, gid, _, home, shell = line.split(":")
    assert int(uid) < 1000 and home == "/var/lib/dutyd" and shell == "/usr/sbin/nologin"
    subprocess.run(
        [tmpfiles, f"--root={root}", "--create", str(UNITS / "dutyd.tmpfiles")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    conf = (root / "etc" / "dutyd").stat()
    assert oct(conf.st_mode & 0o7777) == "0o750"
    assert (conf.st_uid, conf.st_gid) == (0, int(gid))


# ----- the protocol ---------------------------------------------------------------------------


def test_notifier_reads_its_environment(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    listener = NotifyListener(path)
    try:
        mine = SystemdNotifier(
            {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
        )
        assert mine.watchdog_interval == 4.0
        assert mine.ready() and mine.stopping()
        listener.wait_for("STOPPING", 0.0, 5)
        assert [m for _, m in listener.messages()] == [{"READY": "1"}, {"STOPPING": "1"}]
        mine.close()
        # WATCHDOG_PID names another process (dutyd was started by it): no pings from here.
        other = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
        assert SystemdNotifier(other).watchdog_interval is None
        assert SystemdNotifier({"NOTIFY_SOCKET": path}).watchdog_interval is None
        assert (
            SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "x"}).watchdog_interval is None
        )
        # Outside systemd, nothing is sent and nothing fails.
        outside = SystemdNotifier({})
        assert not outside.enabled and not outside.ready()
        # A socket that went away: False, said once in the log, no exception.
        gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
        assert not gone.ready() and not gone.ready()
        gone.close()
    finally:
        listener.close()


def test_dutyd_run_tells_systemd_each_step(tmp_path: Path) -> None:
    """A real `dutyd run` with NOTIFY_SOCKET (an abstract socket) and a 1 s watchdog."""
    listener = NotifyListener(f"@dutyd-test-{uuid.uuid4().hex}")
    port = free_port()
    config = {
        "http": {"port": port},
        "targets": [
            {
                "name": "own-port",
                "kind": "tcp",
                "address": f"127.0.0.1:{port}",
                "interval": "1s",
                "timeout": "1s",
            }
        ],
    }
    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"}
    started = time.monotonic()
    daemon = DaemonProcess(tmp_path, config, env=env)
    try:
        ready_at, _ = listener.wait_for("READY", started, 20)
        # Pings at half the watchdog interval: about two a second, never a gap that would
        # let systemd's 1 s watchdog fire.
        time.sleep(2.6)
        pings = listener.pings(ready_at)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 4 <= len(pings) <= 7, pings
        assert max(gaps) < 1.0, gaps
        assert 0.4 <= sorted(gaps)[len(gaps) // 2] <= 0.75, gaps

        # Frozen: no ping after one interval, however long it stays frozen.
        frozen_at = time.monotonic()
        daemon.signal(signal.SIGSTOP)
        time.sleep(2.0)
        late = listener.pings(frozen_at + 0.5)
        resumed_at = time.monotonic()
        daemon.signal(signal.SIGCONT)
        assert late == [], f"pings while frozen: {[t - frozen_at for t in late]}"
        first, _ = listener.wait_for("WATCHDOG", resumed_at, 5)
        assert first - resumed_at < 1.0

        # SIGHUP: RELOADING=1 with a MONOTONIC_USEC of this boot's clock, then READY=1.
        hup_at = time.monotonic()
        daemon.signal(signal.SIGHUP)
        reloading_at, reloading = listener.wait_for("RELOADING", hup_at, 10)
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now_usec - int(reloading["MONOTONIC_USEC"]) < 10_000_000
        ready_again, _ = listener.wait_for("READY", reloading_at, 10)
        assert ready_again >= reloading_at
        daemon.wait_until(lambda: "config reloaded" in daemon.peer.log(), 5, "the reload")

        term_at = time.monotonic()
        code, _ = daemon.terminate()
        assert code == 0
        listener.wait_for("STOPPING", term_at, 1)
    finally:
        if daemon.peer.alive():
            daemon.signal(signal.SIGCONT)  # a stopped process ignores SIGTERM until continued
        daemon.stop()
        listener.close()


def test_dutyd_run_pings_only_when_the_watchdog_is_its_own(tmp_path: Path) -> None:
    """WATCHDOG_PID names another process (a wrapper that started dutyd): READY, no pings."""
    listener = NotifyListener(str(tmp_path / "notify"))
    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}
    started = time.monotonic()
    daemon = DaemonProcess(tmp_path, {"targets": []}, env=env)
    try:
        listener.wait_for("READY", started, 20)
        time.sleep(1.0)
        assert listener.pings(started) == []
        assert daemon.terminate()[0] == 0
    finally:
        daemon.stop()
        listener.close()
