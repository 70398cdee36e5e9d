"""`dutyd discover CIDR...` (find the room, write a config a person can read) and
`dutyd topology FILE` (the `depends_on` tree of a config).

The written file is grouped (switches, UPS units, other SNMP devices, NUT servers, SSH
servers, web applications), every target commented with what it was recognised by, and
`# guessed:` on what a person should check (a dependency learned from LLDP, the SSH login).
SNMP communities come from environment variables (`--community-env`), and the file names the
variable, never the community. `dutyd check-config` accepts it as written. `--merge FILE`
adds the new devices' entries to FILE itself (agent/configmerge.py), in place.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dutyd.agent.config import read_config
from dutyd.agent.configmerge import MergeRefused, add_targets, replace_checked
from dutyd.agent.discovery import (
    Credential,
    Device,
    RangeRefused,
    Sweep,
    SweepOptions,
    community,
    hosts_of,
    v3_user,
)
from dutyd.agent.sysnames import load_named_now
from dutyd.agent.topology import Link, learn_parents, render_tree
from dutyd.collectors.snmp.profiles import PROFILES
from dutyd.core.errors import ConfigError

EXIT_USAGE = 2
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.:-]+")


def _clean(text: str, limit: int = 64) -> str:
    """Device text made a name or label value: letters, digits and _ . : - only."""
    return _NOT_NAME.sub("-", text).strip("-.:")[:limit]


def _q(text: str) -> str:
    """A YAML scalar, quoted (device text may hold anything)."""
    return json.dumps(text, ensure_ascii=False)


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class Names:
    """Unique target names: a device's sysName when it has one, else kind and address."""

    def __init__(self, taken: Sequence[str] = ()) -> None:
        self.taken = set(taken)

    def new(self, wanted: str) -> str:
        base = _clean(wanted) or "device"
        name, n = base, 2
        while name in self.taken:
            name, n = f"{base}-{n}", n + 1
        self.taken.add(name)
        return name


def _watched(config: Path | None) -> tuple[dict[str, str], list[str]]:
    """Of the config to merge into: host -> target name of what it watches, and its names."""
    if config is None:
        return {}, []
    settings = load_named_now(config).settings  # `{sysName}` members as the daemon names them
    hosts: dict[str, str] = {}
    for target in settings.targets:
        address = target.address
        host = re.sub(r"^[a-z]+://", "", address).split("/")[0]
        host = (
            host[1:].split("]")[0]
            if host.startswith("[")
            else host.rsplit(":", 1)[0]
            if host.count(":") == 1
            else host
        )
        hosts.setdefault(host, target.name)
    return hosts, [t.name for t in settings.targets]


def write_config(
    devices: Sequence[Device],
    options: SweepOptions,
    ranges: Sequence[str],
    watched: dict[str, str],
    taken: Sequence[str],
    now: dt.datetime,
    ssh_key: str = "",
    merge: bool = False,
    snmp_defaults: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Link]]:
    """The YAML text and the learned parents (child -> Link). `merge`: only the new target
    entries (`configmerge.add_targets` puts them into the config), each with the credentials
    that answered unless the config's `defaults: {snmp: ...}` (`snmp_defaults`) give them."""
    names = Names(taken)
    new = [d for d in devices if d.address not in watched]
    named: dict[str, str] = dict(watched)
    for d in new:
        kind = d.snmp_class or ("nut" if d.nut else "ssh" if d.ssh_banner else "http")
        named[d.address] = names.new(d.sys_name or f"{kind}-{d.address.replace(':', '-')}")
    by_sys_name = {d.sys_name: named[d.address] for d in devices if d.sys_name}
    parents = learn_parents(
        {named[d.address]: d.neighbours for d in devices if d.snmp_class == "switch"},
        by_sys_name,
    )
    parents.update(bridge_parents(devices, named, parents))
    # The root of each LLDP tree is a core switch; other switches are network devices.
    cores = {link.parent for link in parents.values()} - set(parents)

    def role_of(d: Device, name: str) -> str:
        if d.snmp_class == "switch":
            return "core" if name in cores else "network"
        return "ups" if d.snmp_class == "ups" else ""

    # The credentials go in `defaults:` when every device answered to the same ones; else each
    # target names its own (a default community would otherwise sit beside a v3 user).
    used = {id(d.credential): d.credential for d in new if d.credential is not None}
    default = next(iter(used.values())) if len(used) == 1 and not merge else None
    lines = [
        f"# Written by `dutyd discover {' '.join(ranges)}` on {now:%Y-%m-%d %H:%M} UTC.",
        "# Check it with `dutyd check-config`; confirm what is marked `guessed:`.",
    ]
    if merge:
        lines = [
            "",
            f"  # Added by `dutyd discover {' '.join(ranges)}` on {now:%Y-%m-%d %H:%M} UTC;",
            "  # confirm what is marked `guessed:`.",
        ]
    if default is not None:
        lines += [
            "defaults:",
            "  snmp:   # the SNMP credentials that answered, secrets from variables",
        ]
        lines += [f"    {k}: {_q(v)}" for k, v in default.settings.items()]
        lines.append(f"    timeout: {max(options.timeout, 2.0):g}s")
    if not merge:
        lines.append("targets:" if new else "targets: []")

    def depends(name: str) -> list[str]:
        link = parents.get(name)
        if link is None:
            return []
        where = f" port {link.port}" if link.port else ""
        if link.how == "bridge":
            why = f"{link.parent}'s bridge table has its MAC on{where or ' a port'}"
        else:
            why = f"LLDP saw it on {link.parent}{where}"
        return [f"    depends_on: [{link.parent}]   # guessed: {why}"]

    def snmp_target(d: Device, profiles: list[str], why: str) -> list[str]:
        name = named[d.address]
        out = [f"  - name: {name}   # {why}"]
        out += ["    kind: snmp", f"    address: {_q(_host_port(d.address, options.snmp_port))}"]
        given = snmp_defaults or {}
        credential = d.credential.settings if d.credential else {}
        # Written unless `defaults:` give them (the file's, or this one's).
        if d.credential is not default and any(given.get(k) != v for k, v in credential.items()):
            out += [f"    {k}: {_q(v)}" for k, v in credential.items()]
        if profiles:
            out.append(f"    profiles: [{', '.join(profiles)}]")
        # role: what the duty pack's rules select by (core backbone, network device, UPS).
        role = role_of(d, name)
        labels = {"role": role} if role else {}
        if d.sys_location:
            labels["room"] = _clean(d.sys_location)
        shown = ", ".join(f"{k}: {_q(v)}" for k, v in labels.items())
        where = f"   # sysLocation {_q(d.sys_location)}" if d.sys_location else ""
        if labels:
            out.append(f"    labels: {{{shown}}}{where}")
        if d.unanswered:
            out.append(
                f"    # guessed: no answer within {options.timeout * 2:g}s from its "
                f"{', '.join(d.unanswered)}; it may be more than this (discover it again)"
            )
        return out + depends(name)

    groups = [
        ("switches (IF-MIB)", [d for d in new if d.snmp_class == "switch"]),
        ("UPS units (UPS-MIB)", [d for d in new if d.snmp_class == "ups"]),
        ("room sensors", [d for d in new if d.snmp_class == "sensor"]),
        ("other SNMP devices", [d for d in new if d.snmp_class == "snmp"]),
    ]
    for title, members in groups:
        if not members:
            continue
        lines += ["", f"  # -- {title} --"]
        for d in members:
            if d.snmp_class == "switch":
                why = f"{d.interfaces} interfaces, {len(d.neighbours)} LLDP neighbours"
                lines += snmp_target(d, ["switch"], why)
            elif d.snmp_class == "ups":
                probe = f", its card's probe {_mibs(d)}" if d.sensor_profiles else ""
                why = f"answers UPS-MIB{probe}; {_q(d.sys_descr[:60])}"
                lines += snmp_target(d, ["ups", *d.sensor_profiles], why)
            elif d.snmp_class == "sensor" and d.sensor_profiles:
                lines += snmp_target(d, d.sensor_profiles, f"answers {_mibs(d)}")
                if any(PROFILES[p].generic for p in d.sensor_profiles):  # type: ignore[attr-defined]
                    lines.append(
                        "    # guessed: its ENTITY-SENSOR-MIB temperatures are the room's, not a"
                        " router's or server's own (inlet, CPU): check before it pages"
                    )
            elif d.snmp_class == "sensor":
                lines += snmp_target(d, ["sensor"], "answers AKCP SPAGENT-MIB (sensorProbe)")
                lines.append("    sensors:   # each probe named by its description on the device")
                for probe in d.sensor_probes:
                    first, *rest = probe.items()
                    lines.append(f"      - {first[0]}: {first[1]}")
                    lines += [f"        {k}: {v}" for k, v in rest]
                if d.fahrenheit:
                    lines.append(
                        "    # guessed: a probe reports Fahrenheit; set it to Celsius on the device"
                    )
            else:
                lines += snmp_target(d, [], f"guessed: an SNMP device, {d.interfaces} interfaces")
                # A target must read something: its agent's uptime shows it answering (and a
                # restart); the device's own OIDs are for a person to add.
                lines += [
                    "    oids:   # guessed: only whether it answers; add the device's own OIDs",
                    "      - name: snmp_agent_uptime_seconds",
                    "        oid: 1.3.6.1.2.1.1.3.0   # sysUpTime, in hundredths of a second",
                    "        scale: 0.01",
                ]
    nut = [d for d in new if d.nut]
    if nut:
        lines += ["", "  # -- NUT servers (every UPS of LIST UPS is read) --"]
        for d in nut:
            name = named[d.address] if not d.snmp_class else names.new(f"nut-{named[d.address]}")
            ups = ", ".join(d.nut_ups) or "none listed"
            lines += [
                f"  - name: {name}   # UPS: {_q(ups)}",
                "    kind: nut",
                f"    address: {_q(_host_port(d.address, options.nut_port or 3493))}",
                *depends(named[d.address]),
            ]
    ssh = [d for d in new if d.ssh_banner]
    if ssh:
        lines += ["", "  # -- SSH servers --"]
        if not ssh_key:
            lines.append("  # Commented out: give `dutyd discover --ssh-key FILE` (or a password).")
        for d in ssh:
            alone = not (d.snmp_class or d.nut)
            name = named[d.address] if alone else names.new(f"ssh-{named[d.address]}")
            entry = [
                f"  - name: {name}   # {_q(d.ssh_banner)}",
                "    kind: ssh",
                f"    address: {_q(d.address)}",
                f"    port: {d.ssh_port}",
                "    username: dutyd   # guessed: the account dutyd logs in with",
                f"    client_keys: [{_q(ssh_key)}]",
                *depends(named[d.address]),
            ]
            lines += entry if ssh_key else ["  #" + line[1:] for line in entry]
    web = [(d, h) for d in new for h in d.http]
    if web:
        lines += ["", "  # -- web applications --"]
        for d, (scheme, port, status) in web:
            if not (d.snmp_class or d.nut or d.ssh_banner) and len(d.http) == 1:
                name = named[d.address]  # only a web server there: the device's own name
            else:
                name = names.new(f"web-{named[d.address]}-{port}")
            lines += [
                f"  - name: {name}   # answered HTTP {status}",
                "    kind: http",
                f"    address: {_q(f'{scheme}://{_url_host(d.address)}:{port}/')}",
                "    labels: {role: application}",
                *(
                    [
                        "    # guessed: its certificate does not verify here (self-signed?):"
                        " give ca_file: (its CA) or verify: false"
                    ]
                    if scheme == "https" and port in d.untrusted_tls
                    else []
                ),
                *depends(named[d.address]),
            ]
    return "\n".join(lines) + "\n", parents


def _mibs(d: Device) -> str:
    """The room-sensor MIBs a device was recognised by."""
    return " and ".join(PROFILES[p].mib for p in d.sensor_profiles)  # type: ignore[attr-defined]


def bridge_parents(
    devices: Sequence[Device], named: dict[str, str], placed: dict[str, Link]
) -> dict[str, Link]:
    """Devices LLDP did not place (servers, UPS cards), by their MAC (from the ARP tables)
    in the switches' forwarding tables: the switch whose port holds the fewest MACs there
    (an edge port, not an uplink that carries every MAC behind it)."""
    switches = [d for d in devices if d.snmp_class == "switch" and d.fdb]
    arp: dict[str, str] = {}
    for d in devices:
        for ip, mac in d.arp.items():
            arp.setdefault(ip, mac)
    load: dict[tuple[str, str], int] = {}
    for s in switches:
        for port in s.fdb.values():
            key = (named[s.address], port)
            load[key] = load.get(key, 0) + 1
    out: dict[str, Link] = {}
    for d in devices:
        name = named[d.address]
        mac = arp.get(d.address)
        if d.snmp_class == "switch" or name in placed or not mac:
            continue
        seen = [
            (load[(named[s.address], s.fdb[mac])], named[s.address], s.fdb[mac])
            for s in switches
            if mac in s.fdb and s is not d
        ]
        if seen:
            _, switch, port = min(seen)
            out[name] = Link(switch, port, "bridge")
    return out


def cmd_discover(args: argparse.Namespace) -> int:
    if not (args.rate > 0 and args.concurrency > 0 and args.timeout > 0):
        print(
            "dutyd discover: --rate, --concurrency and --timeout must be above 0", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        addresses = hosts_of(args.ranges, args.allow_large)
    except RangeRefused as exc:
        print(f"dutyd discover: {exc}", file=sys.stderr)
        return EXIT_USAGE
    credentials: list[Credential] = []
    for var in args.community_env or []:
        value = os.environ.get(var)
        if not value:
            print(
                f"dutyd discover: --community-env {var}: the variable is not set", file=sys.stderr
            )
            return EXIT_USAGE
        credentials.append(community(var))
    for spec in args.v3_user or []:
        try:
            credential = v3_user(spec)
        except ValueError as exc:
            print(f"dutyd discover: --v3-user {exc}", file=sys.stderr)
            return EXIT_USAGE
        unset = [
            v
            for k, v in credential.settings.items()
            if k.endswith("_env") and not os.environ.get(v)
        ]
        if unset:
            print(f"dutyd discover: --v3-user: {', '.join(unset)} not set", file=sys.stderr)
            return EXIT_USAGE
        credentials.append(credential)
    if args.merge and args.output:
        print(
            "dutyd discover: --merge edits FILE in place (the old one kept as FILE.bak); "
            "-o writes a new file: give one of them",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        watched, taken = _watched(Path(args.merge) if args.merge else None)
    except ConfigError as exc:
        print(f"dutyd discover: --merge: the config is invalid\n{exc.report()}", file=sys.stderr)
        return EXIT_USAGE
    options = SweepOptions(
        credentials=credentials,
        snmp_port=args.snmp_port,
        nut_port=args.nut_port or None,
        ssh_ports=args.ssh_port if args.ssh_port is not None else [22],
        http_ports=args.http_port if args.http_port is not None else [80],
        https_ports=args.https_port if args.https_port is not None else [443],
        rate=args.rate,
        concurrency=args.concurrency,
        timeout=args.timeout,
        switch_ports=args.switch_ports,
    )
    sweep = Sweep(options)
    devices = asyncio.run(sweep.run(addresses))
    devices.sort(key=lambda d: ipaddress.ip_address(d.address))
    text, parents = write_config(
        devices,
        options,
        args.ranges,
        watched,
        taken,
        dt.datetime.now(dt.UTC),
        args.ssh_key or "",
        merge=bool(args.merge),
        snmp_defaults=_snmp_defaults(Path(args.merge)) if args.merge else None,
    )
    new = [d for d in devices if d.address not in watched]
    if args.merge:
        code = _merge_into(Path(args.merge), text, len(new))
        if code:
            return code
    elif args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    print(
        f"dutyd discover: {len(addresses)} addresses, {sweep.sent} probes, "
        f"{len(devices)} devices found ({len(new)} "
        f"new), {sum(1 for p in parents.values() if p.how == 'LLDP')} dependencies learned "
        f"from LLDP, {sum(1 for p in parents.values() if p.how == 'bridge')} from bridge tables",
        file=sys.stderr,
    )
    return 0


def _snmp_defaults(config: Path) -> Mapping[str, Any]:
    """The main file's `defaults: {snmp: ...}`: credentials the merged entries need not repeat."""
    defaults = read_config(config)[0].get("defaults")
    snmp = defaults.get("snmp") if isinstance(defaults, Mapping) else None
    return snmp if isinstance(snmp, Mapping) else {}


def _merge_into(path: Path, entries: str, count: int) -> int:
    """The new entries added to the config at `path` in place, if the result passes
    check-config's validation; else the file is left as it was and the report printed."""
    if count == 0:
        print(f"dutyd discover: {path} watches every device found: left as it was", file=sys.stderr)
        return 0
    try:
        text = add_targets(path.read_text(encoding="utf-8"), entries.splitlines())
    except (MergeRefused, OSError) as exc:
        print(f"dutyd discover: --merge {path}: {exc}; left as it was", file=sys.stderr)
        return EXIT_USAGE

    def check(candidate: Path) -> None:
        try:
            load_named_now(candidate)
        except ConfigError as exc:
            report = exc.report().replace(str(candidate), str(path))
            raise MergeRefused(f"the merged config would not load\n{report}") from None

    try:
        backup = replace_checked(path, text, check)
    except (MergeRefused, OSError) as exc:
        print(f"dutyd discover: --merge {path}: {exc}\n{path} is left as it was", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"dutyd discover: {count} new target(s) added to {path} (it was kept as {backup})",
        file=sys.stderr,
    )
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    if args.live:
        from dutyd.agent.dutycli import _api

        view = _api(args, "GET", "/api/v1/topology")
        parents = {k: list(v) for k, v in view.get("parents", {}).items()}
        print(render_tree(parents, list(parents)))
        for child, link in view.get("learned", {}).items():
            port = f" port {link['port']}" if link.get("port") else ""
            how = "the bridge table" if link.get("how") == "bridge" else "LLDP"
            print(f"learned from {how}: {child} on {link['parent']}{port}")
        return 0
    if not args.file:
        print("dutyd topology: give a config FILE, or --live", file=sys.stderr)
        return EXIT_USAGE
    try:
        named = load_named_now(args.file)  # `{sysName}` members under the names they tell
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_USAGE
    settings = named.settings
    for note in named.notes:
        print(f"note: {note}", file=sys.stderr)
    parents = {t.name: t.configured_parents for t in settings.targets}
    print(render_tree(parents, [t.name for t in settings.targets]))
    auto = [t.name for t in settings.targets if t.learns_parents]
    if auto:
        print(
            "depends_on: auto (the daemon learns their switch from LLDP or bridge tables): "
            + ", ".join(auto)
        )
    return 0


def add_discover_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("discover", help="sweep address ranges and write a config of what answers")
    p.add_argument("ranges", nargs="+", help="networks (CIDR) or addresses, each at most a /22")
    p.add_argument(
        "--community-env",
        action="append",
        metavar="VAR",
        help="an SNMP v2c community, from this environment variable (repeat for several)",
    )
    p.add_argument(
        "--v3-user",
        action="append",
        metavar="USER:AUTH:AUTH_VAR[:PRIV:PRIV_VAR]",
        help="an SNMP v3 user, passwords from these variables (SHA256:SNMP_AUTH:AES:SNMP_PRIV)",
    )
    p.add_argument("--snmp-port", type=int, default=161)
    p.add_argument("--nut-port", type=int, default=3493, help="0: do not look for NUT")
    p.add_argument("--ssh-port", type=int, action="append", help="default 22")
    p.add_argument("--ssh-key", metavar="FILE", help="the key dutyd logs in to SSH servers with")
    p.add_argument("--http-port", type=int, action="append", help="default 80")
    p.add_argument("--https-port", type=int, action="append", help="default 443")
    p.add_argument("--rate", type=float, default=100.0, help="SNMP queries or connections a second")
    p.add_argument("--concurrency", type=int, default=32, help="addresses probed at once")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per probe")
    p.add_argument("--switch-ports", type=int, default=8, help="interfaces that make a switch")
    p.add_argument("--allow-large", action="store_true", help="allow ranges larger than a /22")
    p.add_argument(
        "--merge",
        metavar="FILE",
        help="add what this config does not watch yet to it, in place (the old one kept as "
        "FILE.bak; comments and layout kept; refused, FILE untouched, if the result would not "
        "pass check-config)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(func=cmd_discover)

    t = sub.add_parser("topology", help="print the depends_on tree of a config, or --live")
    t.add_argument("file", nargs="?", help="a config file")
    t.add_argument(
        "--live",
        action="store_true",
        help="the running daemon's tree, with what it learned from LLDP (-c FILE or --url)",
    )
    t.add_argument(
        "-c", "--config", help="with --live: the daemon's config (default: $DUTYD_CONFIG)"
    )
    t.add_argument("--url", help="with --live: the daemon's URL (default: from the config)")
    t.add_argument("--user", help="with --live: basic-auth user (see dutyd ack --help)")
    t.add_argument("--password-file", help="with --live: a file holding the basic-auth password")
    t.set_defaults(func=cmd_topology)
