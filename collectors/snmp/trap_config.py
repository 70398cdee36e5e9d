"""The `traps:` section: the SNMP trap and inform listener (off unless the section is given).

    traps:
      listen: 127.0.0.1          # the address to bind; 0.0.0.0 for every interface
      port: 9162                 # 162 is the standard port, but needs privileges (README)
      communities_file: /run/secrets/trap-communities   # one per line (v1/v2c)
      users:                     # v3 users, with the same fields as a v3 target's
        - user: traps
          auth_protocol: SHA256
          auth_password_env: TRAP_AUTH
          priv_protocol: AES128
          priv_password_env: TRAP_PRIV
      maps:                      # your own traps -> samples on the sending target
        - trap: 1.3.6.1.4.1.99999.0.7
          metric: pdu_breaker_tripped
          value: 1

The communities and v3 users of the `kind: snmp` targets are accepted too
(`accept_target_credentials`), so a device polled with a community may send its traps with it.
"""

from __future__ import annotations

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
    communities: list[SecretStr] = Field(
        default_factory=list, description="Accepted v1/v2c communities, literally."
    )
    communities_file: SecretFile | None = Field(
        default=None, description="A file of accepted communities, one per line."
    )
    users: list[TrapUser] = Field(default_factory=list, description="Accepted v3 users.")
    accept_target_credentials: bool = Field(
        default=True,
        description="Also accept the communities and v3 users of the kind: snmp targets.",
    )
    maps: list[TrapMap] = Field(default_factory=list, description="Your own traps -> samples.")
    max_per_source: float = Field(
        default=100.0,
        gt=0,
        le=100_000,
        description="Notifications per second one source may send; more are dropped and "
        "counted (a burst of 5 seconds' worth passes).",
    )

    @model_validator(mode="after")
    def _users_unique(self) -> TrapsConfig:
        names = [u.user for u in self.users]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"v3 user {', '.join(dupes)} is listed twice")
        return self

    def community_set(self) -> set[bytes]:
        out = {c.get_secret_value().encode() for c in self.communities}
        if self.communities_file is not None:
            for line in self.communities_file.get_secret_value().splitlines():
                if line.strip():
                    out.add(line.strip().encode())
        return out
