"""`dutyd cluster status`: the cluster as the shared store sees it (members, the active node,
the lease's age, the shard map), read from the store of the config, so it works on any
machine with the config, also when the local daemon is down."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from dutyd.agent.config import Settings, load_config
from dutyd.cluster import assign
from dutyd.cluster.node import NOTIFIER
from dutyd.core.errors import ConfigError
from dutyd.core.redact import redact_address
from dutyd.storage import StorageError, open_configured


async def cluster_status(settings: Settings) -> dict[str, Any]:
    """What `dutyd cluster status` prints, as data."""
    cfg = settings.cluster
    storage = open_configured(settings.storage, read_only=True)
    await storage.open()
    try:
        members, now = await storage.cluster.members()
        lease = await storage.cluster.lease(NOTIFIER)
        published = await storage.cluster.target_statuses()
    finally:
        await storage.close()
    live = {m.node: m.shard for m in members if now - m.last_seen <= cfg.member_timeout}
    if cfg.shards:
        assignment = assign({t.name: t.shard for t in settings.targets}, live)
    else:
        assignment = {t.name: "(every node)" for t in settings.targets}
    shard_map: dict[str, int] = {}
    for owner in assignment.values():
        shard_map[owner or "(nobody)"] = shard_map.get(owner or "(nobody)", 0) + 1
    polled_by: dict[str, int] = {}
    for row in published:
        if now - row.updated <= cfg.member_timeout:
            polled_by[row.node] = polled_by.get(row.node, 0) + 1
    held = lease is not None and lease.holder != "" and lease.expires > lease.now
    return {
        "store": redact_address(str(settings.storage.location)),
        "active_node": lease.holder if held and lease else None,
        "epoch": lease.epoch if lease else 0,
        "lease_age": round(lease.now - lease.acquired, 1) if held and lease else None,
        "lease_expires_in": round(lease.expires - lease.now, 1) if held and lease else None,
        "members": [
            {
                "node": m.node,
                "address": m.address,
                "shard": m.shard,
                "last_seen_age": round(now - m.last_seen, 1),
                "live": m.node in live,
                "up_since": m.started,
            }
            for m in members
        ],
        "sharded": cfg.shards,
        "shard_map": dict(sorted(shard_map.items())),
        "targets_reported": dict(sorted(polled_by.items())),
    }


def _print(status: dict[str, Any]) -> None:
    active = status["active_node"]
    print(f"store: {status['store']}")
    if active:
        print(
            f"active node: {active} (epoch {status['epoch']}, lease held "
            f"{status['lease_age']:.0f}s, runs out in {status['lease_expires_in']:.1f}s "
            "unless renewed)"
        )
    else:
        print(f"active node: NONE (epoch {status['epoch']}): nobody sends pages")
    print(f"{'NODE':<20} {'LIVE':<5} {'LAST SEEN':>10}  {'SHARD':<12} {'TARGETS':>7}  ADDRESS")
    for m in status["members"]:
        count = status["shard_map"].get(m["node"], 0) if status["sharded"] else "all"
        mark = "*" if m["node"] == active else " "
        print(
            f"{mark}{m['node']:<19} {'yes' if m['live'] else 'NO':<5} "
            f"{m['last_seen_age']:>8.1f}s  {m['shard'] or '-':<12} {count!s:>7}  {m['address']}"
        )
    if status["sharded"] and status["shard_map"].get("(nobody)"):
        print(f"targets nobody polls: {status['shard_map']['(nobody)']}")


def cmd_cluster_status(args: argparse.Namespace) -> int:
    try:
        settings = load_config(args.config)
        status = asyncio.run(cluster_status(settings))
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"dutyd: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
    else:
        _print(status)
    return 0 if status["active_node"] else 1


def add_cluster_commands(sub: Any) -> None:
    p = sub.add_parser("cluster", help="the HA pair and shards: members, active node, shards")
    csub = p.add_subparsers(dest="cluster_command", required=True)
    s = csub.add_parser("status", help="members, the active node, the lease's age, the shard map")
    s.add_argument("-c", "--config", required=True, help="the config file (its storage)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_cluster_status)
