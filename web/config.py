"""The HTTP face's configuration: where it listens, who may read and who may write."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from dutyd.core.configtypes import (
    PositiveDuration,
    SecretEnv,
    SecretFile,
    StrictModel,
    pick_secret,
)
from dutyd.web.frontdoor import DoorLimits, trusted_networks

DEFAULT_PORT = 8646  # outside Prometheus's exporter range (9100-9999), which is fully allocated


class HttpConfig(StrictModel):
    """`http:` where the server listens (127.0.0.1 unless configured)."""

    listen: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    # Prometheus-style web config (TLS, basic auth with bcrypt hashes); see web/server.py.
    web_config_file: Path | None = None
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host header names accepted besides loopback ones (localhost, 127.0.0.1, [::1]), "
            "e.g. the public name a reverse proxy forwards or a DNS alias; any other Host is "
            "refused (421), which stops DNS rebinding. On a non-loopback listen address IP "
            "literals and this host's own names (hostname, FQDN) are accepted as well."
        ),
    )

    # The front door (web/frontdoor.py): what a client may hold open.
    header_timeout: PositiveDuration = Field(
        default=10.0,
        description="A connection's request headers (TLS handshake included) must be complete "
        "this long after it opens, or after the end of its last request plus idle_timeout.",
    )
    idle_timeout: PositiveDuration = Field(
        default=15.0, description="An idle keep-alive connection is closed after this long."
    )
    max_connections: int = Field(
        default=256,
        ge=8,
        description="Open connections in all; at most a quarter of the open-file limit is used.",
    )
    max_connections_per_client: int = Field(
        default=16, ge=1, description="Open connections from one client address."
    )
    reserved_connections: int = Field(
        default=16,
        ge=0,
        description="The last connections of max_connections, kept for trusted_clients.",
    )
    trusted_clients: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description="Addresses (or networks) of the supervisor asking /healthz and of the "
        "Prometheus servers scraping /metrics: they keep reserved_connections.",
    )

    def door_limits(self) -> DoorLimits:
        """The front door's limits as configured (the daemon fits them to its file limit)."""
        return DoorLimits(
            header_timeout=self.header_timeout,
            idle_timeout=self.idle_timeout,
            max_connections=self.max_connections,
            max_per_client=self.max_connections_per_client,
            reserved=self.reserved_connections,
            trusted=trusted_networks(self.trusted_clients),
        )

    @field_validator("trusted_clients")
    @classmethod
    def _networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return entries

    @model_validator(mode="after")
    def _reserve_fits(self) -> HttpConfig:
        if self.reserved_connections >= self.max_connections:
            raise ValueError("reserved_connections must be below max_connections")
        return self

    @field_validator("web_config_file")
    @classmethod
    def _web_config_valid(cls, path: Path | None) -> Path | None:
        # Checked with the rest of the config, so a bad file is refused before any restart.
        if path is not None:
            from dutyd.web.server import load_web_config

            load_web_config(path)
        return path

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not host or any(c in host for c in "/@?# ") or host.count(":") == 1:
                raise ValueError(f"{host!r} is not a host name (no scheme, port or path)")
        return [h.lower().strip("[]") for h in hosts]


class ApiConfig(StrictModel):
    """`api:` the JSON API and the status page's data.

    Writes (ack, silence, maintenance, drill) need the API token; reads (alerts, duty log, who
    is on duty) need the API token, the read-only token (a wall screen) or a basic-auth login.
    Send a token as `X-Dutyd-Token: <token>` (or `Authorization: Bearer <token>` when basic
    auth is off). `open_loopback_reads: true` lets local processes read without a credential:
    leave it off when a reverse proxy on the same host forwards to dutyd.
    """

    token: SecretStr | None = None
    token_env: SecretEnv | None = None
    token_file: SecretFile | None = None
    read_token: SecretStr | None = None
    read_token_env: SecretEnv | None = None
    read_token_file: SecretFile | None = None
    open_loopback_reads: bool = False

    def secret(self) -> str:
        return pick_secret(self.token, self.token_env, self.token_file) or ""

    def read_secret(self) -> str:
        return pick_secret(self.read_token, self.read_token_env, self.read_token_file) or ""
