"""The `dutyd` command line: run, check-config, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from dutyd.agent import logsetup
from dutyd.core import fdlimit, gc_policy
from dutyd.core.errors import ConfigError, StartupError
from dutyd.web.config import DEFAULT_PORT

EXIT_CONFIG = 2
EXIT_FAULT = 1  # a loop of the daemon ended by a fault: restart it (systemd on-failure)
# What `dutyd --version` names beside dutyd: the libraries a bug report needs the versions of.
MAIN_LIBRARIES = (
    "pysnmp",
    "asyncssh",
    "apprise",
    "aiohttp",
    "pydantic",
    "prometheus-client",
    "pyModbusTCP",
    "asyncpg",
    "cryptography",
)


def version_text() -> str:
    """dutyd's version, its main libraries' and Python's, one `name version` a line."""

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not-installed"

    names = ["dutyd", *MAIN_LIBRARIES]
    lines = [f"{name} {of(name)}" for name in names]
    lines.append(f"Python {platform.python_version()}")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """`--version`, looked up only when asked (a dozen metadata reads)."""

    def __init__(
        self, option_strings: list[str], dest: str = argparse.SUPPRESS, **_: object
    ) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_text())
        parser.exit()


def _config_path(arg: str | None) -> Path | None:
    value = arg or os.environ.get("DUTYD_CONFIG")
    return Path(value) if value else None


def cmd_check_config(args: argparse.Namespace) -> int:
    from dutyd.agent.sysnames import load_named_now

    try:
        # Targets named from their sysName: the devices are asked, as the daemon will.
        named = load_named_now(args.file)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_CONFIG
    for note in named.notes:
        print(f"note: {note}")
    print(f"{args.file}: OK ({len(named.settings.targets)} targets)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dutyd.agent.config import load_config
    from dutyd.agent.daemon import Daemon

    path = _config_path(args.config)
    if path is None:
        print("dutyd run: give a config file with -c FILE or DUTYD_CONFIG", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = load_config(path)
    except ConfigError as exc:
        print(
            f"dutyd: refusing to start, the configuration is invalid\n{exc.report()}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    logsetup.configure(settings.log.format, settings.log.level)
    gc_policy.configure_for_daemon()
    fdlimit.raise_open_file_limit()
    try:
        daemon = Daemon(settings, path)
        asyncio.run(daemon.run())
    except StartupError as exc:
        print(f"dutyd: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if daemon.fault is not None:
        print(f"dutyd: stopped, {daemon.fault}", file=sys.stderr)
        return EXIT_FAULT
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dutyd.agent.demo.site import run_demo

    logsetup.configure(args.log_format, "INFO")
    try:
        return asyncio.run(run_demo(args.port, args.speed, args.duration, args.lang))
    except KeyboardInterrupt:
        return 0
    except StartupError as exc:
        print(f"dutyd demo: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dutyd", description="Machine-room duty monitoring daemon"
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", help="config file (default: $DUTYD_CONFIG)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and list every problem")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    demo = sub.add_parser("demo", help="run on a built-in simulated machine room")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (0: any free)")
    demo.add_argument("--speed", type=float, default=1.0, help="scenario speed factor")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--log-format", choices=["text", "json"], default="text")
    demo.add_argument(
        "--lang",
        choices=["en", "zh"],
        default=None,
        help="page everyone in this language (default: the demo team's own languages)",
    )
    demo.set_defaults(func=cmd_demo)

    from dutyd.agent.dutycli import add_duty_commands

    add_duty_commands(sub)  # oncall, ack, silence, maintenance, drill, log, report
    from dutyd.agent.clustercli import add_cluster_commands

    add_cluster_commands(sub)  # cluster status
    from dutyd.agent.discovercli import add_discover_commands

    add_discover_commands(sub)  # discover, topology
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before the collectors (and their libraries) are imported by the commands below.
    logsetup.route_library_warnings()
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
