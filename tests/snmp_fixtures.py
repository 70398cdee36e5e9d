"""SNMP peers for the tests: real net-snmp `snmpd` serving values the test changes, and
scripted UDP responders that misbehave (garbage, truncated, wrong request-id, endless table).

`SnmpdPeer` starts /usr/sbin/snmpd on a free loopback UDP port with its own config in a temp
dir. The MIB values under test (IF-MIB, UPS-MIB, sysUpTime, a private sensor subtree) are
served by a `pass_persist` script that reads a JSON file on every request, so a test changes
the device by rewriting that file.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dutyd.collectors.snmp import codec
from tests.peers import PeerProcess, free_port, require_binary

SNMPD = "/usr/sbin/snmpd"
COMMUNITY = "dutyd-test"
V3_USER = "dutyd"
V3_AUTH = "auth-secret-256"
V3_PRIV = "priv-secret-128"
V3_USER_256 = "dutyd512"
V3_AUTH_256 = "auth-secret-512"
V3_PRIV_256 = "priv-secret-aes256"

# Subtrees the pass_persist script answers for. `-p 1` puts them ahead of snmpd's own
# modules (sysUpTime, ifTable) so the test controls every value it reads.
SERVED = (
    ".1.3.6.1.2.1.1.3",
    ".1.3.6.1.2.1.2",
    ".1.3.6.1.2.1.31",
    ".1.3.6.1.2.1.33",
    ".1.3.6.1.4.1.99999",
)
# snmpd's own modules for these tables register finer subtrees than pass_persist would win
# against; they are switched off so the script serves all of IF-MIB.
_NO_BUILTIN = "-ifTable,ifXTable,interfaces,ifv6"

# The pass_persist protocol (snmpd(8), "pass_persist"): PING/PONG, get, getnext, set.
PASS_SCRIPT = r"""
import json, os, sys

PATH = sys.argv[1]
cache = {"mtime": None, "rows": [], "map": {}}

def key(oid):
    return tuple(int(x) for x in oid.strip(".").split("."))

def load():
    try:
        m = os.stat(PATH).st_mtime_ns
    except OSError:
        return
    if m == cache["mtime"]:
        return
    with open(PATH) as f:
        data = json.load(f)
    rows = sorted((key(k), k, v) for k, v in data.items())
    cache.update(mtime=m, rows=rows, map={r[0]: r for r in rows})

def answer(row):
    _, oid, (typ, value) = row
    sys.stdout.write(".%s\n%s\n%s\n" % (oid.strip("."), typ, value))

for _ in range(10 ** 9):
    line = sys.stdin.readline()
    if not line:
        break
    cmd = line.strip()
    if cmd == "PING":
        sys.stdout.write("PONG\n")
    elif cmd in ("get", "getnext"):
        want = key(sys.stdin.readline())
        load()
        if cmd == "get":
            row = cache["map"].get(want)
        else:
            row = next((r for r in cache["rows"] if r[0] > want), None)
        if row is None:
            sys.stdout.write("NONE\n")
        else:
            answer(row)
    elif cmd == "set":
        sys.stdin.readline()
        sys.stdin.readline()
        sys.stdout.write("not-writable\n")
    sys.stdout.flush()
"""


def switch_values(ports: int = 4, indexes: list[int] | None = None) -> dict[str, list[Any]]:
    """A small switch (sysUpTime, ifTable, ifXTable) with ports 1..`ports` or these ifIndexes."""
    v: dict[str, list[Any]] = {"1.3.6.1.2.1.1.3.0": ["timeticks", 360000]}
    for i in indexes or range(1, ports + 1):
        v[f"1.3.6.1.2.1.2.2.1.2.{i}"] = ["string", f"GigabitEthernet0/{i}"]
        v[f"1.3.6.1.2.1.2.2.1.5.{i}"] = ["gauge", 1000000000]
        v[f"1.3.6.1.2.1.2.2.1.7.{i}"] = ["integer", 1]
        v[f"1.3.6.1.2.1.2.2.1.8.{i}"] = ["integer", 1]
        v[f"1.3.6.1.2.1.2.2.1.10.{i}"] = ["counter", 1000 * i]
        v[f"1.3.6.1.2.1.2.2.1.13.{i}"] = ["counter", 0]
        v[f"1.3.6.1.2.1.2.2.1.14.{i}"] = ["counter", i]
        v[f"1.3.6.1.2.1.2.2.1.16.{i}"] = ["counter", 2000 * i]
        v[f"1.3.6.1.2.1.2.2.1.19.{i}"] = ["counter", 0]
        v[f"1.3.6.1.2.1.2.2.1.20.{i}"] = ["counter", 0]
        v[f"1.3.6.1.2.1.31.1.1.1.1.{i}"] = ["string", f"Gi0/{i}"]
        v[f"1.3.6.1.2.1.31.1.1.1.6.{i}"] = ["counter64", 10**12 + i]
        v[f"1.3.6.1.2.1.31.1.1.1.10.{i}"] = ["counter64", 2 * 10**12 + i]
        v[f"1.3.6.1.2.1.31.1.1.1.15.{i}"] = ["gauge", 1000]
    return v


UPS_BASE = "1.3.6.1.2.1.33.1"


def ups_values(on_battery: bool = False) -> dict[str, list[Any]]:
    """UPS-MIB (RFC 1628) scalars of a UPS on mains or on battery."""
    return {
        f"{UPS_BASE}.2.1.0": ["integer", 3 if on_battery else 2],  # batteryLow / Normal
        f"{UPS_BASE}.2.2.0": ["integer", 120 if on_battery else 0],
        f"{UPS_BASE}.2.3.0": ["integer", 4 if on_battery else 30],
        f"{UPS_BASE}.2.4.0": ["integer", 18 if on_battery else 100],
        f"{UPS_BASE}.2.7.0": ["integer", 31 if on_battery else 27],
        f"{UPS_BASE}.3.3.1.3.1": ["integer", 0 if on_battery else 231],
        f"{UPS_BASE}.4.1.0": ["integer", 5 if on_battery else 3],
        f"{UPS_BASE}.4.4.1.5.1": ["integer", 37],
        f"{UPS_BASE}.6.1.0": ["gauge", 2 if on_battery else 0],
    }


def sensor_values(temp_tenths: int = 235, humidity: int = 41) -> dict[str, list[Any]]:
    """A private temperature/humidity probe: a scalar pair and a 2-row table with names."""
    return {
        "1.3.6.1.4.1.99999.1.1.0": ["integer", temp_tenths],
        "1.3.6.1.4.1.99999.1.2.0": ["integer", humidity],
        "1.3.6.1.4.1.99999.2.1.2.1": ["string", "rack1-top"],
        "1.3.6.1.4.1.99999.2.1.2.2": ["string", "rack2-top"],
        "1.3.6.1.4.1.99999.2.1.3.1": ["integer", 221],
        "1.3.6.1.4.1.99999.2.1.3.2": ["integer", 248],
    }


class SnmpdPeer:
    """net-snmp snmpd on 127.0.0.1:<free port>, values from `values.json` in its temp dir."""

    def __init__(
        self, tmp: Path, values: dict[str, list[Any]], served: tuple[str, ...] = ()
    ) -> None:
        """`served`: more subtrees the script answers for, besides `SERVED`."""
        self.dir = tmp
        self.port = free_port("udp")
        self.values_path = tmp / "values.json"
        self.set_values(values)
        script = tmp / "pass.py"
        script.write_text(PASS_SCRIPT)
        persist = tmp / "persist"
        persist.mkdir()
        lines = [
            f"agentaddress udp:127.0.0.1:{self.port}",
            f"rocommunity {COMMUNITY} 127.0.0.1",
            f'createUser {V3_USER} SHA-256 "{V3_AUTH}" AES "{V3_PRIV}"',
            f"rouser {V3_USER} priv",
            f'createUser {V3_USER_256} SHA-512 "{V3_AUTH_256}" AES256 "{V3_PRIV_256}"',
            f"rouser {V3_USER_256} priv",
        ]
        lines += [
            f"pass_persist -p 1 {oid} {sys.executable} {script} {self.values_path}"
            for oid in (*SERVED, *served)
        ]
        self.conf = tmp / "snmpd.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        binary = require_binary(SNMPD)
        self.proc = PeerProcess(
            [
                binary,
                "-f",
                "-Lf",
                str(tmp / "snmpd.log"),
                "-C",
                "-c",
                str(self.conf),
                "-I",
                _NO_BUILTIN,
            ],
            cwd=tmp,
            env={"SNMP_PERSISTENT_DIR": str(persist), "MIBS": "", "MIBDIRS": str(tmp)},
        )
        self._wait_ready()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_values(self, values: dict[str, list[Any]]) -> None:
        """Replace every served value (atomically: the script never reads half a file)."""
        tmp = self.values_path.with_suffix(".new")
        tmp.write_text(json.dumps(values))
        os.replace(tmp, self.values_path)
        # The script re-reads on a changed mtime; make sure two writes in one tick differ.
        now = time.time_ns()
        os.utime(self.values_path, ns=(now, now))

    def change(self, changes: dict[str, list[Any]]) -> None:
        values = json.loads(self.values_path.read_text())
        values.update(changes)
        self.set_values(values)

    def _wait_ready(self, timeout: float = 10.0) -> None:
        """Until sysUpTime answers through the pass_persist script (snmpd is up and the
        script is running)."""
        req = codec.encode_request(
            codec.VERSION_2C,
            COMMUNITY.encode(),
            codec.GET,
            0x01000000,
            [codec.encode_oid_content((1, 3, 6, 1, 2, 1, 1, 3, 0))],
        )
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                if not self.proc.alive():
                    break
                s.sendto(req, ("127.0.0.1", self.port))
                try:
                    data = s.recv(65535)
                except OSError:
                    continue
                vb = codec.decode_message(data)[6]
                if vb and isinstance(vb[0][1], int):
                    return
                time.sleep(0.05)
        log = (
            (self.dir / "snmpd.log").read_text(errors="replace")
            if (self.dir / "snmpd.log").exists()
            else ""
        )
        self.stop()
        raise RuntimeError(f"snmpd did not come up on {self.address}:\n{log[-2000:]}")

    def snmpget(self, options: list[str], *oids: str) -> str:
        """Run net-snmp's own snmpget against this agent (a second opinion in tests)."""
        binary = require_binary("snmpget")
        out = subprocess.run(
            [binary, "-On", "-r", "0", "-t", "2", *options, self.address, *oids],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout + out.stderr

    def stop(self) -> None:
        self.proc.stop()


# ---------------------------------------------------------------------------------------------
# Scripted UDP responders


Behaviour = Callable[[bytes, codec.Message], list[bytes]]


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, owner: ScriptedAgent) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner.requests += 1
        try:
            msg = codec.decode_message(data)
        except codec.DecodeError:
            return
        assert self.transport is not None
        for reply in self.owner.behaviour(data, msg):
            self.transport.sendto(reply, addr)


class ScriptedAgent:
    """An asyncio UDP endpoint on loopback that answers each request with what
    `behaviour(raw, message)` returns (zero or more datagrams)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Responder(self), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            await asyncio.sleep(0)


def reply(
    msg: codec.Message,
    varbinds: list[tuple[bytes, bytes]],
    rid: int | None = None,
    error_status: int = 0,
    error_index: int = 0,
) -> bytes:
    """A response to `msg` with (oid content, value TLV) varbinds."""
    body = b"".join(codec.encode_varbind(o, v) for o, v in varbinds)
    return codec.encode_response(
        msg[0], msg[1], msg[3] if rid is None else rid, body, error_status, error_index
    )


def echo_values(msg: codec.Message, value: bytes) -> list[tuple[bytes, bytes]]:
    """Every requested OID answered with the same value TLV (a GET that 'works')."""
    return [(oid, value) for oid, _ in msg[6]]


def endless_table(msg: codec.Message, column_len: int) -> list[tuple[bytes, bytes]]:
    """A GETBULK/GETNEXT answer that always goes one row further in every column asked
    (columns are OIDs of `column_len` arcs, rows a one-arc index): a table that never ends."""
    out = []
    reps = max(1, msg[5]) if msg[2] == codec.GETBULK else 1
    asked = [codec.decode_oid_content(oid) for oid, _ in msg[6]]
    for r in range(reps):
        for oid in asked:
            # The request names the column itself (no index yet) or the last row seen.
            row = oid[column_len] + 1 if len(oid) > column_len else 1
            out.append(
                (codec.encode_oid_content((*oid[:column_len], row + r)), codec.encode_int(row + r))
            )
    return out
