"""Which device hangs off which switch: parents learned from LLDP neighbours and, where LLDP
places nothing, from the switches' forwarding tables; and the tree `dutyd topology` prints
from a config's `depends_on`.

LLDP says who is next to whom, not who is upstream. The tree is rooted at the switch next to
the most switches, and of those the one with the fewest other devices on it (the core, in a
star of access switches that servers hang off); each device's parent is the switch one step
nearer to the root, through the port that switch saw it on. Devices other than switches are
leaves: they hang off a switch, nothing hangs off them.

A forwarding table (BRIDGE-MIB / Q-BRIDGE-MIB) says on which port a switch last saw each MAC
address; a target's MAC comes from the ARP tables the switches serve (its address -> MAC).
Every switch sees a MAC, the ones upstream of it through their uplink, which carries every
MAC behind it. So: the root is the switch that sees other switches on the most distinct ports
(the core of a star), then the one with the largest ARP table (the router), then the one with
the largest forwarding table, and it stays the root on a later tie (`bridge_root`); each
other switch's uplink is the port it sees the root's MAC on (the port with the most MACs when
the root's MAC is not known). A device hangs off the switch that sees its MAC on a port other
than its uplink, and of those on the port with the fewest MACs (an edge port, nearest the
device) (`learn_bridge_parents`). One tree: a site of several separate layer-2 networks gets
one root for all of them.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dutyd.collectors.base import TargetConfig, parse_host_port
from dutyd.collectors.snmp.profiles.bridge import ForwardingTable
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


Loads = Mapping[str, Mapping[str, int]]  # switch -> port -> MACs its whole table has there


def port_loads(fdb: Mapping[str, Mapping[str, str]]) -> dict[str, Counter[str]]:
    """MACs per port of each switch, when `fdb` holds the whole tables."""
    return {s: Counter(table.values()) for s, table in fdb.items()}


def bridge_root(
    fdb: Mapping[str, Mapping[str, str]],
    mac_of: Mapping[str, str],
    arp_sizes: Mapping[str, int] | None = None,
    before: str | None = None,
    loads: Loads | None = None,
) -> str | None:
    """The root of the forwarding tables' tree: the switch that sees other switches on the
    most distinct ports, then the largest ARP table, the largest forwarding table, the name.
    `before` (the last root) stays while no switch sees others on more ports than it does,
    so the tree does not turn over on a tie (two switches, or a table that shrank)."""
    if not fdb:
        return None
    # The switches among the targets of each MAC (a switch's host may be watched twice).
    switch_of: dict[str, set[str]] = {}
    for name, mac in mac_of.items():
        if name in fdb:
            switch_of.setdefault(mac, set()).add(name)
    sizes = arp_sizes or {}
    loads = loads if loads is not None else port_loads(fdb)

    def facing(s: str) -> int:
        return len({p for mac, p in fdb[s].items() if switch_of.get(mac, {s}) - {s}})

    def rank(s: str) -> tuple[int, int, int, str]:
        return (-facing(s), -sizes.get(s, 0), -sum(loads.get(s, {}).values()), s)

    root = min(fdb, key=rank)
    if before in fdb and facing(before) >= facing(root):
        return before
    return root


def learn_bridge_parents(
    fdb: Mapping[str, Mapping[str, str]],
    mac_of: Mapping[str, str],
    skip: Collection[str] = (),
    arp_sizes: Mapping[str, int] | None = None,
    root: str | None = None,
    loads: Loads | None = None,
) -> dict[str, Link]:
    """`fdb`: switch (target name) -> its forwarding table (MAC -> port), whole or only the
    targets' MACs; `mac_of`: target name -> its MAC; `skip`: targets placed otherwise (by
    LLDP); `arp_sizes`: switch -> rows of its ARP table; `root`: the root, else
    `bridge_root`'s; `loads`: MACs per port of the whole tables (from `fdb` when not given).
    Returns child -> Link (how "bridge"), without loops. See the module's docstring."""
    switches = sorted(fdb)
    loads = loads if loads is not None else port_loads(fdb)
    if root not in fdb:
        root = bridge_root(fdb, mac_of, arp_sizes, loads=loads)
    if root is None:
        return {}

    def load(s: str, port: str) -> int:
        return loads.get(s, {}).get(port, 1)

    root_mac = mac_of.get(root)
    uplink: dict[str, str] = {}
    for s in switches:
        port = fdb[s].get(root_mac) if root_mac else None
        ports = sorted(loads.get(s, {}))
        if s != root and port is None and ports:
            port = max(ports, key=lambda p, s=s: load(s, p))
        if s != root and port is not None:
            uplink[s] = port
    links: dict[str, Link] = {}
    for child, mac in sorted(mac_of.items()):
        if child in skip or child == root:
            continue
        seen = [
            (load(s, port), s, port)
            for s in switches
            if s != child and (port := fdb[s].get(mac)) is not None and port != uplink.get(s)
        ]
        if seen:
            _, parent, port = min(seen)
            links[child] = Link(parent, port, "bridge")
    return without_loops(links)


def without_loops(links: dict[str, Link]) -> dict[str, Link]:
    """The links less any whose parents lead back to the child (the first of a loop, by name,
    is left without a parent)."""
    out = dict(links)
    for child in sorted(links):
        node, steps = out[child].parent if child in out else None, 0
        while node is not None and node in out and steps <= len(out):
            if node == child:
                del out[child]
                break
            node, steps = out[node].parent, steps + 1
    return out


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def target_ip(address: str) -> str | None:
    """The IP address a target's `address` names (host, host:port, [v6]:port, a URL), as
    ARP tables write it; None for a host name."""
    text = _SCHEME.sub("", address.strip()).split("/")[0].rsplit("@", 1)[-1]
    try:
        host, _ = parse_host_port(text, 1)
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


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
    switches polled with the `lldp` profile (a neighbour is known by its sysName, which is
    the target's name, as `dutyd discover` writes it), and, for targets LLDP does not place,
    from the forwarding tables of the switches polled with the `bridge` profile (a target
    is known by its MAC, from their ARP tables and its address)."""

    def __init__(
        self, targets: Iterable[TargetConfig], before: LearnedTopology | None = None
    ) -> None:
        targets = list(targets)
        self.names = {t.name for t in targets}
        self.auto = {t.name for t in targets if t.learns_parents}
        self.switches = {t.name for t in targets if "lldp" in getattr(t, "profiles", ())}
        self.bridges = {t.name for t in targets if "bridge" in getattr(t, "profiles", ())}
        self.polled = self.switches | self.bridges
        self.configured = {t.name: t.configured_parents for t in targets}
        self.ips = {t.name: ip for t in targets if (ip := target_ip(t.address)) is not None}
        self.addresses = sorted(set(self.ips.values()))
        # What the switches said, kept over a reload (the new config may keep them).
        self.neighbours: dict[str, tuple[tuple[str, str], ...]] = {}
        # Per bridge switch: its last forwarding table read whole, of which `fdb` keeps the
        # targets' MACs (what the tree is learned from, compared to tell a change) and
        # `loads` the MACs per port (edge or uplink).
        self.tables: dict[str, ForwardingTable] = {}
        self.fdb: dict[str, dict[str, str]] = {}
        self.loads: dict[str, Counter[str]] = {}
        self.arp_sizes: dict[str, int] = {}
        # The MAC of each target address as last seen in an ARP table: kept when the entry
        # ages out (an idle server's does), so its place is not forgotten; by address, so
        # every target on one host (its SNMP, SSH, web application) has it. `macs`: by name.
        self.ip_macs: dict[str, str] = {}
        self.macs: dict[str, str] = {}
        self.links: dict[str, Link] = {}
        self.root: str | None = None  # of the forwarding tables' tree
        # Switches polled at least once (answered or not): nothing is learned before all
        # were, or a tree rooted at whichever switch answered first would come and go.
        self.heard: set[str] = set()
        if before is not None:
            self.neighbours = {k: v for k, v in before.neighbours.items() if k in self.names}
            self.tables = {k: v for k, v in before.tables.items() if k in self.bridges}
            self.loads = {k: v for k, v in before.loads.items() if k in self.bridges}
            self.arp_sizes = {k: v for k, v in before.arp_sizes.items() if k in self.bridges}
            self.root = before.root
            addresses = set(self.ips.values())
            self.ip_macs = {k: v for k, v in before.ip_macs.items() if k in addresses}
            self.macs = self._macs_by_name()
            self._filter(self.tables)
            self.heard = before.heard & self.polled
            if self.heard >= self.polled:
                self.links = self._learn(before.links)

    def observe(
        self,
        target: str,
        samples: Iterable[Sample],
        ok: bool = True,
        forwarding: ForwardingTable | None = None,
    ) -> list[Change]:
        """A switch's poll: when its neighbours or its forwarding table changed, the tree
        again; the learned parents of `auto` targets that changed. A failed poll, or a
        forwarding table not read (refused as too long), changes nothing (a switch down is no
        news of its neighbours) but counts as heard from."""
        if target not in self.polled:
            return []
        complete_before = self.heard >= self.polled
        self.heard.add(target)
        changed = False
        if ok and forwarding is not None and target in self.bridges:
            self.tables[target] = forwarding
            self.loads[target] = Counter(forwarding.macs.values())
            # The largest seen: a router's table is large, and an empty answer tells little.
            self.arp_sizes[target] = max(self.arp_sizes.get(target, 0), len(forwarding.arp))
            learned = False
            for ip in self.addresses:
                mac = forwarding.arp.get(ip)
                if mac is not None and self.ip_macs.get(ip) != mac:
                    self.ip_macs[ip] = mac
                    learned = True
            if learned:
                self.macs = self._macs_by_name()
            # A target's MAC learned (or changed): every table is read for it again.
            changed = self._filter(self.tables if learned else [target]) or learned
        if ok and target in self.switches:
            rows = tuple(
                sorted(
                    (label_of(s.labels, "port"), label_of(s.labels, "neighbour"))
                    for s in samples
                    if s.name == "lldp_neighbour"
                )
            )
            changed = changed or self.neighbours.get(target) != rows
            self.neighbours[target] = rows
        if not self.heard >= self.polled or (complete_before and not changed):
            return []
        links = self._learn(self.links)
        changes = [
            (child, self.links.get(child), links.get(child))
            for child in sorted(self.auto)
            if self.links.get(child) != links.get(child)
        ]
        self.links = links
        return changes

    def _macs_by_name(self) -> dict[str, str]:
        return {n: mac for n, ip in self.ips.items() if (mac := self.ip_macs.get(ip)) is not None}

    def _filter(self, switches: Iterable[str]) -> bool:
        """`fdb` of these switches made again from their tables: the targets' MACs only (a
        few hundred lookups, not the thousands of rows; tables churn, the targets' places
        rarely do). Whether one changed."""
        changed = False
        macs = set(self.macs.values())
        for s in switches:
            table = self.tables[s].macs
            view = {mac: port for mac in macs if (port := table.get(mac)) is not None}
            if self.fdb.get(s) != view:
                self.fdb[s] = view
                changed = True
        return changed

    def _learn(self, before: Mapping[str, Link]) -> dict[str, Link]:
        """LLDP's tree, then the forwarding tables' places for what it leaves out. A device
        placed by a forwarding table before and seen on none now (its MAC aged out of every
        table, as an idle server's does) keeps its place: no news is no move."""
        links = learn_parents(self.neighbours, {n: n for n in self.names})
        placed = set(links) | {link.parent for link in links.values()}
        self.root = bridge_root(self.fdb, self.macs, self.arp_sizes, self.root, self.loads)
        bridged = learn_bridge_parents(
            self.fdb, self.macs, placed, self.arp_sizes, self.root, self.loads
        )
        for child, link in before.items():
            if (
                link.how == "bridge"
                and child not in bridged
                and child not in placed
                and link.parent in self.fdb
                and child in self.names
            ):
                bridged[child] = link
        return {**links, **without_loops(bridged)}

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
            child: {"parent": link.parent, "port": link.port, "how": link.how}
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
