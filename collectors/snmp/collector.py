"""The `kind: snmp` collector: switches (IF-MIB), UPS units (UPS-MIB), probes and OID maps.

    - name: core-sw1
      kind: snmp
      address: 10.0.0.2            # host or host:port (161)
      version: 2c                  # 1, 2c or 3
      community_file: /run/secrets/snmp-community
      profiles: [switch]
      port_pattern: "^(Te|Gi1/0/4[78])"   # uplinks only
      interval: 30s
      timeout: 3s

    - name: ups-a
      kind: snmp
      address: 10.0.0.9
      version: 3
      user: dutyd
      auth_protocol: SHA256
      auth_password_env: UPS_A_AUTH
      priv_protocol: AES128
      priv_password_env: UPS_A_PRIV
      profiles: [ups]

v1/v2c polls go through dutyd's lean codec on one shared UDP socket; v3 (or `client:
pysnmp`) through pysnmp's one shared engine. Either way one poll is one GET of the scalars and
one GETBULK walk of the columns, with numeric OIDs prepared once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from dutyd.collectors.base import (
    Collector,
    CollectorContext,
    Readings,
    TargetConfig,
    parse_host_port,
)
from dutyd.collectors.snmp.client import FastClient, Query, SnmpClient
from dutyd.collectors.snmp.codec import VERSION_1, VERSION_2C, Oid, parse_oid
from dutyd.collectors.snmp.facts import MAX_ENTITIES, facts_from, facts_query
from dutyd.collectors.snmp.profiles import PROFILES, Profile
from dutyd.collectors.snmp.profiles.base import PollData
from dutyd.collectors.snmp.profiles.bridge import DEFAULT_MAX_ROWS, BridgeProfile, ForwardingTable
from dutyd.collectors.snmp.profiles.oidmap import OidMapProfile, OidMetric
from dutyd.collectors.snmp.profiles.sensor import SensorProbe
from dutyd.collectors.snmp.profiles.switch import SwitchProfile
from dutyd.collectors.snmp.profiles.ups import UpsProfile
from dutyd.collectors.snmp.transport import SnmpTransport
from dutyd.collectors.snmp.usm import (
    USM_SECRETS,
    AuthProtocol,
    PrivProtocol,
    check_usm,
    given,
)
from dutyd.core.configtypes import Duration, SecretEnv, SecretFile, pick_secret
from dutyd.core.errors import CollectError

DEFAULT_PORT = 161
SYS_UPTIME = parse_oid("1.3.6.1.2.1.1.3.0")
TICKS_WRAP = 1 << 32
TRANSPORT_KEY = "snmp.transport"
UPTIME_HELP = {
    "device_uptime_seconds": "Seconds since the device's SNMP agent started (sysUpTime).",
    "device_rebooted": (
        "1 on the poll that saw sysUpTime go backwards (the device restarted), else 0."
    ),
}

_VERSIONS = {"1": "1", "v1": "1", "2": "2c", "2c": "2c", "v2c": "2c", "3": "3", "v3": "3"}


def parse_address(address: str) -> tuple[str, int]:
    return parse_host_port(address, DEFAULT_PORT)


class SnmpTarget(TargetConfig):
    """An SNMP agent (switch, UPS, probe, PDU). Pick `profiles` and/or list `oids`."""

    kind: Literal["snmp"]
    version: Literal["1", "2c", "3"] = Field(
        default="2c", description="SNMP version: 1, 2c or 3 (v1, v2c, v3 accepted)."
    )
    community: SecretStr | None = Field(default=None, description="v1/v2c community, literally.")
    community_env: SecretEnv | None = Field(
        default=None, description="Environment variable holding the community."
    )
    community_file: SecretFile | None = Field(
        default=None, description="File holding the community."
    )
    user: str | None = Field(
        default=None, min_length=1, max_length=32, description="v3 USM user name."
    )
    auth_protocol: AuthProtocol | None = Field(
        default=None,
        description="v3 authentication: SHA (SHA-1), SHA224, SHA256, SHA384, SHA512, MD5; "
        "SHA-256, HMAC-SHA and the like accepted.",
    )
    auth_password: SecretStr | None = Field(default=None, description="v3 auth password.")
    auth_password_env: SecretEnv | None = Field(
        default=None, description="Environment variable holding the v3 auth password."
    )
    auth_password_file: SecretFile | None = Field(
        default=None, description="File holding the v3 auth password."
    )
    priv_protocol: PrivProtocol | None = Field(
        default=None,
        description="v3 privacy: AES (= AES128), AES192, AES256 (net-snmp key extension), "
        "AES192C, AES256C (Cisco's), DES; AES-128, aes128 and the like accepted.",
    )
    priv_password: SecretStr | None = Field(default=None, description="v3 privacy password.")
    priv_password_env: SecretEnv | None = Field(
        default=None, description="Environment variable holding the v3 privacy password."
    )
    priv_password_file: SecretFile | None = Field(
        default=None, description="File holding the v3 privacy password."
    )
    retries: int = Field(
        default=1, ge=0, le=10, description="Resends of an unanswered request within timeout."
    )
    max_repetitions: int = Field(
        default=25, ge=1, le=200, description="GETBULK max-repetitions: rows per request."
    )
    max_rows: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Most rows a walked column may have; more is a broken agent (target down).",
    )
    profiles: list[str] = Field(
        default_factory=list,
        description="What to read: switch (IF-MIB), ups (UPS-MIB), sensor (an OID map of "
        "probes), lldp (LLDP-MIB), bridge (forwarding and ARP tables), entity_sensor "
        "(ENTITY-SENSOR-MIB probes), apc_probe, apc_uio (an APC card's or NetBotz's "
        "probes); every name in profiles/__init__.py PROFILES.",
    )
    ports: list[str] = Field(
        default_factory=list,
        description="switch: only these ports (ifName or ifDescr), e.g. [Te1/0/1, Te1/0/2].",
    )
    port_pattern: str | None = Field(
        default=None,
        max_length=200,
        description="switch: only ports whose ifName or ifDescr matches this regex.",
    )
    sensors: list[SensorProbe] = Field(
        default_factory=list, description="sensor: the probes' OIDs (see profiles/sensor.py)."
    )
    oids: list[OidMetric] = Field(
        default_factory=list, description="User OID map: scalars and table columns to read."
    )
    bridge_max_rows: int = Field(
        default=DEFAULT_MAX_ROWS,
        ge=1,
        le=65_536,
        description="bridge: most rows of each column it walks (forwarding tables, bridge "
        "ports, ifName, ARP tables); a longer one is refused (not learned from), the target "
        "stays up.",
    )
    label_refresh: Duration = Field(
        default=900.0,
        description="How often row names (switch: ifName, ifDescr) are read again; they are "
        "also read at once when a row appears or the device restarts. 0s: every poll.",
    )
    client: Literal["fast", "pysnmp"] = Field(
        default="fast",
        description="v1/v2c only: dutyd's lean codec (fast) or pysnmp (a cross-check).",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        key = str(v).strip().lower()
        if key not in _VERSIONS:
            raise ValueError("must be 1, 2c or 3")
        return _VERSIONS[key]

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, v: list[str]) -> list[str]:
        unknown = [p for p in v if p not in PROFILES]
        if unknown:
            raise ValueError(
                f"unknown profile {', '.join(map(repr, unknown))}; known: {', '.join(PROFILES)}"
            )
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_address(v)
        return v.strip()

    @field_validator("port_pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SnmpTarget:
        community = given(self, "community", "community_env", "community_file")
        if len(community) > 1:
            raise ValueError(f"give only one of {', '.join(community)}")
        if self.version == "3":
            if community:
                raise ValueError("SNMPv3 uses user/auth/priv, not a community")
            if not self.user:
                raise ValueError("SNMPv3 needs `user`")
            if self.client != "fast":
                raise ValueError("client: applies to v1/v2c only (v3 always uses pysnmp)")
            check_usm(self)
        else:
            if not community:
                raise ValueError("SNMP v1/v2c needs community, community_env or community_file")
            v3_keys = given(self, "user", "auth_protocol", "priv_protocol", *USM_SECRETS)
            if v3_keys:
                raise ValueError(f"{', '.join(v3_keys)}: only for version 3")
        if not self.profiles and not self.oids:
            raise ValueError("nothing to read: give profiles (switch, ups, sensor, ...) or oids")
        if (self.ports or self.port_pattern) and "switch" not in self.profiles:
            raise ValueError("ports / port_pattern apply to the switch profile")
        if bool(self.sensors) != ("sensor" in self.profiles):
            raise ValueError("the sensor profile and `sensors:` go together")
        return self

    def community_secret(self) -> str | None:
        return pick_secret(self.community, self.community_env, self.community_file)

    def auth_secret(self) -> str | None:
        return pick_secret(self.auth_password, self.auth_password_env, self.auth_password_file)

    def priv_secret(self) -> str | None:
        return pick_secret(self.priv_password, self.priv_password_env, self.priv_password_file)

    def compiled_port_pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.port_pattern) if self.port_pattern else None

    def endpoint(self) -> tuple[str, int]:
        return parse_address(self.address)


def _profiles_of(config: SnmpTarget) -> list[Profile]:
    profiles = [PROFILES[name](config) for name in dict.fromkeys(config.profiles)]
    if config.oids:
        profiles.append(OidMapProfile(config))
    return profiles


class SnmpCollector(Collector[SnmpTarget]):
    """Polls one SNMP agent: one GET of the profiles' scalars, one walk of their columns."""

    kind: ClassVar[str] = "snmp"
    config_model: ClassVar[type[TargetConfig]] = SnmpTarget
    # Every fixed name; an instance's own (with its OID map) is set in __init__.
    metric_help: ClassVar[Mapping[str, str]] = {
        **UPTIME_HELP,
        **SwitchProfile.help_for(None),  # type: ignore[arg-type]
        **UpsProfile.help_for(None),  # type: ignore[arg-type]
    }

    def __init__(self, config: SnmpTarget, context: CollectorContext) -> None:
        super().__init__(config, context)
        self.metric_help = self.help_for(config)  # type: ignore[misc]
        self._profiles = _profiles_of(config)
        self._uptime = any(p.uses_uptime() for p in self._profiles)
        scalars: list[Oid] = [SYS_UPTIME] if self._uptime else []
        columns: list[Oid] = []
        label_columns: list[Oid] = []
        for p in self._profiles:
            scalars += p.scalars()
            columns += p.columns()
            label_columns += p.label_columns()
        scalars = list(dict.fromkeys(scalars))
        columns = list(dict.fromkeys(columns))
        label_columns = [c for c in dict.fromkeys(label_columns) if c not in columns]
        # Prepared once: numeric OIDs, BER-encoded, request templates cached in the Query.
        # The whole query reads the rows' names too; the lean one, used in between, does not.
        # Tables a profile walks apart, under a row cap of its own (the bridge profile's).
        self._capped = [
            (p, Query([], walk[0]), walk[1])
            for p in self._profiles
            if (walk := p.capped_walk()) is not None
        ]
        self._query = Query(scalars, columns + label_columns)
        self._lean_query = Query(scalars, columns) if label_columns else None
        self._labels_read_at: float | None = None  # monotonic time of the last whole walk
        self._host, self._port = config.endpoint()
        self._client: SnmpClient | None = None
        self._last_ok: float | None = None
        self._last_ticks: tuple[int, float] | None = None

    @classmethod
    def help_for(cls, config: SnmpTarget) -> dict[str, str]:
        helps: dict[str, str] = {}
        for p in _profiles_of(config):
            if p.uses_uptime():
                helps.update(UPTIME_HELP)
            helps.update(type(p).help_for(config) if p.name != "oids" else {})
        helps.update(OidMapProfile.help_of(list(config.oids)))
        return helps

    @classmethod
    def emits(cls, config: TargetConfig) -> set[str]:
        assert isinstance(config, SnmpTarget)
        return set(cls.help_for(config))

    @property
    def query(self) -> Query:
        return self._query

    def client(self) -> SnmpClient:
        """The client this target polls with (built on first use, kept between polls)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> SnmpClient:
        cfg = self.config
        # Give up a little before the scheduler does, so the reason says what failed.
        budget = cfg.timeout * 0.9
        if cfg.version != "3" and cfg.client == "fast":
            transport = self.context.shared(TRANSPORT_KEY, SnmpTransport, _close_transport)
            return FastClient(
                transport,
                self._host,
                self._port,
                VERSION_1 if cfg.version == "1" else VERSION_2C,
                cfg.community_secret() or "",
                budget,
                cfg.retries,
                cfg.max_repetitions,
            )
        from dutyd.collectors.snmp import v3  # pysnmp is loaded only when a target needs it

        return v3.make_client(self.context, cfg, self._host, self._port, budget)

    async def collect(self, readings: Readings) -> None:
        cfg = self.config
        started = time.monotonic()
        client = self.client()
        query = self._query_due(time.monotonic())
        scalar_values, column_values = await client.fetch(query, cfg.max_rows)
        now = time.monotonic()
        scalars = dict(zip(query.scalars, scalar_values, strict=True))
        columns = dict(zip(query.columns, column_values, strict=True))
        rebooted: bool | None = None
        if self._uptime:
            rebooted = self._uptime_samples(scalars.get(SYS_UPTIME), now, readings)
        elapsed = now - self._last_ok if self._last_ok is not None else None
        data = PollData(scalars, columns, elapsed, rebooted)
        if query is not self._query and (
            rebooted or not all(p.labels_known(data) for p in self._profiles)
        ):
            # A new row, or a restart (which may renumber the rows): walk again with the
            # names rather than label a row wrongly or leave it out. Forget when the names
            # were read first, so that a walk cut short here is whole next time.
            self._labels_read_at = None
            query = self._query
            _, column_values = await client.fetch(query, cfg.max_rows)
            data.columns = dict(zip(query.columns, column_values, strict=True))
        if query is self._query:
            self._labels_read_at = now
        for _, capped_query, max_rows in self._capped:
            left = cfg.timeout * 0.9 - (time.monotonic() - started)
            await self._walk_capped(client, capped_query, max_rows, left, data)
        for profile in self._profiles:
            profile.emit(data, readings)
        self._last_ok = now
        if self.facts_due:
            # Within what is left of the poll's time: the readings above must not be lost to
            # a slow inventory walk.
            left = cfg.timeout * 0.9 - (time.monotonic() - started)
            await self._read_facts(client, left)

    async def _walk_capped(
        self, client: SnmpClient, query: Query, max_rows: int, within: float, data: PollData
    ) -> None:
        """A profile's own walk within what is left of the poll: its columns in
        `data.capped`, or None and why in `data.capped_refused` (the target is not down for
        it: the rest of the poll was read)."""
        data.capped, data.capped_refused = None, ""
        if within <= 0:
            data.capped_refused = "no time left in the poll's timeout for the table walk"
            return
        try:
            async with asyncio.timeout(within):
                _, values = await client.fetch(query, max_rows)
        except TimeoutError:
            data.capped_refused = f"the table walk took longer than the {within:.1f}s left"
            return
        except CollectError as exc:
            data.capped_refused = str(exc)
            return
        data.capped = dict(zip(query.columns, values, strict=True))

    def take_forwarding(self) -> tuple[ForwardingTable | None, str] | None:
        """The bridge profile's last forwarding table (or None) and why it was refused ("" if
        not), once per poll; None without a bridge profile or when already taken."""
        for profile in self._profiles:
            if isinstance(profile, BridgeProfile):
                if profile.table is None and not profile.refused:
                    return None
                got = (profile.table, profile.refused)
                profile.table, profile.refused = None, ""
                return got
        return None

    async def _read_facts(self, client: SnmpClient, within: float) -> None:
        """The equipment register's facts. A device that will not tell (a walk cut short or
        too slow, an agent answering badly) is not down for it: tried again tomorrow."""
        self.facts_due = False
        if within <= 0:
            return
        try:
            async with asyncio.timeout(within):
                scalars, columns = await client.fetch(facts_query(), MAX_ENTITIES)
        except (CollectError, TimeoutError):
            return
        self.note_facts(facts_from(scalars, columns))

    def _query_due(self, now: float) -> Query:
        """The whole query when the rows' names are due (or there are none to leave out),
        else the lean one."""
        lean, read_at = self._lean_query, self._labels_read_at
        if lean is None or read_at is None or now - read_at >= self.config.label_refresh:
            return self._query
        return lean

    def _uptime_samples(self, ticks: object, now: float, readings: Readings) -> bool | None:
        if not isinstance(ticks, int):
            return None
        rebooted = False
        prev = self._last_ticks
        if prev is not None and ticks < prev[0]:
            # TimeTicks wrap after 497 days: backwards to where the wrap puts it is not a
            # restart. Anything else is.
            expected = prev[0] + (now - prev[1]) * 100.0
            slack = max(6000.0, (now - prev[1]) * 10.0)
            rebooted = not (expected >= TICKS_WRAP and abs(expected - TICKS_WRAP - ticks) < slack)
        self._last_ticks = (ticks, now)
        readings.add("device_uptime_seconds", ticks / 100.0)
        readings.add("device_rebooted", 1.0 if rebooted else 0.0)
        return rebooted

    def port_labels(self, if_index: int) -> dict[str, str] | bool | None:
        """The switch profile's labels of port `if_index` as last polled (see
        `SwitchProfile.port_labels`); False without a switch profile or before a poll."""
        for profile in self._profiles:
            if isinstance(profile, SwitchProfile):
                return profile.port_labels(if_index)
        return False

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


async def _close_transport(transport: SnmpTransport) -> None:
    await transport.close()
