"""The demo's duty layer: a critical alert walks the steps (in seconds) to the demo phones."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.agent.demo.phones import DemoPager, demo_duty_sections
from dutyd.core.records import Sample
from dutyd.duty.drill import DRILL_LABELS, DRILL_SAMPLE
from tests.peers import free_port


async def test_demo_escalation_walks_to_the_manager(tmp_path: Path) -> None:
    out = io.StringIO()
    pager = DemoPager(out)
    await pager.start()
    port = free_port()
    config = {"http": {"port": port}, "storage": {"path": str(tmp_path / "d.db")}}
    config.update(demo_duty_sections(pager.port, port))
    # 20 s to the manager is too long for a test: the same sections, a shorter second step.
    config["escalation"]["policies"][1]["steps"][1]["after"] = "1s"
    daemon = Daemon(load_from_dict(config))
    await daemon.start()
    try:
        daemon.operations.ingest_samples([Sample.of(DRILL_SAMPLE, 0.0, time.time(), DRILL_LABELS)])
        for _ in range(60):
            if len(pager.pages) >= 3:
                break
            await asyncio.sleep(0.1)
        whos = [who for who, _ in pager.pages]
        assert sorted(whos[:2]) == ["Li Na", "Zhang Wei"] or sorted(whos[:2]) == [
            "Liu Yang",
            "Zhao Min",
        ]
        assert whos[2] == "Wang Fang"
        text = out.getvalue()
        assert "第 2 级升级" in text and f"http://127.0.0.1:{port}/ack/" in text
    finally:
        await daemon.stop()
        await pager.stop()


async def test_demo_in_chinese_pages_entirely_in_chinese(tmp_path: Path) -> None:
    """`dutyd demo --lang zh`: every phone gets the page in Chinese, summary included."""
    out = io.StringIO()
    pager = DemoPager(out)
    await pager.start()
    port = free_port()
    config = {"http": {"port": port}, "storage": {"path": str(tmp_path / "d.db")}}
    config.update(demo_duty_sections(pager.port, port, "zh"))
    daemon = Daemon(load_from_dict(config))
    await daemon.start()
    try:
        daemon.operations.ingest_samples([Sample.of(DRILL_SAMPLE, 0.0, time.time(), DRILL_LABELS)])
        for _ in range(60):
            if len(pager.pages) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(pager.pages) >= 2
        text = out.getvalue()
        assert "No emergency drill" not in text and "ALERT" not in text, text
        assert "演练" in text and "告警" in text, text
    finally:
        await daemon.stop()
        await pager.stop()
