"""The daemon's HTTP server (aiohttp): /metrics, /healthz, /readyz.

Later layers (the JSON API, the on-call page) add their routes through `HttpServer.app`
before it starts. It binds 127.0.0.1 unless configured otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("dutyd.http")


class HttpServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, str]],
        listen: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.registry = registry
        self._ready = ready
        self.listen = listen
        self.port = port
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # learn the port when 0 was asked for
            self.port = server.sockets[0].getsockname()[1]
        log.info("http listening", extra={"fields": {"url": self.url}})

    @property
    def url(self) -> str:
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, why = self._ready()
        return web.Response(text=f"{why}\n", status=200 if ok else 503)
