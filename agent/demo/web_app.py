"""A simulated duty web portal (aiohttp on loopback) that fails with 500s and is later defaced."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from dutyd.agent.demo.base import DemoDevice
from dutyd.web.server import serve_on_loopback

# The scenario, in scenario seconds (wall seconds × speed).
ERRORS_FROM = 60.0
ERRORS_UNTIL = 90.0
DEFACED_FROM = 100.0
DEFACED_UNTIL = 130.0

# The page carries a generation time, as real portals do; the probe ignores that line when
# fingerprinting, so only a real change of the content raises http_content_changed.
_STAMP_PATTERN = r"<p class=\"generated\">[^<]*</p>"

_PAGE = """<!doctype html>
<html><head><title>Duty portal</title></head>
<body>
<h1>Duty portal OK</h1>
<p>Machine room A: on duty. Next shift change 08:00.</p>
{stamp}
</body></html>
"""

# The defaced page keeps the title, so the expected-text check still passes: only the content
# fingerprint notices. That is the case the integrity check exists for.
_DEFACED = """<!doctype html>
<html><head><title>Duty portal</title></head>
<body>
<h1>Duty portal OK</h1>
<p>Machine room A: on duty. Next shift change 08:00.</p>
<p><a href="http://198.51.100.7/update.exe">Urgent: install the new duty client</a></p>
{stamp}
</body></html>
"""


class WebAppDevice(DemoDevice):
    """The duty portal, an aiohttp application on a free loopback port."""

    name = "portal"

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__(speed)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.failing = False
        self.defaced = False

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        self._runner, self.port = await serve_on_loopback(app)

    async def _page(self, _request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=500, text="500 Internal Server Error: database unavailable")
        stamp = f'<p class="generated">Generated {time.strftime("%H:%M:%S")}</p>'
        body = (_DEFACED if self.defaced else _PAGE).format(stamp=stamp)
        return web.Response(text=body, content_type="text/html")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def targets(self) -> list[dict[str, Any]]:
        return [
            {
                "name": self.name,
                "kind": "http",
                "address": self.url,
                "interval": "2s",
                "timeout": "1s",
                "labels": {"site": "demo", "role": "application"},
                "expected_text": "Duty portal",
                "ignore_patterns": [_STAMP_PATTERN],
            }
        ]

    def advance(self, elapsed: float) -> None:
        elapsed *= self.speed
        self.failing = ERRORS_FROM <= elapsed < ERRORS_UNTIL
        self.defaced = DEFACED_FROM <= elapsed < DEFACED_UNTIL

    def story(self) -> list[str]:
        def at(t: float) -> str:
            return f"{t / self.speed:.0f}s"

        return [
            f"portal (HTTP {self.url}): the duty portal answers 'Duty portal OK'",
            f"  from {at(ERRORS_FROM)} to {at(ERRORS_UNTIL)} it answers 500 "
            "(probe_success 0, http_status_code 500)",
            f"  from {at(DEFACED_FROM)} to {at(DEFACED_UNTIL)} its page is defaced with a "
            "malicious link (http_content_changed 1), then restored",
        ]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
