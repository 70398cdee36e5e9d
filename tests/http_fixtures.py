"""A real HTTP application on loopback for the daemon's `kind: http` probe: it answers the
status the test sets, or hangs (no answer at all, as a dead device) until it is stopped, and
notes when it is polled."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from dutyd.web.server import serve_on_loopback


class HttpApplication:
    """Answers `status` (`text` as the body) until `hang` is set; `url` once started."""

    def __init__(self, status: int = 200, text: str = "portal") -> None:
        self.status = status
        self.text = text
        self.hang = False
        self.polled_at: list[float] = []  # time.monotonic() of each request
        self.polled = asyncio.Event()  # set at each request
        self._released = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _page(self, request: web.Request) -> web.Response:
        self.polled_at.append(time.monotonic())
        self.polled.set()
        if self.hang:
            await self._released.wait()  # no answer until the test ends
        return web.Response(status=self.status, text=self.text)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        self._runner, port = await serve_on_loopback(app)
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
