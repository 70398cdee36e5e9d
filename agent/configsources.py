"""The config as written across files, made into one mapping that `agent.config` validates.

Three things a person writes so as not to repeat themselves, all undone here before validation:
- `include: [conf.d/*.yaml]` (main file only): each matching file (sorted, relative to the main
  file's folder) holds sections like the main file's; lists are appended (`targets`,
  `rules.custom`, ...), mappings merged, and a setting given in two files is a problem;
- `defaults: {<kind>: {...}}`: settings every target of that kind gets unless it sets them
  itself (`labels` merged key by key; a secret given any way by the target, `community_env`
  say, replaces the default's `community`);
- a target with `addresses:` (a list, a CIDR, or a list of both) is a group: one target per
  address, named by the `name:` pattern (`access-sw-{n}`: 1, 2, ...; `{n:02}` zero-padded;
  `{ip}`: the address with `.`/`:` as `-`; `{sysName}`, SNMP only: the name the device tells,
  given by the caller as `sys_names` (agent/sysnames.py reads and remembers them); a device
  whose sysName is not known, or is another target's name too, is named by its address,
  `{sysName}` read as `snmp-{ip}`, and the duplicate is a note, not a problem).

Targets given in `DUTYD_TARGETS` replace the files' and go through the same steps.

`Origins` remembers, for every key path of the result, the file and key path it was written
at, so a problem found in an expanded target is reported at the group's (or the default's)
own line in its own file, once.
"""

from __future__ import annotations

import glob
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dutyd.collectors import COLLECTORS
from dutyd.core.errors import ConfigError

Loc = tuple[str | int, ...]
# A problem found while assembling: the file, the key path in that file, what is wrong.
Found = tuple[str, Loc, str]

# The largest group one entry may write: a /22 of hosts. A typo (`/12`) must not make a
# million targets.
MAX_GROUP = 1022
# Keys a default may not set: they name one target.
_NOT_DEFAULTS = frozenset({"name", "kind", "address", "addresses"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_N_FORMAT = re.compile(r"n(?::0?(\d))?")
SYS_NAME = "{sysName}"


@dataclass
class Origins:
    """Key path in the assembled data -> (file, key path where it was written)."""

    main: str
    at: dict[Loc, tuple[str, Loc]] = field(default_factory=dict)

    def resolve(self, loc: Loc) -> tuple[str, Loc]:
        for cut in range(len(loc), -1, -1):
            found = self.at.get(loc[:cut])
            if found is not None:
                return found[0], (*found[1], *loc[cut:])
        return self.main, loc


@dataclass
class SysNamed:
    """A member of a group named from its sysName."""

    address: str
    where: tuple[str, Loc]  # the group entry's `name` key: file, key path
    target: dict[str, Any]  # the member as assembled (its SNMP settings, defaults applied)
    # The sysName it tells (named from it unless another target has that name too); None:
    # not known, named by its address.
    told: str | None


@dataclass
class Assembled:
    data: dict[str, Any]
    origins: Origins
    problems: list[Found]
    # Every file read, main file first: its text, for line numbers.
    texts: dict[str, str]
    # Members named from their sysName (or by their address until it is known).
    named: list[SysNamed] = field(default_factory=list)
    # What a person should know but that does not stop the config: a duplicate sysName.
    notes: list[Found] = field(default_factory=list)
    # Names devices tell that none of them has (told by two, or a written target's).
    contested: set[str] = field(default_factory=set)


def assemble(
    data: dict[str, Any],
    source: str,
    text: str = "",
    base_dir: Path | None = None,
    parse: Callable[[str, str], dict[str, Any]] | None = None,
    env_targets: tuple[str, Any] | None = None,
    sys_names: Mapping[str, str] | None = None,
) -> Assembled:
    """Includes merged, defaults applied, groups expanded. `parse(text, source)` reads an
    included file (raising `ConfigError`: its problems are reported under that file).
    `env_targets`: (where, targets) given outside the files (`environment variable
    DUTYD_TARGETS`): they replace the files' targets and are expanded and defaulted as file
    entries are, their problems reported under `where`. `sys_names`: address -> sysName of
    the members of `{sysName}` groups (as cleaned by `clean_sys_name`)."""
    origins = Origins(source)
    found: list[Found] = []
    texts = {source: text}
    assembled = Assembled({}, origins, found, texts)
    out = dict(data)
    includes = out.pop("include", None)
    if includes is not None:
        _include(out, includes, source, base_dir, parse, origins, found, texts)
    if env_targets is not None:
        where, out["targets"] = env_targets
        origins.at = {loc: o for loc, o in origins.at.items() if not (loc and loc[0] == "targets")}
        origins.at[("targets",)] = (where, ("targets",))
    defaults = out.pop("defaults", None)
    kinds = _check_defaults(defaults, origins, found)
    targets = out.get("targets")
    if isinstance(targets, list) and (kinds or any(_is_group(t) for t in targets)):
        out["targets"] = _expand(targets, kinds, sys_names or {}, assembled)
    assembled.data = out
    return assembled


# ---------------------------------------------------------------------------------------------
# include


def _include(
    out: dict[str, Any],
    includes: Any,
    source: str,
    base_dir: Path | None,
    parse: Callable[[str, str], dict[str, Any]] | None,
    origins: Origins,
    found: list[Found],
    texts: dict[str, str],
) -> None:
    if parse is None:
        found.append((source, ("include",), "only a config file may include files"))
        return
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        found.append((source, ("include",), "must be a list of file patterns (conf.d/*.yaml)"))
        return
    base = base_dir or Path(".")
    for j, pattern in enumerate(includes):
        if not isinstance(pattern, str) or not pattern:
            found.append((source, ("include", j), "must be a file path or pattern"))
            continue
        full = str(base / pattern)
        paths = sorted(glob.glob(full)) if glob.has_magic(pattern) else [full]
        for path in paths:
            if path in texts:
                continue  # matched by two patterns: read once
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                found.append((source, ("include", j), f"cannot read {path}: {exc.strerror}"))
                continue
            texts[path] = text
            try:
                part = parse(text, path)
            except ConfigError as exc:
                found.extend((path, (), p) for p in exc.problems)
                continue
            if "include" in part:
                found.append((path, ("include",), "only the main file may include files"))
                part = {k: v for k, v in part.items() if k != "include"}
            _merge(out, part, (), (), path, origins, found)


def _merge(
    into: dict[Any, Any],
    add: Mapping[Any, Any],
    mloc: Loc,
    oloc: Loc,
    path: str,
    origins: Origins,
    found: list[Found],
) -> None:
    for key, value in add.items():
        m, o = (*mloc, key), (*oloc, key)
        if key not in into:
            into[key] = value
            origins.at[m] = (path, o)
            continue
        current = into[key]
        if isinstance(current, dict) and isinstance(value, dict):
            into[key] = merged = dict(current)  # never change a file's parsed data in place
            _merge(merged, value, m, o, path, origins, found)
        elif isinstance(current, list) and isinstance(value, list):
            for j in range(len(value)):
                origins.at[(*m, len(current) + j)] = (path, (*o, j))
            into[key] = [*current, *value]
        else:
            first_file, first_loc = origins.resolve(m)
            found.append((path, o, f"already set in {first_file} at {_loc_text(first_loc)}"))


def _loc_text(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ---------------------------------------------------------------------------------------------
# defaults and groups


def _check_defaults(
    defaults: Any, origins: Origins, found: list[Found]
) -> dict[str, Mapping[str, Any]]:
    if defaults is None:
        return {}
    if not isinstance(defaults, Mapping):
        where = origins.resolve(("defaults",))
        found.append((*where, "must map a target kind to its defaults (snmp: {...})"))
        return {}
    kinds: dict[str, Mapping[str, Any]] = {}
    for kind, values in defaults.items():
        where = origins.resolve(("defaults", kind))
        collector = COLLECTORS.get(str(kind))
        if collector is None:
            found.append(
                (
                    *where,
                    f"unknown target kind {kind!r}; known kinds: {', '.join(sorted(COLLECTORS))}",
                )
            )
            continue
        if not isinstance(values, Mapping):
            found.append((*where, "must be a mapping of settings (interval: 30s, ...)"))
            continue
        fields = collector.config_model.model_fields
        good: dict[str, Any] = {}
        for key, value in values.items():
            at = origins.resolve(("defaults", kind, key))
            if key in _NOT_DEFAULTS:
                found.append((*at, "names one target: it cannot be a default"))
            elif key not in fields:
                found.append((*at, f"unknown key for kind {kind!r}"))
            else:
                good[key] = value
        kinds[str(kind)] = good
    return kinds


def _is_group(raw: Any) -> bool:
    return isinstance(raw, Mapping) and "addresses" in raw


def _family(key: str) -> str:
    """`community`, `community_env` and `community_file` are one setting given three ways."""
    return key.removesuffix("_env").removesuffix("_file")


def _expand(
    targets: list[Any],
    kinds: Mapping[str, Mapping[str, Any]],
    sys_names: Mapping[str, str],
    assembled: Assembled,
) -> list[Any]:
    origins, found = assembled.origins, assembled.problems
    out: list[Any] = []
    moved: dict[Loc, tuple[str, Loc]] = {}
    # Index in `out` -> (fallback name, sysName) of a member named from its sysName.
    told: dict[int, tuple[str, str | None]] = {}
    for i, raw in enumerate(targets):
        where = origins.resolve(("targets", i))
        members = _members(raw, where, found, sys_names) if _is_group(raw) else [(raw, None)]
        for member, naming in members:
            k = len(out)
            moved[("targets", k)] = where
            if isinstance(member, Mapping):
                member = _with_defaults(member, kinds, k, origins, moved)
            if naming is not None:
                told[k] = naming
            out.append(member)
    # Origins under the old indices are stale now; nothing below a target was merged from
    # another file, so each target's own entry is all there was.
    origins.at = {
        loc: o for loc, o in origins.at.items() if not (loc and loc[0] == "targets")
    } | moved
    _one_name_each(out, told, assembled)
    return out


def _one_name_each(
    out: list[Any], told: Mapping[int, tuple[str, str | None]], assembled: Assembled
) -> None:
    """A name two devices tell (or a device and a written target) is neither's: each device
    is named by its address, with a note, so no identity depends on which answered first."""
    claims: dict[str, list[int]] = {}
    for k, member in enumerate(out):
        if isinstance(member, Mapping) and isinstance(member.get("name"), str):
            claims.setdefault(member["name"], []).append(k)
    for name, ks in claims.items():
        devices = [k for k in ks if k in told and told[k][1] is not None]
        if len(ks) < 2 or not devices:
            continue
        addresses = ", ".join(str(out[k].get("address")) for k in devices)
        if len(devices) == len(ks):
            why = f"{addresses} tell the same sysName (target name {name!r})"
        else:
            why = f"{addresses} {'tell' if len(devices) > 1 else 'tells'} the sysName of " + (
                f"another target ({name!r})"
            )
        assembled.contested.add(name)
        for k in devices:
            fallback = told[k][0]
            out[k] = {**out[k], "name": fallback}
            path, loc = assembled.origins.resolve(("targets", k))
            note = f"{why}: {out[k]['address']} is named {fallback} until the names differ"
            assembled.notes.append((path, (*loc, "name"), note))
    for k, (_, sys_name) in told.items():
        member = out[k]
        where = assembled.origins.resolve(("targets", k))
        assembled.named.append(
            SysNamed(str(member.get("address")), (where[0], (*where[1], "name")), member, sys_name)
        )


def _with_defaults(
    target: Mapping[str, Any],
    kinds: Mapping[str, Mapping[str, Any]],
    k: int,
    origins: Origins,
    moved: dict[Loc, tuple[str, Loc]],
) -> dict[str, Any]:
    kind = str(target.get("kind"))
    given = kinds.get(kind)
    result = dict(target)
    if not given:
        return result
    families = {_family(str(key)) for key in target}
    for key, value in given.items():
        if key == "labels" and isinstance(value, Mapping) and isinstance(target.get(key), Mapping):
            labels = dict(value)
            for name in value:
                if name not in target[key]:
                    moved[("targets", k, key, name)] = origins.resolve(
                        ("defaults", kind, key, name)
                    )
            labels.update(target[key])
            result[key] = labels
        elif _family(key) not in families:
            result[key] = value
            moved[("targets", k, key)] = origins.resolve(("defaults", kind, key))
    return result


Member = tuple[Any, tuple[str, str | None] | None]


def _members(
    raw: Mapping[str, Any], where: tuple[str, Loc], found: list[Found], sys_names: Mapping[str, str]
) -> list[Member]:
    """One target per address of a group entry, and for a member named from its sysName its
    fallback name and the sysName used; nothing (and a problem) when the entry is wrong."""
    path, loc = where
    if "address" in raw:
        found.append((path, (*loc, "address"), "give address or addresses, not both"))
        return []
    addresses = _addresses(raw["addresses"], path, (*loc, "addresses"), found)
    if addresses is None:
        return []
    pattern = raw.get("name")
    if not isinstance(pattern, str):
        return [({k: v for k, v in raw.items() if k != "addresses"}, None)]  # `name` reported
    if SYS_NAME in pattern and raw.get("kind") != "snmp":
        found.append(
            (path, (*loc, "name"), "{sysName} is read over SNMP: only a kind: snmp group has it")
        )
        return []
    names = _names(pattern, addresses, path, (*loc, "name"), found, sys_names)
    if names is None:
        return []
    base = {k: v for k, v in raw.items() if k not in ("addresses", "name")}
    return [
        ({"name": n, **base, "address": a}, naming if SYS_NAME in pattern else None)
        for (n, naming), a in zip(names, addresses, strict=True)
    ]


def _addresses(value: Any, path: str, loc: Loc, found: list[Found]) -> list[str] | None:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        found.append((path, loc, "must be an address, a CIDR (10.0.1.0/26) or a list of them"))
        return None
    out: list[str] = []
    for j, item in enumerate(items):
        at = loc if isinstance(value, str) else (*loc, j)
        if not isinstance(item, str) or not item.strip():
            found.append((path, at, "must be an address or a CIDR"))
            return None
        if "/" not in item:
            out.append(item.strip())
        else:
            try:
                net = ipaddress.ip_network(item.strip())
            except ValueError as exc:
                found.append((path, at, f"not a network: {exc}"))
                return None
            if net.num_addresses > MAX_GROUP + 2:
                found.append(
                    (
                        path,
                        at,
                        f"{item} has {net.num_addresses} addresses; a group holds "
                        f"at most {MAX_GROUP} (a /22): split it",
                    )
                )
                return None
            out.extend(str(host) for host in net.hosts())
        if len(out) > MAX_GROUP:
            found.append((path, loc, f"more than {MAX_GROUP} addresses in one group: split it"))
            return None
    seen: set[str] = set()
    for address in out:
        if address in seen:
            found.append((path, loc, f"{address} is listed twice"))
            return None
        seen.add(address)
    return out


def _names(
    pattern: str,
    addresses: list[str],
    path: str,
    loc: Loc,
    found: list[Found],
    sys_names: Mapping[str, str],
) -> list[tuple[str, tuple[str, str | None]]] | None:
    """Each member's name, and its fallback name and the sysName it holds (None: none)."""
    fields = _PLACEHOLDER.findall(pattern)
    unknown = [f for f in fields if f not in ("ip", "sysName") and not _N_FORMAT.fullmatch(f)]
    if unknown:
        found.append(
            (
                path,
                loc,
                f"unknown placeholder {{{unknown[0]}}}: use {{n}}, {{n:02}}, {{ip}} or {{sysName}}",
            )
        )
        return None
    if len(addresses) > 1 and not fields:
        found.append(
            (
                path,
                loc,
                f"a group of {len(addresses)} addresses needs {{n}} or {{ip}} in its "
                "name pattern (access-sw-{n})",
            )
        )
        return None

    def name(n: int, address: str, sys_name: str | None) -> str:
        ip = re.sub(r"[.:\[\]]", "-", address.split("]")[0].strip("["))

        def fill(match: re.Match[str]) -> str:
            spec = match.group(1)
            if spec == "ip":
                return ip
            if spec == "sysName":
                return sys_name if sys_name is not None else f"snmp-{ip}"
            width = _N_FORMAT.fullmatch(spec).group(1)  # type: ignore[union-attr]
            return str(n).zfill(int(width)) if width else str(n)

        return _PLACEHOLDER.sub(fill, pattern)

    return [
        (name(n, a, sys_names.get(a)), (name(n, a, None), sys_names.get(a)))
        for n, a in enumerate(addresses, start=1)
    ]


def clean_sys_name(text: str) -> str:
    """A device's sysName made a name part: letters, digits and _ . : - (others as `-`),
    at most 64 characters; "" when nothing of it is left."""
    return re.sub(r"[^A-Za-z0-9_.:-]+", "-", text).strip("-.:")[:64]
