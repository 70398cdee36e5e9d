"""`dutyd run` on a port already in use (HTTP or the SNMP trap listener's UDP port), or with a
database it cannot create, says which resource and exits 2, as for a bad config, never a
30-line traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

from tests.peers import free_port


def run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "dutyd.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "dutyd.agent.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def target() -> dict:
    return {"name": "a", "kind": "tcp", "address": f"127.0.0.1:{free_port()}"}


def test_a_port_in_use_is_named_and_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run(
            tmp_path,
            {
                "targets": [target()],
                "http": {"port": port},
                "storage": {"path": str(tmp_path / "d.db")},
            },
        )
    assert out.returncode == 2, out
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "http.port" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_trap_port_in_use_is_named_and_exits_2(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        out = run(
            tmp_path,
            {
                "targets": [target()],
                "http": {"port": 0},
                "storage": {"path": str(tmp_path / "d.db")},
                "traps": {"listen": "127.0.0.1", "port": port},
            },
        )
    assert out.returncode == 2, out
    assert f"cannot listen for SNMP traps on 127.0.0.1:{port}" in out.stderr
    assert "traps.port" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_database_it_cannot_create_is_named_and_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database's directory should be")
    out = run(
        tmp_path,
        {
            "targets": [target()],
            "http": {"port": 0},
            "storage": {"path": str(blocker / "dutyd.db")},
        },
    )
    assert out.returncode == 2, out
    assert f"cannot open the database {blocker / 'dutyd.db'}" in out.stderr
    assert "storage.path" in out.stderr
    assert "Traceback" not in out.stderr
