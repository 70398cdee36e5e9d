"""dutyd's own loops (rule ticks, the alert journal, the storage watch, the notification
delivery and escalation) end only when dutyd stops. One that ends by a fault is said at once
with its traceback, `/readyz` names it, and the daemon stops with a failure status (its
supervisor restarts it; in a cluster the standby takes over): never a daemon that looks
healthy and no longer pages. Before, such a task ended in silence, its error kept in the task
until the stop's `gather` discarded it."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from dutyd.agent import cli
from dutyd.core.tasks import LoopWatch
from dutyd.rules.engine import RuleEngine
from tests.api_fixtures import config, running_daemon


async def test_a_loop_that_fails_is_said_with_its_traceback_and_handed_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told: list[tuple[str, str]] = []
    loops = LoopWatch(on_end=lambda name, why: told.append((name, why)))

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("the loop's own bug")

    async def forever() -> None:
        await asyncio.Event().wait()

    with caplog.at_level(logging.CRITICAL, logger="dutyd"):
        ended = loops.start(failing(), "rule-tick")
        running = loops.start(forever(), "notify-deliver")
        await asyncio.gather(ended, return_exceptions=True)
        running.cancel()  # a stop: not a fault
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.sleep(0)  # the done callbacks run
    assert told == [("rule-tick", "ValueError: the loop's own bug")]
    assert loops.problem() == "a loop of dutyd ended: rule-tick (ValueError: the loop's own bug)"
    (record,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert record.fields == {"loop": "rule-tick", "why": "ValueError: the loop's own bug"}  # type: ignore[attr-defined]


async def test_a_daemon_whose_rule_tick_fails_says_so_and_stops_with_a_fault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_daemon(tmp_path) as run:
        daemon = run.daemon
        assert daemon.fault is None

        def tick(now: float) -> list[object]:
            raise RuntimeError("injected: a rule evaluation bug")

        with caplog.at_level(logging.CRITICAL, logger="dutyd"):
            daemon.engine.tick = tick  # type: ignore[method-assign,assignment]
            for _ in range(50):
                if daemon.fault is not None:
                    break
                await asyncio.sleep(0.1)
        assert daemon.fault == (
            "a loop of dutyd ended: rule-tick (RuntimeError: injected: a rule evaluation bug)"
        )
        assert daemon._stopping.is_set()  # `run` stops it, and the CLI exits 1
        async with run.http.get(run.base + "/readyz") as r:
            status, text = r.status, await r.text()
        assert status == 503 and "rule-tick" in text and "injected" in text
        critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert [getattr(r, "fields", {}).get("loop") for r in critical] == ["rule-tick"]


def test_dutyd_run_exits_1_after_a_fault_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dutyd run` itself: the rule tick fails at its first turn; the daemon stops cleanly
    (its database closed, `daemon.stop` in the duty log) and the command exits 1, the status
    systemd's `Restart=on-failure` (packaging/systemd/dutyd.service) restarts on."""
    path = tmp_path / "dutyd.yaml"
    path.write_text(json.dumps(config(tmp_path, "http://127.0.0.1:9/")))

    def tick(self: RuleEngine, now: float) -> list[object]:
        raise RuntimeError("injected: a rule evaluation bug")

    monkeypatch.setattr(RuleEngine, "tick", tick)
    # The process-wide set-up of a real run (root log handlers, the collector's thresholds)
    # would outlive this test in the worker.
    monkeypatch.setattr(cli.logsetup, "configure", lambda *args: None)
    monkeypatch.setattr(cli.gc_policy, "configure_for_daemon", lambda: None)
    assert cli.main(["run", "-c", str(path)]) == cli.EXIT_FAULT == 1
    err = capsys.readouterr().err
    assert "dutyd: stopped, a loop of dutyd ended: rule-tick (RuntimeError: injected" in err
    db = sqlite3.connect(tmp_path / "dutyd.db")
    kinds = [k for (k,) in db.execute("SELECT kind FROM duty_log ORDER BY id")]
    db.close()
    assert kinds[-1] == "daemon.stop", kinds
