"""Targets named from what the device calls itself: `name: "{sysName}"` (or `sw-{sysName}`)
on an SNMP group entry (`addresses:`).

A name is an identity: the alerts, their stored rows, `depends_on` and rules' `targets:`,
the metrics' `target` label and the status page all hold it. So the sysName is read once, at
start and at each reload (never at a poll), and a name only changes there:
- every member is asked for sysName.0 in parallel (at most `CONCURRENCY` at once,
  `RATE` a second, each within its target's timeout up to `READ_TIMEOUT`, all within
  `DEADLINE`), with the target's own SNMP settings;
- what a device told is remembered in storage (`sys_names`, by the address as written), so a
  restart while it does not answer keeps its name; one that never told is named by its
  address (`{sysName}` read as `snmp-{ip}`) with a log line and a check-config note, and a
  reference to the name it would tell is a note until it does (config.py, UNKNOWN_TARGET);
- a new sysName at a reload renames the target, as an edit of its name in the file would
  (its alerts end with a notice); the rename is logged and written to the duty log;
- a sysName that makes no name (nothing left of it once cleaned to letters, digits and
  `_ . : -`) is refused with a note, the member keeping the name it had; two devices that tell
  the same name (or one that tells a written target's name) are each named by their address
  with a note (configsources.py), so no identity depends on which answered first; a reference
  to such a name is a note, not a problem (a device must not stop dutyd from starting).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dutyd.agent.config import Settings, format_loc, read_config, validate, yaml_lines
from dutyd.agent.configsources import Assembled, Loc, SysNamed, clean_sys_name
from dutyd.agent.discovery import SYS_NAME, RateLimit
from dutyd.collectors.base import CollectorContext
from dutyd.collectors.snmp.client import Query
from dutyd.collectors.snmp.codec import Exception_
from dutyd.collectors.snmp.collector import SnmpCollector, SnmpTarget
from dutyd.core.errors import CollectError

log = logging.getLogger("dutyd")

READ_TIMEOUT = 2.0  # seconds, at most, per device (its target's timeout when shorter)
CONCURRENCY = 64
RATE = 200.0  # queries a second
DEADLINE = 30.0  # for all of them: a reload does not wait longer for names
SHOWN = 64  # characters of an unusable sysName shown in a note


@dataclass
class Told:
    """What one device answered: its sysName made a name part, or why there is none."""

    name: str = ""
    # "gave no sysName (no answer ...)", or "tells sysName '...', which makes no name".
    problem: str = ""


@dataclass
class Named:
    settings: Settings
    # Per device: a line for the log and for check-config (where it is written, what happened).
    notes: list[str] = field(default_factory=list)
    # Address -> sysName told now, to remember; (address, old, new) of each renamed device.
    told: dict[str, str] = field(default_factory=dict)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)


async def load_named(
    path: str | Path,
    remembered: Mapping[str, str] | None = None,
    deadline: float = DEADLINE,
) -> Named:
    """The config with its `{sysName}` members named: what the devices tell now, else what
    they last told (`remembered`), else their address. `ConfigError` as `load_config`."""
    data, text, assembled = read_config(path)
    if not assembled.named:
        return Named(validate(data, str(path), text, assembled))
    remembered = remembered or {}
    answers = await read_sys_names(assembled.named, deadline)
    sys_names: dict[str, str] = {}
    told: dict[str, str] = {}
    renamed: list[tuple[str, str, str]] = []
    placed: list[tuple[SysNamed, str]] = []
    for member in assembled.named:
        address = member.address
        answer = answers.get(address, Told(problem="was not asked: its SNMP settings are invalid"))
        before = remembered.get(address)
        if answer.name:
            sys_names[address] = told[address] = answer.name
            if before is not None and before != answer.name:
                renamed.append((address, before, answer.name))
                what = f"now tells sysName {answer.name!r} (it told {before!r}): renamed"
                placed.append((member, f"{address} {what}"))
        elif before is not None:
            what = f"{answer.problem}; keeps the sysName it last told, {before!r}"
            sys_names[address] = before
            placed.append((member, f"{address} {what}"))
        else:
            what = f"{answer.problem}; named by its address until it tells its sysName"
            placed.append((member, f"{address} {what}"))
    data, text, final = read_config(path, sys_names)
    if renamed:
        # A rename the config's references do not follow would make it refuse to load (and
        # dutyd to start): such a device keeps the name the config refers to.
        was = {address: before for address, before, _ in renamed}
        old_names = _names_by_address(read_config(path, {**sys_names, **was})[2])
        new_names = _names_by_address(final)
        referred = _references(final.data)
        kept = [
            (address, before, now)
            for address, before, now in renamed
            if old_names.get(address) in referred and new_names.get(address) not in referred
        ]
        for address, before, now in kept:
            sys_names[address] = told[address] = before
            renamed.remove((address, before, now))
            member = next(m for m in assembled.named if m.address == address)
            what = (
                f"now tells sysName {now!r}, but the config refers to {old_names[address]!r}: "
                "keeps that name until the references follow"
            )
            placed = [(m, n) for m, n in placed if m is not member]
            placed.append((member, f"{address} {what}"))
        if kept:
            data, text, final = read_config(path, sys_names)
    notes: list[str] = []
    settings = validate(data, str(path), text, final, notes)
    lines: dict[str, dict[Loc, int]] = {}  # per file, composed once however many notes
    notes = [_place(final, member.where, msg, lines) for member, msg in placed] + notes
    return Named(settings, notes, told, renamed)


def load_named_now(path: str | Path) -> Named:
    """`load_named` for a command (check-config, topology): the devices are asked, nothing is
    remembered (the daemon's store is its own)."""
    data, text, assembled = read_config(path)
    if not assembled.named:
        return Named(validate(data, str(path), text, assembled))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(load_named(path))
    # Called from a running loop (a test driving the CLI): the reads get a loop of their own.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(lambda: asyncio.run(load_named(path))).result()


async def read_sys_names(
    members: Sequence[SysNamed], deadline: float = DEADLINE
) -> dict[str, Told]:
    """Address -> what the device told, for every member whose SNMP settings are valid."""
    context = CollectorContext()
    limit = RateLimit(RATE)
    slots = asyncio.Semaphore(CONCURRENCY)
    answers: dict[str, Told] = {}

    async def ask(member: SysNamed) -> None:
        try:
            cfg = SnmpTarget.model_validate(member.target)
        except ValidationError:
            return  # the config's validation reports it
        timeout = min(cfg.timeout, READ_TIMEOUT)
        cfg = cfg.model_copy(update={"timeout": timeout, "retries": 0})
        answers[member.address] = Told(problem=f"did not answer within {deadline:g}s")
        async with slots:
            await limit.wait()
            collector = SnmpCollector(cfg, context)
            try:
                async with asyncio.timeout(timeout + 0.5):
                    got = await collector.client().fetch(Query([SYS_NAME], []), 1)
            except (CollectError, OSError) as exc:
                answers[member.address] = Told(problem=f"gave no sysName ({exc})")
                return
            except TimeoutError:
                answers[member.address] = Told(problem=f"did not answer within {timeout:g}s")
                return
            finally:
                await collector.close()
        answers[member.address] = _told(got[0][0] if got[0] else None)

    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(ask(m) for m in members))
    except TimeoutError:
        pass  # those not answered yet keep "did not answer within the deadline"
    finally:
        await context.close()
    return answers


def _names_by_address(assembled: Assembled) -> dict[str, str]:
    """The name each `{sysName}` member got, by its address."""
    return {m.address: str(m.target.get("name")) for m in assembled.named}


def _references(data: Mapping[str, Any]) -> set[str]:
    """Target names the config refers to: `depends_on`, rules' and maintenance `targets`."""

    def names(value: Any) -> list[str]:
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    def entries(value: Any) -> list[Mapping[str, Any]]:
        return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []

    out: set[str] = set()
    for target in entries(data.get("targets")):
        out.update(names(target.get("depends_on")))
    rules = data.get("rules")
    if isinstance(rules, Mapping):
        for rule in entries(rules.get("custom")):
            out.update(names(rule.get("targets")) + names(rule.get("depends_on")))
        for window in entries(rules.get("maintenance")):
            out.update(names(window.get("targets")))
    return out


def _told(value: object) -> Told:
    if isinstance(value, Exception_) or value is None:
        return Told(problem="has no sysName (sysName.0 not there)")
    text = value[:255].decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    name = clean_sys_name(text)
    if not name:
        return Told(problem=f"tells sysName {text[:SHOWN]!r}, which makes no name")
    return Told(name=name)


def _place(
    assembled: Assembled, where: tuple[str, Loc], msg: str, known: dict[str, dict[Loc, int]]
) -> str:
    """A note as a problem is placed: the file (unless the main one), key path and line."""
    path, loc = where
    if path not in known:
        known[path] = yaml_lines(assembled.texts.get(path, ""))
    lines = known[path]
    probe = loc
    while probe not in lines and probe:
        probe = probe[:-1]
    line = lines.get(probe)
    text = f"{format_loc(loc)}: {msg}" + (f" (line {line})" if line else "")
    return text if path == assembled.origins.main else f"{path}: {text}"
