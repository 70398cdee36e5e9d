"""The collector interface: a target's config model, a poll, and the readings it yields.

A collector polls one target and adds what it read to a `Readings`. It knows nothing of
rules, alerts or exposition. When a poll fails it raises a `CollectError` subclass
(see `dutyd.core.errors`); the scheduler alone turns that into `target_up = 0` with the reason.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field, field_validator

from dutyd.core.configtypes import LabelMap, PositiveDuration, StrictModel
from dutyd.core.loglimit import LogLimiter
from dutyd.core.records import INTERN_LIMIT, Labels, Sample, intern_labels, new_sample

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


def parse_host_port(address: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` (a bare IPv6 literal too) -> (host, port).

    Raises ValueError naming what is wrong, for the config report."""
    text = address.strip()
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{address!r} is not host, host:port or [ipv6]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a bare IPv6 address has several colons and no port
    if not host:
        raise ValueError(f"{address!r} has no host")
    if any(c.isspace() for c in host):
        raise ValueError(f"{host!r} is not a host name or IP address")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} must be a number from 1 to 65535")
    return host, int(port_text)


MIN_INTERVAL = 0.1  # seconds
# `depends_on: auto`: the parents are learned from the switches' LLDP neighbours.
AUTO_PARENTS = "auto"


class TargetConfig(StrictModel):
    """Fields every target has. A collector's own model subclasses this and sets `kind`."""

    name: str = Field(min_length=1, max_length=128)
    kind: str
    address: str = Field(min_length=1)
    interval: PositiveDuration = 30.0
    timeout: PositiveDuration = 5.0
    labels: LabelMap = Field(default_factory=dict)
    # Parent targets (a switch, a UPS): while one is down, this target's alerts are suppressed.
    # `auto` (alone or in the list): the switch LLDP sees it on (agent/topology.py).
    depends_on: list[str] = Field(default_factory=list)
    # Pinned to a shard of the cluster (the agent in that room polls it); see cluster.shard.
    shard: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, v: float) -> float:
        # Below this a target is polled back to back and starves the others of CPU.
        if v < MIN_INTERVAL:
            raise ValueError(f"must be at least {MIN_INTERVAL:g}s")
        return v

    @field_validator("name")
    @classmethod
    def _name_chars(cls, v: str) -> str:
        if not set(v) <= _NAME_CHARS:
            raise ValueError("may only contain letters, digits and _ - . :")
        if v == AUTO_PARENTS:
            raise ValueError(f"{AUTO_PARENTS!r} is reserved (depends_on: auto)")
        return v

    @field_validator("depends_on", mode="before")
    @classmethod
    def _auto(cls, v: object) -> object:
        return [AUTO_PARENTS] if v == AUTO_PARENTS else v

    @property
    def learns_parents(self) -> bool:
        return AUTO_PARENTS in self.depends_on

    @property
    def configured_parents(self) -> list[str]:
        return [p for p in self.depends_on if p != AUTO_PARENTS]


class Readings:
    """What one poll read. Target labels (target, kind, site, room, ...) are stamped here,
    so a collector only names what it measured and the labels that tell readings apart.

    Label sets are interned (`intern_labels`): a series carries the same tuple from poll to
    poll, and a label set seen before is found without sorting by (target labels, the
    reading's own labels as given)."""

    __slots__ = ("_base", "_base_labels", "samples", "timestamp")

    def __init__(self, base_labels: Mapping[str, str], timestamp: float) -> None:
        self._base = dict(base_labels)
        self._base_labels = intern_labels(tuple(sorted(self._base.items())))
        self.timestamp = timestamp
        self.samples: list[Sample] = []

    @property
    def base_labels(self) -> Labels:
        """The target's labels (interned: the same tuple for every poll of the target)."""
        return self._base_labels

    def merged_labels(self, labels: Mapping[str, str]) -> Labels:
        """The interned label set of a reading with its own `labels`, for a collector that
        keeps it between polls itself (with `base_labels`, to know it is still current)."""
        return intern_labels(tuple(sorted({**self._base, **labels}.items())))

    def add(self, name: str, value: float, /, **labels: str) -> None:
        self.add_labelled(name, value, labels)

    def add_labelled(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        merged: Labels
        if labels:
            # The base tuple is interned, so its id names it for as long as it is in use.
            key = (id(self._base_labels), tuple(labels.items()))
            found = _MERGED.get(key)
            if found is None:
                if len(_MERGED) >= INTERN_LIMIT:
                    _MERGED.clear()
                found = self.merged_labels(labels)
                _MERGED[key] = (self._base_labels, found)
                merged = found
            else:
                merged = found[1]
        else:
            merged = self._base_labels
        self.samples.append(new_sample(name, merged, float(value), self.timestamp))


# (id of the interned target labels, a reading's own labels as given) -> (those target labels,
# kept alive so the id stays theirs; the interned merged set).
_MERGED: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[Labels, Labels]] = {}


class CollectorContext:
    """Resources shared by every collector of a daemon: a thread pool for blocking libraries
    and lazily built shared objects (one SNMP engine, one HTTP session) closed at shutdown."""

    def __init__(
        self, executor: ThreadPoolExecutor | None = None, loglimit: LogLimiter | None = None
    ) -> None:
        self.executor = executor or ThreadPoolExecutor(max_workers=64, thread_name_prefix="poll")
        # Repeated lines of one kind per target collapse (a reading that flaps every poll).
        self.loglimit = loglimit
        self._shared: dict[str, Any] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def shared(
        self,
        key: str,
        factory: Callable[[], Any],
        closer: Callable[[Any], Awaitable[None]] | None = None,
    ) -> Any:
        if key not in self._shared:
            obj = factory()
            self._shared[key] = obj
            if closer is not None:
                self._closers.append(lambda: closer(obj))
        return self._shared[key]

    async def run_blocking(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking call (pyModbusTCP, file I/O) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()
        self._closers.clear()
        self._shared.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)


C = TypeVar("C", bound=TargetConfig)
MAX_FACTS = 32
MAX_FACT_CHARS = 256


class Collector(ABC, Generic[C]):
    """Polls one target. Subclasses set `kind`, `config_model` and, for /metrics HELP
    lines, `metric_help` for the sample names they emit."""

    kind: ClassVar[str]
    config_model: ClassVar[type[TargetConfig]]
    metric_help: ClassVar[Mapping[str, str]] = {}

    def __init__(self, config: C, context: CollectorContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def emits(cls, config: TargetConfig) -> set[str]:
        """Sample names a target with this config produces (rules check names against it).
        Collectors whose names come from the config (Modbus register maps) override this."""
        return set(cls.metric_help)

    # What the device is (vendor, model, serial, firmware, OS), for the equipment register:
    # kinds that can read it do so on a poll while `facts_due` is set (at start, then daily:
    # not every poll) and hand it over with `note_facts`; the daemon takes it after the poll.
    facts_due: bool = True
    _facts: dict[str, str] | None = None

    def note_facts(self, facts: Mapping[str, str]) -> None:
        """Keep what was read (device text: sizes capped, control characters dropped)."""
        clean: dict[str, str] = {}
        for key, value in list(facts.items())[:MAX_FACTS]:
            text = "".join(ch for ch in str(value) if ch.isprintable()).strip()
            if text:
                clean[str(key)[:64]] = text[:MAX_FACT_CHARS]
        self._facts = clean

    def take_facts(self) -> dict[str, str] | None:
        """The facts read on the last poll, once; none read: None."""
        facts, self._facts = self._facts, None
        if facts is not None:
            self.facts_due = False
        return facts

    @abstractmethod
    async def collect(self, readings: Readings) -> None:
        """Read the target once. Raise a `CollectError` subclass when the target is down."""

    async def close(self) -> None:
        """Release connections held between polls."""
