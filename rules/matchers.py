"""Label matchers, as in Prometheus selectors: equal, not equal, regex, not regex.

In YAML a matcher is a plain string (equality) or a one-key mapping naming the operator, in
symbols or words:

    match:
      role: uplink                      # role = "uplink"
      port: {"!=": "Gi0/0"}             # or {not: Gi0/0}
      mount: {"=~": "/|/var(/.*)?"}     # or {regex: ...}; anchored like Prometheus
      fstype: {"!~": "tmpfs|devtmpfs"}  # or {not_regex: ...}

A missing label reads as "" (again as in Prometheus), so `{"!=": x}` matches series without it.
Regexes are compiled when the config loads, so a bad one is reported at its key path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

from dutyd.core.records import Labels

_OPS = {
    "=": "=",
    "equals": "=",
    "!=": "!=",
    "not": "!=",
    "=~": "=~",
    "regex": "=~",
    "!~": "!~",
    "not_regex": "!~",
}
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Matcher:
    op: str  # one of = != =~ !~
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, actual: str) -> bool:
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def describe(self, label: str) -> str:
        return f'{label}{self.op}"{self.value}"'

    def to_data(self) -> str | dict[str, str]:
        return self.value if self.op == "=" else {self.op: self.value}


def make_matcher(op: str, value: str) -> Matcher:
    op = _OPS.get(op, "")
    if not op:
        raise ValueError("operator must be one of =, !=, =~, !~ (or equals, not, regex, not_regex)")
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a valid regex: {exc}") from None
    return Matcher(op, value, pattern)


def parse_matcher(raw: object) -> Matcher:
    if isinstance(raw, Matcher):
        return raw
    if isinstance(raw, str | int | float) and not isinstance(raw, bool):
        return make_matcher("=", str(raw))
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((op, value),) = raw.items()
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError("the matcher's value must be a string")
        return make_matcher(str(op), str(value))
    raise ValueError(
        'must be a label value (equality) or one operator: {"!=": v}, {"=~": re}, {"!~": re}'
    )


MatcherField = Annotated[
    Matcher, BeforeValidator(parse_matcher), PlainSerializer(lambda m: m.to_data())
]


def _check_names(matchers: dict[str, Matcher]) -> dict[str, Matcher]:
    for key in matchers:
        if not _LABEL.match(key):
            raise ValueError(f"label name {key!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
    return matchers


Matchers = Annotated[dict[str, MatcherField], AfterValidator(_check_names)]

Compiled = tuple[tuple[str, Matcher], ...]


def compile_matchers(raw: Mapping[str, Any]) -> Compiled:
    """Matchers for the hot path; accepts parsed matchers or plain strings (equality)."""
    return tuple((k, parse_matcher(v)) for k, v in sorted(raw.items()))


def label_of(labels: Labels, key: str) -> str:
    for k, v in labels:
        if k == key:
            return v
    return ""


def matches(matchers: Compiled, labels: Labels) -> bool:
    return all(m.matches(label_of(labels, k)) for k, m in matchers)


def describe(matchers: Compiled) -> str:
    return "{" + ", ".join(m.describe(k) for k, m in matchers) + "}"
