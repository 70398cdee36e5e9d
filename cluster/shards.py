"""Consistent hashing of targets over the live members: when a member joins or leaves, only
the targets on its arcs move (about 1/n of them), the others stay where they are polled."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping

# Points per member on the ring: enough for an even split of a few hundred targets.
VNODES = 64


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, members: Iterable[str], vnodes: int = VNODES) -> None:
        points = sorted((_hash(f"{m}#{i}"), m) for m in set(members) for i in range(vnodes))
        self._keys = [p[0] for p in points]
        self._members = [p[1] for p in points]

    def owner(self, key: str) -> str | None:
        if not self._keys:
            return None
        i = bisect.bisect(self._keys, _hash(key)) % len(self._keys)
        return self._members[i]


def assign(
    targets: Mapping[str, str | None], members: Mapping[str, str | None]
) -> dict[str, str | None]:
    """target -> member. `targets` maps a target to its pinned shard (or None), `members` a
    live member to its shard (or None). A pinned target goes to the members of its shard, and
    to the common pool when none of them is live (a branch agent down: the head office polls
    its room rather than nobody); an unpinned one to the members without a shard, else to any
    live member. None only when no member is live."""
    by_shard: dict[str | None, list[str]] = {}
    for member, shard in members.items():
        by_shard.setdefault(shard, []).append(member)
    rings = {shard: HashRing(names) for shard, names in by_shard.items()}
    everyone = HashRing(members)
    out: dict[str, str | None] = {}
    for target, shard in targets.items():
        ring = rings.get(shard) or rings.get(None) or everyone
        out[target] = ring.owner(target)
    return out
