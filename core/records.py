"""The plain typed records that flow between layers: samples in, alert events out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from dutyd.core.configtypes import format_duration

# Sorted (name, value) pairs: hashable, so a sample's series key can index dicts.
Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


# Label sets and their (name, value) pairs, one object each however often they are read: a
# series keeps one tuple from poll to poll, and a target's pairs (target, kind, site, room)
# are shared by all its series. At 100,000 series that is most of the store's memory.
_PAIRS: dict[tuple[str, str], tuple[str, str]] = {}
_LABEL_SETS: dict[Labels, Labels] = {}
# Past this many distinct label sets the tables start over (label churn must not grow the
# daemon for ever; a fresh table only costs the sharing until the sets are seen again).
INTERN_LIMIT = 2_000_000


def intern_labels(labels: Labels) -> Labels:
    """The one shared tuple equal to `labels` (made of shared pairs)."""
    found = _LABEL_SETS.get(labels)
    if found is not None:
        return found
    if len(_LABEL_SETS) >= INTERN_LIMIT:
        _LABEL_SETS.clear()
        _PAIRS.clear()
    pairs = _PAIRS
    shared = tuple(pairs.setdefault(p, p) for p in labels)
    _LABEL_SETS[shared] = shared
    return shared


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading, in Prometheus's shape: name (with its unit), labels, value, timestamp.

    The same sample reaches the rules and `/metrics`, so a dashboard shows what a rule saw.
    Names ending in `_total` are counters; everything else is a gauge.
    """

    name: str
    labels: Labels
    value: float
    timestamp: float

    @classmethod
    def of(
        cls, name: str, value: float, timestamp: float, labels: Mapping[str, str] | None = None
    ) -> Sample:
        return cls(name, labels_of(labels or {}), float(value), timestamp)

    @property
    def series(self) -> SeriesKey:
        return (self.name, self.labels)

    def label(self, key: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == key:
                return v
        return default

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


_new_object = object.__new__
_set_name = Sample.__dict__["name"].__set__
_set_labels = Sample.__dict__["labels"].__set__
_set_value = Sample.__dict__["value"].__set__
_set_timestamp = Sample.__dict__["timestamp"].__set__


def new_sample(name: str, labels: Labels, value: float, timestamp: float) -> Sample:
    """`Sample(name, labels, value, timestamp)` for collectors' hot loops: the frozen
    dataclass's __init__ sets each field through object.__setattr__, which made building
    a 48-port switch's 336 samples a quarter of its poll; this sets the slots directly."""
    sample = _new_object(Sample)
    _set_name(sample, name)
    _set_labels(sample, labels)
    _set_value(sample, value)
    _set_timestamp(sample, timestamp)
    return sample


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertChange(StrEnum):
    """What an `AlertEvent` announces."""

    STATE = "state"  # a lifecycle move: pending, firing, resolved (see `state`, `previous`)
    ACKNOWLEDGED = "acknowledged"  # someone took it (`actor`, `note`); escalation stops
    UNACKNOWLEDGED = "unacknowledged"  # an acknowledgement expired or was withdrawn
    RED_LINE = "red_line"  # the outage crossed its rule's red line (`red_line` seconds)
    FLAPPING = "flapping"  # too many state changes: notifications held until it settles
    SETTLED = "settled"  # no longer flapping
    # A paged alert's parent target went down (`note`: the parent): the parent's outage
    # explains it, its escalation and red line wait.
    EXPLAINED = "explained"
    # The parent is back and the alert still holds: its escalation resumes.
    RESUMED = "resumed"


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A change in one alert's life, as the rules layer announces it to notifiers and the log.

    `fingerprint` identifies the alert (rule name plus label set) across restarts. Events that
    must be recorded but must not page anyone (parent target down, silence, maintenance window,
    flapping) have `notify=False` and say why in `muted_reason`.
    """

    fingerprint: str
    rule: str
    labels: Labels
    state: AlertState
    previous: AlertState
    severity: str
    summary: str
    value: float | None
    active_since: float | None
    timestamp: float
    annotations: Labels = ()  # description, reference (the duty rule), runbook ...
    change: AlertChange = AlertChange.STATE
    notify: bool = True
    muted_reason: str = ""
    actor: str = ""  # who acknowledged / silenced
    note: str = ""
    red_line: float | None = None  # seconds: the red line this alert has (crossed, for RED_LINE)
    # The summary per language, (language, text). The text of an active alert keeps its
    # `{duration}` placeholder, filled when the text is shown or sent (`summary_in`), so a page
    # repeated an hour later does not say "for 5m".
    summaries: tuple[tuple[str, str], ...] = ()

    def summary_in(self, language: str, now: float | None = None) -> str:
        """The summary in `language` (English, then `summary`, when it has none), its
        duration as of `now` (default: the event's time)."""
        texts = dict(self.summaries)
        text = texts.get(language) or texts.get("en")
        if text is None:
            return self.summary
        if "{duration}" not in text:
            return text
        when = self.timestamp if now is None else now
        since = self.active_since if self.active_since is not None else when
        return text.replace("{duration}", format_duration(max(0.0, when - since), language))
