"""What a profile is: OIDs to fetch, and a function turning the fetched values into samples.

A profile never talks to the network. The collector merges the OIDs of every profile of a
target into one `Query` (one GET, one GETBULK walk), hands each profile the `PollData`, and
each profile adds its samples to the `Readings`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

from dutyd.collectors.base import Readings
from dutyd.collectors.snmp.codec import AnyValue, Exception_, Oid, decode_subids, format_oid

Column = dict[bytes, AnyValue]

# Label values are read from the device (ifName, a sensor's name): bounded in length.
MAX_LABEL_CHARS = 64


class PollData:
    """One poll's values: scalars by OID, table columns by OID ({index bytes: value}),
    seconds since the previous successful poll (None on the first) and whether the device
    restarted since then (sysUpTime went backwards; None when not read). `capped`: the
    columns of a profile's `capped_walk`, or None with the reason in `capped_refused`."""

    __slots__ = ("capped", "capped_refused", "columns", "elapsed", "rebooted", "scalars")

    def __init__(
        self,
        scalars: Mapping[Oid, AnyValue],
        columns: Mapping[Oid, Column],
        elapsed: float | None,
        rebooted: bool | None,
    ) -> None:
        self.scalars = scalars
        self.columns = columns
        self.elapsed = elapsed
        self.rebooted = rebooted
        self.capped: Mapping[Oid, Column] | None = None
        self.capped_refused = ""


class Profile(ABC):
    """One profile of one target. Instances keep state between polls (counters)."""

    name: ClassVar[str]

    def __init__(self, config: object) -> None:
        """`config` is the target's `SnmpTarget`. A profile that reads it names what it reads
        in a protocol of its own: the model's module imports the profiles (to validate
        `profiles:`, `oids:` and `sensors:`), so naming the model here would be a cycle."""
        self.config = config

    def uses_uptime(self) -> bool:
        """Whether sysUpTime must be read (reboot detection for this profile's counters)."""
        return False

    @classmethod
    @abstractmethod
    def help_for(cls, config: object) -> dict[str, str]:
        """Sample name -> HELP text, for every name this profile emits with `config`."""

    @abstractmethod
    def scalars(self) -> list[Oid]:
        """Instance OIDs to GET."""

    @abstractmethod
    def columns(self) -> list[Oid]:
        """Table column OIDs to walk."""

    def capped_walk(self) -> tuple[list[Oid], int] | None:
        """Columns walked apart from the poll's walk, with a row cap of their own (a table
        that may be large, as a forwarding table): a walk refused or failed there is not the
        target's failure, the profile gets None and the reason (`PollData.capped`)."""
        return None

    def label_columns(self) -> list[Oid]:
        """Columns that only name rows (ifName, ifDescr). The collector walks them on the
        first poll, every `label_refresh`, and at once when `labels_known` says a poll
        without them cannot be labelled; other polls leave them out of `PollData.columns`."""
        return []

    def labels_known(self, data: PollData) -> bool:
        """Whether this poll, walked without `label_columns`, can be labelled from the names
        of an earlier one (False when a row is new to this profile)."""
        return True

    @abstractmethod
    def emit(self, data: PollData, readings: Readings) -> None:
        """Add this poll's samples; raise a CollectError if the device lacks the whole MIB."""


def number(value: AnyValue) -> float | None:
    """A numeric reading, or None. Some probes report numbers as strings ("23.5")."""
    if isinstance(value, int):
        return float(value)
    if isinstance(value, bytes) and 0 < len(value) <= 32:
        try:
            f = float(value.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return None
        return f if f == f and f not in (float("inf"), float("-inf")) else None
    return None


def missing(value: AnyValue) -> bool:
    return value is None or isinstance(value, Exception_)


def text(value: AnyValue) -> str:
    """A label value read from the device: printable, bounded; "" when absent."""
    if isinstance(value, bytes):
        s = value.decode("utf-8", "replace")
    elif isinstance(value, int):
        s = str(value)
    else:
        return ""
    s = "".join(c if c.isprintable() else "?" for c in s.strip())
    return s[:MAX_LABEL_CHARS]


def index_text(index: bytes) -> str:
    """A row index as dotted numbers ("3", "1.2")."""
    return format_oid(decode_subids(index))


def oid_text(oid: Oid) -> str:
    return format_oid(oid)


class CounterTracker:
    """Turns raw SNMP counters (which wrap at 2^32 or 2^64) into ever-growing totals.

    A value below the previous one is either a wrap or a reset (device restart, counters
    cleared). It counts as a wrap when the wrapped increase is plausible (at most twice what
    the port's speed allows in the elapsed time, or, speed unknown, when the previous value
    was in the top quarter of the range); a reset otherwise, or whenever the device rebooted.
    A reset shows as a drop, which rate functions read as a counter reset; a wrap never does.
    Series not seen in a poll are forgotten (bounded state).

    State is kept per row (a port) as one flat list [raw, total, raw, total, ...] with a pair
    per counter `column`: a big switch has four counters per port, and a tuple key and a pair
    per counter cost about three times as much (about 15 MB at 1,000 devices)."""

    __slots__ = ("_now", "_prev", "_width")

    def __init__(self, columns: int = 1) -> None:
        self._width = 2 * columns
        # Per key: [raw (int), total (float), ...], None where a column was not read.
        self._prev: dict[Hashable, list[Any]] = {}
        self._now: dict[Hashable, list[Any]] = {}

    def begin(self) -> None:
        self._now = {}

    def end(self) -> None:
        self._prev, self._now = self._now, {}

    def update(
        self,
        key: Hashable,
        raw: int,
        modulus: int,
        rebooted: bool | None,
        max_increase: float | None = None,
        column: int = 0,
    ) -> float:
        at = 2 * column
        prev = self._prev.get(key)
        prev_raw = prev[at] if prev is not None else None
        if prev_raw is None or rebooted:
            total = float(raw)
        else:
            prev_total = prev[at + 1]  # type: ignore[index]
            if raw >= prev_raw:
                total = prev_total + (raw - prev_raw)
            else:
                wrapped = raw + modulus - prev_raw
                if max_increase is not None:
                    plausible = wrapped <= max_increase
                else:
                    plausible = prev_raw >= modulus - modulus // 4
                total = prev_total + wrapped if plausible else float(raw)
        now = self._now.get(key)
        if now is None:
            now = self._now[key] = [None] * self._width
        now[at] = raw
        now[at + 1] = total
        return total


def add(readings: Readings, name: str, value: float | None, labels: Mapping[str, str]) -> None:
    if value is not None:
        readings.add_labelled(name, value, labels)
