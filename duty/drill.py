"""Emergency drills: a clearly marked test alert walks the whole escalation chain; who answers,
and how fast, goes to the duty log; its completion feeds the duty pack's monthly-drill rule.

The mechanism the rule reads: when a drill that someone answered ends, the daemon ingests the
sample `drill_last_timestamp_seconds{target="dutyd",kind="drill"}` = the drill's start time
(Unix seconds) through `Daemon.ingest_samples`; a drill nobody answered does not count. At
startup the latest answered `drill.end` in the duty log is ingested again (or, before any
drill, the first duty log entry: the installation starts the first 31 days). The rule
`emergency_drill_overdue` uses `value: age` on it.

A drill alert never enters the rule engine (it is not a real fault and must not count toward
outages); it goes straight to the notification service, and its acknowledgements come back
here through the same API and ack links as real alerts (fingerprints `drill-<id>`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dutyd.core.records import AlertChange, AlertEvent, AlertState, Sample, labels_of

if TYPE_CHECKING:
    from dutyd.agent.daemon import Daemon

log = logging.getLogger("dutyd.drill")

DRILL_PREFIX = "drill-"
DRILL_SAMPLE = "drill_last_timestamp_seconds"
DRILL_LABELS = {"target": "dutyd", "kind": "drill"}


@dataclass
class DrillRun:
    id: str
    started: float
    actor: str
    wait: float
    event: AlertEvent
    acks: list[dict[str, Any]] = field(default_factory=list)
    finished: float | None = None

    @property
    def fingerprint(self) -> str:
        return self.event.fingerprint

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "started": self.started,
            "actor": self.actor,
            "wait": self.wait,
            "acks": self.acks,
            "finished": self.finished,
        }


class Drills:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.runs: dict[str, DrillRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def restore(self, _app: object = None) -> None:
        """Tell the rules when the last drill was (aiohttp on_startup hook: storage is open)."""
        # The start time of the last answered drill, as a live drill records it.
        rows = await self.daemon.storage.execute(
            "SELECT MAX(COALESCE(json_extract(data, '$.started'), ts)) FROM duty_log"
            " WHERE kind='drill.end' AND json_extract(data, '$.answered') = 1"
        )
        last = rows[0][0] if rows else None
        if last is None:
            first = await self.daemon.storage.execute("SELECT MIN(ts) FROM duty_log")
            last = first[0][0] if first else None
        if last is not None:
            self._ingest(float(last))

    def _ingest(self, when: float) -> None:
        self.daemon.ingest_samples([Sample.of(DRILL_SAMPLE, when, time.time(), DRILL_LABELS)])

    async def start(
        self, actor: str, wait: float, speed: float = 1.0, severity: str = "critical"
    ) -> DrillRun:
        if not actor:
            raise ValueError("a drill needs the name of who starts it")
        if not 0 < wait <= 86400:
            raise ValueError("wait must be between 0 and 24 hours")
        # `not >=`: a NaN speed (JSON allows it) would make every escalation deadline NaN.
        if not speed >= 1 or not math.isfinite(speed):
            raise ValueError("speed must be a finite number of at least 1")
        now = time.time()
        drill_id = secrets.token_hex(4)
        event = AlertEvent(
            fingerprint=DRILL_PREFIX + drill_id,
            rule="emergency_drill",
            labels=labels_of({**DRILL_LABELS, "drill": "true"}),
            state=AlertState.FIRING,
            previous=AlertState.PENDING,
            severity=severity,
            summary=f"Emergency drill started by {actor}: please acknowledge",
            summaries=(
                ("en", f"Emergency drill started by {actor}: please acknowledge"),
                ("zh", f"应急演练（{actor} 发起）：请确认"),
            ),
            value=None,
            active_since=now,
            timestamp=now,
        )
        run = DrillRun(drill_id, now, actor, wait, event)
        self.runs[drill_id] = run
        service = self.daemon.notify
        service.add_pages(service.escalator.handle(event, now, scale=1.0 / speed), now)
        service.wake_escalation()
        await self.daemon.storage.append_log(
            now, "drill.start", actor, event.fingerprint, {"id": drill_id, "wait": wait}
        )
        task = asyncio.create_task(self._finish_later(run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    def find(self, fingerprint: str) -> DrillRun | None:
        if not fingerprint.startswith(DRILL_PREFIX):
            return None
        return self.runs.get(fingerprint.removeprefix(DRILL_PREFIX))

    async def acknowledge(self, run: DrillRun, actor: str, note: str = "") -> dict[str, Any]:
        if run.finished is not None:
            raise ValueError(f"drill {run.id} is over")
        now = time.time()
        if any(a["actor"] == actor for a in run.acks):
            raise ValueError(f"{actor} has already answered drill {run.id}")
        answer = {"actor": actor, "seconds": round(now - run.started, 3), "note": note}
        run.acks.append(answer)
        if len(run.acks) == 1:  # the first answer stops the escalation, as for a real alert
            ack = dataclasses.replace(
                run.event, change=AlertChange.ACKNOWLEDGED, actor=actor, note=note, timestamp=now
            )
            service = self.daemon.notify
            service.add_pages(service.escalator.handle(ack, now), now)
        await self.daemon.storage.append_log(now, "drill.ack", actor, run.fingerprint, answer)
        return answer

    async def _finish_later(self, run: DrillRun) -> None:
        await asyncio.sleep(run.wait)
        await self.finish(run)

    async def finish(self, run: DrillRun) -> None:
        if run.finished is not None:
            return
        now = time.time()
        run.finished = now
        resolved = dataclasses.replace(
            run.event, state=AlertState.RESOLVED, previous=AlertState.FIRING, timestamp=now
        )
        service = self.daemon.notify
        paged = [str(r) for r in service.escalator.paged(run.fingerprint)]
        service.add_pages(service.escalator.handle(resolved, now), now)
        await self.daemon.storage.append_log(
            now,
            "drill.end",
            run.actor,
            run.fingerprint,
            {
                "id": run.id,
                "started": run.started,
                "paged": paged,
                "answers": run.acks,
                "answered": bool(run.acks),
            },
        )
        # A drill nobody answered found a broken chain: it does not count as the month's drill,
        # so "no emergency drill in 31 days" stays due until one is answered.
        if run.acks:
            self._ingest(run.started)
        else:
            log.warning("drill %s ended with no answer", run.id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
