"""The real `dutyd run` process under libfaketime, its wall clock stepped back an hour while it
runs (the monotonic clock untouched, as NTP leaves it): a new outage pages at once. The old
code, measured under libfaketime with a 240 s step: pages 219 s late (queue times and the
channel's rate limiter on wall time); here an hour late.

Needs the Debian package faketime (tests/debian-packages.txt)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from tests.daemon_fixtures import DaemonProcess
from tests.paging_fixtures import li_na_paged, target_down_rule
from tests.peers import free_port
from tests.test_notify_delivery import Receiver

# Debian's multiarch path (x86_64-linux-gnu, aarch64-linux-gnu ...); the MT build, as dutyd
# reads the clock from several threads.
FOUND = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
LIBFAKETIME = FOUND[0] if FOUND else Path("/usr/lib/faketime/libfaketimeMT.so.1")
INSTALLED = LIBFAKETIME.exists()


def config(receiver: Receiver, live_port: int, dead_port: int) -> dict[str, Any]:
    def target(name: str, port: int) -> dict[str, Any]:
        return {
            "name": name,
            "kind": "tcp",
            "address": f"127.0.0.1:{port}",
            "interval": "0.5s",
            "timeout": "0.3s",
        }

    return {
        "targets": [target("sw-dead", dead_port), target("sw-live", live_port)],
        "rules": {
            "packs": [],
            "custom": [target_down_rule("node_down")],
        },
        **li_na_paged(receiver),
    }


async def wait(check: Any, within: float, what: str, daemon: DaemonProcess) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{daemon.peer.log()[-4000:]}")
        await asyncio.sleep(0.1)


async def test_a_clock_stepped_back_an_hour_delays_no_page(tmp_path: Path) -> None:
    assert INSTALLED, "install the Debian package faketime"
    receiver = Receiver()
    await receiver.start()
    live_port = free_port()
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", live_port)
    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",  # NTP steps CLOCK_REALTIME only
    }
    daemon = DaemonProcess(tmp_path, config(receiver, live_port, free_port()), env=env)
    try:

        def paged(target: str) -> bool:
            return any(target in json.dumps(r["body"]) for r in receiver.received)

        # A first page: a token taken from the channel's rate limiter, a queue time written.
        await wait(lambda: paged("sw-dead"), 20, "the first page", daemon)

        offset_file.write_text("-3600\n")  # the clock was an hour fast; NTP steps it back
        await wait(
            lambda: daemon.metric_value("dutyd_clock_jumps_total", direction="back") == 1,
            10,
            "the step seen",
            daemon,
        )
        assert "system clock was stepped" in daemon.peer.log()

        # A new outage after the step pages within seconds, not an hour later.
        listener.close()
        await listener.wait_closed()
        down_at = time.monotonic()
        await wait(lambda: paged("sw-live"), 15, "the page after the step", daemon)
        assert time.monotonic() - down_at < 15
    finally:
        daemon.stop()
        listener.close()
        await receiver.stop()
