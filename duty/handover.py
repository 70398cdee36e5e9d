"""Shift check-in and hand-over: the incoming pair confirms it is on duty; nobody confirmed
within N minutes pages the manager (`duty_post_unattended`).

On (`handover.check_in: true`), at each hand-over the people of the new shift get a message
with a signed link, as an alert's ack link (fingerprint `checkin-<shift>`): opening and
submitting it confirms them, as does the status page (`POST /api/v1/shift/confirm`). The
outgoing pair's hand-over note (`POST /api/v1/shift/handover`) and each confirmation go to
the duty log (`shift.handover`, `shift.confirm`), which the shift's duty diary shows, each
with the name and time of who wrote it.

The rule sees the sample `duty_shift_confirmed_people{target="dutyd", kind="shift",
shift="<index>"}`: how many of the current shift's people have confirmed, 0 from each
hand-over until the first does. A series per shift, so the alert is per shift: at the next
hand-over an unconfirmed shift's alert ends (resolved with a notice saying the shift is over)
and the new shift's starts over from 0, its own N minutes, its own page. Confirmations are
read back from the duty log at start (and a restored alert of a shift that is over ends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.core.records import AlertEvent, AlertState, Sample, labels_of
from dutyd.core.tasks import cancel_and_wait
from dutyd.duty.config import HandoverConfig
from dutyd.duty.operations import DutyOperations
from dutyd.notify.escalation import Page, PageKind, Recipient
from dutyd.notify.oncall import Shift
from dutyd.notify.service import NotifyService
from dutyd.rules.alerts import Alert
from dutyd.storage import Storage

log = logging.getLogger("dutyd.handover")

CHECKIN_PREFIX = "checkin-"
CONFIRMED = "duty_shift_confirmed_people"
LABELS = {"target": "dutyd", "kind": "shift"}
CHECK_EVERY = 1.0
MAX_NOTE = 2000


class ShiftCheckIn:
    def __init__(
        self,
        config: Callable[[], HandoverConfig],
        notify: NotifyService,
        operations: DutyOperations,
        storage: Storage,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._config = config
        self._notify = notify
        self._operations = operations
        self._storage = storage
        self._clock = clock
        self.shift: Shift | None = None
        self.confirmed: dict[str, float] = {}  # person -> when, for the current shift
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self._config().check_in and bool(self._notify.rota.config.pairs)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="shift-check-in")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _watch(self) -> None:
        while True:
            try:
                await self.check(self._clock.time())
            except Exception:
                log.exception("the shift check-in failed")
            await self._clock.sleep(CHECK_EVERY)

    async def check(self, now: float) -> None:
        """At a new shift (and at start): who confirmed it so far, the sample for the rule,
        and, at a hand-over seen live, the check-in messages to the incoming people."""
        if not self.enabled:
            return
        shift = self._notify.rota.shift_at(now)
        if self.shift is not None and shift.index == self.shift.index:
            return
        first = self.shift is None
        async with self._lock:
            self.shift = shift
            self.confirmed = await self._confirmed_in_log(shift)
            self._end_past_shifts(shift)
            self._publish(now)
        if not first or not self.confirmed:
            self._send_check_in(shift, now)

    async def _confirmed_in_log(self, shift: Shift) -> dict[str, float]:
        entries = await self._storage.log.read(
            since=shift.start.timestamp(),
            until=shift.end.timestamp(),
            kinds=["shift.confirm"],
            limit=None,
        )
        return {e.actor: e.timestamp for e in entries if e.data.get("shift") == shift.index}

    def _event(self, shift: Shift, now: float) -> AlertEvent:
        people = ", ".join(shift.people)
        start = shift.start.strftime("%Y-%m-%d %H:%M")
        return AlertEvent(
            fingerprint=f"{CHECKIN_PREFIX}{shift.index}",
            rule="shift_check_in",
            labels=labels_of({**LABELS, "shift": str(shift.index)}),
            state=AlertState.FIRING,
            previous=AlertState.PENDING,
            severity="info",
            summary=f"Shift {start}: {people}, confirm that you are on duty",
            summaries=(
                ("en", f"Shift {start}: {people}, confirm that you are on duty"),
                ("zh", f"{start} 班次：{people}，请确认到岗"),
            ),
            value=None,
            active_since=shift.start.timestamp(),
            timestamp=now,
        )

    def _send_check_in(self, shift: Shift, now: float) -> None:
        people = [p for p in shift.people if p not in self.confirmed]
        if not people:
            return
        event = self._event(shift, now)
        recipients = tuple(Recipient("person", p) for p in people)
        page = Page(PageKind.FIRING, event, recipients, 1, now, f"{event.fingerprint}|check-in")
        self._notify.add_pages([page], now)

    def find(self, fingerprint: str) -> int | None:
        """The shift index a check-in link names; None when it is no check-in link."""
        if not fingerprint.startswith(CHECKIN_PREFIX):
            return None
        try:
            return int(fingerprint.removeprefix(CHECKIN_PREFIX))
        except ValueError:
            return None

    def ensure_current(self, shift_index: int) -> None:
        if self.shift is None or self.shift.index != shift_index:
            raise ValueError("that shift is over: this link no longer confirms anyone")

    async def confirm(
        self, person: str, note: str = "", via: str = "status page", shift_index: int | None = None
    ) -> float:
        """`person` of the current shift is on duty. Refused (ValueError) for someone not on
        duty now, or a link of a shift that is over."""
        if not self.enabled or self.shift is None:
            raise ValueError("shift check-in is off (handover.check_in)")
        now = self._clock.time()
        async with self._lock:
            shift = self.shift
            if shift_index is not None:
                self.ensure_current(shift_index)
            if person not in self._notify.rota.on_duty(now) and person not in shift.people:
                raise ValueError(f"{person} is not on duty in this shift")
            if person in self.confirmed:
                raise ValueError(f"{person} has confirmed this shift already")
            await self._storage.log.append(
                now,
                "shift.confirm",
                person,
                f"shift:{shift.index}",
                {"shift": shift.index, "note": note[:MAX_NOTE], "via": via},
            )
            self.confirmed[person] = now
            self._publish(now)
        return now

    async def hand_over(self, person: str, note: str) -> float:
        """The outgoing person's hand-over note for the next shift, into the duty log."""
        note = note.strip()
        if not note:
            raise ValueError("a hand-over note is required")
        if len(note) > MAX_NOTE:
            raise ValueError(f"a hand-over note is at most {MAX_NOTE} characters")
        now = self._clock.time()
        shift = self._notify.rota.shift_at(now)
        if person not in shift.people and person not in self._notify.rota.on_duty(now):
            raise ValueError(f"{person} is not on duty in this shift")
        await self._storage.log.append(
            now,
            "shift.handover",
            person,
            f"shift:{shift.index}",
            {"shift": shift.index, "note": note},
        )
        return now

    def view(self) -> dict[str, object] | None:
        if not self.enabled or self.shift is None:
            return None
        return {
            "shift": self.shift.index,
            "start": self.shift.start.isoformat(),
            "people": list(self.shift.people),
            "confirmed": dict(self.confirmed),
        }

    def _end_past_shifts(self, shift: Shift) -> None:
        """The alerts on the check-in of shifts that are over end at the hand-over: the new
        shift's post is watched afresh (its own series)."""

        def ending(alert: Alert) -> dict[str, str] | None:
            if any(alert.label(k) != v for k, v in LABELS.items()):
                return None
            if alert.label("shift") == str(shift.index):
                return None
            return {
                "en": f"Shift over at the hand-over: {alert.rule} ends for that shift; "
                "the new shift's check-in starts over",
                "zh": f"已交班：该班次的 {alert.rule} 告警结束，新班次重新开始到岗确认",
            }

        self._operations.end_alerts(ending, "shift over: ended at the hand-over")

    def _publish(self, now: float) -> None:
        assert self.shift is not None
        labels = {**LABELS, "shift": str(self.shift.index)}
        self._operations.ingest_samples([Sample.of(CONFIRMED, len(self.confirmed), now, labels)])
