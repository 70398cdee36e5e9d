"""Regenerate the README's status-page screenshots, docs/screenshots/status-{en,zh}.png.

Each language: `dutyd demo --lang LANG` on a free port, until its simulated room has enough
firing and resolved alerts (the story's disk and backup faults firing, the power cut and the
overheating resolved: both kinds of text in the picture), then the
on-call page in headless Chromium (Debian's `chromium`, driven by Playwright, as in
tests/test_status_page_browser.py). Run it through `scripts/screenshots`, which installs
what it needs; Chinese glyphs need a CJK font (fonts-noto-cjk), or they show as boxes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
# As in the browser test: no sandbox as root, no background traffic on a machine with no
# internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The size of the committed pictures: a desktop window, the alerts and the duty log's head.
VIEWPORT = {"width": 1100, "height": 1800}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def counts(port: int) -> tuple[int, int]:
    """How many alerts fire and how many have resolved (the demo's status API reads without
    a token on loopback); nothing while the demo is still starting."""
    url = f"http://127.0.0.1:{port}/api/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            status = json.load(answer)
    except OSError:
        return 0, 0
    states = [a["state"] for a in status["alerts"]]
    return states.count("firing"), states.count("resolved")


async def shoot(
    lang: str, chromium: str, speed: float, wanted: tuple[int, int], within: float
) -> Path:
    port = free_port()
    demo = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "dutyd.agent.cli", "demo", "--lang", lang],
        *["--port", str(port), "--speed", str(speed)],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + within
        while True:
            firing, resolved = await asyncio.to_thread(counts, port)
            if firing >= wanted[0] and resolved >= wanted[1]:
                break
            if demo.returncode is not None:
                raise SystemExit(f"dutyd demo --lang {lang} exited with {demo.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"not {wanted} firing/resolved within {within:.0f} s")
            await asyncio.sleep(1.0)
        path = OUT / f"status-{lang}.png"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
                await page.goto(f"http://127.0.0.1:{port}/status?lang={lang}")
                await page.locator("body[data-loaded='1']").wait_for(timeout=15_000)
                await page.screenshot(path=str(path))
            finally:
                await browser.close()
        return path
    finally:
        if demo.returncode is None:
            demo.terminate()
            try:
                await asyncio.wait_for(demo.wait(), 10)
            except TimeoutError:
                demo.kill()
                await demo.wait()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", choices=["en", "zh"], action="append", help="default: both")
    parser.add_argument("--speed", type=float, default=2.0, help="the demo's scenario speed")
    parser.add_argument("--firing", type=int, default=3, help="wait for this many firing")
    parser.add_argument("--resolved", type=int, default=4, help="and this many resolved")
    parser.add_argument("--within", type=float, default=300.0, help="give up after seconds")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (Debian package chromium)")
    OUT.mkdir(parents=True, exist_ok=True)
    for lang in args.lang or ["en", "zh"]:
        wanted = (args.firing, args.resolved)
        path = await shoot(lang, chromium, args.speed, wanted, args.within)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
