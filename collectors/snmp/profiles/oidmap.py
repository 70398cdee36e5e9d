"""User-defined OID maps (`oids:` of an snmp target): any scalar or table column, scaled.

oids:
  - name: pdu_outlet_current_amperes
    column: 1.3.6.1.4.1.318.1.1.26.9.4.3.1.6    # walked; one sample per row
    scale: 0.1
    index_label: outlet                          # label carrying the row index ...
    label_column: 1.3.6.1.4.1.318.1.1.26.9.4.3.1.3  # ... or this column's text
  - name: room_temperature_celsius
    oid: 1.3.6.1.4.1.99999.1.1.0                 # one instance, fetched by GET
    scale: 0.1
    labels: {sensor: rack3-top}
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal, Protocol

from pydantic import Field, field_validator, model_validator

from dutyd.collectors.base import Readings
from dutyd.collectors.snmp.codec import Oid, format_oid, parse_oid
from dutyd.collectors.snmp.profiles.base import (
    CounterTracker,
    PollData,
    Profile,
    index_text,
    missing,
    number,
    text,
)
from dutyd.core.configtypes import LabelMap, StrictModel, check_metric_name
from dutyd.core.errors import ReadingUnavailable

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED_LABELS = frozenset({"target", "kind"})


def _oid(value: str | None) -> str | None:
    if value is None:
        return None
    return format_oid(parse_oid(value))


class OidMetric(StrictModel):
    """One sample (or one per table row) read from a numeric OID."""

    name: str = Field(
        min_length=1,
        max_length=200,
        description="Sample name with its unit, e.g. room_temperature_celsius.",
    )
    oid: str | None = Field(
        default=None, description="An instance OID fetched by GET (a scalar ends in .0)."
    )
    column: str | None = Field(
        default=None, description="A table column OID, walked: one sample per row."
    )
    type: Literal["gauge", "counter32", "counter64"] = Field(
        default="gauge",
        description="gauge: the value as read; counter32/counter64: a counter unwrapped "
        "across its wrap (the name must end in _total).",
    )
    scale: float = Field(default=1.0, allow_inf_nan=False, description="Sample = raw*scale+offset.")
    offset: float = Field(default=0.0, allow_inf_nan=False, description="Added after scale.")
    labels: LabelMap = Field(default_factory=dict, description="Fixed labels of this sample.")
    index_label: str | None = Field(
        default=None,
        description="Columns: the label naming each row (default `index`), valued with the "
        "row index or with `label_column`'s text.",
    )
    label_column: str | None = Field(
        default=None, description="Columns: a column whose text names each row (ifName-like)."
    )
    help: str = Field(default="", max_length=200, description="HELP text for /metrics.")

    @field_validator("name")
    @classmethod
    def _metric_name(cls, v: str) -> str:
        return check_metric_name(v)

    @field_validator("oid", "column", "label_column")
    @classmethod
    def _numeric(cls, v: str | None) -> str | None:
        # Numeric only: no MIB is loaded, so nothing is resolved by name at poll time.
        return _oid(v)

    @field_validator("index_label")
    @classmethod
    def _label_name(cls, v: str | None) -> str | None:
        if v is not None and (not _LABEL_NAME.match(v) or v in RESERVED_LABELS):
            raise ValueError(f"{v!r} is not a usable label name")
        return v

    @model_validator(mode="after")
    def _shape(self) -> OidMetric:
        if (self.oid is None) == (self.column is None):
            raise ValueError("give exactly one of oid (a scalar) or column (a table column)")
        if self.oid is not None and (self.index_label or self.label_column):
            raise ValueError("index_label and label_column are for table columns only")
        if self.type != "gauge" and not self.name.endswith("_total"):
            raise ValueError("a counter's name ends in _total")
        clash = RESERVED_LABELS & set(self.labels)
        if clash:
            raise ValueError(f"labels: {', '.join(sorted(clash))} is set by dutyd")
        return self

    @property
    def row_label(self) -> str:
        return self.index_label or "index"


def metric_help(m: OidMetric) -> str:
    where = f"OID {m.oid}" if m.oid else f"column {m.column}"
    return m.help or f"{m.name} read from SNMP {where}"


class TargetOids(Protocol):
    """What the `oids` profile reads of its target's `SnmpTarget` (see `Profile`)."""

    oids: list[OidMetric]


class OidMapProfile(Profile):
    """The target's `oids:` entries (and the `sensor` profile's, which builds on it)."""

    name: ClassVar[str] = "oids"

    def __init__(self, config: TargetOids) -> None:
        super().__init__(config)
        self._read(list(config.oids))

    def _read(self, metrics: list[OidMetric]) -> None:
        self.metrics = metrics
        self._scalar = [parse_oid(m.oid) if m.oid else None for m in self.metrics]
        self._column = [parse_oid(m.column) if m.column else None for m in self.metrics]
        self._names = [parse_oid(m.label_column) if m.label_column else None for m in self.metrics]
        self._counters = CounterTracker()

    def uses_uptime(self) -> bool:
        return any(m.type != "gauge" for m in self.metrics)

    @classmethod
    def help_for(cls, config: TargetOids) -> dict[str, str]:
        return cls.help_of(config.oids)

    @staticmethod
    def help_of(metrics: list[OidMetric]) -> dict[str, str]:
        out: dict[str, str] = {}
        for m in metrics:
            out.setdefault(m.name, metric_help(m))
        return out

    def scalars(self) -> list[Oid]:
        return [o for o in self._scalar if o is not None]

    def columns(self) -> list[Oid]:
        cols = [o for o in self._column if o is not None]
        return cols + [o for o in self._names if o is not None and o not in cols]

    def emit(self, data: PollData, readings: Readings) -> None:
        counters = self._counters
        counters.begin()
        got = 0
        absent: list[str] = []
        for i, m in enumerate(self.metrics):
            scalar = self._scalar[i]
            if scalar is not None:
                raw = data.scalars.get(scalar)
                if missing(raw):
                    absent.append(f"{m.oid} ({raw!r})")
                    continue
                got += self._one(m, i, b"", raw, m.labels, data, readings)
                continue
            column = self._column[i]
            assert column is not None
            rows = data.columns.get(column, {})
            if not rows:
                absent.append(f"{m.column} (no rows)")
            names = data.columns.get(self._names[i], {}) if self._names[i] else None
            for idx, raw in rows.items():
                row = text(names.get(idx)) if names is not None else ""
                labels = {**m.labels, m.row_label: row or index_text(idx)}
                got += self._one(m, i, idx, raw, labels, data, readings)
        counters.end()
        if not got and absent:
            raise ReadingUnavailable(
                "the device has none of the configured OIDs: " + ", ".join(absent[:5])
            )

    def _one(
        self,
        m: OidMetric,
        i: int,
        idx: bytes,
        raw: object,
        labels: dict[str, str],
        data: PollData,
        readings: Readings,
    ) -> int:
        if m.type == "gauge":
            value = number(raw)  # type: ignore[arg-type]
        elif isinstance(raw, int):
            modulus = 1 << (32 if m.type == "counter32" else 64)
            value = float(self._counters.update((i, idx), raw, modulus, data.rebooted))
        else:
            value = None
        if value is None:
            return 0
        readings.add_labelled(m.name, value * m.scale + m.offset, labels)
        return 1
