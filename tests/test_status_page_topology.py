"""The status page's topology (issue 26, item 3): the depends_on tree in a real headless
Chromium, the parent that is down marked, so a duty engineer sees how far an outage reaches."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from tests.api_fixtures import READ_TOKEN, Portal, config
from tests.peers import free_port, require_binary
from tests.test_status_page_browser import CHROMIUM_ARGS, OUTPUT


async def test_the_status_page_shows_the_tree_with_the_parent_down(tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    portal = Portal()
    await portal.start()
    dead = free_port()
    targets = [
        {
            "name": "core-sw",
            "kind": "tcp",
            "address": f"127.0.0.1:{dead}",
            "interval": "1s",
            "timeout": "0.5s",
        },
        {
            "name": "access-sw-1",
            "kind": "tcp",
            "address": f"127.0.0.1:{dead}",
            "interval": "1s",
            "timeout": "0.5s",
            "depends_on": ["core-sw"],
        },
        {
            "name": "portal",
            "kind": "http",
            "address": portal.url,
            "interval": "1s",
            "depends_on": ["access-sw-1"],
        },
    ]
    daemon = Daemon(load_from_dict(config(tmp_path, portal.url, targets=targets), "<test>"))
    await daemon.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                daemon.http.url + "/api/v1/status", headers={"X-Dutyd-Token": READ_TOKEN}
            ) as r,
        ):
            status = await r.json()
        assert status["topology"]["parents"] == {
            "access-sw-1": ["core-sw"],
            "core-sw": [],
            "portal": ["access-sw-1"],
        }
        OUTPUT.mkdir(exist_ok=True)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 390, "height": 844})
                await page.add_init_script(f"localStorage.setItem('dutyd.token', '{READ_TOKEN}');")
                await page.goto(daemon.http.url + "/status?lang=zh")
                core = page.locator('#topology li[data-target="core-sw"]')
                await core.wait_for(timeout=10_000)
                # Down once polled (the page refreshes every 5 s).
                await page.wait_for_function(
                    "document.querySelector('#topology li[data-target=\"core-sw\"]')"
                    ".classList.contains('bad')",
                    timeout=12_000,
                )
                assert (
                    await page.locator("#topology-section h2").inner_text()
                ) == "拓扑（依赖关系）"
                text = await core.inner_text()
                assert text.splitlines()[0] == "core-sw (离线)", text
                portal_li = core.locator('li[data-target="access-sw-1"] li[data-target="portal"]')
                assert await portal_li.inner_text() == "portal"
                await page.screenshot(path=str(OUTPUT / "status-topology.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await daemon.stop()
        await portal.stop()
