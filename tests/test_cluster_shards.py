"""The shard map (`dutyd.cluster.shards.assign`): pure logic, no store.

Every agent computes the map on its own from the same inputs (the configured targets and the
live members read from the store), so the map must be a function of those inputs only: not of
their order, not of the process's hash seed. Pinned targets (`shard: X`) go to the agents of
shard X, or to the common pool when none of them is alive; when an agent leaves, only its
targets move.
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys

import pytest

from dutyd.cluster.shards import HashRing, assign

POOL = None


def unpinned(n: int, prefix: str = "t") -> dict[str, str | None]:
    return {f"{prefix}{i:04d}": None for i in range(n)}


def moved(before: dict[str, str | None], after: dict[str, str | None]) -> set[str]:
    return {t for t in before if before[t] != after[t]}


def test_pinned_targets_go_to_an_agent_of_their_shard() -> None:
    members = {"hq-1": POOL, "hq-2": POOL, "branch-a1": "branch-a", "branch-a2": "branch-a"}
    targets = {**unpinned(200), **{f"a-ups{i}": "branch-a" for i in range(40)}}
    out = assign(targets, members)
    for target, shard in targets.items():
        owner = out[target]
        if shard == "branch-a":
            assert owner in ("branch-a1", "branch-a2"), (target, owner)
        else:
            # Unpinned targets stay in the common pool: a branch agent watches its own room.
            assert owner in ("hq-1", "hq-2"), (target, owner)
    # Both agents of the branch share its targets (consistent hashing spreads them).
    branch = collections.Counter(out[t] for t, s in targets.items() if s == "branch-a")
    assert set(branch) == {"branch-a1", "branch-a2"}, branch


def test_pinned_targets_fall_back_to_the_pool_when_no_agent_of_their_shard_is_alive() -> None:
    targets = {**unpinned(100), **{f"a-ups{i}": "branch-a" for i in range(30)}}
    with_branch = assign(targets, {"hq-1": POOL, "hq-2": POOL, "branch-a1": "branch-a"})
    without = assign(targets, {"hq-1": POOL, "hq-2": POOL})
    pinned = [t for t, s in targets.items() if s == "branch-a"]
    assert all(with_branch[t] == "branch-a1" for t in pinned)
    # The branch agent is down: the head office polls its room rather than nobody, spread
    # over the pool, and the unpinned targets do not move (the branch agent had none).
    assert {without[t] for t in pinned} == {"hq-1", "hq-2"}
    assert all(without[t] == with_branch[t] for t, s in targets.items() if s is None)
    # A shard nobody is configured for at all is polled by the pool too.
    orphan = assign({"x": "branch-z"}, {"hq-1": POOL, "branch-a1": "branch-a"})
    assert orphan == {"x": "hq-1"}


def test_without_a_pool_everything_goes_to_any_live_agent() -> None:
    targets = {**unpinned(50), "b-ups": "branch-b"}
    out = assign(targets, {"branch-a1": "branch-a", "branch-a2": "branch-a"})
    assert set(out.values()) == {"branch-a1", "branch-a2"}
    assert out["b-ups"] in ("branch-a1", "branch-a2")


def test_no_live_member_assigns_nobody() -> None:
    assert assign({"a": None, "b": "branch-a"}, {}) == {"a": None, "b": None}
    assert HashRing([]).owner("a") is None


@pytest.mark.parametrize("n", [2, 3, 5])
def test_when_one_of_n_agents_leaves_only_its_targets_move(n: int) -> None:
    targets = unpinned(3000)
    members = {f"agent-{i}": POOL for i in range(n)}
    before = assign(targets, members)
    counts = collections.Counter(before.values())
    # An even enough split: each agent has its share within a wide band.
    assert set(counts) == set(members)
    assert all(0.5 / n <= c / len(targets) <= 1.6 / n for c in counts.values()), counts
    for leaver in members:
        after = assign(targets, {m: s for m, s in members.items() if m != leaver})
        changed = moved(before, after)
        # Exactly the leaver's targets move, about 1/n of them; the others stay put.
        assert changed == {t for t, owner in before.items() if owner == leaver}
        assert leaver not in after.values()
        assert 0.5 / n <= len(changed) / len(targets) <= 1.6 / n, (leaver, len(changed))
        # It coming back moves exactly those targets back.
        assert assign(targets, members) == before


def test_when_an_agent_joins_only_targets_it_takes_move() -> None:
    targets = unpinned(3000)
    three = {"agent-0": POOL, "agent-1": POOL, "agent-2": POOL}
    before = assign(targets, three)
    after = assign(targets, {**three, "agent-3": POOL})
    changed = moved(before, after)
    assert all(after[t] == "agent-3" for t in changed)
    assert 0.5 / 4 <= len(changed) / len(targets) <= 1.6 / 4, len(changed)


def test_a_branch_agent_leaving_moves_only_its_branch_targets_within_the_branch() -> None:
    targets = {**unpinned(300), **{f"a-dev{i:03d}": "branch-a" for i in range(300)}}
    members = {"hq-1": POOL, "hq-2": POOL, "a1": "branch-a", "a2": "branch-a", "a3": "branch-a"}
    before = assign(targets, members)
    after = assign(targets, {m: s for m, s in members.items() if m != "a2"})
    changed = moved(before, after)
    assert changed == {t for t, owner in before.items() if owner == "a2"}
    assert {after[t] for t in changed} <= {"a1", "a3"}  # not to the head office


def test_deterministic_whatever_the_order_of_the_inputs() -> None:
    targets = {**unpinned(500), **{f"a-dev{i}": "branch-a" for i in range(50)}}
    members = {"hq-1": POOL, "hq-2": POOL, "hq-3": POOL, "a1": "branch-a", "a2": "branch-a"}
    first = assign(targets, members)
    rng = random.Random(11)
    for _ in range(5):
        t_items, m_items = list(targets.items()), list(members.items())
        rng.shuffle(t_items)
        rng.shuffle(m_items)
        assert assign(dict(t_items), dict(m_items)) == first
    # Same again on repeated calls.
    assert assign(targets, members) == first


def test_every_process_computes_the_same_map_whatever_its_hash_seed() -> None:
    """The agents are separate processes: the map must not depend on Python's per-process
    string hash randomisation (it uses blake2b, not `hash()`)."""
    script = (
        "import json\n"
        "from dutyd.cluster.shards import assign\n"
        "t = {f't{i}': (None if i % 3 else 'branch-a') for i in range(400)}\n"
        "m = {'hq-1': None, 'hq-2': None, 'hq-3': None, 'a1': 'branch-a', 'a2': 'branch-a'}\n"
        "print(json.dumps(assign(t, m), sort_keys=True))\n"
    )
    maps = []
    for seed in ("1", "2", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=60,
            check=True,
        )
        maps.append(json.loads(out.stdout))
    assert maps[0] == maps[1] == maps[2]
    assert set(maps[0].values()) == {"hq-1", "hq-2", "hq-3", "a1", "a2"}
