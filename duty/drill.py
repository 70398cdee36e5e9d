"""Emergency drills: a clearly marked test alert walks the whole escalation chain; who answers,
and how fast, goes to the duty log; its completion feeds the duty pack's monthly-drill rule.

The mechanism the rule reads: when a drill that someone answered ends, the daemon ingests the
sample `drill_last_timestamp_seconds{target="dutyd",kind="drill"}` = the drill's start time
(Unix seconds) through `DutyOperations.ingest_samples`; a drill nobody answered does not count. At
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
import secrets
from dataclasses import dataclass, field
from typing import Any

from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.records import AlertChange, AlertEvent, AlertState, Sample, labels_of
from dutyd.duty.operations import DutyOperations
from dutyd.notify.service import NotifyService
from dutyd.storage import Storage

log = logging.getLogger("dutyd.drill")

DRILL_PREFIX = "drill-"
# A drill played faster than this would page every step within the same second.
MAX_SPEED = 1000.0
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

    def shift(self, seconds: float) -> None:
        """Move its moments (the clock re-anchored after a step): an answer's time holds."""
        self.started += seconds
        if self.finished is not None:
            self.finished += seconds

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
    def __init__(
        self,
        operations: DutyOperations,
        notify: NotifyService,
        storage: Storage,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._operations = operations
        self._notify = notify
        self._storage = storage
        self._clock = clock
        self.runs: dict[str, DrillRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def restore(self, _app: object = None) -> None:
        """Tell the rules when the last drill was (aiohttp on_startup hook: storage is open)."""
        # The start time of the last answered drill, as a live drill records it.
        last = await self._storage.drills.last_answered_start()
        if last is None:
            last = await self._storage.log.first_timestamp()
        if last is not None:
            self._ingest(float(last))

    def _ingest(self, when: float) -> None:
        self._operations.ingest_samples(
            [Sample.of(DRILL_SAMPLE, when, self._clock.time(), DRILL_LABELS)]
        )

    async def start(
        self, actor: str, wait: float, speed: float = 1.0, severity: str = "critical"
    ) -> DrillRun:
        if not actor:
            raise ValueError("a drill needs the name of who starts it")
        if not 0 < wait <= 86400:
            raise ValueError("wait must be between 0 and 24 hours")
        # `not >=`: a NaN speed (JSON allows it) would make every escalation deadline NaN.
        if not 1 <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be a number from 1 to {MAX_SPEED:g}")
        now = self._clock.time()
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
        service = self._notify
        service.add_pages(service.escalator.handle(event, now, scale=1.0 / speed), now)
        service.wake_escalation()
        await self._storage.log.append(
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
        now = self._clock.time()
        if any(a["actor"] == actor for a in run.acks):
            raise ValueError(f"{actor} has already answered drill {run.id}")
        answer = {"actor": actor, "seconds": round(now - run.started, 3), "note": note}
        run.acks.append(answer)
        if len(run.acks) == 1:  # the first answer stops the escalation, as for a real alert
            ack = dataclasses.replace(
                run.event, change=AlertChange.ACKNOWLEDGED, actor=actor, note=note, timestamp=now
            )
            service = self._notify
            service.add_pages(service.escalator.handle(ack, now), now)
        await self._storage.log.append(now, "drill.ack", actor, run.fingerprint, answer)
        return answer

    async def _finish_later(self, run: DrillRun) -> None:
        await self._clock.sleep(run.wait)
        await self.finish(run)

    async def finish(self, run: DrillRun) -> None:
        if run.finished is not None:
            return
        now = self._clock.time()
        run.finished = now
        resolved = dataclasses.replace(
            run.event, state=AlertState.RESOLVED, previous=AlertState.FIRING, timestamp=now
        )
        service = self._notify
        paged = [str(r) for r in service.escalator.paged(run.fingerprint)]
        service.add_pages(service.escalator.handle(resolved, now), now)
        await self._storage.log.append(
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
