"""The `traps:` section: the SNMP trap and inform listener (off unless the section is given).

    traps:
      listen: 127.0.0.1          # the address to bind; 0.0.0.0 for every interface
      port: 9162                 # 162 is the standard port, but needs privileges (README)
      relays: [10.0.9.5]         # trap proxies whose agent-addr / snmpTrapAddress.0 count
      communities:               # v1/v2c, each for the targets it may speak for
        - {community_file: /run/secrets/trap-community, targets: ["ups-*"]}
      users:                     # v3 users, with the same fields as a v3 target's
        - user: traps
          auth_protocol: SHA256
          auth_password_env: TRAP_AUTH
          priv_protocol: AES128
          priv_password_env: TRAP_PRIV
          targets: [ups-a, ups-b]
      maps:                      # your own traps -> samples on the sending target
        - trap: 1.3.6.1.4.1.99999.0.7
          metric: pdu_breaker_tripped
          value: 1

A trap speaks for the target at its datagram's source address (a relay's forwarded address
only when it comes from one of `relays`), and only with a credential configured for that
target: a community or user's `targets` (names or shell-style patterns), or the target's own
polling community / v3 user (`accept_target_credentials`), which speaks for that target alone.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from dutyd.collectors.snmp.codec import format_oid, parse_oid
from dutyd.collectors.snmp.usm import (
    AuthProtocol,
    PrivProtocol,
    check_usm,
)
from dutyd.core.configtypes import (
    LabelMap,
    SecretEnv,
    SecretFile,
    StrictModel,
    check_metric_name,
    pick_secret,
)

DEFAULT_TRAP_PORT = 9162

TARGETS_DESCRIPTION = (
    "The targets this credential may send traps for: target names, or shell-style patterns "
    "(`ups-*`; `*` is every target). A trap about any other target is dropped (wrong_target)."
)


def _target_patterns(v: list[str]) -> list[str]:
    for pattern in v:
        if not pattern.strip():
            raise ValueError("an empty target name")
    return v


def covers(patterns: Iterable[str], target: str) -> bool:
    """Whether a credential's `targets` include the target named `target`."""
    return any(fnmatch.fnmatchcase(target, p) for p in patterns)


class TrapUser(StrictModel):
    """An SNMPv3 user traps and informs may come from (fields as for a v3 target)."""

    user: str = Field(min_length=1, max_length=32, description="USM user name.")
    auth_protocol: AuthProtocol | None = Field(default=None, description="As for polling.")
    auth_password: SecretStr | None = None
    auth_password_env: SecretEnv | None = None
    auth_password_file: SecretFile | None = None
    priv_protocol: PrivProtocol | None = Field(default=None, description="As for polling.")
    priv_password: SecretStr | None = None
    priv_password_env: SecretEnv | None = None
    priv_password_file: SecretFile | None = None
    engine_ids: list[str] = Field(
        default_factory=list,
        description="Only traps from these authoritative engine IDs (hex, e.g. 80001f88...); "
        "empty: any engine that authenticates as this user.",
    )
    targets: list[str] = Field(min_length=1, description=TARGETS_DESCRIPTION)

    _targets = field_validator("targets")(_target_patterns)

    @field_validator("engine_ids")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        out = []
        for text in v:
            clean = text.strip().lower().removeprefix("0x").replace(":", "")
            try:
                raw = bytes.fromhex(clean)
            except ValueError:
                raise ValueError(f"{text!r} is not a hex engine ID") from None
            if not 5 <= len(raw) <= 32:
                raise ValueError(f"{text!r}: an engine ID is 5 to 32 octets (RFC 3411)")
            out.append(clean)
        return out

    @model_validator(mode="after")
    def _consistent(self) -> TrapUser:
        check_usm(self)
        return self

    def auth_secret(self) -> str | None:
        return pick_secret(self.auth_password, self.auth_password_env, self.auth_password_file)

    def priv_secret(self) -> str | None:
        return pick_secret(self.priv_password, self.priv_password_env, self.priv_password_file)

    def engine_id_bytes(self) -> list[bytes]:
        return [bytes.fromhex(e) for e in self.engine_ids]


class TrapCommunity(StrictModel):
    """A v1/v2c community traps may come with, and the targets it may speak for."""

    community: SecretStr | None = None
    community_env: SecretEnv | None = None
    community_file: SecretFile | None = None
    targets: list[str] = Field(min_length=1, description=TARGETS_DESCRIPTION)

    _targets = field_validator("targets")(_target_patterns)

    @model_validator(mode="after")
    def _one_secret(self) -> TrapCommunity:
        given = [self.community, self.community_env, self.community_file]
        if sum(v is not None for v in given) != 1:
            raise ValueError("give one of community, community_env or community_file")
        if not self.secret():
            raise ValueError("the community is empty")
        return self

    def secret(self) -> bytes:
        return (pick_secret(self.community, self.community_env, self.community_file) or "").encode()


class TrapMap(StrictModel):
    """A trap of your own becoming a sample on the target that sent it."""

    trap: str = Field(
        description="The trap OID (SNMPv2 snmpTrapOID; a v1 trap's is enterprise.0.specific)."
    )
    metric: str = Field(min_length=1, max_length=200, description="The sample name.")
    value: float | None = Field(
        default=None, allow_inf_nan=False, description="A constant value (1 for 'it happened')."
    )
    varbind: str | None = Field(
        default=None,
        description="Or the value of the varbind whose OID starts with this one (a number).",
    )
    scale: float = Field(default=1.0, allow_inf_nan=False, description="Applied to `varbind`.")
    labels: LabelMap = Field(default_factory=dict, description="Fixed labels of the sample.")

    @field_validator("trap", "varbind")
    @classmethod
    def _oid(cls, v: str | None) -> str | None:
        return None if v is None else format_oid(parse_oid(v))

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return check_metric_name(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        reserved = {"target", "kind"} & set(v)
        if reserved:
            raise ValueError(f"{', '.join(sorted(reserved))}: set by dutyd from the target")
        return v

    @model_validator(mode="after")
    def _one_value(self) -> TrapMap:
        if (self.value is None) == (self.varbind is None):
            raise ValueError("give either value (a constant) or varbind (read from the trap)")
        return self


class TrapsConfig(StrictModel):
    """The SNMP trap/inform listener. Absent: no listener."""

    enabled: bool = Field(default=True, description="false keeps the section but no listener.")
    listen: str = Field(default="127.0.0.1", min_length=1, description="Address to bind.")
    port: int = Field(default=DEFAULT_TRAP_PORT, ge=0, le=65535, description="UDP port.")
    relays: list[str] = Field(
        default_factory=list,
        description="Trusted trap relays (addresses or CIDR networks): only from these are a "
        "v1 agent-addr and snmpTrapAddress.0 taken as the trap's origin; from anywhere else "
        "the datagram's source address is.",
    )
    communities: list[TrapCommunity] = Field(
        default_factory=list, description="Accepted v1/v2c communities, each with its targets."
    )
    users: list[TrapUser] = Field(default_factory=list, description="Accepted v3 users.")
    accept_target_credentials: bool = Field(
        default=True,
        description="Also accept each kind: snmp target's own community or v3 user, for "
        "traps about that target alone.",
    )
    maps: list[TrapMap] = Field(default_factory=list, description="Your own traps -> samples.")
    max_per_source: float = Field(
        default=100.0,
        gt=0,
        le=100_000,
        description="Notifications per second one source may send; more are dropped and "
        "counted (a burst of 5 seconds' worth passes).",
    )
    max_total: float = Field(
        default=1000.0,
        gt=0,
        le=1_000_000,
        description="Notifications per second from all sources together (a burst of 5 "
        "seconds' worth); more are dropped and counted, so a flood from many addresses "
        "is bounded too.",
    )

    @field_validator("communities", mode="before")
    @classmethod
    def _no_bare_communities(cls, v: Any) -> Any:
        if isinstance(v, list) and any(isinstance(c, str) for c in v):
            # The old form spoke for every target; say what to write instead (without the
            # community itself, a secret).
            raise ValueError(
                "a community names the targets it may speak for: "
                "{community_env: NAME, targets: [ups-a, ...]} (community, community_env or "
                "community_file)"
            )
        return v

    @field_validator("relays")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or network") from None
        return [t.strip() for t in v]

    @model_validator(mode="after")
    def _users_unique(self) -> TrapsConfig:
        names = [u.user for u in self.users]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"v3 user {', '.join(dupes)} is listed twice")
        return self

    def relay_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(r, strict=False) for r in self.relays]


def target_problems(traps: Any, targets: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """`traps.communities[].targets` and `traps.users[].targets` entries that match no
    `kind: snmp` target (checked on the raw config, with the other cross-references)."""
    if not isinstance(traps, Mapping):
        return []
    known = [
        t["name"]
        for t in (targets if isinstance(targets, list) else [])
        if isinstance(t, Mapping) and t.get("kind") == "snmp" and isinstance(t.get("name"), str)
    ]
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for key in ("communities", "users"):
        entries = traps.get(key)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            patterns = entry.get("targets") if isinstance(entry, Mapping) else None
            for j, pattern in enumerate(patterns if isinstance(patterns, list) else []):
                if not isinstance(pattern, str) or pattern == "*":  # "*": all, even none
                    continue
                if not any(covers([pattern], n) for n in known):
                    problems.append(
                        (("traps", key, i, "targets", j), f"no snmp target matches {pattern!r}")
                    )
    return problems
