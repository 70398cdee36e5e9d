"""Target groups, per-kind defaults and `include:`: what is written once applies to many
targets, and every problem is still reported once, in the file, key path and line where it
was written (agent/configsources.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dutyd.agent import cli
from dutyd.agent.config import load_config
from dutyd.core.errors import ConfigError
from tests.daemon_fixtures import DaemonProcess
from tests.peers import free_port

SITE = """
defaults:
  snmp:
    community_env: SITE_COMMUNITY
    interval: 1m
    labels: {site: hq, role: access}
targets:
  - name: core-sw-1
    kind: snmp
    address: 127.0.1.1
    profiles: [switch]
    labels: {role: core}
  - name: access-sw-{n:02}
    kind: snmp
    addresses: 127.0.1.16/29
    profiles: [switch]
    depends_on: [core-sw-1]
  - name: ups-{ip}
    kind: snmp
    addresses: [127.0.2.1, 127.0.2.2]
    interval: 20s
    community: ups-only
    profiles: [ups]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_groups_expand_and_defaults_apply_unless_the_target_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("SITE_COMMUNITY", "s3cret")
    settings = load_config(write(tmp_path / "dutyd.yaml", SITE))
    by_name = {t.name: t for t in settings.targets}
    access = [f"access-sw-{n:02}" for n in range(1, 7)]
    assert list(by_name) == ["core-sw-1", *access, "ups-127-0-2-1", "ups-127-0-2-2"]
    # A /29 is six hosts, in address order; every member keeps the group's settings.
    assert [by_name[n].address for n in access] == [f"127.0.1.{h}" for h in range(17, 23)]
    assert all(by_name[n].depends_on == ["core-sw-1"] for n in access)
    # Defaults fill what a target leaves out; labels merge key by key, the target's winning.
    assert by_name["access-sw-03"].interval == 60
    assert by_name["access-sw-03"].labels == {"site": "hq", "role": "access"}
    assert by_name["core-sw-1"].labels == {"site": "hq", "role": "core"}
    assert by_name["access-sw-03"].community_env is not None
    # The UPS group gives its interval and its own community (literally): the default's
    # community_env is the same setting, so it does not apply (no "give only one" error).
    ups = by_name["ups-127-0-2-2"]
    assert ups.interval == 20
    assert ups.community is not None and ups.community.get_secret_value() == "ups-only"
    assert ups.community_env is None


def test_includes_add_rooms_and_teams(tmp_path):
    main = write(
        tmp_path / "dutyd.yaml",
        """
        include: [conf.d/*.yaml]
        defaults:
          tcp: {interval: 5s, labels: {site: hq}}
        targets:
          - {name: core-sw-1, kind: tcp, address: 127.0.0.1:22}
        rules:
          custom:
            - {name: core_down, metric: target_up, condition: {below: 1}, targets: [core-sw-1]}
        """,
    )
    write(
        tmp_path / "conf.d/room-a.yaml",
        """
        targets:
          - name: room-a-srv-{n}
            kind: tcp
            addresses: [127.0.0.1:2201, 127.0.0.1:2202]
            labels: {room: A}
            depends_on: [core-sw-1]
        """,
    )
    write(
        tmp_path / "conf.d/team-db.yaml",
        """
        rules:
          custom:
            - {name: db_down, metric: target_up, condition: {below: 1}, targets: [room-a-srv-2]}
        """,
    )
    settings = load_config(main)
    assert [t.name for t in settings.targets] == ["core-sw-1", "room-a-srv-1", "room-a-srv-2"]
    assert settings.targets[2].labels == {"site": "hq", "room": "A"}
    assert settings.targets[2].interval == 5
    assert [r.name for r in settings.rules.custom] == ["core_down", "db_down"]


def test_every_problem_is_reported_once_where_it_was_written(tmp_path):
    main = write(
        tmp_path / "dutyd.yaml",
        """
        include: [conf.d/*.yaml]
        defaults:
          snmp:
            interval: soon
            comunity: public
          snmpp: {interval: 5s}
        targets:
          - name: access-sw-{n}
            kind: snmp
            addresses: 127.0.1.0/28
            retries: -1
          - name: ups
            kind: snmp
            addresses: [127.0.2.1, 127.0.2.2]
          - name: big-{n}
            kind: tcp
            addresses: 10.0.0.0/16
        http: {port: 8000}
        """,
    )
    room = tmp_path / "conf.d/room-b.yaml"
    write(
        room,
        """
        # room B's devices
        targets:
          - name: room-b-sw-{n}
            kind: snmp
            addresses: [127.0.3.1, 127.0.3.2]
            timeout: -2
          - {name: room-b-ups, kind: nut, address: 127.0.3.9, depends_on: [nowhere]}
          - {name: access-sw-3, kind: tcp, address: 127.0.0.1:22}
        http: {port: 9000}
        """,
    )
    broken = write(tmp_path / "conf.d/zz-broken.yaml", "targets: [\n")
    # Each problem of a 14-member group or of a default is reported once, at its own line;
    # the main file's first, then each included file's, each in line order.
    assert problems(main) == [
        "defaults.snmp.interval: 'soon' is not a duration such as 30s, 5m, 2h, 1h30m (line 4)",
        "defaults.snmp.comunity: unknown key for kind 'snmp' (line 5)",
        "defaults.snmpp: unknown target kind 'snmpp'; known kinds: http, icmp, modbus, nut, "
        "snmp, ssh, tcp (line 6)",
        "targets[0].retries: must be at least 0 (got -1) (line 11)",
        "targets[1].name: a group of 2 addresses needs {n} or {ip} in its name pattern "
        "(access-sw-{n}) (line 12)",
        "targets[2].addresses: 10.0.0.0/16 has 65536 addresses; a group holds at most 1022 "
        "(a /22): split it (line 17)",
        f"{room}: targets[0].timeout: must be greater than 0 (line 6)",
        f"{room}: targets[1].depends_on[0]: unknown target 'nowhere' (line 7)",
        f"{room}: targets[2].name: duplicate target name 'access-sw-3' (first at targets[0]) "
        "(line 8)",
        f"{room}: http.port: already set in {main} at http.port (line 9)",
        f"{broken}: not valid YAML: did not find expected node content (line 2, column 1)",
    ]


def test_only_the_main_file_includes_and_a_missing_file_is_named(tmp_path):
    main = write(tmp_path / "dutyd.yaml", "include: [conf.d/*.yaml, extra.yaml]\n")
    nested = write(tmp_path / "conf.d/a.yaml", "include: [more.yaml]\ntargets: []\n")
    found = problems(main)
    assert found == [
        "include[1]: cannot read " + str(tmp_path / "extra.yaml") + ": No such file or directory "
        "(line 1)",
        f"{nested}: include: only the main file may include files (line 1)",
    ]


def test_check_config_reports_included_files_and_counts_group_members(tmp_path, capsys):
    main = write(
        tmp_path / "dutyd.yaml",
        """
        include: [conf.d/*.yaml]
        targets:
          - {name: core-sw-1, kind: tcp, address: 127.0.0.1:22}
        """,
    )
    room = write(
        tmp_path / "conf.d/room-a.yaml",
        """
        targets:
          - name: room-a-{n}
            kind: tcp
            addresses: 127.0.0.16/30
            port: 22
        """,
    )
    assert cli.main(["check-config", str(main)]) == 0
    assert "OK (3 targets)" in capsys.readouterr().out

    room.write_text(room.read_text() + "    timeout: 0\n")
    check = [sys.executable, "-m", "dutyd.agent.cli", "check-config", str(main)]
    proc = subprocess.run(check, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    report = proc.stderr.splitlines()
    assert report[report.index(f"{main}: 1 problem(s)") :] == [
        f"{main}: 1 problem(s)",
        f"  {room}: targets[0].timeout: must be greater than 0 (line 6)",
    ]


async def test_a_reload_rereads_the_included_files(tmp_path: Path) -> None:
    dead = free_port()
    token = "include-reload"
    room_a = write(
        tmp_path / "conf.d/room-a.yaml",
        f"""
        targets:
          - name: a-{{n}}
            kind: tcp
            addresses: [127.0.0.1:{dead}, 127.0.0.2:{dead}]
        """,
    )
    daemon = DaemonProcess(
        tmp_path,
        {
            "include": ["conf.d/*.yaml"],
            "defaults": {"tcp": {"interval": "0.5s", "timeout": "0.3s"}},
            "rules": {"packs": []},
            "api": {"token": token},
        },
    )

    def watched() -> set[str]:
        status, body = daemon.get("/api/v1/targets", {"X-Dutyd-Token": token})
        assert status == 200, body
        return {t["name"] for t in json.loads(body)["targets"]}

    async def wait_for(check, what: str) -> None:
        for _ in range(75):
            if check():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\n{daemon.peer.log()}")

    try:
        await wait_for(lambda: watched() == {"a-1", "a-2"}, "room A's group polled")
        write(
            tmp_path / "conf.d/room-b.yaml",
            f"targets:\n  - {{name: b-1, kind: tcp, address: '127.0.0.3:{dead}'}}\n",
        )
        daemon.signal(signal.SIGHUP)
        await wait_for(lambda: "b-1" in watched(), "room B's file read on reload")

        # A broken included file: the reload is refused, naming that file and its line.
        room_a.write_text(room_a.read_text() + "    interval: never\n")
        daemon.signal(signal.SIGHUP)
        await wait_for(
            lambda: f"{room_a}: targets[0].interval: 'never'" in daemon.peer.log(),
            "the rejected reload's report",
        )
        assert "(line 5)" in daemon.peer.log()
        assert watched() == {"a-1", "a-2", "b-1"}
    finally:
        daemon.stop()
