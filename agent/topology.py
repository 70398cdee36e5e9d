"""Which device hangs off which switch: parents learned from LLDP neighbours, and the tree
`dutyd topology` prints from a config's `depends_on`.

LLDP says who is next to whom, not who is upstream. The tree is rooted at the switch next to
the most switches, and of those the one with the fewest other devices on it (the core, in a
star of access switches that servers hang off); each device's parent is the switch one step
nearer to the root, through the port that switch saw it on. Devices other than switches are
leaves: they hang off a switch, nothing hangs off them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    parent: str
    port: str  # the parent's port the child was seen on ("" when unknown)


def learn_parents(
    switches: Mapping[str, Sequence[tuple[str, str]]], known: Mapping[str, str]
) -> dict[str, Link]:
    """`switches`: target name -> its LLDP neighbours (local port, neighbour's sysName);
    `known`: sysName -> target name of every device found. Returns child -> Link."""
    adjacent: dict[str, dict[str, str]] = {}
    for switch, neighbours in switches.items():
        for port, sys_name in neighbours:
            other = known.get(sys_name)
            if other is None or other == switch:
                continue
            adjacent.setdefault(switch, {})[other] = port
            adjacent.setdefault(other, {}).setdefault(switch, "")
    parents: dict[str, Link] = {}
    seen: set[str] = set()

    # Roots: per connected part, the switch next to the most switches (the core: access
    # switches hang off it), then the one with the fewest other devices on it (servers and
    # UPS units hang off access switches).
    def rank(s: str) -> tuple[int, int, str]:
        near = adjacent.get(s, {})
        by_switches = sum(1 for n in near if n in switches)
        return (-by_switches, len(near) - by_switches, s)

    for root in sorted(switches, key=rank):
        if root in seen or root not in adjacent:
            continue
        seen.add(root)
        queue = deque([root])
        while queue:
            node = queue.popleft()
            if node not in switches:
                continue  # not a switch: a leaf
            for other, port in sorted(adjacent.get(node, {}).items()):
                if other in seen:
                    continue
                seen.add(other)
                parents[other] = Link(node, port)
                queue.append(other)
    return parents


def render_tree(parents: Mapping[str, Sequence[str]], names: Sequence[str]) -> str:
    """The targets as a tree by their first parent (another parent is noted), in config order;
    a target whose parents form a loop is shown once, at its first place."""
    children: dict[str, list[str]] = {}
    for name in names:
        for parent in parents.get(name, ())[:1]:
            children.setdefault(parent, []).append(name)
    roots = [n for n in names if not parents.get(n) or parents[n][0] not in names]
    lines: list[str] = []
    shown: set[str] = set()

    def walk(name: str, prefix: str, last: bool, top: bool) -> None:
        also = [p for p in parents.get(name, ())[1:]]
        note = f"  (also depends on {', '.join(also)})" if also else ""
        branch = "" if top else ("└── " if last else "├── ")
        lines.append(f"{prefix}{branch}{name}{note}")
        if name in shown:
            return
        shown.add(name)
        kids = children.get(name, [])
        inner = prefix + ("" if top else ("    " if last else "│   "))
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    for name in names:  # in a loop of parents: never reached from a root
        if name not in shown:
            walk(name, "", True, True)
    return "\n".join(lines)
