"""An in-process daemon with one failing application, for the API and status-page tests.

A real aiohttp "portal" answers 500, a real HTTP probe polls it every second, and a custom
rule turns `probe_success == 0` into a critical alert at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from tests.http_fixtures import HttpApplication

TOKEN = "api-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The read-only credential a wall screen holds: reads, never writes.
READ_TOKEN = "api-test-read-token"
READ = {"X-Dutyd-Token": READ_TOKEN}


class Portal(HttpApplication):
    """The application under watch: answers 500 until told otherwise."""

    def __init__(self) -> None:
        super().__init__(status=500)


def config(tmp: Path, portal_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "targets": [
            {
                "name": "portal",
                "kind": "http",
                "address": portal_url,
                "interval": "1s",
                "timeout": "1s",
                "labels": {"site": "hq", "role": "application"},
            }
        ],
        "rules": {
            "custom": [
                {
                    "name": "portal_failing",
                    "metric": "probe_success",
                    "targets": ["portal"],
                    "condition": {"below": 1},
                    "for": "0s",
                    "severity": "critical",
                    "summary": "Portal {target} fails its check",
                }
            ]
        },
        "http": {"port": 0},
        "storage": {"path": str(tmp / "dutyd.db")},
        "api": {"token": TOKEN, "read_token": READ_TOKEN},
        "oncall": {
            "pairs": [["Zhang Wei", "Li Na"], ["Liu Yang", "Zhao Min"]],
            "people": [{"name": n} for n in ("Zhang Wei", "Li Na", "Liu Yang", "Zhao Min")],
        },
        **extra,
    }


class Running:
    def __init__(self, daemon: Daemon, portal: Portal, session: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.portal = portal
        self.http = session
        self.base = daemon.http.url

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.get(
            self.base + path, headers=READ if headers is None else headers
        ) as r:
            return r.status, await r.json(content_type=None)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        async with self.http.post(
            self.base + path, json=body, headers=AUTH if headers is None else headers
        ) as r:
            return r.status, await r.json(content_type=None)

    async def firing(self) -> dict[str, Any]:
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            _, body = await self.get("/api/v1/alerts?state=firing")
            if body["alerts"]:
                return body["alerts"][0]
            await asyncio.sleep(0.2)
        raise AssertionError("the portal alert never fired")


@contextlib.asynccontextmanager
async def running_daemon(tmp: Path, **extra: Any) -> AsyncIterator[Running]:
    """The daemon of `config(tmp, ..., **extra)` with its portal, stopped after."""
    portal = Portal()
    await portal.start()
    daemon = Daemon(load_from_dict(config(tmp, portal.url, **extra), "<test>"))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(daemon, portal, session)
    finally:
        await daemon.stop()
        await portal.stop()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(tmp_path) as started:
        yield started
