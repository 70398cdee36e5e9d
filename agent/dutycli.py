"""Duty subcommands of `dutyd`: oncall, ack, silence, maintenance, drill (through the running
daemon's HTTP API with the API token), log and report (reading the store directly through
its repositories, opened read-only, so they work when the daemon is down too).

The daemon's URL and token come from the config file (`-c`, or $DUTYD_CONFIG): `http.listen`,
`http.port` and `api.token_env`/`api.token_file`; `--url` and $DUTYD_API_TOKEN override them.
When the daemon asks for a login (`basic_auth_users` in its web config), `--user` (or
$DUTYD_API_USER) with the password in $DUTYD_API_PASSWORD or `--password-file` is sent as HTTP
Basic beside the token. A password is never taken from the command line: `ps` and the shell
history would show it to every local user.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import getpass
import ipaddress
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zoneinfo
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from dutyd.agent.config import Settings, load_config
from dutyd.core.configtypes import parse_duration
from dutyd.core.errors import ConfigError
from dutyd.duty.registers import REGISTERS
from dutyd.storage import LogEntry, Storage, StorageError, open_configured, open_storage
from dutyd.web.config import DEFAULT_PORT
from dutyd.web.views import log_detail

EXIT_CONFIG = 2
EXIT_REFUSED = 1

T = TypeVar("T")


def _settings(args: argparse.Namespace) -> Settings | None:
    path = args.config or os.environ.get("DUTYD_CONFIG")
    if not path:
        return None
    return load_config(path)


def _need_settings(args: argparse.Namespace) -> Settings:
    settings = _settings(args)
    if settings is None:
        raise ConfigError("dutyd", ["give the config file with -c FILE or $DUTYD_CONFIG"])
    return settings


def _api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> dict[str, Any]:
    settings = _settings(args)
    url = args.url
    if not url:
        host = settings.http.listen if settings else "127.0.0.1"
        # A daemon listening on every interface is reached on loopback.
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        port = settings.http.port if settings else DEFAULT_PORT
        url = f"http://{host}:{port}"
    token = os.environ.get("DUTYD_API_TOKEN") or (settings.api.secret() if settings else "")
    data = json.dumps(body).encode() if body is not None else None
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"--url {url!r}: must be an http:// or https:// URL")
    # The scheme is checked above, so urlopen never reads file: or custom schemes.
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)  # noqa: S310
    req.add_header("Content-Type", "application/json")
    if token:
        # Its own header: with basic auth on, `Authorization` carries the login.
        req.add_header("X-Dutyd-Token", token)
    login = _login(args, url)
    if login is not None:
        req.add_header("Authorization", login)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return dict(json.loads(resp.read() or b"{}"))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        if exc.code == 401 and "basic" in (exc.headers.get("WWW-Authenticate") or "").lower():
            reason = (
                "dutyd asks for a user name and password (basic auth): give --user or "
                "$DUTYD_API_USER, and the password in $DUTYD_API_PASSWORD or --password-file"
                if login is None
                else "the user name or password was not accepted"
            )
        raise SystemExit(f"dutyd refused ({exc.code}): {reason}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"cannot reach dutyd at {url}: {exc.reason}") from None


def _is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _login(args: argparse.Namespace, url: str) -> str | None:
    """The basic-auth header, worked out (and the password asked for) once per command:
    `dutyd drill` calls the API every second while it waits."""
    if not hasattr(args, "basic_login"):
        args.basic_login = _basic_auth(args)
        if args.basic_login and url.startswith("http://") and not _is_loopback_url(url):
            print(
                f"warning: the basic-auth password travels unencrypted to {url}; "
                "use https:// (tls_server_config in the daemon's web config)",
                file=sys.stderr,
            )
    login: str | None = args.basic_login
    return login


def _basic_auth(args: argparse.Namespace) -> str | None:
    """The `Authorization: Basic` value for --user / $DUTYD_API_USER, None without a user."""
    if getattr(args, "password", None) is not None:
        # The value is not repeated: it is a password, now in the shell history.
        raise SystemExit(
            "--password: a password is read from $DUTYD_API_PASSWORD or --password-file, never "
            "on the command line (every local user sees it in ps)"
        )
    user = getattr(args, "user", None) or os.environ.get("DUTYD_API_USER", "")
    if not user:
        return None
    if ":" in user:
        raise SystemExit(f"--user {user!r}: a basic-auth user name cannot contain ':'")
    password = _password(args, user)
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _password(args: argparse.Namespace, user: str) -> str:
    path = getattr(args, "password_file", None)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise SystemExit(f"--password-file {path}: cannot read it ({reason})") from None
        password = text.removesuffix("\n").removesuffix("\r")  # what `echo` or an editor added
        if not password:
            raise SystemExit(f"--password-file {path} is empty")
        return password
    password = os.environ.get("DUTYD_API_PASSWORD", "")
    if password:
        return password
    if sys.stdin.isatty():
        return getpass.getpass(f"dutyd password for {user}: ")
    raise SystemExit(
        f"--user {user}: give the password in $DUTYD_API_PASSWORD or with --password-file"
    )


def _site_zone(args: argparse.Namespace) -> zoneinfo.ZoneInfo:
    """The site's time zone (notify.timezone, else the rota's), in which people read times;
    UTC without a config file."""
    settings = _settings(args)
    if settings is None:
        return zoneinfo.ZoneInfo("UTC")
    name = settings.notify.timezone
    if name == "UTC" and settings.oncall.timezone != "UTC":
        name = settings.oncall.timezone
    return zoneinfo.ZoneInfo(name)


def _local(ts: float, zone: zoneinfo.ZoneInfo) -> str:
    """To the second, with the zone: a 20 s window's end must not read as a whole minute."""
    return dt.datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _actor(args: argparse.Namespace) -> str:
    return args.actor or os.environ.get("DUTYD_ACTOR") or getpass.getuser()


def _matchers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--match {item!r}: use label=value")
        out[key] = value
    return out


def _when(text: str, tz: str = "UTC") -> float:
    """An ISO time (site time zone when it has none) or a duration ago ("2h")."""
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    import zoneinfo

    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(
            f"{text!r} is neither a duration (2h) nor a time (2026-11-23T08:30)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zoneinfo.ZoneInfo(tz))
    return moment.timestamp()


# -- commands -----------------------------------------------------------------------------------


def cmd_oncall(args: argparse.Namespace) -> int:
    from dutyd.notify.oncall import Rota
    from dutyd.web.api import oncall_view

    settings = _need_settings(args)
    rota = Rota(settings.oncall)
    at = _when(args.at, settings.oncall.timezone) if args.at else time.time()
    view = oncall_view(rota, at)
    if args.json:
        print(json.dumps(view, ensure_ascii=False, indent=2))
        return 0
    for label, key in (("now ", "now"), ("next", "next")):
        s = view[key]
        people = ", ".join(view["on_duty"] if key == "now" else s["people"]) or "(nobody)"
        print(f"{label}  {s['start'][:16]} - {s['end'][:16]}  {people}")
        for note in s["overrides"]:
            print(f"        override: {note}")
    for role, members in view["roles"].items():
        print(f"{role}: {', '.join(members)}")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"alert": args.alert, "actor": _actor(args), "note": args.note}
    if args.expires:
        body["expires_in"] = args.expires
    out = _api(args, "POST", "/api/v1/ack", body)
    # With basic auth the daemon records the login, whatever --actor said.
    who = out.get("acknowledged_by") or out.get("actor") or _actor(args)
    print(f"acknowledged {out.get('fingerprint') or out.get('drill')} as {who}")
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    body = {
        "matchers": _matchers(args.match),
        "duration": args.duration,
        "actor": _actor(args),
        "reason": args.reason,
    }
    out = _api(args, "POST", "/api/v1/silences", body)
    print(f"silence {out['silence']} until {_local(out['until'], _site_zone(args))}")
    return 0


def cmd_maintenance(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "targets": args.target,
        "matchers": _matchers(args.match),
        "duration": args.duration,
        "actor": _actor(args),
        "reason": args.reason,
    }
    if args.start:
        body["start"] = _when(args.start)
    out = _api(args, "POST", "/api/v1/maintenance", body)
    zone = _site_zone(args)
    print(
        f"maintenance window {out['maintenance']} from {_local(out['start'], zone)} "
        f"until {_local(out['end'], zone)}"
    )
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    body = {"actor": _actor(args), "wait": args.wait, "speed": args.speed}
    run = _api(args, "POST", "/api/v1/drills", body)
    print(f"drill {run['id']} started: alert {run['fingerprint']}; waiting {args.wait} for answers")
    deadline = time.monotonic() + run["wait"] + 30
    seen = 0
    while time.monotonic() < deadline:
        status = _api(args, "GET", f"/api/v1/drills/{run['id']}")
        for a in status["acks"][seen:]:
            print(f"  answered: {a['actor']} after {a['seconds']:.0f}s {a.get('note', '')}")
        seen = len(status["acks"])
        if status["finished"]:
            print(f"drill {run['id']} over: {seen} answer(s); recorded in the duty log")
            return 0 if seen else EXIT_REFUSED
        time.sleep(1.0)
    print("the daemon did not finish the drill in time", file=sys.stderr)
    return EXIT_REFUSED


def cmd_entry(args: argparse.Namespace) -> int:
    """The entry register through the daemon: in, out, or who is in each room now."""
    zone = _site_zone(args)
    if args.direction == "who":
        rooms = _api(args, "GET", "/api/v1/rooms")["rooms"]
        for room in rooms:
            door = {True: "open", False: "shut", None: "unknown"}[room["door_open"]]
            people = room["people"]
            print(f"{room['room']}: door {door}, {len(people)} in")
            for p in people:
                since = _local(p["since"], zone)
                print(f"  {p['person']} since {since}: {p['purpose']}", end="")
                print(f" (carrying {p['items']})" if p["items"] else "", end="")
                print("" if p["approved"] else " NOT APPROVED")
        return 0
    body: dict[str, Any] = {
        "room": args.room,
        "person": args.person or _actor(args),
        "direction": args.direction,
        "with": args.with_,
        "purpose": args.purpose,
        "items": args.items,
        "actor": _actor(args),
    }
    if args.direction == "in" and args.approved_by:
        body["approved_by"] = args.approved_by
    out = _api(args, "POST", "/api/v1/entries", body)
    for e in out["entries"]:
        print(f"{e['person']} {args.direction} {e['room']} at {_local(e['timestamp'], zone)}")
    return 0


def _read_store(args: argparse.Namespace, read: Callable[[Storage], Awaitable[T]]) -> T:
    """Open the store read-only, run `read` on it, close it."""

    async def run() -> T:
        storage = (
            open_storage(Path(args.db), read_only=True)
            if args.db
            else open_configured(_need_settings(args).storage, read_only=True)
        )
        await storage.open()
        try:
            return await read(storage)
        finally:
            await storage.close()

    try:
        return asyncio.run(run())
    except StorageError as exc:
        raise SystemExit(str(exc)) from None


def cmd_log(args: argparse.Namespace) -> int:
    since = _when(args.since) if args.since else None

    async def read(storage: Storage) -> list[LogEntry]:
        return await storage.log.read(
            since=since,
            kinds=args.kind or (),
            subject_prefix=args.subject,
            limit=args.limit,
            newest_first=True,
        )

    zone = _site_zone(args) if not args.db or args.config else zoneinfo.ZoneInfo("UTC")
    for e in reversed(_read_store(args, read)):
        if args.json:
            print(
                json.dumps(
                    {
                        "ts": e.timestamp,
                        "kind": e.kind,
                        "actor": e.actor,
                        "subject": e.subject,
                        "data": e.data,
                    },
                    ensure_ascii=False,
                )
            )
            continue
        when = _local(e.timestamp, zone)
        brief = log_detail(e)
        print(f"{when}  {e.kind:<22} {e.actor:<12} {e.subject[:28]:<28} {brief}")
    return 0


def _write_report(args: argparse.Namespace, report: Any, default_name: str) -> int:
    from dutyd.duty.report import to_csv, to_markdown, to_xlsx

    if args.format == "xlsx":
        out = Path(args.output or default_name)
        to_xlsx(report, out)
        print(f"wrote {out}")
        return 0
    text = to_markdown(report) if args.format == "md" else to_csv(report)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _period(args: argparse.Namespace, tz: str) -> tuple[float, float]:
    if not args.from_:
        raise SystemExit("--register needs --from (a date or time in the site's zone)")
    start = _when(args.from_, tz)
    end = _when(args.to, tz) if args.to else time.time()
    return start, end


def cmd_report(args: argparse.Namespace) -> int:
    from dutyd.duty.report import build_report
    from dutyd.notify.oncall import Rota

    settings = _need_settings(args)
    if args.register:
        from dutyd.duty.registers import build_register

        zone = _site_zone(args).key
        start, end = _period(args, zone)
        lang = args.lang or settings.notify.language
        targets = [(t.name, t.kind) for t in settings.targets]
        register = _read_store(
            args,
            lambda storage: build_register(storage, args.register, start, end, lang, zone, targets),
        )
        day = dt.datetime.fromtimestamp(start, _site_zone(args))
        return _write_report(args, register, f"{args.register}-{day:%Y%m%d}.xlsx")
    rota = Rota(settings.oncall)
    tz = settings.oncall.timezone
    at = _when(args.at, tz) if args.at else time.time()
    shift = rota.shift_at(at)
    if args.previous:
        shift = rota.shift(shift.index - 1)
    targets = [(t.name, t.kind) for t in settings.targets]
    language = args.lang or settings.notify.language
    report = _read_store(
        args,
        lambda storage: build_report(
            storage,
            targets,
            shift.start.timestamp(),
            shift.end.timestamp(),
            list(shift.people),
            language,
            tz,
        ),
    )
    return _write_report(args, report, f"duty-{shift.start:%Y%m%d-%H%M}.xlsx")


def cmd_register(args: argparse.Namespace) -> int:
    """Sign a register's period off (through the API), or the month's summary of sign-offs."""
    from dutyd.duty.registers import month_bounds, signatures, unsigned

    _need_settings(args)  # the daemon's URL and token, the store, the site's zone
    zone = _site_zone(args)
    if args.action == "sign":
        if not args.register:
            raise SystemExit("sign needs --register (entry, equipment, status or log)")
        start, end = _period(args, zone.key)
        body = {
            "register": args.register,
            "from": start,
            "to": end,
            "actor": _actor(args),
            "note": args.note,
        }
        out = _api(args, "POST", "/api/v1/registers/sign", body)
        print(
            f"{out['register']} register {_local(start, zone)} – {_local(end, zone)} "
            f"signed off by {out['by']}"
        )
        return 0
    if not args.month:
        raise SystemExit("summary needs --month (2026-03)")
    start, end = month_bounds(args.month, zone.key)
    wanted = [args.register] if args.register else list(REGISTERS)

    async def read(storage: Storage) -> list[tuple[str, list[Any], list[tuple[float, float]]]]:
        out = []
        for name in wanted:
            signed = [
                s
                for s in await signatures(storage, name)
                if s.data["from"] < end and s.data["to"] > start
            ]
            out.append((name, signed, await unsigned(storage, name, start, end)))
        return out

    for name, signed, gaps in _read_store(args, read):
        print(f"{name} register, {args.month}:")
        for s in signed:
            print(
                f"  signed {_local(s.data['from'], zone)} – {_local(s.data['to'], zone)} "
                f"by {s.actor} at {_local(s.timestamp, zone)}"
            )
        for lo, hi in gaps:
            print(f"  NOT SIGNED {_local(lo, zone)} – {_local(hi, zone)}")
        if not gaps:
            print("  every day signed off")
    return 0


def _common(p: argparse.ArgumentParser, api: bool = True) -> None:
    p.add_argument("-c", "--config", help="config file (default: $DUTYD_CONFIG)")
    if api:
        p.add_argument("--url", help="the daemon's URL (default: from the config)")
        p.add_argument("--actor", help="who does this (default: $DUTYD_ACTOR or login name)")
        p.add_argument(
            "--user",
            help="basic-auth user when the daemon asks for a login (default: $DUTYD_API_USER); "
            "the password comes from $DUTYD_API_PASSWORD or --password-file",
        )
        p.add_argument("--password-file", help="a file holding the basic-auth password")
        # Caught to refuse it: without it argparse would take `--password X` as an
        # abbreviation of --password-file and put the password in an error message.
        p.add_argument("--password", help=argparse.SUPPRESS)


def add_duty_commands(sub: Any) -> None:
    """Register the duty subcommands on the `dutyd` parser's subparsers."""
    p = sub.add_parser("oncall", help="who is on duty now and next")
    _common(p, api=False)
    p.add_argument("--at", help="at this time instead of now (2026-11-23T20:00)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_oncall))

    p = sub.add_parser("ack", help="acknowledge an alert (stops its escalation)")
    _common(p)
    p.add_argument("alert", help="fingerprint (or a unique prefix), or rule name")
    p.add_argument("--note", default="", help="what you are doing about it")
    p.add_argument("--expires", help="the acknowledgement lapses after this (e.g. 4h)")
    p.set_defaults(func=_guard(cmd_ack))

    p = sub.add_parser("silence", help="mute matching alerts for a while")
    _common(p)
    p.add_argument("--match", action="append", default=[], required=True, help="label=value")
    p.add_argument("--duration", required=True, help="e.g. 2h")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_guard(cmd_silence))

    p = sub.add_parser("maintenance", help="open a maintenance window (not paged, no red line)")
    _common(p)
    p.add_argument("--target", action="append", default=[], help="target name (repeatable)")
    p.add_argument("--match", action="append", default=[], help="label=value")
    p.add_argument("--start", help="start time (default: now)")
    p.add_argument("--duration", required=True, help="e.g. 3h")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_guard(cmd_maintenance))

    p = sub.add_parser("drill", help="emergency drill: a marked test alert through escalation")
    _common(p)
    p.add_argument("--wait", default="10m", help="how long to wait for answers")
    p.add_argument("--speed", type=float, default=1.0, help="walk the steps N times faster")
    p.set_defaults(func=_guard(cmd_drill))

    p = sub.add_parser("entry", help="the machine room's entry register: in, out, who is in")
    _common(p)
    p.add_argument("direction", choices=["in", "out", "who"])
    p.add_argument("--room", help="the room (rooms[].name)")
    p.add_argument("--person", help="who goes in or out (default: --actor)")
    p.add_argument(
        "--with", dest="with_", action="append", default=[], help="a companion (repeatable)"
    )
    p.add_argument("--purpose", default="", help="why (required to go in)")
    p.add_argument("--items", default="", help="what is carried in or out")
    p.add_argument("--approved-by", help="who approved a person not on the room's list")
    p.set_defaults(func=_guard(cmd_entry))

    p = sub.add_parser("log", help="print the duty log")
    _common(p, api=False)
    p.add_argument("--db", help="the SQLite file (default: storage.path of the config)")
    p.add_argument("--since", help="a duration ago (8h) or a time")
    p.add_argument("--kind", action="append", help="kind, or a prefix ending in '.' (alert.)")
    p.add_argument("--subject", help="alert fingerprint (prefix), silence:N, ...")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_log))

    p = sub.add_parser("report", help="the shift duty diary (Markdown, CSV or XLSX)")
    _common(p, api=False)
    p.add_argument("--db", help="the SQLite file (default: storage.path of the config)")
    p.add_argument("--shift", action="store_true", help="the shift at --at (default: now)")
    p.add_argument("--at", help="a time within the shift")
    p.add_argument("--previous", action="store_true", help="the shift before that one")
    p.add_argument(
        "--register",
        choices=REGISTERS,
        help="a register instead of the shift's diary",
    )
    p.add_argument("--from", dest="from_", help="--register: start (a date or time, site zone)")
    p.add_argument("--to", help="--register: end (default: now)")
    p.add_argument("--format", choices=["md", "csv", "xlsx"], default="md")
    p.add_argument("--lang", choices=["en", "zh"])
    p.add_argument("-o", "--output", help="file to write (xlsx: default duty-<start>.xlsx)")
    p.set_defaults(func=_guard(cmd_report))

    p = sub.add_parser("register", help="sign a register's period off, or a month's summary")
    _common(p)
    p.add_argument("action", choices=["sign", "summary"])
    p.add_argument(
        "--register",
        choices=REGISTERS,
        help="sign: required",
    )
    p.add_argument("--from", dest="from_", help="sign: start (a date or time, site zone)")
    p.add_argument("--to", help="sign: end (default: now)")
    p.add_argument("--note", default="", help="sign: a remark")
    p.add_argument("--month", help="summary: the month (2026-03)")
    p.add_argument("--db", help="summary: the SQLite file (default: storage.path of the config)")
    p.set_defaults(func=_guard(cmd_register))


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except ConfigError as exc:
            print(exc.report(), file=sys.stderr)
            return EXIT_CONFIG

    return run
