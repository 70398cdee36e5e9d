"""NUT collector: reads UPS variables from a Network UPS Tools server (upsd, TCP 3493)."""

from __future__ import annotations

import asyncio
import errno
import math
import re
import socket
from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from dutyd.collectors.base import (
    Collector,
    CollectorContext,
    Readings,
    TargetConfig,
    parse_host_port,
)
from dutyd.collectors.nut.protocol import (
    MAX_LIST_LINES,
    ConnectionClosed,
    NutConnection,
    has_control,
    quote_arg,
    shorten,
    split_line,
)
from dutyd.core.configtypes import SecretEnv, SecretFile, pick_secret
from dutyd.core.errors import (
    BadCredentials,
    BadResponse,
    CollectError,
    ReadingUnavailable,
    TargetTimeout,
    TargetUnreachable,
    shown,
)

DEFAULT_PORT = 3493
# ups.status flag -> sample name. The names are shared with the SNMP `ups` profile, so one rule
# ("ups_on_battery == 1") covers a UPS whichever way it is watched.
STATUS_FLAGS: dict[str, str] = {
    "OL": "ups_on_line",
    "OB": "ups_on_battery",
    "LB": "ups_battery_low",
    "RB": "ups_replace_battery",
    "CHRG": "ups_charging",
    "BYPASS": "ups_on_bypass",
    "FSD": "ups_forced_shutdown",
    "OVER": "ups_overloaded",
}
# Sample name -> NUT variables, first present wins.
NUMERIC_VARS: dict[str, tuple[str, ...]] = {
    "ups_battery_charge_percent": ("battery.charge",),
    "ups_battery_runtime_seconds": ("battery.runtime",),
    "ups_input_voltage_volts": ("input.voltage",),
    "ups_output_load_percent": ("ups.load",),
    # The name says battery (as UPS-MIB's upsBatteryTemperature); many drivers only
    # publish the unit's temperature, which sits next to the battery.
    "ups_battery_temperature_celsius": ("battery.temperature", "ups.temperature"),
}
DATA_OK = "ups_data_ok"

# ERR codes (docs/net-protocol.txt) that mean the login was refused.
_AUTH_ERRORS = frozenset(
    {
        "ACCESS-DENIED",
        "PASSWORD-REQUIRED",
        "USERNAME-REQUIRED",
        "INVALID-PASSWORD",
        "INVALID-USERNAME",
        "ALREADY-SET-USERNAME",
        "ALREADY-SET-PASSWORD",
    }
)

_UPS_NAME = re.compile(r"^[^\s\"\\@]{1,64}$")


class NutTarget(TargetConfig):
    """A NUT server (upsd). `address` is `host` or `host:port` (port 3493 by default;
    IPv6 as `[::1]:3493`). Every poll reads `LIST VAR` of one UPS, or of every UPS the
    server lists, on a connection kept open between polls.

    Samples: the `ups.status` flags as 0/1 (`ups_on_line`, `ups_on_battery`, `ups_battery_low`,
    `ups_replace_battery`, `ups_charging`, `ups_on_bypass`, `ups_forced_shutdown`,
    `ups_overloaded`) and `ups_battery_charge_percent`, `ups_battery_runtime_seconds`,
    `ups_input_voltage_volts`, `ups_output_load_percent`, `ups_battery_temperature_celsius`.
    """

    kind: Literal["nut"]
    ups: str | None = Field(
        default=None,
        description=(
            "The UPS name as upsd knows it (the [section] of ups.conf, `rack` in rack@host). "
            "Omitted: every UPS of `LIST UPS`, each sample labelled ups=<name>; a stale UPS "
            "then shows as ups_data_ok{ups=...} = 0 while the others are still read."
        ),
    )
    username: str | None = Field(
        default=None,
        min_length=1,
        description="upsd.users account sent as USERNAME (reading needs none by default).",
    )
    password: SecretStr | None = Field(default=None, description="Its PASSWORD, literally.")
    password_env: SecretEnv | None = Field(
        default=None, description="Name of the environment variable holding the password."
    )
    password_file: SecretFile | None = Field(
        default=None, description="Path of a file holding the password."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_address(v)
        return v

    @field_validator("ups")
    @classmethod
    def _ups_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "@" in v:
            raise ValueError("give the UPS name only (rack, not rack@host); the host is `address`")
        if not _UPS_NAME.match(v):
            raise ValueError("a NUT UPS name has no spaces, quotes or backslashes")
        return v

    @model_validator(mode="after")
    def _secrets(self) -> NutTarget:
        given = [p for p in (self.password, self.password_env, self.password_file) if p]
        if len(given) > 1:
            raise ValueError("give only one of password, password_env, password_file")
        if given and not self.username:
            raise ValueError("a password needs a username")
        # A line break would end the protocol line and let the rest run as another command.
        if self.username and has_control(self.username):
            raise ValueError("username must not contain control characters (line breaks)")
        if given and has_control(given[0].get_secret_value()):
            raise ValueError("the password must not contain control characters (line breaks)")
        return self

    def endpoint(self) -> tuple[str, int]:
        return parse_address(self.address)


# The equipment register's facts of a UPS, from its NUT variables.
FACT_VARS = {
    "vendor": "ups.mfr",
    "model": "ups.model",
    "serial": "ups.serial",
    "firmware": "ups.firmware",
    "battery_date": "battery.date",
    "battery_type": "battery.type",
    "mfr_date": "ups.mfr.date",
}


def ups_facts(values: Mapping[str, str]) -> dict[str, str]:
    return {fact: values[var] for fact, var in FACT_VARS.items() if values.get(var)}


def parse_address(address: str) -> tuple[str, int]:
    return parse_host_port(address, DEFAULT_PORT)


class NutCollector(Collector[NutTarget]):
    """Polls one upsd: `LIST UPS` (when no UPS is named) and `LIST VAR` for each UPS."""

    kind: ClassVar[str] = "nut"
    config_model: ClassVar[type[TargetConfig]] = NutTarget
    metric_help: ClassVar[Mapping[str, str]] = {
        "ups_on_line": "1 when the UPS runs on mains (NUT status OL).",
        "ups_on_battery": "1 when the UPS runs on battery (NUT status OB).",
        "ups_battery_low": "1 when the battery is low and shutdown is near (NUT status LB).",
        "ups_replace_battery": "1 when the UPS asks for a battery replacement (NUT status RB).",
        "ups_charging": "1 while the battery is charging (NUT status CHRG).",
        "ups_on_bypass": "1 when the load bypasses the inverter (NUT status BYPASS).",
        "ups_forced_shutdown": "1 when a forced shutdown is under way (NUT status FSD).",
        "ups_overloaded": "1 when the UPS is overloaded (NUT status OVER).",
        "ups_battery_charge_percent": "Battery charge in percent (NUT battery.charge).",
        "ups_battery_runtime_seconds": "Estimated runtime on battery (NUT battery.runtime).",
        "ups_input_voltage_volts": "Input (mains) voltage (NUT input.voltage).",
        "ups_output_load_percent": "Output load in percent of capacity (NUT ups.load).",
        "ups_battery_temperature_celsius": (
            "Battery temperature (NUT battery.temperature, else ups.temperature)."
        ),
        DATA_OK: (
            "1 when upsd has fresh data for this UPS; 0 when stale or its driver is gone "
            "(only for targets without `ups`, where several UPSes share one target)."
        ),
    }

    def __init__(self, config: NutTarget, context: CollectorContext) -> None:
        super().__init__(config, context)
        self._host, self._port = config.endpoint()
        self._server = (
            f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        )
        self._password = pick_secret(config.password, config.password_env, config.password_file)
        self._conn: NutConnection | None = None
        self._lock = asyncio.Lock()
        # What the poll is doing, so that a timeout says where it stuck.
        self._doing = ""
        if config.ups is not None:
            # Prebuilt once: the hot path only writes these bytes and compares prefixes.
            self._list_var_cmd = f"LIST VAR {config.ups}\n".encode()

    @property
    def server(self) -> str:
        return self._server

    async def collect(self, readings: Readings) -> None:
        # Finish a little before the scheduler's own timeout so that the reason people read
        # says what stuck (connect, half a line) instead of a bare "no answer".
        budget = self.config.timeout * 0.9
        deadline = asyncio.get_running_loop().time() + budget
        # Waiting for the connection (a `close` saying LOGOUT) counts against the budget too:
        # every await of a poll is inside it.
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError as exc:
            raise TargetTimeout(
                f"NUT server {self._server}: the connection was still busy closing after "
                f"{budget:.3g}s"
            ) from exc
        try:
            async with asyncio.timeout_at(deadline):
                refused = await self._poll_retrying(readings)
        except TimeoutError as exc:
            error = self._timeout_error(budget)
            await self._drop()
            raise error from exc
        except BaseException:
            # Cancelled, garbage or a bug: the stream is out of step, start afresh.
            await self._drop()
            raise
        finally:
            self._lock.release()
        if refused is not None:
            # An ERR answer (stale, unknown UPS) leaves the connection in step: it is kept.
            raise refused

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close(logout_timeout=min(1.0, self.config.timeout))

    # -- the poll ---------------------------------------------------------------------------

    async def _poll_retrying(self, readings: Readings) -> CollectError | None:
        reused = self._conn
        if reused is not None:
            reused.received = False
        try:
            return await self._poll(readings)
        except ConnectionClosed as exc:
            await self._drop()
            if reused is not None and not reused.received:
                # The kept connection died while idle (upsd restarted): one fresh try.
                try:
                    return await self._poll(readings)
                except ConnectionClosed as exc2:
                    await self._drop()
                    raise self._closed_error() from exc2
            raise self._closed_error() from exc

    async def _poll(self, readings: Readings) -> CollectError | None:
        """Read the target into `readings`; an ERR answer is returned, not raised."""
        conn = self._conn or await self._connect()
        if self.config.ups is not None:
            self._doing = f"the answer to 'LIST VAR {self.config.ups}'"
            await conn.send(self._list_var_cmd)
            values = await self._read_var_list(conn, self.config.ups)
            if isinstance(values, CollectError):
                return values
            self._emit(readings, values, {})
            if self.facts_due:
                self.note_facts(ups_facts(values))
            return None

        self._doing = "the answer to 'LIST UPS'"
        await conn.send(b"LIST UPS\n")
        names = await self._read_ups_list(conn)
        if not names:
            return ReadingUnavailable(
                f"NUT server {self._server} serves no UPS (LIST UPS is empty)"
            )
        # Pipelined: every LIST VAR in one write, the answers read back in order.
        await conn.send(b"".join(f"LIST VAR {n}\n".encode() for n in names))
        results: list[tuple[str, dict[str, str] | CollectError]] = []
        for name in names:
            self._doing = f"the answer to 'LIST VAR {name}'"
            results.append((name, await self._read_var_list(conn, name)))
        failures = [r for _, r in results if isinstance(r, CollectError)]
        if len(failures) == len(results):
            if len(failures) == 1:
                return failures[0]
            return type(failures[0])("; ".join(f.message for f in failures))
        # Some UPSes read: the target is up, and a stale one shows as ups_data_ok 0 so that
        # one dead driver does not hide the others' power state.
        facts: dict[str, str] = {}
        for name, result in results:
            if isinstance(result, CollectError):
                readings.add(DATA_OK, 0.0, ups=name)
            else:
                readings.add(DATA_OK, 1.0, ups=name)
                self._emit(readings, result, {"ups": name})
                facts.update({f"{name} {k}": v for k, v in ups_facts(result).items()})
        if self.facts_due and not failures:
            self.note_facts(facts)
        return None

    async def _connect(self) -> NutConnection:
        self._doing = "the connection to be accepted"
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except ConnectionRefusedError as exc:
            raise TargetUnreachable(
                f"NUT server {self._server} refused the connection (is upsd running and "
                "listening there?)"
            ) from exc
        except socket.gaierror as exc:
            raise TargetUnreachable(
                f"NUT server host {self._host!r} cannot be resolved: {exc.strerror}"
            ) from exc
        except OSError as exc:
            if exc.errno in (errno.ETIMEDOUT,):
                raise TargetTimeout(
                    f"NUT server {self._server} did not accept the connection in time"
                ) from exc
            raise TargetUnreachable(
                f"NUT server {self._server} is unreachable: {exc.strerror or exc}"
            ) from exc
        conn = NutConnection(reader, writer)
        self._conn = conn
        if self.config.username:
            user = quote_arg(self.config.username)
            await self._simple(conn, f"USERNAME {user}\n", "USERNAME")
            if self._password is not None:
                # The password is never shown: the message names the command only.
                password = quote_arg(self._password)
                await self._simple(conn, f"PASSWORD {password}\n", "PASSWORD")
        return conn

    async def _simple(self, conn: NutConnection, command: str, name: str) -> None:
        self._doing = f"the answer to '{name}'"
        await conn.send(command.encode())
        line = await conn.line(self._server)
        if line.startswith("OK"):
            return
        if line.startswith("ERR "):
            code = line[4:].split(" ", 1)[0]
            if code in _AUTH_ERRORS:
                raise BadCredentials(
                    f"NUT server {self._server} refused {name} for user "
                    f"{self.config.username!r}: ERR {code}"
                )
            # Any other code is the server's text, up to a 4 KiB line: cut short.
            raise BadResponse(
                f"NUT server {self._server} answered {name} with {shown(f'ERR {code}')}"
            )
        raise self._garbage(name, line)

    async def _read_ups_list(self, conn: NutConnection) -> list[str]:
        first = await conn.line(self._server)
        if first != "BEGIN LIST UPS":
            raise self._error_reply(first, "LIST UPS", None)
        names: list[str] = []
        for _ in range(MAX_LIST_LINES):
            line = await conn.line(self._server)
            if line == "END LIST UPS":
                return names
            try:
                words = split_line(line)
            except ValueError:
                raise self._garbage("LIST UPS", line) from None
            if len(words) < 2 or words[0] != "UPS" or not _UPS_NAME.match(words[1]):
                raise self._garbage("LIST UPS", line)
            names.append(words[1])
        raise self._endless("LIST UPS")

    async def _read_var_list(self, conn: NutConnection, ups: str) -> dict[str, str] | CollectError:
        """The variables of one UPS, or the error upsd answered (the stream stays in step)."""
        command = f"LIST VAR {ups}"
        first = await conn.line(self._server)
        if first != f"BEGIN {command}":
            return self._error_reply(first, command, ups)
        prefix = f"VAR {ups} "
        cut = len(prefix)
        end = f"END {command}"
        values: dict[str, str] = {}
        for _ in range(MAX_LIST_LINES):
            line = await conn.line(self._server)
            if line.startswith(prefix):
                # Fast path: `VAR ups name "value"` with nothing to unescape.
                name, sep, quoted = line[cut:].partition(" ")
                if sep and len(quoted) >= 2 and quoted[0] == '"' and quoted[-1] == '"':
                    inner = quoted[1:-1]
                    if "\\" not in inner and '"' not in inner:
                        values[name] = inner
                        continue
                try:
                    words = split_line(line)
                except ValueError:
                    raise self._garbage(command, line) from None
                if len(words) != 4:
                    raise self._garbage(command, line)
                values[words[2]] = words[3]
            elif line == end:
                status = values.get("ups.status")
                if status is not None and set(status.split()) <= {"WAIT"}:
                    # Set while a driver starts up or shuts down: nothing is known of the UPS.
                    return ReadingUnavailable(
                        f"upsd reports UPS {ups!r} has no status (driver starting or stopping: "
                        f"status {shown(status)})"
                    )
                return values
            else:
                raise self._garbage(command, line)
        raise self._endless(command)

    def _emit(self, readings: Readings, values: Mapping[str, str], labels: dict[str, str]) -> None:
        status = values.get("ups.status")
        if status is not None:
            flags = set(status.split())
            for flag, name in STATUS_FLAGS.items():
                readings.add_labelled(name, 1.0 if flag in flags else 0.0, labels)
        for name, keys in NUMERIC_VARS.items():
            for key in keys:
                text = values.get(key)
                if text is None:
                    continue
                try:
                    number = float(text)
                except ValueError:
                    # One odd value (some drivers print "unknown") must not hide the rest.
                    continue
                # NaN and infinities ("inf", or a digit string too long for a float) are no
                # reading either.
                if math.isfinite(number):
                    readings.add_labelled(name, number, labels)
                break

    # -- errors -----------------------------------------------------------------------------

    def _error_reply(self, line: str, command: str, ups: str | None) -> CollectError:
        if not line.startswith("ERR "):
            return self._garbage(command, line)
        code = line[4:].split(" ", 1)[0]
        who = f"UPS {ups!r}" if ups else "the UPS list"
        if code == "DATA-STALE":
            return ReadingUnavailable(
                f"upsd reports UPS {ups!r} data is stale (driver not updating)"
            )
        if code == "DRIVER-NOT-CONNECTED":
            return ReadingUnavailable(
                f"upsd reports UPS {ups!r} has no driver connected (driver not running)"
            )
        if code == "UNKNOWN-UPS":
            return BadResponse(
                f"NUT server {self._server} knows no UPS named {ups!r} (see `upsc -l "
                f"{self._host}` for the names it serves)"
            )
        if code in _AUTH_ERRORS:
            return BadCredentials(
                f"NUT server {self._server} refused to show {who}: ERR {code} (check "
                "username and password)"
            )
        # An unknown code is the server's text, up to a 4 KiB line: cut short.
        return BadResponse(
            f"NUT server {self._server} answered '{command}' with {shown(f'ERR {code}')}"
        )

    def _garbage(self, command: str, line: str) -> BadResponse:
        return BadResponse(
            f"NUT server {self._server} answered '{command}' with something that is not the "
            f"NUT protocol: {shorten(line)!r}"
        )

    def _endless(self, command: str) -> BadResponse:
        return BadResponse(
            f"NUT server {self._server} did not end its answer to '{command}' after "
            f"{MAX_LIST_LINES} lines"
        )

    def _closed_error(self) -> TargetUnreachable:
        return TargetUnreachable(
            f"NUT server {self._server} closed the connection while we waited for "
            f"{self._doing or 'an answer'} (upsd stopped or restarting?)"
        )

    def _timeout_error(self, budget: float) -> TargetTimeout:
        conn = self._conn
        partial = conn.partial() if conn is not None else b""
        if partial:
            text = partial.decode("utf-8", "replace")
            return TargetTimeout(
                f"NUT server {self._server} sent half a line ({shorten(text, 40)!r}) and then "
                f"nothing for the rest of {budget:.3g}s while we waited for {self._doing}"
            )
        return TargetTimeout(
            f"NUT server {self._server} gave no answer within {budget:.3g}s while we waited "
            f"for {self._doing or 'it'}"
        )

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
