"""Escalation as a pure function of alert events and a clock: which pages are due, to whom.

No I/O and no sleeping: `handle(event, now)` and `due(now)` return `Page`s, and the service
asks `next_deadline()` when to call `due` again, so tests step a fake clock.

The policy, read in one place:
- a firing alert (that may notify) walks its policy's steps, each `after` its firing time,
  and only while unacknowledged (an acknowledgement that expires resumes the walk, and those
  paged are told it expired);
- after the last step, everyone paged so far is paged again every `repeat` until acked;
- crossing the red line pages the policy's red-line step even when acknowledged;
- an acknowledgement and the resolve are told to everyone who was paged;
- a flapping or muted (silence, maintenance) alert holds its escalation; those paged are told
  when it starts flapping and when it settles, and a resolve muted by flapping is held until
  it settles (it is then sent, once);
- a paged alert explained by its parent target's outage (`EXPLAINED`) pauses its escalation;
  those paged are told once which parent explains it, and again when the parent is back and
  the alert still fails (`RESUMED`: the walk goes on where it stopped);
- what comes due together for one alert (catching up after an expired ack, a restart) is one
  page per person: a notice, else the latest step, else the reminder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum

from dutyd.core.records import AlertChange, AlertEvent, AlertState
from dutyd.notify.config import EscalationConfig, Policy, RedLineStep, Step
from dutyd.notify.oncall import Rota


class PageKind(StrEnum):
    FIRING = "firing"  # a step of the policy
    REPEAT = "repeat"  # reminder after the last step
    RED_LINE = "red_line"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    ACK_EXPIRED = "ack_expired"  # paging resumes
    FLAPPING = "flapping"  # its notifications are held
    SETTLED = "settled"  # no longer flapping, still firing: notifications resume
    EXPLAINED = "explained"  # its parent target is down: escalation paused
    RESUMED = "resumed"  # the parent is back, the alert still fails: escalation resumes


# The note of the UNACKNOWLEDGED event the rules engine emits when an acknowledgement's time
# runs out (as opposed to one withdrawn by a person, who knows).
ACK_EXPIRED_NOTE = "acknowledgement expired"


@dataclass(frozen=True, slots=True, order=True)
class Recipient:
    kind: str  # "person" or "channel"
    name: str

    def __str__(self) -> str:
        return self.name if self.kind == "person" else f"#{self.name}"


@dataclass(frozen=True, slots=True)
class Page:
    kind: PageKind
    event: AlertEvent
    recipients: tuple[Recipient, ...]
    step: int  # step number (from 1), repeat count, 0 for notices
    at: float  # when it became due
    key: str  # stable: the same page after a restart has the same key

    @property
    def site(self) -> str:
        return dict(self.event.labels).get("site", "")


@dataclass(slots=True)
class Tracked:
    event: AlertEvent  # the latest event of the alert (labels, summary, value)
    policy: Policy
    fired_at: float
    next_step: int = 0
    # What the pages' keys are made of: `fired_at` as the alert's firing set it, never moved
    # by `Escalator.shift` (see `rules.alerts.Alert.key_at`).
    key_at: float | None = None
    acked: bool = False
    held: bool = False
    repeats: int = 0
    paged: dict[Recipient, None] = field(default_factory=dict)  # ordered set
    scale: float = 1.0  # < 1 walks the policy faster (drills on an accelerated clock)
    # The latest firing event: what the alert is about, as its notices name it (the event
    # that makes it flap is a resolve, whose text says what recovered).
    firing: AlertEvent | None = None
    explained: bool = False  # a parent's outage explains it: its steps wait

    @property
    def paused(self) -> bool:
        return self.acked or self.held or self.explained

    @property
    def key_base(self) -> float:
        return self.fired_at if self.key_at is None else self.key_at

    def step_due(self) -> float | None:
        if self.next_step < len(self.policy.steps):
            return self.fired_at + self.policy.steps[self.next_step].after * self.scale
        if self.policy.repeat > 0 and self.paged:
            return self._last() + self.policy.repeat * self.scale * (self.repeats + 1)
        return None

    def _last(self) -> float:
        return self.fired_at + self.policy.steps[-1].after * self.scale


class Escalator:
    def __init__(self, config: EscalationConfig, rota: Rota) -> None:
        self.config = config
        self.rota = rota
        self.tracked: dict[str, Tracked] = {}

    def shift(self, seconds: float) -> None:
        """Move the tracked alerts' moments by `seconds` (the clock re-anchored after a step
        of the system clock): each step comes due as long after the firing as before."""
        for t in self.tracked.values():
            t.fired_at += seconds
            t.event = moved_event(t.event, seconds)
            if t.firing is not None:
                t.firing = moved_event(t.firing, seconds)

    def _recipients(self, step: Step | RedLineStep, now: float) -> list[Recipient]:
        names: list[str] = []
        if isinstance(step, Step) and step.oncall:
            names += self.rota.on_duty(now)
        for role in step.roles:
            names += self.rota.role(role)
        names += step.people
        out = [Recipient("person", n) for n in names]
        out += [Recipient("channel", c) for c in step.channels]
        return list(dict.fromkeys(out))

    def handle(
        self, event: AlertEvent, now: float, scale: float = 1.0, key_at: float | None = None
    ) -> list[Page]:
        fp = event.fingerprint
        t = self.tracked.get(fp)
        change = event.change
        if change is AlertChange.STATE:
            if event.state is AlertState.FIRING:
                if t is None:
                    if not event.notify:
                        return []
                    policy = self.config.policy_for(event.severity, dict(event.labels))
                    if policy is None:
                        return []
                    t = self.tracked[fp] = Tracked(
                        event,
                        policy,
                        event.timestamp,
                        scale=scale,
                        key_at=event.timestamp if key_at is None else key_at,
                    )
                else:
                    t.event = event
                    t.held = not event.notify
                t.firing = event
                # This alert's steps only: the other alerts' come from `due` on the
                # escalation clock (asking all of them for each event of a burst of a
                # thousand is a million checks).
                return self._due_alert(fp, t, now)
            if event.state is AlertState.RESOLVED and t is not None:
                if not event.notify and event.muted_reason == "flapping":
                    # The resolve that made it flapping: held, sent once it settles.
                    t.event, t.held = event, True
                    return []
                del self.tracked[fp]
                return self._notice(t, PageKind.RESOLVED, event, now)
            return []
        if t is None:
            return []
        if change is AlertChange.ACKNOWLEDGED:
            t.acked = True
            return self._notice(t, PageKind.ACKNOWLEDGED, event, now)
        if change is AlertChange.UNACKNOWLEDGED:
            t.acked = False
            told: list[Page] = []
            if event.note == ACK_EXPIRED_NOTE and not t.held:
                told = self._notice(t, PageKind.ACK_EXPIRED, event, now)
            return merge([*told, *self._due_alert(fp, t, now)])
        if change is AlertChange.FLAPPING:
            t.held = True
            if t.explained:
                return []  # flapping under a parent's outage: held, not announced
            return self._notice(t, PageKind.FLAPPING, _as_firing(event, t), now)
        if change is AlertChange.SETTLED:
            t.held = not event.notify
            if t.explained:
                return []  # its flapping was not announced either
            if event.state is not AlertState.FIRING:
                return []  # settled resolved: the held resolve that follows says so
            told = self._notice(t, PageKind.SETTLED, _as_firing(event, t), now)
            return merge([*told, *self._due_alert(fp, t, now)])
        if change is AlertChange.EXPLAINED:
            t.explained = True
            return self._notice(t, PageKind.EXPLAINED, _as_firing(event, t), now)
        if change is AlertChange.RESUMED:
            t.explained = False
            told = self._notice(t, PageKind.RESUMED, _as_firing(event, t), now)
            return merge([*told, *self._due_alert(fp, t, now)])
        if change is AlertChange.RED_LINE:
            step = t.policy.red_line
            if step is None:
                return []
            who = self._recipients(step, now)
            for r in who:
                t.paged[r] = None
            key = f"{fp}|red_line|{event.red_line or 0:.0f}|{t.key_base:.3f}"
            return [Page(PageKind.RED_LINE, event, tuple(who), 0, now, key)]
        return []

    def _notice(self, t: Tracked, kind: PageKind, event: AlertEvent, now: float) -> list[Page]:
        if not t.paged:
            return []
        key = f"{event.fingerprint}|{kind}|{event.timestamp:.3f}|{t.key_base:.3f}"
        return [Page(kind, event, tuple(t.paged), 0, now, key)]

    def due(self, now: float) -> list[Page]:
        pages: list[Page] = []
        for fp, t in self.tracked.items():
            pages += self._due_alert(fp, t, now)
        return pages

    def _due_alert(self, fp: str, t: Tracked, now: float) -> list[Page]:
        """The steps and reminder of one alert due by `now`, one page per person."""
        pages: list[Page] = []
        if not t.paused:
            # Bounded: every pass moves next_step or repeats forward past `now` eventually.
            for _ in range(len(t.policy.steps) + 1):
                at = t.step_due()
                if at is None or at > now:
                    break
                if t.next_step < len(t.policy.steps):
                    step = t.policy.steps[t.next_step]
                    t.next_step += 1
                    who = self._recipients(step, now)
                    for r in who:
                        t.paged[r] = None
                    key = f"{fp}|step|{t.next_step}|{t.key_base:.3f}"
                    pages.append(Page(PageKind.FIRING, t.event, tuple(who), t.next_step, at, key))
                else:
                    # Skip reminders missed while held or acked: one reminder, not a burst.
                    every = t.policy.repeat * t.scale
                    t.repeats = max(t.repeats + 1, int((now - t._last()) // every))
                    key = f"{fp}|repeat|{t.repeats}|{t.key_base:.3f}"
                    pages.append(Page(PageKind.REPEAT, t.event, tuple(t.paged), t.repeats, at, key))
                    break
        return merge(pages)

    def next_deadline(self) -> float | None:
        times = [
            at for t in self.tracked.values() if not t.paused and (at := t.step_due()) is not None
        ]
        return min(times, default=None)

    def paged(self, fingerprint: str) -> tuple[Recipient, ...]:
        t = self.tracked.get(fingerprint)
        return tuple(t.paged) if t else ()


_NOTICES = (PageKind.ACK_EXPIRED, PageKind.SETTLED, PageKind.RESUMED)


def merge(pages: list[Page]) -> list[Page]:
    """Pages of one alert come due together (catch-up): each person gets one of them, the
    notice that says why paging resumes, else the latest step, else the reminder; not "step 2"
    and "STILL UNACKNOWLEDGED" in the same second."""
    if len(pages) < 2:
        return pages

    def rank(p: Page) -> tuple[int, int]:
        if p.kind in _NOTICES:
            return (0, 0)
        return (1, -p.step) if p.kind is PageKind.FIRING else (2, 0)

    told: set[Recipient] = set()
    kept: dict[int, Page] = {}
    for i, p in sorted(enumerate(pages), key=lambda ip: rank(ip[1])):
        who = tuple(r for r in p.recipients if r not in told)
        told.update(who)
        if who or not p.recipients:  # a step with nobody to page is still reported
            kept[i] = dataclasses.replace(p, recipients=who) if who != p.recipients else p
    return [kept[i] for i in sorted(kept)]


def _as_firing(event: AlertEvent, t: Tracked) -> AlertEvent:
    """`event` told with the texts of the alert's firing (a flapping notice names the fault,
    not the recovery that set the flapping off)."""
    if t.firing is None:
        return event
    return dataclasses.replace(event, summary=t.firing.summary, summaries=t.firing.summaries)


def moved_event(event: AlertEvent, seconds: float) -> AlertEvent:
    """`event` with its moments moved by `seconds` (see `Escalator.shift`)."""
    since = event.active_since
    return dataclasses.replace(
        event,
        timestamp=event.timestamp + seconds,
        active_since=None if since is None else since + seconds,
    )


def moved_page(page: Page, seconds: float) -> Page:
    return dataclasses.replace(page, at=page.at + seconds, event=moved_event(page.event, seconds))
