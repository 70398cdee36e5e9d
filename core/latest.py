"""The latest values: the newest sample of every series, and each target's poll status.

Rules and exporters read it; only the scheduler's results write it. A target's series are
replaced as a whole on each successful poll, so a port or mount that disappears stops being
exported; on a failed poll the last good values are kept (rules may still want them) and the
target is marked down with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from dutyd.core.records import Sample


@dataclass(slots=True)
class TargetStatus:
    name: str
    kind: str
    up: bool = False
    last_poll_at: float | None = None
    last_success_at: float | None = None
    last_duration: float = 0.0
    reason: str = ""
    message: str = "not polled yet"
    consecutive_failures: int = 0
    error_counts: dict[str, int] = field(default_factory=dict)


class LatestSamples:
    """Per target, the samples of its last poll, as a list: a poll replaces them whole, so no
    per-series key is built or kept (at 100,000 series a dict keyed by (name, labels) costs
    more than the samples themselves)."""

    def __init__(self) -> None:
        self._by_target: dict[str, list[Sample]] = {}
        self.status: dict[str, TargetStatus] = {}

    def record_poll(
        self,
        target: str,
        kind: str,
        samples: list[Sample],
        started_at: float,
        duration: float,
        error: tuple[str, str] | None = None,
    ) -> bool | None:
        """One poll's result. Succeeded (`error` None): the target's series replaced whole and
        its status up. Failed (`error` is (reason, message)): its samples (`target_up` 0) laid
        over the last good ones, which rules may still want, and its status down, counted by
        reason. Returns whether the target was up before this poll (None: never polled), so
        the caller can tell a change from more of the same."""
        status = self.status.setdefault(target, TargetStatus(target, kind))
        was_up = status.up if status.last_poll_at is not None else None
        status.last_poll_at = started_at
        status.last_duration = duration
        if error is None:
            status.up, status.reason, status.message = True, "", ""
            status.last_success_at = started_at
            status.consecutive_failures = 0
            self.replace_target(target, samples)
        else:
            reason, message = error
            status.up, status.reason, status.message = False, reason, message
            status.consecutive_failures += 1
            status.error_counts[reason] = status.error_counts.get(reason, 0) + 1
            self.update_target(target, samples)
        return was_up

    def replace_target(self, target: str, samples: list[Sample]) -> None:
        if len({s.series for s in samples}) != len(samples):
            # A series read twice in one poll is exported once (the last reading wins):
            # Prometheus refuses a scrape with a duplicate series.
            samples = list({s.series: s for s in samples}.values())
        self._by_target[target] = samples

    def update_target(self, target: str, samples: list[Sample]) -> None:
        """Overwrite some series of a target without dropping the others (a failed poll's
        `target_up`, a trap's readings): rare, so the merge may build keys."""
        merged = {s.series: s for s in self._by_target.get(target, ())}
        for s in samples:
            merged[s.series] = s
        self._by_target[target] = list(merged.values())

    def remove_target(self, target: str) -> None:
        self._by_target.pop(target, None)
        self.status.pop(target, None)

    def target_samples(self, target: str) -> list[Sample]:
        return list(self._by_target.get(target, ()))

    def samples(self, only_up: bool = False) -> Iterator[Sample]:
        for target, series in self._by_target.items():
            if only_up:
                status = self.status.get(target)
                if status is not None and not status.up:
                    # Keep `target_up` itself visible for a down target.
                    yield from (s for s in series if s.name == "target_up")
                    continue
            yield from series

    def latest(self, name: str, **labels: str) -> list[Sample]:
        """Samples of metric `name` whose labels include `labels` (for the API and tests)."""
        return [
            s
            for s in self.samples()
            if s.name == name and all(s.label(k) == v for k, v in labels.items())
        ]

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_target.values())
