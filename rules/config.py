"""The rule language as config models: what a rule selects, when it is true, and for how long.

A rule is data, validated when the config loads; nothing in it is evaluated as code.

    - name: disk_almost_full
      metric: node_filesystem_used_ratio        # selector: metric name ...
      match: {fstype: {"!~": "tmpfs|devtmpfs"}} # ... and label matchers (= != =~ !~)
      targets: [db1, db2]                       # optional: only these targets
      value: raw            # raw | rate (per second) | counter_rate (per second, resets) | age
      scale: 1              # multiply the value (8: octets/s -> bits/s)
      window: {function: max, over: 10m}        # min | max | avg | last over a duration
                                                # (judged as samples arrive)
      across: {by: [site], mode: any}           # any | all | at_least (n) of the series
      condition: {above: 0.85}                  # above below outside inside equals changed absent
      clear_below: 0.80     # hysteresis: once active, stays active until the value is below this
      for: 5m               # must hold this long before firing
      keep_firing_for: 10m  # stays firing this long after the condition stops holding
      red_line: 2h          # the outage time (minus maintenance) after which a RED_LINE event goes
      depends_on: [core-sw1]
      severity: warning
      summary:                                  # one string, or one per language
        en: "{target}: {mount} is {value_percent} % full ({threshold_percent} %) for {duration}"
        zh: "{target} 的 {mount} 已用 {value_percent} %（{threshold_percent} %），已持续 {duration}"
      resolved:                                 # the resolve notice: what recovered
        en: "{mount} on {target} {recovered_percent} % after {duration}, peak {peak_percent} %"
        zh: "{target} 的 {mount} 已{recovered_percent} %，历时 {duration}，峰值 {peak_percent} %"
      reference: "Securities branch: keep enough free storage on hosts"

    - name: virus_outbreaks
      metric: security_virus_outbreaks_total
      events: {more_than: 3, over: 365d}        # counter increases inside a sliding window
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from dutyd.core.configtypes import (
    Duration,
    LabelMap,
    PositiveDuration,
    StrictModel,
    format_duration,
)
from dutyd.rules.matchers import Matchers

RULE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

Severity = Literal["info", "warning", "critical"]
ValueKind = Literal["raw", "rate", "counter_rate", "age"]

# The languages texts (summaries, references, pages, the status page) come in.
LANGUAGES = ("en", "zh")


class Localized(StrictModel):
    """A text in English and Simplified Chinese: `{en: ..., zh: ...}`, or one string for both.
    A mapping with one of the two uses it for the other as well."""

    en: str
    zh: str

    @model_validator(mode="before")
    @classmethod
    def _one_or_both(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"en": data, "zh": data}
        if isinstance(data, dict) and data and set(data) <= set(LANGUAGES):
            given = next(v for k in LANGUAGES if (v := data.get(k)) is not None)
            return {lang: data.get(lang, given) for lang in LANGUAGES}
        return data

    def get(self, language: str) -> str:
        return self.zh if language == "zh" else self.en

    def __bool__(self) -> bool:
        return bool(self.en or self.zh)


_COMPARISONS = ("above", "below", "outside", "inside", "equals", "changed", "absent")


# How each kind of condition reads, per language (pages, the status page, the diary).
CONDITION_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "above": "above {0}",
        "below": "below {0}",
        "outside": "outside {0}..{1}",
        "inside": "inside {0}..{1}",
        "equals": "equal to {0}",
        "changed": "changed",
        "absent": "absent for {0}",
    },
    "zh": {
        "above": "高于 {0}",
        "below": "低于 {0}",
        "outside": "超出 {0}..{1}",
        "inside": "处于 {0}..{1}",
        "equals": "等于 {0}",
        "changed": "发生变化",
        "absent": "已 {0} 无数据",
    },
}


class Condition(StrictModel):
    """Exactly one test of the (derived) value; `absent` tests that the series went stale."""

    above: float | None = None
    below: float | None = None
    outside: tuple[float, float] | None = None
    inside: tuple[float, float] | None = None
    equals: float | None = None
    changed: Literal[True] | None = None  # the value differs from the previous one
    absent: PositiveDuration | None = None  # no sample of the series for this long

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [k for k in _COMPARISONS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of "
                + ", ".join(_COMPARISONS)
                + (f" (got {', '.join(given)})" if given else "")
            )
        for key in ("outside", "inside"):
            bounds = getattr(self, key)
            if bounds is not None and bounds[0] > bounds[1]:
                raise ValueError(
                    f"{key}: the low bound {bounds[0]} is above the high bound {bounds[1]}"
                )
        return self

    def holds(self, value: float) -> bool:
        if self.above is not None:
            return value > self.above
        if self.below is not None:
            return value < self.below
        if self.outside is not None:
            return value < self.outside[0] or value > self.outside[1]
        if self.inside is not None:
            return self.inside[0] <= value <= self.inside[1]
        if self.equals is not None:
            return value == self.equals
        return False  # changed / absent are decided from the series' history, not one value

    def describe(self, language: str = "en", scale: float = 1.0) -> str:
        """The threshold as people read it: `outside 18..26` / `超出 18..26`. Every form but
        `changed` ends in its figure, so a template can put the unit after it. `scale`
        multiplies the figures: 100 reads a 0..1 ratio's `above 0.85` as `above 85`."""
        words = CONDITION_WORDS.get(language, CONDITION_WORDS["en"])

        def n(x: float) -> str:
            # round(): 0.85 * 100 is 85.00000000000001; no threshold needs 9 decimals.
            return f"{round(x * scale, 9):g}"

        for form in ("above", "below", "equals"):
            value = getattr(self, form)
            if value is not None:
                return words[form].format(n(value))
        for form in ("outside", "inside"):
            span = getattr(self, form)
            if span is not None:
                return words[form].format(n(span[0]), n(span[1]))
        if self.changed:
            return words["changed"]
        return words["absent"].format(format_duration(self.absent or 0, language))


class Aggregation(StrictModel):
    """Aggregate the series' (derived) values over the last `over` before testing them."""

    function: Literal["min", "max", "avg", "last"]
    over: PositiveDuration


class Across(StrictModel):
    """One alert per group of series (`by` labels; none: one alert for the whole rule) that holds
    when any / all / at least `n` of its series meet the condition. Its value is that count."""

    mode: Literal["any", "all", "at_least"] = "any"
    n: int = Field(default=1, ge=1)
    by: list[str] = Field(default_factory=list)


class Events(StrictModel):
    """Count events (increases of a counter, resets handled) in a sliding window: holds while
    more than `more_than` happened within `over`. The events are kept in storage."""

    more_than: int = Field(ge=0)
    over: PositiveDuration


class RuleConfig(StrictModel):
    """One alerting rule: `metric` samples (narrowed by label matchers and targets) whose value
    meets `condition` continuously for `for` make one alert per label set."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    metric: str
    match: Matchers = Field(default_factory=dict)
    targets: list[str] = Field(default_factory=list)
    value: ValueKind = "raw"
    scale: float = 1.0
    window: Aggregation | None = None
    across: Across | None = None
    condition: Condition | None = None
    events: Events | None = None
    clear_below: float | None = None
    clear_above: float | None = None
    for_: Duration = Field(default=0.0, alias="for")
    keep_firing_for: Duration = 0.0
    red_line: PositiveDuration | None = None
    depends_on: list[str] = Field(default_factory=list)
    severity: Severity = "warning"
    summary: Localized = Localized(
        en="{rule} on {target}: {value} is {threshold}",
        zh="{rule}（{target}）：{value} {threshold}",
    )
    # The resolve notice; without one it says the rule's alert on the target recovered.
    resolved: Localized | None = None
    description: Localized = Localized(en="", zh="")
    labels: LabelMap = Field(default_factory=dict)
    # The duty rule this enforces, quoted in notifications and reports.
    reference: Localized = Localized(en="", zh="")

    @field_validator("name")
    @classmethod
    def _rule_name(cls, v: str) -> str:
        if not RULE_NAME.match(v):
            raise ValueError("must be an identifier such as room_temperature_out_of_range")
        return v

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, v: str) -> str:
        if not METRIC_NAME.match(v):
            raise ValueError("must be a metric name such as room_temperature_celsius")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RuleConfig:
        if (self.condition is None) == (self.events is None):
            raise ValueError("give exactly one of condition or events")
        c = self.condition
        if self.events is not None:
            if self.value != "raw" or self.window or self.across:
                raise ValueError("an events rule counts counter increases: no value/window/across")
        elif c is not None and (c.absent is not None or c.changed):
            word = "absent" if c.absent is not None else "changed"
            if self.window is not None:
                raise ValueError(f"condition {word} cannot be combined with a window")
            if c.absent is not None and (self.value != "raw" or self.across is not None):
                raise ValueError("condition absent tests one raw series: no value, no across")
        if (
            self.clear_below is not None
            and c is not None
            and c.above is not None
            and self.clear_below > c.above
        ):
            raise ValueError(f"clear_below {self.clear_below:g} must not exceed above {c.above:g}")
        if (
            self.clear_above is not None
            and c is not None
            and c.below is not None
            and self.clear_above < c.below
        ):
            raise ValueError(
                f"clear_above {self.clear_above:g} must not be under below {c.below:g}"
            )
        if self.value == "counter_rate" and not self.metric.endswith("_total"):
            raise ValueError("value counter_rate needs a counter (a metric ending in _total)")
        return self

    def threshold(self) -> str:
        if self.events is not None:
            return f"more than {self.events.more_than} within {format_duration(self.events.over)}"
        assert self.condition is not None
        return self.condition.describe()


class FlappingConfig(StrictModel):
    """An alert that changes state (firing / resolved) `changes` times within `within` is
    flapping: its notifications are held until it has not changed state for `settle`."""

    changes: int = Field(default=6, ge=2)
    within: PositiveDuration = 3600.0
    settle: PositiveDuration = 1800.0


class MaintenanceConfig(StrictModel):
    """A scheduled maintenance window: alerts of the matching targets / labels are recorded but
    not sent, and outage time inside it does not count toward a red line. `every` repeats it
    (e.g. 7d for a weekly window starting at `start`)."""

    name: str = Field(min_length=1, max_length=64)
    targets: list[str] = Field(default_factory=list)
    match: Matchers = Field(default_factory=dict)
    start: datetime
    end: datetime
    every: PositiveDuration | None = None
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _span(self) -> MaintenanceConfig:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a time zone, e.g. 2026-01-10T02:00:00+08:00")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.every is not None and self.every < (self.end - self.start).total_seconds():
            raise ValueError("every must be at least the window's length")
        if not self.targets and not self.match:
            raise ValueError("give targets or match (a window for everything is a silence)")
        return self


class RulesConfig(StrictModel):
    """`packs` are loaded first; `overrides` change single keys of a pack rule (a threshold,
    a `for`); a custom rule with a pack rule's name replaces it; `disable` removes rules."""

    packs: list[str] = Field(default_factory=lambda: ["duty"])
    disable: list[str] = Field(default_factory=list)
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    custom: list[RuleConfig] = Field(default_factory=list)
    maintenance: list[MaintenanceConfig] = Field(default_factory=list)
    flapping: FlappingConfig = Field(default_factory=FlappingConfig)

    @model_validator(mode="after")
    def _unique_windows(self) -> RulesConfig:
        # Whether each override names a pack rule and still makes a valid rule needs the packs,
        # which import this module: `rules.packs.check_overrides` checks that, called by the
        # config loader (agent/config.py), so the two modules do not import each other.
        names = [m.name for m in self.maintenance]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"maintenance: duplicate window names {', '.join(dupes)}")
        return self


def merge_override(base: RuleConfig, changes: dict[str, Any]) -> RuleConfig:
    """A pack rule with some keys replaced, validated as a whole rule."""
    if "name" in changes and changes["name"] != base.name:
        raise ValueError("an override cannot rename the rule")
    data = base.model_dump(by_alias=True, exclude_none=True)
    if "condition" in changes:
        data.pop("condition", None)
        # The pack's hysteresis belongs to the pack's threshold: a new threshold without new
        # clear bounds has none.
        for key in ("clear_below", "clear_above"):
            if key not in changes:
                data.pop(key, None)
    data.update(changes)
    return RuleConfig.model_validate(data)
