"""Config models of the duty layer: people and rotations (`oncall:`), escalation policies
(`escalation:`), channels and delivery (`notify:`), the write API's token (`api:`).

A working setup, as it appears in dutyd.yaml::

    oncall:
      timezone: Asia/Shanghai
      handovers: ["08:30", "20:30"]        # day/night shifts; one time = daily 24 h shifts
      start: 2026-01-05                    # the first shift of `pairs[0]` starts this day
      pairs: [[Zhang Wei, Li Na], [Liu Yang, Zhao Min]]
      people:
        - {name: Zhang Wei, language: zh, contacts: [wecom_zhang, sms_zhang]}
      roles: {manager: [Wang Fang], director: [Chen Jie]}
      overrides:
        - {start: 2026-11-23T08:30, end: 2026-11-24T08:30, replace: Li Na, by: Zhao Min,
           reason: annual leave}
    escalation:
      policies:
        - name: critical
          match: {severity: critical}
          steps:
            - {after: 0s, oncall: true}
            - {after: 15m, oncall: true, roles: [manager]}
            - {after: 30m, roles: [director], channels: [duty_group]}
          repeat: 10m
          red_line: {roles: [director, manager]}
    notify:
      channels:
        wecom_zhang: {url_env: WECOM_ZHANG_URL}
        duty_group: {url_file: /etc/dutyd/dingtalk.url, rate_limit: 20}
      alertmanager: [{url: "http://127.0.0.1:9093"}]

Channel URLs are apprise URLs and usually hold a token: give them as `url_env`/`url_file`.
They are never logged, nor shown by the API; a channel is named by its key everywhere.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from dutyd.core.configtypes import (
    Duration,
    Language,
    PositiveDuration,
    SecretEnv,
    SecretFile,
    StrictModel,
    pick_secret,
)

# Each channel kind's config model lives beside its code; the registry says which are channels.
from dutyd.notify.channels import AlertmanagerForward, ChannelConfig

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name: Asia/Shanghai)") from None
    return name


TimeZone = Annotated[str, AfterValidator(_timezone)]


class Person(StrictModel):
    """Someone who can be paged."""

    name: str = Field(min_length=1)
    language: Language | None = Field(default=None, description="en or zh; default notify.language")
    contacts: list[str] = Field(
        default_factory=list,
        description="channel names in failover order: the next one is tried after "
        "notify.failover_after failures of the current one",
    )


class Override(StrictModel):
    """From `start` to `end` (site local time), `by` stands in for `replace` (swap, leave)."""

    start: dt.datetime
    end: dt.datetime
    replace: str
    by: str
    reason: str = ""

    @model_validator(mode="after")
    def _order(self) -> Override:
        if self.end <= self.start:
            raise ValueError("an override must end after it starts")
        return self


class OncallConfig(StrictModel):
    """Who is on duty: pairs rotating over shifts that start at the hand-over times."""

    timezone: TimeZone = "UTC"
    handovers: list[str] = Field(
        default_factory=lambda: ["08:30"],
        description="local hand-over times HH:MM; one = daily 24 h shifts, two = day/night",
        min_length=1,
    )
    start: dt.date = Field(
        default=dt.date(2026, 1, 1), description="the day the first shift of pairs[0] starts"
    )
    pairs: list[list[str]] = Field(
        default_factory=list, description="the people of each shift (two), in rotation order"
    )
    people: list[Person] = Field(default_factory=list)
    roles: dict[str, list[str]] = Field(
        default_factory=dict, description="manager, director, ...: people paged by role"
    )
    overrides: list[Override] = Field(default_factory=list)

    @field_validator("handovers")
    @classmethod
    def _times(cls, values: list[str]) -> list[str]:
        for v in values:
            if not _HHMM.match(v):
                raise ValueError(f"hand-over time {v!r} must be HH:MM (24 h)")
        if sorted(values) != values or len(set(values)) != len(values):
            raise ValueError("hand-over times must be distinct and in order")
        return values

    @model_validator(mode="after")
    def _unique_people(self) -> OncallConfig:
        # Names of people in pairs, roles and overrides are checked with the other
        # cross-references (`duty_references`), each at its own key path.
        if len({p.name for p in self.people}) != len(self.people):
            raise ValueError("people: a name appears twice")
        return self

    def person(self, name: str) -> Person | None:
        return next((p for p in self.people if p.name == name), None)


class Step(StrictModel):
    """One escalation step: `after` the alert fired, page these (while unacknowledged)."""

    after: Duration = 0.0
    oncall: bool = Field(default=False, description="the on-duty pair at the time of the step")
    roles: list[str] = Field(default_factory=list, description="oncall.roles names")
    people: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list, description="group channels")

    @model_validator(mode="after")
    def _someone(self) -> Step:
        if not (self.oncall or self.roles or self.people or self.channels):
            raise ValueError("a step must page someone: oncall, roles, people or channels")
        return self


class RedLineStep(StrictModel):
    """Paged when an alert crosses its red line, acknowledged or not."""

    roles: list[str] = Field(default_factory=lambda: ["director"])
    people: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)


class Policy(StrictModel):
    name: str
    match: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="severity and/or labels (site, room, role ...); a list means any of; "
        "the first policy that matches is used",
    )
    steps: list[Step] = Field(min_length=1)
    repeat: Duration = Field(
        default=0.0,
        description="after the last step, page everyone paged so far again every "
        "`repeat` until acknowledged (0: no repeat)",
    )
    red_line: RedLineStep | None = None

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: list[Step]) -> list[Step]:
        if [s.after for s in steps] != sorted(s.after for s in steps):
            raise ValueError("steps must be in order of `after`")
        return steps

    def matches(self, severity: str, labels: dict[str, str]) -> bool:
        for key, want in self.match.items():
            have = severity if key == "severity" else labels.get(key)
            if have is None or (have not in want if isinstance(want, list) else have != want):
                return False
        return True


class EscalationConfig(StrictModel):
    """Escalation policies: who is paged and when, chosen per alert by severity and labels."""

    policies: list[Policy] = Field(default_factory=list)

    def policy_for(self, severity: str, labels: dict[str, str]) -> Policy | None:
        return next((p for p in self.policies if p.matches(severity, labels)), None)


class SiteConfig(StrictModel):
    timezone: TimeZone | None = None
    language: Language | None = None


class NotifyConfig(StrictModel):
    """Channels, delivery (outbox, retries, grouping, rate limits), templates, ack links."""

    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    alertmanager: list[AlertmanagerForward] = Field(default_factory=list)
    language: Language = "en"
    timezone: TimeZone = Field(default="UTC", description="for times in messages")
    sites: dict[str, SiteConfig] = Field(
        default_factory=dict, description="per `site` label: time zone and language"
    )
    group_wait: Duration = Field(
        default=0.25, description="alerts of one site starting within this go out as one"
    )
    retry_initial: PositiveDuration = 1.0
    retry_max: PositiveDuration = 300.0
    failover_after: int = Field(default=3, gt=0, description="failures before the next contact")
    give_up_after: PositiveDuration | None = Field(
        default=None,
        description="drop (and log) a message still undelivered after this; none (the "
        "default): a page is never dropped for a channel that is down, it waits and is "
        "retried, and /metrics shows the outbox depth and its oldest age",
    )
    send_timeout: PositiveDuration = 10.0
    ack_secret: SecretStr | None = None
    ack_secret_env: SecretEnv | None = None
    ack_secret_file: SecretFile | None = None
    ack_base_url: str = Field(
        default="", description="external URL of dutyd for ack links (empty: no links)"
    )
    ack_link_ttl: PositiveDuration = 86400.0
    fallback_channel: str | None = Field(
        default=None,
        description="a channel told of dutyd's own faults, sent to directly (not through the "
        "outbox): 'dutyd cannot write its database', once per fault",
    )

    def ack_key(self) -> bytes:
        secret = pick_secret(self.ack_secret, self.ack_secret_env, self.ack_secret_file)
        return secret.encode() if secret else b""


Loc = tuple[str | int, ...]


def duty_references(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Cross-section names, checked on the raw config so that they are reported in the same
    pass as type errors, each at its own key path: contacts name channels, pairs, roles and
    overrides name people, steps name roles, people and channels."""
    oncall = _mapping(data.get("oncall"))
    escalation = _mapping(data.get("escalation"))
    channels = set(_mapping(_mapping(data.get("notify")).get("channels")))
    people = _items(oncall.get("people"))
    names = {p["name"] for p in people if isinstance(p, Mapping) and isinstance(p.get("name"), str)}
    roles = _mapping(oncall.get("roles"))
    problems: list[tuple[Loc, str]] = []
    for i, person in enumerate(people):
        if isinstance(person, Mapping):
            for j, contact in _strings(person.get("contacts")):
                if contact not in channels:
                    problems.append(
                        (("oncall", "people", i, "contacts", j), f"unknown channel {contact!r}")
                    )
    for i, pair in enumerate(_items(oncall.get("pairs"))):
        for j, name in _strings(pair):
            if name not in names:
                problems.append((("oncall", "pairs", i, j), f"unknown person {name!r}"))
    for role, members in roles.items():
        for j, name in _strings(members):
            if name not in names:
                problems.append((("oncall", "roles", role, j), f"unknown person {name!r}"))
    for i, override in enumerate(_items(oncall.get("overrides"))):
        if isinstance(override, Mapping):
            for key in ("replace", "by"):
                name = override.get(key)
                if isinstance(name, str) and name not in names:
                    problems.append((("oncall", "overrides", i, key), f"unknown person {name!r}"))
    fallback = _mapping(data.get("notify")).get("fallback_channel")
    if isinstance(fallback, str) and fallback not in channels:
        problems.append((("notify", "fallback_channel"), f"unknown channel {fallback!r}"))
    for i, policy in enumerate(_items(escalation.get("policies"))):
        if not isinstance(policy, Mapping):
            continue
        parts: list[tuple[Loc, Any]] = [
            (("escalation", "policies", i, "steps", k), step)
            for k, step in enumerate(_items(policy.get("steps")))
        ]
        if isinstance(policy.get("red_line"), Mapping):
            parts.append((("escalation", "policies", i, "red_line"), policy["red_line"]))
        for loc, part in parts:
            if not isinstance(part, Mapping):
                continue
            if part.get("oncall") is True and not _items(oncall.get("pairs")):
                problems.append(
                    ((*loc, "oncall"), "pages the on-call pair, but oncall.pairs is empty")
                )
            for j, role in _strings(part.get("roles")):
                if role not in roles:
                    problems.append(((*loc, "roles", j), f"unknown role {role!r}"))
            for j, name in _strings(part.get("people")):
                if name not in names:
                    problems.append(((*loc, "people", j), f"unknown person {name!r}"))
            for j, channel in _strings(part.get("channels")):
                if channel not in channels:
                    problems.append(((*loc, "channels", j), f"unknown channel {channel!r}"))
    return problems


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: Any) -> list[tuple[int, str]]:
    return [(j, v) for j, v in enumerate(_items(value)) if isinstance(v, str)]
