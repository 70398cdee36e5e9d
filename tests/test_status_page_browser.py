"""The on-call status page in a real headless Chromium (Debian `chromium`, driven by
Playwright): it loads with no external resource, shows the firing alert, and its acknowledge
button acknowledges it through the API. The screenshot is kept in tests/output/ (a CI
artifact, not committed)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Dialog, async_playwright

from tests.api_fixtures import READ_TOKEN, TOKEN, Running, running_daemon
from tests.peers import require_binary

OUTPUT = Path(__file__).parent / "output"
# What the project's probe showed is needed in this sandbox: no sandbox as root, and no
# background traffic towards Google's hosts on a machine with no internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def test_page_shows_the_alert_and_acknowledges_it(running: Running) -> None:
    chromium = require_binary("chromium")
    alert = await running.firing()
    OUTPUT.mkdir(exist_ok=True)
    external: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            page.on(
                "request",
                lambda r: None if r.url.startswith(running.base) else external.append(r.url),
            )
            # The engineer's phone remembers the token and the name from a first visit.
            await page.add_init_script(
                f"localStorage.setItem('dutyd.token', '{TOKEN}');"
                "localStorage.setItem('dutyd.actor', 'Li Na');"
            )

            async def answer(dialog: Dialog) -> None:
                await dialog.accept("on my way to the server room")

            page.on("dialog", lambda d: asyncio.ensure_future(answer(d)))
            await page.goto(running.base + "/status")
            card = page.locator(f'.alert[data-fingerprint="{alert["fingerprint"]}"]')
            await card.wait_for(timeout=10_000)
            assert "portal_failing" in await card.inner_text()
            assert "critical" in (await card.get_attribute("class") or "")
            assert "Zhang Wei" in await page.locator("#oncall").inner_text()
            await page.screenshot(path=str(OUTPUT / "status-page.png"), full_page=True)

            await card.locator("button.ack").click()
            deadline = time.monotonic() + 10
            acked = None
            while time.monotonic() < deadline and not acked:
                _, one = await running.get(f"/api/v1/alerts/{alert['fingerprint']}")
                acked = one["alert"]["acknowledged"]
                await asyncio.sleep(0.2)
            assert acked == {**acked, "by": "Li Na", "note": "on my way to the server room"}
            await page.locator(".badge.acked").wait_for(timeout=10_000)
            await page.screenshot(path=str(OUTPUT / "status-page-acked.png"), full_page=True)

            # Simplified Chinese by setting (here the query string).
            await page.goto(running.base + "/status?lang=zh")
            await page.locator("body[data-loaded='1']").wait_for(timeout=10_000)
            assert await page.locator("h1").inner_text() == "值班"
            assert "已确认" in await page.locator(".alert").first.inner_text()
            # The frame speaks Chinese too: the severity, the duration and the duty log's
            # lines (what happened, not `alert.acknowledged [Li Na]: ...`).
            head = await page.locator(".alert .head .muted").first.inner_text()
            assert head.startswith("严重 · 持续 ") and "critical" not in head, head
            assert re.search(r"持续 \d+(秒|分钟)", head), head
            log = await page.locator("#log").inner_text()
            assert "已确认（Li Na）：Portal portal fails its check" in log, log
            assert "alert." not in log and "notify." not in log, log
            await page.screenshot(path=str(OUTPUT / "status-page-zh.png"), full_page=True)
        finally:
            await browser.close()
    assert external == []
    _, log = await running.get("/api/v1/log?kind=alert.acknowledged")
    assert [e["actor"] for e in log["entries"]] == ["Li Na"]


async def test_a_wall_screen_keeps_its_read_token_when_an_ack_is_refused(running: Running) -> None:
    """A wall screen reads with the read-only token. A tap on Acknowledge there is refused
    (401): the screen must keep reading, ask for a token that may write, and keep the two
    apart, so that the next refusal cannot cost it the token it reads with."""
    chromium = require_binary("chromium")
    alert = await running.firing()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.add_init_script(
                f"localStorage.setItem('dutyd.token', '{READ_TOKEN}');"
                "localStorage.setItem('dutyd.actor', 'Wall screen');"
            )
            seen: list[tuple[str, str]] = []
            write_token: list[str] = []  # what the person types when asked for one
            failure_shown = asyncio.Event()

            async def answer(dialog: Dialog) -> None:
                seen.append((dialog.type, dialog.message))
                if dialog.type == "alert":
                    failure_shown.set()
                if dialog.type == "prompt" and dialog.message.startswith("Note"):
                    await dialog.accept("checking the room")
                elif dialog.type == "prompt" and "write" in dialog.message and write_token:
                    await dialog.accept(write_token[0])
                elif dialog.type == "prompt":
                    await dialog.dismiss()
                else:
                    await dialog.accept()

            page.on("dialog", lambda d: asyncio.ensure_future(answer(d)))
            await page.goto(running.base + "/status")
            card = page.locator(f'.alert[data-fingerprint="{alert["fingerprint"]}"]')
            await card.wait_for(timeout=10_000)

            async def stored(key: str) -> str | None:
                return await page.evaluate(f"localStorage.getItem('dutyd.{key}')")

            # A stray tap: refused, the write token asked for and not given.
            await card.locator("button.ack").click()
            await asyncio.wait_for(failure_shown.wait(), 10)
            assert [t for t, _ in seen] == ["prompt", "prompt", "alert"], seen
            assert "write" in seen[1][1] and "X-Dutyd-Token" in seen[2][1]
            assert await stored("token") == READ_TOKEN
            assert await stored("write_token") is None
            await page.evaluate("refresh()")  # still reads, no token asked for
            await card.wait_for(timeout=10_000)
            assert len(seen) == 3, seen
            _, one = await running.get(f"/api/v1/alerts/{alert['fingerprint']}")
            assert one["alert"]["acknowledged"] is None

            # Given a token that may write, the ack goes through; both tokens are kept.
            write_token.append(TOKEN)
            await card.locator("button.ack").click()
            deadline = time.monotonic() + 10
            acked = None
            while time.monotonic() < deadline and not acked:
                _, one = await running.get(f"/api/v1/alerts/{alert['fingerprint']}")
                acked = one["alert"]["acknowledged"]
                await asyncio.sleep(0.2)
            assert acked == {**acked, "by": "Wall screen", "note": "checking the room"}
            assert await stored("token") == READ_TOKEN
            assert await stored("write_token") == TOKEN
            assert [t for t, _ in seen[3:]] == ["prompt", "prompt"], seen  # no failure shown
        finally:
            await browser.close()


@pytest.fixture
async def with_rooms(tmp_path: Path) -> AsyncIterator[Running]:
    """The `running` daemon with two machine rooms whose entries are registered, and shift
    check-in on."""
    rooms = [{"name": "room-a"}, {"name": "机房B"}]
    async with running_daemon(tmp_path, rooms=rooms, handover={"check_in": True}) as started:
        yield started


async def test_phone_form_registers_people_in_and_out_and_shows_who_is_in(
    with_rooms: Running,
) -> None:
    chromium = require_binary("chromium")
    running = with_rooms
    OUTPUT.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            await page.add_init_script(
                f"localStorage.setItem('dutyd.token', '{TOKEN}');"
                "localStorage.setItem('dutyd.actor', 'Zhang Wei');"
            )
            failures: list[str] = []
            failed = asyncio.Event()

            async def answer(dialog: Dialog) -> None:
                failures.append(dialog.message)
                failed.set()
                await dialog.accept()

            page.on("dialog", lambda d: asyncio.ensure_future(answer(d)))
            await page.goto(running.base + "/status")
            room_a = page.locator('.room[data-room="room-a"]')
            await room_a.wait_for(timeout=10_000)
            assert "nobody in" in await room_a.inner_text()

            # Two people go in together, carrying a disk.
            await page.select_option("#entry-room", "room-a")
            await page.fill("#entry-person", "Zhang Wei")
            await page.fill("#entry-with", "Li Na")
            await page.fill("#entry-purpose", "replace disk 3 of db1")
            await page.fill("#entry-items", "1 × SAS disk 1.2 TB")
            await page.click("#entry-in")
            await room_a.locator('li[data-person="Li Na"]').wait_for(timeout=10_000)
            text = await room_a.inner_text()
            assert "2 in" in text and "Zhang Wei" in text, text
            assert "replace disk 3 of db1" in text and "carrying 1 × SAS disk 1.2 TB" in text
            assert await page.input_value("#entry-purpose") == ""  # cleared once registered
            await page.screenshot(path=str(OUTPUT / "status-page-rooms.png"), full_page=True)

            # Li Na leaves; Zhang Wei stays.
            await page.fill("#entry-person", "Li Na")
            await page.click("#entry-out")
            await room_a.locator('li[data-person="Li Na"]').wait_for(
                state="detached", timeout=10_000
            )
            assert [
                await li.get_attribute("data-person") for li in await room_a.locator("li").all()
            ] == ["Zhang Wei"]
            # Going in twice is refused with the reason.
            await page.fill("#entry-person", "Zhang Wei")
            await page.fill("#entry-purpose", "again")
            await page.click("#entry-in")
            await asyncio.wait_for(failed.wait(), 10)
            assert failures and "registered in room-a already" in failures[0], failures

            # Zhang Wei, on duty, confirms the shift from the page.
            shift = page.locator("#shift")
            assert "not confirmed yet" in await shift.inner_text()
            await shift.locator("button.confirm-duty").click()
            await page.locator("#shift .good").wait_for(timeout=10_000)
            assert "confirmed: Zhang Wei" in await shift.inner_text()

            # In Chinese.
            await page.goto(running.base + "/status?lang=zh")
            await page.locator("body[data-loaded='1']").wait_for(timeout=10_000)
            assert await page.locator("#rooms-section h2").inner_text() == "机房人员"
            assert "1 人在内" in await room_a.inner_text()
            assert "无人" in await page.locator('.room[data-room="机房B"]').inner_text()
            await page.screenshot(path=str(OUTPUT / "status-page-rooms-zh.png"), full_page=True)
        finally:
            await browser.close()
    _, body = await running.get("/api/v1/entries")
    assert [(e["person"], e["direction"], e["actor"]) for e in body["entries"]] == [
        ("Zhang Wei", "in", "Zhang Wei"),
        ("Li Na", "in", "Zhang Wei"),
        ("Li Na", "out", "Zhang Wei"),
    ]
    _, shift = await running.get("/api/v1/shift")
    assert list(shift["shift"]["confirmed"]) == ["Zhang Wei"]
