"""`dutyd discover --merge FILE` edits FILE in place (agent/configmerge.py): only the devices
it does not watch yet (its includes counted) are added, as text, so every comment and entry
of the file stays byte for byte; the old file is kept as FILE.bak with its mode; a second run
finds nothing to add; a result that would not pass check-config leaves FILE untouched. Real
snmpd instances on 127.0.1.x."""

from __future__ import annotations

import difflib
import os
import stat
import textwrap
from pathlib import Path

import pytest

from dutyd.agent import cli
from dutyd.agent.config import load_config
from dutyd.agent.configmerge import MergeRefused, add_targets, replace_checked
from tests.site_fixtures import SiteSnmpd, free_port_on, switch, ups
from tests.snmp_fixtures import COMMUNITY

NET = "127.0.1.48/29"  # hosts .49 to .54
HOSTS = ["127.0.1.49", "127.0.1.50", "127.0.1.51"]

MAIN = """
# dutyd for room A, written by hand: keep these comments
include: [conf.d/*.yaml]   # one file per team

defaults:
  snmp: {{community_env: SITE_COMMUNITY, timeout: 1s}}

targets:
    # the core switch, under the name the duty team knows
    - name: core         # not its sysName
      kind: snmp
      address: "127.0.1.49:{port}"
      profiles: [switch]
      # shard: room-a

# --- rules ---
rules:
  packs: []   # none yet
http: {{port: 0}}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def only_inserted(old: str, new: str) -> list[str]:
    """The lines `new` adds to `old`, asserting that it only adds one block of lines."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()]
    changes = [op for op in ops if op[0] != "equal"]
    assert len(changes) == 1 and changes[0][0] == "insert", changes
    _, _, _, j1, j2 = changes[0]
    return b[j1:j2]


def test_merge_adds_only_new_devices_in_place_and_refuses_a_result_that_would_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SITE_COMMUNITY", COMMUNITY)
    port = free_port_on(HOSTS, "udp")
    closed = free_port_on(HOSTS, "tcp")  # no SSH, HTTP or NUT here
    devices = [
        ("core", HOSTS[0], "core-sw", switch(12, {1: "access-sw-1"})),
        ("access", HOSTS[1], "access-sw-1", switch(10, {10: "core-sw", 3: "ups-a"})),
        ("ups", HOSTS[2], "ups-a", ups()),
    ]
    peers = [
        SiteSnmpd(tmp_path / sub, host, port, name, "Room A", values)
        for sub, host, name, values in devices
    ]
    sweep = [
        NET,
        "--community-env",
        "SITE_COMMUNITY",
        "--snmp-port",
        str(port),
        "--nut-port",
        "0",
        *("--ssh-port", str(closed), "--http-port", str(closed), "--https-port", str(closed)),
        *("--timeout", "0.5", "--rate", "200"),
    ]
    try:
        for peer in peers:
            peer.wait_ready()
        main = write(tmp_path / "dutyd.yaml", MAIN.format(port=port))
        # The UPS is watched from an included file: not added again.
        write(
            tmp_path / "conf.d/power.yaml",
            f"""
            targets:
              - {{name: ups-main, kind: snmp, address: "127.0.1.51:{port}", profiles: [ups]}}
            """,
        )
        os.chmod(main, 0o640)
        before = main.read_text()

        assert cli.main(["discover", *sweep, "--merge", str(main)]) == 0
        err = capsys.readouterr().err
        assert f"1 new target(s) added to {main} (it was kept as {main}.bak)" in err, err
        after = main.read_text()
        only_inserted(before, after)
        # After the core's entry and its own comment, before the rules' heading; indented
        # as the file's entries are. Everything else is the file as it was, byte for byte.
        k = before.index("      # shard: room-a\n") + len("      # shard: room-a\n")
        block = after[k : len(after) - (len(before) - k)]
        assert after == before[:k] + block + before[k:]
        assert block.startswith("\n    # Added by `dutyd discover 127.0.1.48/29`"), block
        added = block.splitlines(keepends=True)
        assert [line.strip() for line in added if "name:" in line] == [
            "- name: access-sw-1   # 10 interfaces, 2 LLDP neighbours"
        ]
        assert "      depends_on: [core]   # guessed: LLDP saw it on core port Gi0/1\n" in added
        # The file's `defaults:` give the community that answered: not repeated.
        assert not any("community" in line for line in added), added
        assert (tmp_path / "dutyd.yaml.bak").read_text() == before
        assert stat.S_IMODE(main.stat().st_mode) == 0o640
        assert stat.S_IMODE((tmp_path / "dutyd.yaml.bak").stat().st_mode) == 0o640
        settings = load_config(main)
        assert [t.name for t in settings.targets] == ["core", "access-sw-1", "ups-main"]
        access = settings.targets[1]
        assert access.address == f"127.0.1.50:{port}" and access.depends_on == ["core"]
        assert access.community_env is not None
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

        # Again: nothing new, nothing written.
        assert cli.main(["discover", *sweep, "--merge", str(main)]) == 0
        assert "watches every device found: left as it was" in capsys.readouterr().err
        assert main.read_text() == after
        assert (tmp_path / "dutyd.yaml.bak").read_text() == before

        # A latent fault the merged targets would bring out (a default no SNMP target used
        # yet): the merge is refused, naming the problem, and the file is left as it was.
        other = tmp_path / "other"
        bad = write(
            other / "dutyd.yaml",
            """
            defaults:
              snmp: {community_env: SITE_COMMUNITY, retries: -1}   # never used so far
            targets:
              - {name: web, kind: tcp, address: "127.0.0.1:1"}
            rules: {packs: []}
            """,
        )
        original = bad.read_text()
        assert cli.main(["discover", *sweep, "--merge", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "the merged config would not load" in err, err
        assert (
            f"{bad}: 1 problem(s)" in err and "  defaults.snmp.retries: must be at least 0" in err
        )
        assert f"{bad} is left as it was" in err
        assert bad.read_text() == original
        assert sorted(p.name for p in other.iterdir()) == ["dutyd.yaml"]  # no backup, no temp
    finally:
        for peer in peers:
            peer.stop()


ENTRY = ["", "  # -- switches --", "  - name: sw-2", "    kind: tcp", '    address: "127.0.0.1:2"']


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # items at column 0: the entries follow them there
            "targets:\n- name: a\n  kind: tcp\n  address: x\n",
            "targets:\n- name: a\n  kind: tcp\n  address: x\n\n# -- switches --\n"
            '- name: sw-2\n  kind: tcp\n  address: "127.0.0.1:2"\n',
        ),
        (  # an empty flow list becomes a block list; the comment after it stays
            "targets: []   # none yet\nrules: {}\n",
            "targets:   # none yet\n\n  # -- switches --\n  - name: sw-2\n    kind: tcp\n"
            '    address: "127.0.0.1:2"\nrules: {}\n',
        ),
        (  # no targets at all, and no newline at the end
            "rules: {}",
            "rules: {}\ntargets:\n\n  # -- switches --\n  - name: sw-2\n    kind: tcp\n"
            '    address: "127.0.0.1:2"\n',
        ),
    ],
)
def test_entries_go_where_a_person_would_put_them(text: str, expected: str) -> None:
    assert add_targets(text, ENTRY) == expected


def test_a_flow_list_of_targets_is_refused() -> None:
    with pytest.raises(MergeRefused, match=r"line 2: `targets:` is not written as a block list"):
        add_targets("# mine\ntargets: [{name: a, kind: tcp, address: x}]\n", ENTRY)


def test_the_file_is_replaced_whole_through_its_symlink_and_a_refusal_leaves_nothing(
    tmp_path: Path,
) -> None:
    real = tmp_path / "etc" / "dutyd.yaml"
    real.parent.mkdir()
    real.write_text("# mine\ntargets: []\n")
    os.chmod(real, 0o600)
    link = tmp_path / "dutyd.yaml"
    link.symlink_to(real)
    if os.geteuid() == 0:  # root may give the file away: the new file keeps its owner
        os.chown(real, 4321, 4322)

    def refuse(candidate: Path) -> None:
        assert candidate.parent == real.parent  # beside the file: its includes resolve
        assert candidate.read_text() == "new\n"
        raise MergeRefused("the merged config would not load")

    with pytest.raises(MergeRefused):
        replace_checked(link, "new\n", refuse)
    assert real.read_text() == "# mine\ntargets: []\n"
    assert sorted(p.name for p in real.parent.iterdir()) == ["dutyd.yaml"]

    backup = replace_checked(link, "new\n", lambda candidate: None)
    assert link.is_symlink() and real.read_text() == "new\n"
    assert backup == real.with_name("dutyd.yaml.bak")
    assert backup.read_text() == "# mine\ntargets: []\n"
    for path in (real, backup):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600
        if os.geteuid() == 0:
            assert (info.st_uid, info.st_gid) == (4321, 4322)
    assert sorted(p.name for p in real.parent.iterdir()) == ["dutyd.yaml", "dutyd.yaml.bak"]
