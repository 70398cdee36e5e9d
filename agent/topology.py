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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dutyd.collectors.base import TargetConfig
from dutyd.core.records import Sample
from dutyd.rules.matchers import label_of


@dataclass(frozen=True)
class Link:
    parent: str
    port: str  # the parent's port the child was seen on ("" when unknown)
    how: str = "LLDP"  # or "bridge": its MAC in the parent's forwarding table


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


# A change of a learned parent: (target, the link before, the link now); None: none.
Change = tuple[str, Link | None, Link | None]


class LearnedTopology:
    """The parents of `depends_on: auto` targets, from the `lldp_neighbour` samples of the
    switches polled with the `lldp` profile. A neighbour is known by its sysName, which is
    the target's name (as `dutyd discover` writes it)."""

    def __init__(
        self, targets: Iterable[TargetConfig], before: LearnedTopology | None = None
    ) -> None:
        targets = list(targets)
        self.names = {t.name for t in targets}
        self.auto = {t.name for t in targets if t.learns_parents}
        self.switches = {t.name for t in targets if "lldp" in getattr(t, "profiles", ())}
        self.configured = {t.name: t.configured_parents for t in targets}
        # What the switches said, kept over a reload (the new config may keep them).
        self.neighbours: dict[str, tuple[tuple[str, str], ...]] = {}
        self.links: dict[str, Link] = {}
        # Switches polled at least once (answered or not): nothing is learned before all
        # were, or a tree rooted at whichever switch answered first would come and go.
        self.heard: set[str] = set()
        if before is not None:
            self.neighbours = {k: v for k, v in before.neighbours.items() if k in self.names}
            self.heard = before.heard & self.switches
            if self.heard >= self.switches:
                self.links = learn_parents(self.neighbours, {n: n for n in self.names})

    def observe(self, target: str, samples: Iterable[Sample], ok: bool = True) -> list[Change]:
        """A switch's poll: when its neighbours changed, the tree again; the learned parents
        of `auto` targets that changed. A failed poll changes nothing (a switch down is no
        news of its neighbours) but counts as heard from."""
        if target not in self.switches:
            return []
        complete_before = self.heard >= self.switches
        self.heard.add(target)
        changed = False
        if ok:
            rows = tuple(
                sorted(
                    (label_of(s.labels, "port"), label_of(s.labels, "neighbour"))
                    for s in samples
                    if s.name == "lldp_neighbour"
                )
            )
            changed = self.neighbours.get(target) != rows
            self.neighbours[target] = rows
        if not self.heard >= self.switches or (complete_before and not changed):
            return []
        links = learn_parents(self.neighbours, {n: n for n in self.names})
        changes = [
            (child, self.links.get(child), links.get(child))
            for child in sorted(self.auto)
            if self.links.get(child) != links.get(child)
        ]
        self.links = links
        return changes

    def parents_of(self, name: str) -> list[str]:
        parents = list(self.configured.get(name, ()))
        link = self.links.get(name) if name in self.auto else None
        if link is not None and link.parent not in parents:
            parents.append(link.parent)
        return parents

    def parents(self) -> dict[str, list[str]]:
        return {name: self.parents_of(name) for name in sorted(self.names)}

    def view(self) -> dict[str, Any]:
        """For the API: every target's parents, and what was learned for `auto` targets."""
        learned = {
            child: {"parent": link.parent, "port": link.port}
            for child, link in sorted(self.links.items())
            if child in self.auto
        }
        return {"parents": self.parents(), "learned": learned, "auto": sorted(self.auto)}


def describe(change: Change) -> str:
    """A topology change as the duty log says it."""
    child, was, now = change

    def at(link: Link | None) -> str:
        if link is None:
            return "no switch"
        return f"{link.parent} port {link.port}" if link.port else link.parent

    if was is None:
        return f"{child} learned on {at(now)}"
    if now is None:
        return f"{child} no longer seen (was on {at(was)})"
    return f"{child} moved from {at(was)} to {at(now)}"
