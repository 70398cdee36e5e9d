"""The duty layer for `dutyd demo`: a rota, escalation steps in seconds instead of minutes, and
a "phone" (a webhook receiver on loopback) that prints every page as it arrives, with its ack
link, so a visitor watches an escalation walk its steps and can stop it with a click.

Wiring, in agent/demo/site.py::

    pager = DemoPager()
    await pager.start()
    config.update(demo_duty_sections(pager.port, dutyd_port))   # before load_from_dict
    ...
    await pager.stop()
"""

from __future__ import annotations

import secrets
import sys
from typing import Any, TextIO

from aiohttp import web

from dutyd.web.server import serve_on_loopback

PEOPLE = [
    ("Zhang Wei", "zh"),
    ("Li Na", "zh"),
    ("Liu Yang", "en"),
    ("Zhao Min", "zh"),
    ("Wang Fang", "zh"),
    ("Chen Jie", "en"),
]


def demo_duty_sections(
    pager_port: int, dutyd_port: int, language: str | None = None
) -> dict[str, Any]:
    """oncall, escalation, notify and api sections; each person's phone is a path on the
    pager. The delays are the real policy's minutes played as seconds. `language` ("en" or
    "zh") gives every person and the status page that language; None keeps the mixed team."""
    hook = f"json://127.0.0.1:{pager_port}"
    return {
        "oncall": {
            "timezone": "Asia/Shanghai",
            "handovers": ["08:30", "20:30"],
            "pairs": [["Zhang Wei", "Li Na"], ["Liu Yang", "Zhao Min"]],
            "people": [
                {"name": name, "language": language or lang, "contacts": [f"phone_{i}"]}
                for i, (name, lang) in enumerate(PEOPLE)
            ],
            "roles": {"manager": ["Wang Fang"], "director": ["Chen Jie"]},
        },
        "escalation": {
            "policies": [
                {
                    "name": "critical",
                    "match": {"severity": "critical"},
                    "steps": [
                        {"after": "0s", "oncall": True},
                        {"after": "20s", "roles": ["manager"]},
                        {"after": "40s", "roles": ["director"]},
                    ],
                    "repeat": "30s",
                    "red_line": {"roles": ["director"]},
                },
                {
                    "name": "default",
                    "steps": [
                        {"after": "0s", "oncall": True},
                        {"after": "30s", "roles": ["manager"]},
                    ],
                    "repeat": "60s",
                },
            ]
        },
        "notify": {
            "timezone": "Asia/Shanghai",
            "language": language or "en",
            "channels": {
                f"phone_{i}": {"url": f"{hook}/{name.replace(' ', '_')}"}
                for i, (name, _) in enumerate(PEOPLE)
            },
            "ack_secret": secrets.token_hex(16),
            "ack_base_url": f"http://127.0.0.1:{dutyd_port}",
        },
        # A demo on loopback: the page reads without a token (writes still need it).
        "api": {"token": secrets.token_hex(16), "open_loopback_reads": True},
    }


class DemoPager:
    """Stands in for the engineers' phones: prints each page (who, title, text)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.port = 0
        self.pages: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None

    async def _page(self, request: web.Request) -> web.Response:
        body = await request.json()
        who = request.match_info["who"].replace("_", " ")
        self.pages.append((who, body.get("title", "")))
        text = "\n".join("      " + line for line in str(body.get("message", "")).splitlines())
        print(f"  \U0001f4f1 {who}: {body.get('title', '')}\n{text}", file=self.out, flush=True)
        return web.Response(text="ok")

    async def start(self) -> int:
        app = web.Application()
        app.router.add_post("/{who}", self._page)
        self._runner, self.port = await serve_on_loopback(app)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
