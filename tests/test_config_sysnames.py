"""Group members named from their sysName (`name: "{sysName}"`, agent/sysnames.py): read from
real snmpd instances on 127.0.1.x at start and reload; two devices telling the same sysName
are each named by their address with a note at the group's line; a device down at the first
start is named by its address and a reference to the name it would tell is a note, not a
refusal; a device down at a restart keeps the name it told before (stored); a new sysName
renames the target at the next reload, in the log and the duty log."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from dutyd.agent import cli
from dutyd.agent.config import load_config
from dutyd.agent.daemon import Daemon
from dutyd.agent.sysnames import Told, _told
from dutyd.collectors.snmp.codec import Exception_
from dutyd.core.errors import ConfigError
from tests.site_fixtures import SiteSnmpd, free_port_on, switch
from tests.snmp_fixtures import COMMUNITY

HOSTS = [f"127.0.1.{h}" for h in range(41, 46)]  # .45 has no snmpd: a device that is down


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def start(tmp: Path, host: str, port: int, sys_name: str) -> SiteSnmpd:
    peer = SiteSnmpd(tmp / f"{host}-{sys_name}", host, port, sys_name, "Room A", switch(2, {}))
    peer.wait_ready()
    return peer


def group(port: int, hosts: list[str], storage: Path | None = None) -> str:
    addresses = ", ".join(f"{h}:{port}" for h in hosts)
    return f"""
        defaults:
          snmp: {{community_env: SITE_COMMUNITY, timeout: 2s, interval: 1m}}
        targets:
          - name: "{{sysName}}"
            kind: snmp
            addresses: [{addresses}]
            profiles: [switch]
          - name: app
            kind: tcp
            address: 127.0.0.1:1
            depends_on: [access-b]
        rules: {{packs: []}}
        http: {{port: 0}}
        storage: {{path: "{storage or "dutyd.db"}"}}
        """


def test_members_are_named_from_sysname_and_a_duplicate_or_a_silent_device_by_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SITE_COMMUNITY", COMMUNITY)
    port = free_port_on(HOSTS, "udp")
    tells = {
        HOSTS[0]: "core-sw",
        HOSTS[1]: "access-a",
        HOSTS[2]: "twin",
        HOSTS[3]: "twin",  # the same sysName as .43
    }
    peers = [start(tmp_path, host, port, name) for host, name in tells.items()]
    try:
        main = write(
            tmp_path / "dutyd.yaml",
            group(port, HOSTS).replace("[access-b]", "[access-b, twin]"),
        )
        assert cli.main(["check-config", str(main)]) == 0
        out = capsys.readouterr().out.splitlines()
        twins = f"{HOSTS[2]}:{port}, {HOSTS[3]}:{port} tell the same sysName (target name 'twin')"
        down = f"{HOSTS[4]}:{port}"
        silent = re.fullmatch(
            rf"note: targets\[0\]\.name: {down} gave no sysName \(no answer from {down} "
            r"within [0-9.]+s \(1 tries\); wrong community or host down\); named by its "
            r"address until it tells its sysName \(line 4\)",
            out[0],
        )
        assert silent, out
        assert out[1:] == [
            f"note: targets[0].name: {twins}: {HOSTS[2]}:{port} is named "
            f"snmp-127-0-1-43-{port} until the names differ (line 4)",
            f"note: targets[0].name: {twins}: {HOSTS[3]}:{port} is named "
            f"snmp-127-0-1-44-{port} until the names differ (line 4)",
            f"note: targets[1].depends_on[0]: unknown target 'access-b' (not named from "
            f"sysName yet: {down}; the reference holds once one is) (line 11)",
            "note: targets[1].depends_on[1]: unknown target 'twin' (more than one device tells "
            "it: each is named by its address until they differ) (line 11)",
            f"{main}: OK (6 targets)",
        ], out

        # The daemon's view: the same names (ask the devices, nothing remembered yet).
        assert cli.main(["topology", str(main)]) == 0
        tree = capsys.readouterr().out
        for name in ("core-sw", "access-a", f"snmp-127-0-1-43-{port}", f"snmp-127-0-1-45-{port}"):
            assert name in tree, tree

        # Without the devices asked (`dutyd ack` reading the file, say), the members are
        # named by address and the reference waits: the file still loads.
        names = [t.name for t in load_config(main).targets]
        assert names[:2] == [f"snmp-127-0-1-41-{port}", f"snmp-127-0-1-42-{port}"]

        # Once every member is named, a reference to no target is a problem again.
        write(tmp_path / "dutyd.yaml", group(port, HOSTS[:2]))
        with pytest.raises(ConfigError) as info:
            load_config(main, {f"{HOSTS[0]}:{port}": "core-sw", f"{HOSTS[1]}:{port}": "access-a"})
        assert info.value.problems == [
            "targets[1].depends_on[0]: unknown target 'access-b' (line 11)"
        ]
    finally:
        for peer in peers:
            peer.stop()


def test_a_sysname_is_cleaned_and_one_that_makes_no_name_is_refused() -> None:
    assert _told(b"Core SW/1 (rack 4)") == Told(name="Core-SW-1-rack-4")
    assert _told("x" * 300).name == "x" * 64
    assert _told(b"%%% ///") == Told(problem="tells sysName '%%% ///', which makes no name")
    assert _told(Exception_(0x80, "noSuchObject")).problem.startswith("has no sysName")


def test_sysname_is_for_snmp_groups_only(tmp_path: Path) -> None:
    main = write(
        tmp_path / "dutyd.yaml",
        """
        targets:
          - name: "web-{sysName}"
            kind: tcp
            addresses: [127.0.0.1:80, 127.0.0.2:80]
          - name: "sw-{sysname}"
            kind: snmp
            addresses: [127.0.0.1, 127.0.0.2]
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert info.value.problems == [
        "targets[0].name: {sysName} is read over SNMP: only a kind: snmp group has it (line 2)",
        "targets[1].name: unknown placeholder {sysname}: use {n}, {n:02}, {ip} or {sysName} "
        "(line 5)",
    ]


async def test_a_device_down_at_first_start_or_restart_and_a_rename_on_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SITE_COMMUNITY", COMMUNITY)
    hosts = HOSTS[:2]
    port = free_port_on(hosts, "udp")
    core = start(tmp_path, hosts[0], port, "core-sw")
    main = write(tmp_path / "dutyd.yaml", group(port, hosts, tmp_path / "dutyd.db"))
    daemon: Daemon | None = None
    access: SiteSnmpd | None = None

    async def run() -> Daemon:
        d = Daemon(load_config(main), main)
        await d.start()
        return d

    try:
        # The first start, the access switch down: named by its address, and `app`'s
        # dependency on the name it will tell waits (a note, not a refusal to start).
        daemon = await run()
        fallback = f"snmp-127-0-1-42-{port}"
        assert {t.name for t in daemon.settings.targets} == {"core-sw", fallback, "app"}
        assert daemon._parents_of("app") == []  # the parents it waits for: none known yet
        assert "targets[1].depends_on[0]: unknown target 'access-b' (not named" in caplog.text

        # It answers; the next reload names it, and the dependency holds.
        access = start(tmp_path, hosts[1], port, "access-b")
        assert await daemon.reload()
        names = {t.name for t in daemon.settings.targets}
        assert names == {"core-sw", "access-b", "app"}
        assert daemon._parents_of("app") == ["access-b"]
        assert set(daemon.scheduler.collectors) == names
        await daemon.stop()
        daemon = None

        # Restarted while the access switch is down: it keeps the name it told.
        access.stop()
        daemon = await run()
        assert {t.name for t in daemon.settings.targets} == {"core-sw", "access-b", "app"}
        assert re.search(
            rf"{hosts[1]}:{port} gave no sysName \(no answer from .* wrong community or host "
            r"down\); keeps the sysName it last told, 'access-b'",
            caplog.text,
        ), caplog.text

        # Renamed on the device while the config refers to the old name: it keeps that name
        # (taking the new one would leave `app` depending on no target, and refuse the file).
        access = start(tmp_path, hosts[1], port, "access-b2")
        assert await daemon.reload()
        assert {t.name for t in daemon.settings.targets} == {"core-sw", "access-b", "app"}
        assert (
            f"{hosts[1]}:{port} now tells sysName 'access-b2', but the config refers to "
            "'access-b': keeps that name until the references follow (line 4)" in caplog.text
        )
        assert await daemon.storage.log.read(kinds=["target.renamed"]) == []

        # Once the references follow, the next reload takes the new name, in the duty log.
        main.write_text(main.read_text().replace("[access-b]", "[access-b2]"))
        assert await daemon.reload()
        assert {t.name for t in daemon.settings.targets} == {"core-sw", "access-b2", "app"}
        assert set(daemon.scheduler.collectors) == {"core-sw", "access-b2", "app"}
        entries = await daemon.storage.log.read(kinds=["target.renamed"])
        assert [(e.subject, e.data) for e in entries] == [
            (f"{hosts[1]}:{port}", {"was": "access-b", "now": "access-b2"})
        ]
        await daemon.stop()
        daemon = None

        # Remembered across the restart: the new name, even with the device down.
        access.stop()
        daemon = await run()
        assert {t.name for t in daemon.settings.targets} == {"core-sw", "access-b2", "app"}
    finally:
        if daemon is not None:
            await daemon.stop()
        core.stop()
        if access is not None:
            access.stop()
