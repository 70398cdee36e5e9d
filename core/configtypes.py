"""Reusable field types for config models: durations, secrets, label maps.

Every config model in dutyd (the daemon's, each collector's, each notifier's) builds on
`StrictModel` so that an unknown key is an error, never silently ignored.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


# The languages pages, reports and the status page are written in.
Language = Literal["en", "zh"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: object) -> float:
    """`90`, `"90s"`, `"5m"`, `"1h30m"`, `"250ms"` -> seconds as float."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m, 2h")
    if isinstance(value, int | float):
        return _finite(float(value))
    if not isinstance(value, str):
        raise ValueError("must be a duration such as 30s, 5m, 2h")
    text = value.strip().replace(" ", "")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return _finite(number)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration such as 30s, 5m, 2h, 1h30m")
    return total


def _finite(seconds: float) -> float:
    # NaN passes every `> 0` check and would make the scheduler poll back to back;
    # infinity would silently never poll.
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration such as 30s, 5m, 2h")
    return seconds


# The units a Chinese duty engineer reads: 10秒, 2分30秒, 5分钟, 1小时42分钟, 3天2小时. Minutes
# as the last unit read 分钟 ("5分" alone is ambiguous), before seconds 分 (2分30秒).
_ZH_UNITS = {"d": "天", "h": "小时", "m": "分", "s": "秒"}


def format_duration(seconds: float, language: str = "en") -> str:
    """Seconds -> the compact form people read on a page: `1h42m`, `5m`, `30s`; in Chinese
    (`language` "zh") `1小时42分钟`, `5分钟`, `30秒`. Config messages stay in the first form."""
    zh = language == "zh"
    if 0 < seconds < 1:
        return f"{seconds * 1000:.0f}" + ("毫秒" if zh else "ms")
    s = round(seconds)
    parts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append((s // size, unit))
            s %= size
    parts = parts or [(0, "s")]
    if not zh:
        return "".join(f"{n}{unit}" for n, unit in parts)
    text = "".join(f"{n}{_ZH_UNITS[unit]}" for n, unit in parts)
    return text + "钟" if parts[-1][1] == "m" else text


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


def _non_negative(v: float) -> float:
    if v < 0:
        raise ValueError("must not be negative")
    return v


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_non_negative)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]


def _read_secret_file(path: object) -> SecretStr:
    if not isinstance(path, str | Path):
        raise ValueError("must be the path of a file holding the secret")
    try:
        return SecretStr(Path(path).read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None


def _secret_from_env(name: object) -> SecretStr:
    if not isinstance(name, str):
        raise ValueError("must be the name of an environment variable")
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"environment variable {name!r} is not set")
    return SecretStr(value)


# `password_file: /run/secrets/x` validates to the file's content, so a missing file is
# reported at its own key path when the config loads, not at first use.
SecretFile = Annotated[SecretStr, BeforeValidator(_read_secret_file)]
# `password_env: UPS_PASSWORD` validates to that variable's value.
SecretEnv = Annotated[SecretStr, BeforeValidator(_secret_from_env)]


def pick_secret(*candidates: SecretStr | None) -> str | None:
    """The first secret given among literal / `_env` / `_file` variants, as plain text."""
    for c in candidates:
        if c is not None:
            return c.get_secret_value()
    return None


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_label_names(labels: dict[str, str]) -> dict[str, str]:
    for key in labels:
        if not _LABEL_NAME.match(key) or key.startswith("__"):
            raise ValueError(f"label name {key!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
    return labels


LabelMap = Annotated[dict[str, str], AfterValidator(_check_label_names)]


_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def check_metric_name(name: str) -> str:
    """A sample name a user chose (a Modbus register, an SNMP OID map entry)."""
    if not _METRIC_NAME.match(name):
        raise ValueError(f"{name!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    if name.startswith("dutyd_"):
        raise ValueError("the dutyd_ prefix is reserved for dutyd's own metrics")
    return name
