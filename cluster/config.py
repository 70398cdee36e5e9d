"""The `cluster:` section: this node's name, the takeover bound, shards, the dead man's
switch."""

from __future__ import annotations

import socket

from pydantic import Field, SecretStr, model_validator

from dutyd.core.configtypes import (
    PositiveDuration,
    SecretEnv,
    SecretFile,
    StrictModel,
    pick_secret,
)


class DeadManConfig(StrictModel):
    """A heartbeat to an external watchdog, so someone is paged when dutyd itself goes
    silent (as Alertmanager's always-firing Watchdog alert does)."""

    # An HTTP(S) URL pinged with GET (healthchecks.io, Uptime Kuma push, ...) or an apprise
    # URL (json://, mailto://, ...) notified with a short "alive" message. The URL is itself
    # a credential (whoever has it can ping): url_env / url_file keep it out of the config,
    # and it is never logged (only its scheme and host).
    url: SecretStr | None = None
    url_env: SecretEnv | None = None
    url_file: SecretFile | None = None
    every: PositiveDuration = 60.0
    timeout: PositiveDuration = 10.0
    # Page through this node's own channels (the `escalation`/`oncall` of the config) when a
    # peer's heartbeat row is older than this. None: do not watch the peers.
    peer_gone_after: PositiveDuration | None = 60.0
    # The event loop is stalled when a 0.5 s timer fires this much late.
    stall_after: PositiveDuration = 2.0

    @model_validator(mode="after")
    def _one_url(self) -> DeadManConfig:
        if sum(x is not None for x in (self.url, self.url_env, self.url_file)) > 1:
            raise ValueError("give at most one of url, url_env, url_file")
        return self

    def secret_url(self) -> str:
        """The ping URL ("" when there is none)."""
        return pick_secret(self.url, self.url_env, self.url_file) or ""


class ClusterConfig(StrictModel):
    # Off: one node alone, active all the time (SQLite or PostgreSQL).
    enabled: bool = False
    node: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    # Where this node's HTTP face answers, shown to the peers and by `dutyd cluster status`.
    address: str = ""
    # A standby takes over within this time when the active node dies or hangs: the lease
    # lasts 2/3 of it and every node tries to take or renew it every 1/6 of it.
    takeover: PositiveDuration = 15.0
    # A member is live while its heartbeat row is younger than this.
    member_timeout: PositiveDuration = 30.0
    # Split the targets among the live members (agents) by consistent hashing; off: every
    # node polls every target (the warm standby of a pair).
    shards: bool = False
    # Pin this node to a shard: targets with the same `shard:` go to it (a branch room).
    shard: str | None = None
    # How often a node reads what the others wrote (acks, silences, alerts, targets' status).
    sync_every: PositiveDuration = 2.0
    deadman: DeadManConfig = Field(default_factory=DeadManConfig)

    @model_validator(mode="after")
    def _bounds(self) -> ClusterConfig:
        if self.member_timeout < self.takeover / 6 * 2:
            raise ValueError("member_timeout must cover at least two heartbeats (takeover/3)")
        return self

    @property
    def lease_ttl(self) -> float:
        return self.takeover * 2 / 3

    @property
    def period(self) -> float:
        return self.takeover / 6
