"""The SSH collector's poll script run for real under the two tool flavours servers have: GNU
(Debian) and busybox (Alpine, many NAS boxes, where off-site copies often live). No SSH here:
the same script the collector sends is fed to `sh -s` locally, as sshd would run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dutyd.collectors.ssh import commands as cmd
from dutyd.collectors.ssh.parsers import (
    SectionOutput,
    backup_stats,
    parse_backup_files,
    parse_df,
    parse_epoch,
    parse_loadavg,
    split_sections,
)

BUSYBOX = shutil.which("busybox")
APPLETS = ("sh", "find", "stat", "cat", "nproc", "df", "date", "timeout", "printf", "env")


def busybox_path(tmp: Path) -> str:
    """A PATH holding only busybox applets: every tool the script calls is busybox's."""
    assert BUSYBOX is not None
    bin_dir = tmp / "busybox-bin"
    bin_dir.mkdir()
    for applet in APPLETS:
        (bin_dir / applet).symlink_to(BUSYBOX)
    return str(bin_dir)


def run_poll_script(sections: list[cmd.Section], path: str) -> dict[str, SectionOutput]:
    nonce = "0123abcd"
    script = cmd.render_script(sections, nonce, command_timeout=5.0)
    env = {"PATH": path, "LC_ALL": "C", "LANG": "C"}
    sh = shutil.which("sh", path=path)
    assert sh is not None
    done = subprocess.run(
        [sh, "-s"], input=script, capture_output=True, text=True, env=env, timeout=30, check=False
    )
    return split_sections(done.stdout, done.stderr, cmd.marker_for(nonce))


def make_backups(tmp: Path) -> tuple[Path, list[tuple[float, int]]]:
    directory = tmp / "offsite"
    directory.mkdir()
    expected = []
    for i, days in enumerate([16, 3, 1]):
        f = directory / f"db-{i}.sql.gz"
        f.write_bytes(b"x" * (1000 + i))
        mtime = 1_795_000_000 - days * 86400
        os.utime(f, (mtime, mtime))
        expected.append((float(mtime), 1000 + i))
    (directory / "readme.txt").write_text("not a backup")
    (tmp / "empty").mkdir()
    return directory, sorted(expected)


@pytest.mark.parametrize(
    "flavour",
    [
        "gnu",
        pytest.param(
            "busybox",
            marks=pytest.mark.skipif(BUSYBOX is None, reason="Debian package busybox missing"),
        ),
    ],
)
def test_poll_script_reads_backups_and_host(flavour: str, tmp_path: Path) -> None:
    directory, expected = make_backups(tmp_path)
    path = busybox_path(tmp_path) if flavour == "busybox" else "/usr/bin:/bin"
    sections = [
        *cmd.standard_sections(with_clock=True),
        cmd.backup_section(0, str(directory), "db-*.sql.gz"),
        cmd.backup_section(1, str(tmp_path / "empty"), "*"),
        cmd.backup_section(2, str(tmp_path / "not-mounted"), "*"),
    ]
    out = run_poll_script(sections, path)

    assert sorted(parse_backup_files(out["backup.0"].stdout)) == expected
    assert out["backup.0"].status == 0
    stats = backup_stats(parse_backup_files(out["backup.0"].stdout), now=1_795_000_000.0)
    assert stats.count == 3 and stats.oldest_age_seconds == 16 * 86400
    # No file: nothing printed, no error (stat is not run at all).
    assert out["backup.1"].stdout == "" and out["backup.1"].status == 0
    # A missing directory (off-site mount gone) fails with find's own reason.
    assert out["backup.2"].status != 0
    assert "No such file or directory" in out["backup.2"].stderr
    # The rest of the script works under the same tools.
    assert parse_loadavg(out["loadavg"].stdout)
    assert abs(parse_epoch(out["clock"].stdout) - time.time()) < 60
    assert parse_df(out["df"].stdout, inodes=False)
