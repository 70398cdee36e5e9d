"""Duty operations: what a person on duty does to alerts, through the API, the CLI or a drill.

Acknowledge (escalation stops), silence (matching alerts are recorded, not sent),
maintenance windows (not sent, and their time does not count toward red lines), and samples
dutyd itself produces (a drill's time, an operator-entered count). Each change goes through
the rule engine's methods, is stored, and is written to the duty log with who did it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.records import AlertEvent, AlertState, Sample
from dutyd.duty.journal import AlertJournal
from dutyd.rules.alerts import Alert
from dutyd.rules.engine import RuleEngine
from dutyd.rules.matchers import compile_matchers
from dutyd.rules.overlays import MaintenanceWindow, Silence
from dutyd.storage import Storage

# How far ahead an overlay or an acknowledgement may reach: a silence "until 1e300" would
# hide a room for ever, and such a number breaks every date shown.
MAX_OVERLAY_SECONDS = 366 * 86400.0
MAX_ACK_SECONDS = 31 * 86400.0


class DutyOperations:
    def __init__(
        self,
        engine: Callable[[], RuleEngine],
        storage: Storage,
        journal: AlertJournal,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        # The engine is asked for each time: a reload replaces it.
        self._engine = engine
        self._storage = storage
        self._journal = journal
        self._clock = clock

    def list_alerts(self, states: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Alerts (pending, firing, recently resolved) with their overlays: acknowledged,
        silenced_by, maintenance, suppressed (the mute reason), flapping, duration, outage."""
        now = self._clock.time()
        wanted = set(states)
        engine = self._engine()
        return [
            engine.view(a, now)
            for a in list(engine.alerts.values())
            if a.state is not AlertState.INACTIVE and (not wanted or str(a.state) in wanted)
        ]

    async def acknowledge(
        self, fingerprint: str, actor: str, note: str = "", expires_at: float | None = None
    ) -> AlertEvent:
        """Someone takes the alert (escalation stops). Raises `UnknownAlert` when there is no
        pending or firing alert with this fingerprint."""
        if not actor:
            raise ValueError("an acknowledgement needs the name of who takes the alert")
        now = self._clock.time()
        if expires_at is not None and not now < expires_at <= now + MAX_ACK_SECONDS:
            raise ValueError("an acknowledgement expires in the future, within 31 days")
        event = self._engine().acknowledge(fingerprint, actor, note, expires_at, now)
        await self._journal.record(event)
        return event

    async def unacknowledge(self, fingerprint: str, actor: str, note: str = "") -> AlertEvent:
        event = self._engine().unacknowledge(fingerprint, actor, note, self._clock.time())
        await self._journal.record(event)
        return event

    async def silence(
        self, matchers: Mapping[str, Any], until: float, actor: str, reason: str
    ) -> int:
        """Mute alerts whose labels match (`{"target": "db1"}`, `{"rule": {"=~": "disk.*"}}`
        style matchers, as in rule `match:`) until `until`. Returns the silence id."""
        now = self._clock.time()
        compiled = compile_matchers(matchers)  # ValueError names a bad regex or operator
        if not compiled:
            raise ValueError("a silence needs at least one label matcher")
        if until <= now:
            raise ValueError("a silence must end in the future")
        if until > now + MAX_OVERLAY_SECONDS:
            raise ValueError("a silence may last at most 366 days")
        if not actor or not reason:
            raise ValueError("a silence needs who sets it and why")
        data = {k: m.to_data() for k, m in compiled}
        sid = await self._storage.overlays.add_silence(data, until, actor, reason, now)
        self._engine().add_silence(Silence(str(sid), compiled, until, actor, reason, now))
        await self._storage.log.append(
            now,
            "silence.add",
            actor,
            f"silence:{sid}",
            {"matchers": data, "until": until, "reason": reason},
        )
        return sid

    async def remove_silence(self, silence_id: int, actor: str) -> bool:
        now = self._clock.time()
        removed = self._engine().end_silence(str(silence_id))
        ok = await self._storage.overlays.end_silence(silence_id, now, actor)
        if removed is None and not ok:
            return False
        await self._storage.log.append(now, "silence.remove", actor, f"silence:{silence_id}", {})
        return True

    def list_silences(self) -> list[dict[str, Any]]:
        now = self._clock.time()
        return [s.to_dict() for s in self._engine().silences.values() if s.until > now]

    async def add_maintenance(
        self,
        start: float,
        end: float,
        actor: str,
        reason: str,
        targets: Iterable[str] = (),
        matchers: Mapping[str, Any] | None = None,
    ) -> int:
        """An ad hoc maintenance window by target names and/or label matchers. Alerts inside
        it are recorded but not sent, and its time does not count toward red lines."""
        now = self._clock.time()
        compiled = compile_matchers(matchers or {})
        names = sorted(set(targets))
        if not names and not compiled:
            raise ValueError("a maintenance window needs targets or label matchers")
        if end <= start:
            raise ValueError("a maintenance window must end after it starts")
        if end > now + MAX_OVERLAY_SECONDS or end - start > MAX_OVERLAY_SECONDS:
            raise ValueError("a maintenance window must end within 366 days")
        if not actor or not reason:
            raise ValueError("a maintenance window needs who sets it and why")
        data = {k: m.to_data() for k, m in compiled}
        wid = await self._storage.overlays.add_window(names, data, start, end, actor, reason, now)
        self._engine().add_window(
            MaintenanceWindow(str(wid), frozenset(names), compiled, start, end, reason, actor)
        )
        await self._storage.log.append(
            now,
            "maintenance.add",
            actor,
            f"maintenance:{wid}",
            {"targets": names, "matchers": data, "start": start, "end": end, "reason": reason},
        )
        return wid

    async def remove_maintenance(self, window_id: int, actor: str) -> bool:
        """End an ad hoc window now (its past time still counts as excluded)."""
        now = self._clock.time()
        window = self._engine().end_window(str(window_id), now)
        ok = await self._storage.overlays.end_window(window_id, now, actor)
        if window is None and not ok:
            return False
        await self._storage.log.append(
            now, "maintenance.remove", actor, f"maintenance:{window_id}", {}
        )
        return True

    def list_maintenance(self) -> list[dict[str, Any]]:
        now = self._clock.time()
        return [w.to_dict() for w in self._engine().windows.values() if w.every or w.end > now]

    def ingest_samples(self, samples: list[Sample]) -> None:
        """Feed samples dutyd itself produces (the drill command's
        `drill_last_timestamp_seconds`, an operator-entered `security_virus_outbreaks_total`)
        to the rules, as if a target had been polled. Give them a `target` label."""
        for event in self._engine().ingest(samples, self._clock.time()):
            self._journal.put(event)

    def end_alerts(self, ending: Callable[[Alert], dict[str, str] | None], note: str) -> None:
        """End the alerts whose cause dutyd itself ended (`RuleEngine.retire_alerts`): a
        firing one resolves with the notice `ending` gives it."""
        for event in self._engine().retire_alerts(ending, note, self._clock.time()):
            self._journal.put(event)
