"""The software system usage register, kept by itself: each server's accounts, password policy
and logins, read over its SSH connection (`collectors/ssh/accounts.py`) at start and daily.

Everything is kept in the machine-room log (the duty log, on either store), written by the
active node only:

- `software.accounts`: the server's accounts and password policy, when first read and whenever
  they change;
- `software.logins`: the logins wtmp shows that were not recorded yet (user, line, host, start);
- `account.added`: an account that can log in appeared (a new login shell or a new account), at
  once;
- `account.uid0`: an account other than those seen before has uid 0, at once.

The quarterly account review (`dutyd report --register software`, `duty/registers.py`) reads
them back: `review` lists what breaks the rules (more than one uid 0, accounts that can log in
unused for 90 days, PASS_MAX_DAYS above 90 or unset, minimum password length below 6 or unset,
a login account with an empty password, and password states that could not be read).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dutyd.collectors.ssh.accounts import AccountsReading
from dutyd.core.clock import SYSTEM_CLOCK, Clock
from dutyd.duty.recorder import RegisterRecorder
from dutyd.storage import LogEntry, Storage

log = logging.getLogger("dutyd.software")

ACCOUNTS = "software.accounts"
LOGINS = "software.logins"
ADDED = "account.added"
UID0 = "account.uid0"

UNUSED_DAYS = 90
MAX_PASS_DAYS = 90
MIN_LENGTH = 6
# Logins written in one log entry at most (a first reading of a busy wtmp).
MAX_LOGINS_PER_ENTRY = 2000


def _login_names(accounts: Iterable[dict[str, Any]]) -> set[str]:
    return {str(a["name"]) for a in accounts if a.get("login")}


def _uid0(accounts: Iterable[dict[str, Any]]) -> set[str]:
    return {str(a["name"]) for a in accounts if a.get("uid") == 0}


class SoftwareRegister(RegisterRecorder):
    def __init__(
        self,
        storage: Storage,
        clock: Clock = SYSTEM_CLOCK,
        active: Callable[[], bool] = lambda: True,
        fence: Callable[[], int | None] = lambda: None,
    ) -> None:
        super().__init__(storage, clock, active, fence)
        # target -> the last `software.accounts` data; the newest login start recorded and the
        # logins recorded at that second (wtmp's resolution).
        self.known: dict[str, dict[str, Any]] = {}
        self.newest: dict[str, tuple[float, set[tuple[str, str, str]]]] = {}

    async def start(self) -> None:
        for e in await self._storage.log.read(kinds=[ACCOUNTS, LOGINS], limit=None):
            if e.kind == ACCOUNTS:
                self.known[e.subject] = e.data
            else:
                self._seen(e.subject, e.data.get("logins") or [])

    def _seen(self, target: str, logins: list[dict[str, Any]]) -> None:
        top, at_top = self.newest.get(target, (float("-inf"), set()))
        for login in logins:
            start = float(login["start"])
            key = (str(login["user"]), str(login["line"]), str(login["host"]))
            if start > top:
                top, at_top = start, {key}
            elif start == top:
                at_top.add(key)
        self.newest[target] = (top, at_top)

    def observe(self, target: str, reading: AccountsReading) -> None:
        """A poll's reading (called by the daemon after the poll): recorded off its path."""
        if not self._active():
            return
        self._spawn(self._record(target, reading, self._clock.time()))

    async def _record(self, target: str, reading: AccountsReading, now: float) -> None:
        try:
            async with self._lock:
                if reading.accounts is not None:
                    await self._accounts(target, reading, now)
                if reading.logins is not None:
                    await self._logins(target, reading, now)
        except Exception:
            # A full disk must not stop the polls; the next daily reading tries again.
            log.exception("recording the software usage register failed")

    async def _accounts(self, target: str, reading: AccountsReading, now: float) -> None:
        assert reading.accounts is not None
        passwords = reading.passwords or {}
        data: dict[str, Any] = {
            "accounts": [
                {"name": a.name, "uid": a.uid, "shell": a.shell, "login": a.can_log_in}
                | ({"password": passwords[a.name]} if a.name in passwords else {})
                for a in reading.accounts
            ],
            "pass_max_days": reading.pass_max_days,
            "min_length": reading.min_length,
        }
        if reading.passwords_unread is not None:
            data["passwords_unread"] = reading.passwords_unread
        before = self.known.get(target)
        if before == data:
            return
        await self._storage.log.append(now, ACCOUNTS, "dutyd", target, data, self._fence())
        self.known[target] = data
        if before is None:
            return
        old = before.get("accounts") or []
        for name in sorted(_login_names(data["accounts"]) - _login_names(old)):
            shell = next(a["shell"] for a in data["accounts"] if a["name"] == name)
            note = f"{target}: new login account {name} ({shell})"
            await self._storage.log.append(
                now,
                ADDED,
                "dutyd",
                target,
                {"target": target, "account": name, "note": note},
                self._fence(),
            )
            log.warning("new login account", extra={"fields": {"target": target, "account": name}})
        for name in sorted(_uid0(data["accounts"]) - _uid0(old)):
            note = f"{target}: account {name} has uid 0"
            await self._storage.log.append(
                now,
                UID0,
                "dutyd",
                target,
                {"target": target, "account": name, "note": note},
                self._fence(),
            )
            log.warning("new uid 0", extra={"fields": {"target": target, "account": name}})

    async def _logins(self, target: str, reading: AccountsReading, now: float) -> None:
        assert reading.logins is not None
        top, at_top = self.newest.get(target, (float("-inf"), set()))
        new = [
            login.as_dict()
            for login in sorted(reading.logins, key=lambda x: x.start)
            if login.start > top
            or (login.start == top and (login.user, login.line, login.host) not in at_top)
        ]
        for i in range(0, len(new), MAX_LOGINS_PER_ENTRY):
            part = new[i : i + MAX_LOGINS_PER_ENTRY]
            await self._storage.log.append(
                now, LOGINS, "dutyd", target, {"logins": part}, self._fence()
            )
            self._seen(target, part)


@dataclass(frozen=True, slots=True)
class Finding:
    target: str
    rule: str  # uid0 | unused | pass_max_days | min_length | empty_password | passwords_unread
    detail: str


def review(
    snapshots: list[LogEntry], logins: list[LogEntry], end: float
) -> tuple[dict[str, dict[str, Any]], list[Finding], dict[tuple[str, str], float]]:
    """What breaks the rules at `end`, from each server's `software.accounts` entries before
    it (the last one is its state; the first says since when it is watched) and the logins
    recorded; also each server's state and each (server, user)'s last login. An account with
    no login recorded counts as unused once the server has been watched for 90 days (before
    that, wtmp's rotation may hide its last login)."""
    state: dict[str, dict[str, Any]] = {}
    watched: dict[str, float] = {}
    for e in snapshots:
        if e.timestamp < end:
            state[e.subject] = e.data
            watched.setdefault(e.subject, e.timestamp)
    last: dict[tuple[str, str], float] = {}
    for e in logins:
        for login in e.data.get("logins") or []:
            start = float(login["start"])
            key = (e.subject, str(login["user"]))
            if start < end and start > last.get(key, float("-inf")):
                last[key] = start
    findings: list[Finding] = []
    for target in sorted(state):
        data = state[target]
        accounts = data.get("accounts") or []
        zero = sorted(_uid0(accounts))
        if len(zero) > 1:
            findings.append(Finding(target, "uid0", ", ".join(zero)))
        for a in accounts:
            if not a.get("login"):
                continue
            seen = last.get((target, str(a["name"])))
            since = end - UNUSED_DAYS * 86400
            if (seen is None and watched[target] <= since) or (seen is not None and seen < since):
                findings.append(Finding(target, "unused", str(a["name"])))
        empty = [
            str(a["name"]) for a in accounts if a.get("login") and a.get("password") == "empty"
        ]
        if empty:
            findings.append(Finding(target, "empty_password", ", ".join(empty)))
        if unread := data.get("passwords_unread"):
            findings.append(Finding(target, "passwords_unread", str(unread)))
        days = data.get("pass_max_days")
        if days is None or days > MAX_PASS_DAYS:
            findings.append(Finding(target, "pass_max_days", "-" if days is None else str(days)))
        length = data.get("min_length")
        if length is None or length < MIN_LENGTH:
            findings.append(Finding(target, "min_length", "-" if length is None else str(length)))
    return state, findings, last
