"""The `switch` profile (IF-MIB, RFC 2863): per-port state, traffic and error counters.

Columns are walked side by side in one GETBULK walk, numeric OIDs only. SNMP v2c/v3 read the
64-bit ifHC*Octets and ifHighSpeed; v1 has no Counter64, so it reads the 32-bit ifIn/OutOctets
and ifSpeed. Counters are unwrapped (see `CounterTracker`) so `_total` samples only drop on a
real reset, which sysUpTime going backwards (`device_rebooted`) confirms. Port names
(ifName, ifDescr) are walked every `label_refresh`, when a port appears and after a restart;
polls in between reuse them.
"""

from __future__ import annotations

import re
from typing import ClassVar, NamedTuple, Protocol

from dutyd.collectors.base import Readings
from dutyd.collectors.snmp.codec import AnyValue, Oid, encode_oid_content, parse_oid
from dutyd.collectors.snmp.profiles.base import (
    CounterTracker,
    PollData,
    Profile,
    index_text,
    number,
    text,
)
from dutyd.core.errors import ReadingUnavailable
from dutyd.core.records import Labels, new_sample

IF_DESCR = parse_oid("1.3.6.1.2.1.2.2.1.2")
IF_SPEED = parse_oid("1.3.6.1.2.1.2.2.1.5")
IF_ADMIN = parse_oid("1.3.6.1.2.1.2.2.1.7")
IF_OPER = parse_oid("1.3.6.1.2.1.2.2.1.8")
IF_IN_OCTETS = parse_oid("1.3.6.1.2.1.2.2.1.10")
IF_IN_DISCARDS = parse_oid("1.3.6.1.2.1.2.2.1.13")
IF_IN_ERRORS = parse_oid("1.3.6.1.2.1.2.2.1.14")
IF_OUT_DISCARDS = parse_oid("1.3.6.1.2.1.2.2.1.19")
IF_OUT_OCTETS = parse_oid("1.3.6.1.2.1.2.2.1.16")
IF_OUT_ERRORS = parse_oid("1.3.6.1.2.1.2.2.1.20")
IF_NAME = parse_oid("1.3.6.1.2.1.31.1.1.1.1")
IF_HC_IN_OCTETS = parse_oid("1.3.6.1.2.1.31.1.1.1.6")
IF_HC_OUT_OCTETS = parse_oid("1.3.6.1.2.1.31.1.1.1.10")
IF_HIGH_SPEED = parse_oid("1.3.6.1.2.1.31.1.1.1.15")


class PortSelection(Protocol):
    """What the switch profile reads of its target's `SnmpTarget` (see `Profile`)."""

    version: str
    ports: list[str]

    def compiled_port_pattern(self) -> re.Pattern[str] | None: ...


C32 = 1 << 32
C64 = 1 << 64
# The unwrapped counters of a port, in `CounterTracker` column order.
_COUNTERS = (
    "if_in_octets_total",
    "if_out_octets_total",
    "if_in_errors_total",
    "if_out_errors_total",
    "if_in_discards_total",
    "if_out_discards_total",
)
# ifAdminStatus / ifOperStatus up(1)
UP = 1


class _Row(NamedTuple):
    name: AnyValue
    descr: AnyValue
    labels: dict[str, str] | None  # None: the port is not watched
    base: Labels  # the target's label set `merged` was built with
    merged: Labels


def index_key(if_index: int) -> bytes:
    """The raw index bytes a walked column keys the row of `if_index` by."""
    return encode_oid_content((1, 3, if_index))[1:]


class SwitchProfile(Profile):
    """IF-MIB ports; only those matching `ports` / `port_pattern` when given."""

    name: ClassVar[str] = "switch"

    def __init__(self, config: PortSelection) -> None:
        super().__init__(config)
        cfg = config
        self.hc = cfg.version != "1"
        self._ports = set(cfg.ports)
        self._pattern = cfg.compiled_port_pattern()
        self._counters = CounterTracker(columns=len(_COUNTERS))
        # Per row index: ifName, ifDescr, the port's labels (None if not watched) and its whole
        # label set with the target's, reused while the names and target labels stay the same.
        self._rows: dict[bytes, _Row] = {}

    def uses_uptime(self) -> bool:
        return True

    @classmethod
    def help_for(cls, config: object) -> dict[str, str]:
        return {
            "if_admin_up": "1 when the port is administratively up (IF-MIB ifAdminStatus).",
            "if_oper_up": "1 when the port is operationally up (IF-MIB ifOperStatus).",
            "if_in_octets_total": "Octets received on the port (ifHCInOctets; v1 ifInOctets).",
            "if_out_octets_total": "Octets sent on the port (ifHCOutOctets; v1 ifOutOctets).",
            "if_in_errors_total": "Inbound packets with errors (IF-MIB ifInErrors).",
            "if_out_errors_total": "Outbound packets with errors (IF-MIB ifOutErrors).",
            "if_in_discards_total": "Inbound packets discarded without error (ifInDiscards).",
            "if_out_discards_total": "Outbound packets discarded without error (ifOutDiscards).",
            "if_speed_bytes": "Port speed in bytes per second (ifHighSpeed; v1 ifSpeed), "
            "as node_exporter's node_network_speed_bytes.",
        }

    def scalars(self) -> list[Oid]:
        return []

    def columns(self) -> list[Oid]:
        if self.hc:
            traffic = [IF_HC_IN_OCTETS, IF_HC_OUT_OCTETS, IF_HIGH_SPEED]
        else:
            traffic = [IF_IN_OCTETS, IF_OUT_OCTETS, IF_SPEED]
        return [
            IF_ADMIN, IF_OPER, IF_IN_ERRORS, IF_OUT_ERRORS, IF_IN_DISCARDS, IF_OUT_DISCARDS,
            *traffic,
        ]  # fmt: skip

    def label_columns(self) -> list[Oid]:
        # A port's names are set by its hardware and hardly ever change, but they are more
        # than a fifth of a walk's varbinds and most of its bytes: they are read as often
        # as `label_refresh` asks, and at once when a port appears or the device restarts
        # (an agent without ifIndex persistence may renumber its ports then).
        return [IF_DESCR, IF_NAME]

    def labels_known(self, data: PollData) -> bool:
        rows = data.columns[IF_OPER]
        return bool(rows) and rows.keys() <= self._rows.keys()

    def _watched(self, name: str, descr: str) -> bool:
        if not self._ports and self._pattern is None:
            return True
        if name in self._ports or descr in self._ports:
            return True
        pattern = self._pattern
        return pattern is not None and bool(pattern.search(name) or pattern.search(descr))

    def _labels(self, idx: bytes, name_raw: AnyValue, descr_raw: AnyValue) -> dict[str, str] | None:
        """A port's labels, or None when the port is not watched."""
        descr = text(descr_raw)
        port = text(name_raw) or descr or f"if{index_text(idx)}"
        if not self._watched(port, descr):
            return None
        return {"port": port, "descr": descr or port}

    def port_labels(self, if_index: int) -> dict[str, str] | bool | None:
        """The labels the last poll gave port `if_index` (for a linkDown/linkUp trap): its
        labels, None when the port is not watched, False when no poll has seen it yet."""
        row = self._rows.get(index_key(if_index))
        if row is None:
            return False
        return row.labels

    def labels_for_names(
        self, if_index: int, name: AnyValue, descr: AnyValue
    ) -> dict[str, str] | None:
        """A port's labels from its ifName/ifDescr as a trap carried them (None: not watched)."""
        return self._labels(index_key(if_index), name, descr)

    def emit(self, data: PollData, readings: Readings) -> None:
        cols = data.columns
        # Absent when this poll did not walk the names: each row keeps its earlier ones.
        descr_c, name_c = cols.get(IF_DESCR), cols.get(IF_NAME)
        with_names = descr_c is not None and name_c is not None
        admin_c, oper_c = cols[IF_ADMIN], cols[IF_OPER]
        in_err_c, out_err_c = cols[IF_IN_ERRORS], cols[IF_OUT_ERRORS]
        in_disc_c, out_disc_c = cols.get(IF_IN_DISCARDS) or {}, cols.get(IF_OUT_DISCARDS) or {}
        if self.hc:
            in_c, out_c = cols[IF_HC_IN_OCTETS], cols[IF_HC_OUT_OCTETS]
            speed_c = cols[IF_HIGH_SPEED]
            modulus, speed_unit = C64, 1_000_000.0
        else:
            in_c, out_c, speed_c = cols[IF_IN_OCTETS], cols[IF_OUT_OCTETS], cols[IF_SPEED]
            modulus, speed_unit = C32, 1.0
        rows = oper_c or descr_c or {}
        if not rows:
            raise ReadingUnavailable(
                "the device lists no interfaces (IF-MIB ifTable is empty or not served)"
            )
        rebooted, elapsed = data.rebooted, data.elapsed
        counters = self._counters
        update = counters.update
        counters.begin()
        add = readings.samples.append
        ts = readings.timestamp
        base = readings.base_labels
        cache = self._rows
        fresh: dict[bytes, _Row] = {}
        seen: set[str] = set()
        in_name, out_name, in_err_name, out_err_name, in_disc_name, out_disc_name = _COUNTERS
        for idx in rows:
            row = cache.get(idx)
            if with_names:
                name_raw, descr_raw = name_c.get(idx), descr_c.get(idx)  # type: ignore[union-attr]
            elif row is not None:
                name_raw, descr_raw = row.name, row.descr
            else:
                # Not reached through the collector (`labels_known` sends such a poll back
                # for its names); a row with no name is never given a made-up one.
                continue
            if (
                row is None
                or row.name != name_raw
                or row.descr != descr_raw
                or row.base is not base
            ):
                labels = self._labels(idx, name_raw, descr_raw)
                merged = readings.merged_labels(labels) if labels is not None else ()
                row = _Row(name_raw, descr_raw, labels, base, merged)
            fresh[idx] = row
            labels = row.labels
            if labels is None:
                continue
            # Every sample of a port shares one label set, kept with the row: merging a
            # port's labels with the target's (a sort) was most of a big switch's poll CPU.
            merged = row.merged
            port = labels["port"]
            if port in seen:
                # Two interfaces with one name: keep both series apart by their index.
                port = f"{port}#{index_text(idx)}"
                merged = readings.merged_labels({**labels, "port": port})
            seen.add(port)
            # Samples straight into the readings (no list of pairs first), a port's in the
            # order speed, admin, oper, then the counters.
            speed = speed_c.get(idx)
            if speed.__class__ is int:
                speed_bits: float | None = speed * speed_unit
            else:
                number_speed = number(speed)
                speed_bits = number_speed * speed_unit if number_speed is not None else None
            if speed_bits is not None:
                # Prometheus base unit: bytes (per second), as node_exporter does.
                add(new_sample("if_speed_bytes", merged, speed_bits / 8.0, ts))
            admin, oper = admin_c.get(idx), oper_c.get(idx)
            if isinstance(admin, int):
                add(new_sample("if_admin_up", merged, 1.0 if admin == UP else 0.0, ts))
            if isinstance(oper, int):
                add(new_sample("if_oper_up", merged, 1.0 if oper == UP else 0.0, ts))
            # Twice what the port can carry in the elapsed time, and 1 MB for clock jitter.
            max_octets = speed_bits / 8.0 * elapsed * 2.0 + 1e6 if speed_bits and elapsed else None
            # The six counters written out, not looped over: this is the innermost loop of a
            # big switch's poll, and a tuple per counter per port was measurable there.
            raw = in_c.get(idx)
            if isinstance(raw, int):
                total = update(idx, raw, modulus, rebooted, max_octets, 0)
                add(new_sample(in_name, merged, total, ts))
            raw = out_c.get(idx)
            if isinstance(raw, int):
                total = update(idx, raw, modulus, rebooted, max_octets, 1)
                add(new_sample(out_name, merged, total, ts))
            raw = in_err_c.get(idx)
            if isinstance(raw, int):
                total = update(idx, raw, C32, rebooted, None, 2)
                add(new_sample(in_err_name, merged, total, ts))
            raw = out_err_c.get(idx)
            if isinstance(raw, int):
                total = update(idx, raw, C32, rebooted, None, 3)
                add(new_sample(out_err_name, merged, total, ts))
            raw = in_disc_c.get(idx)
            if isinstance(raw, int):
                total = update(idx, raw, C32, rebooted, None, 4)
                add(new_sample(in_disc_name, merged, total, ts))
            raw = out_disc_c.get(idx)
            if isinstance(raw, int):
                total = update(idx, raw, C32, rebooted, None, 5)
                add(new_sample(out_disc_name, merged, total, ts))
        self._rows = fresh
        counters.end()
