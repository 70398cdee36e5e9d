"""Several dutyd nodes on one shared store: an HA pair (every node polls, one notifies) and
shards (agents split the targets). Imports core and storage only; the daemon wires it and
hands plain callables (`is_active`, `sender`, `owns`) to notify, duty and web.

Why a lease row and not an advisory lock. PostgreSQL's `pg_advisory_lock` belongs to a
session: it is held as long as the holder's connection lives and released the moment it
drops. Both ends of that are wrong for choosing the notifier:

- A hung node (SIGSTOP, a stuck event loop, a frozen VM) keeps its TCP connection open, so
  it keeps the lock for as long as the kernel keeps the socket - minutes to hours - and no
  standby takes over: exactly the failure the pair exists for.
- A network blip or a PostgreSQL restart drops the connection and hands the lock to the
  peer at once, while the old holder, which has not noticed yet, still sends.
- A lock carries no number, so a node cannot prove to the outbox that it is still the one.

The lease is a row (`cluster_leases`): holder, expiry on the database's clock, and an epoch
that rises each time the lease changes hands. The holder renews it every few seconds; when it
stops renewing - dead, hung or cut off - the lease runs out and a standby takes it within the
configured bound, whatever the state of the old holder's sockets. The epoch is the fencing
token: every write the active node makes (alert rows, duty log, rule events, outbox claims,
retries, deliveries, drops) carries it and the store refuses, in the write's own transaction,
any below the highest epoch it has seen (raised when the lease changes hands), so a node that
was frozen, cut off or waiting out a database outage and continues can neither send nor
write, even before it notices it lost the lease; claims of an older epoch are void, so the
new active sends those messages at once. A node is active (its epoch in hand) before it loads
the shared state at takeover (`ClusterNode._promote`). A node also stops sending on its own
as soon as its lease would have run out by its own monotonic clock. Advisory locks are still
the right tool for one job: the schema migration at start, which is short and should end when
its session ends.

Shards. An agent records its own targets' alerts, which no lease covers; its writes carry its
member epoch instead (`storage.records.MEMBER_EPOCH_BASE`: from 2**40, so the store tells the
two kinds apart), drawn from the store with its heartbeat when it joins, and again when its
heartbeat row had grown older than `member_timeout` (the others counted it dead and took its
targets) or it restarted. The store refuses, in the write's transaction, a member epoch whose
row is gone, has another epoch, or is older than its member timeout: an agent that was
frozen and continues cannot write its stale view, before or after its next heartbeat. It
uses a new epoch only once it has applied the shard map read with it (`ClusterNode.
_read_members`), and takes its targets' alerts back from the store (`ha._on_shards`).
"""

from __future__ import annotations

from dutyd.cluster.config import ClusterConfig, DeadManConfig
from dutyd.cluster.node import ClusterNode, Node, SoloNode, build_node
from dutyd.cluster.shards import HashRing, assign

__all__ = [
    "ClusterConfig",
    "ClusterNode",
    "DeadManConfig",
    "HashRing",
    "Node",
    "SoloNode",
    "assign",
    "build_node",
]
