"""The rule language as config models: what a rule selects, when it is true, and for how long.

A rule is data, validated when the config loads; nothing in it is evaluated as code.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from agent.configtypes import Duration, LabelMap, StrictModel

RULE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

Severity = Literal["info", "warning", "critical"]


class Condition(StrictModel):
    """Exactly one comparison of the sample's value."""

    above: float | None = None
    below: float | None = None
    outside: tuple[float, float] | None = None
    inside: tuple[float, float] | None = None
    equals: float | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [
            k
            for k in ("above", "below", "outside", "inside", "equals")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of above, below, outside, inside, equals"
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
        return value == self.equals

    def describe(self) -> str:
        """The threshold as people read it: `outside 18..26`."""
        if self.above is not None:
            return f"above {self.above:g}"
        if self.below is not None:
            return f"below {self.below:g}"
        if self.outside is not None:
            return f"outside {self.outside[0]:g}..{self.outside[1]:g}"
        if self.inside is not None:
            return f"inside {self.inside[0]:g}..{self.inside[1]:g}"
        return f"equal to {self.equals:g}"


class RuleConfig(StrictModel):
    """One alerting rule: `metric` samples (optionally narrowed by labels and targets) whose
    value meets `condition` continuously for `for` make one alert per label set."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    metric: str
    match: LabelMap = Field(default_factory=dict)
    targets: list[str] = Field(default_factory=list)
    condition: Condition
    for_: Duration = Field(default=0.0, alias="for")
    severity: Severity = "warning"
    summary: str = "{rule} on {target}: {value} is {threshold}"
    description: str = ""
    labels: LabelMap = Field(default_factory=dict)
    # The duty rule this enforces, quoted in notifications and reports.
    reference: str = ""

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


class RulesConfig(StrictModel):
    """`packs` are loaded first; a custom rule with a pack rule's name replaces it."""

    packs: list[str] = Field(default_factory=lambda: ["duty"])
    disable: list[str] = Field(default_factory=list)
    custom: list[RuleConfig] = Field(default_factory=list)
