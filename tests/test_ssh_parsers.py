"""The SSH collector's parsers on output captured from several distributions and locales.

Pure logic: no server. The texts are what `df -PTk`, `df -PTki`, `/proc/meminfo` and friends
print on Debian 12, CentOS 7 and Alpine (busybox), plus a German-locale df that must be refused
rather than misread.
"""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dutyd.collectors.ssh import commands as cmd
from dutyd.collectors.ssh.parsers import (
    ParseError,
    backup_stats,
    parse_backup_files,
    parse_command_output,
    parse_df,
    parse_epoch,
    parse_is_active,
    parse_loadavg,
    parse_meminfo,
    parse_nproc,
    parse_uptime,
    real_filesystems,
    split_sections,
)
from tests.cpu_time import least_cpu_seconds

DEBIAN_DF = """\
Filesystem          Type     1024-blocks      Used Available Capacity Mounted on
udev                devtmpfs     8113416         0   8113416       0% /dev
tmpfs               tmpfs        1631848      1412   1630436       1% /run
/dev/sda1           ext4        50620216  35790708  12224068      75% /
tmpfs               tmpfs        8159224         0   8159224       0% /dev/shm
tmpfs               tmpfs           5120         0      5120       0% /run/lock
/dev/sda15          vfat          126678     11840    114838      10% /boot/efi
/dev/mapper/vg0-srv xfs        524032000 187411200 336620800      36% /srv
/dev/sdc1           ext4       103080224  51540112  46280992      53% /mnt/backup disk
tmpfs               tmpfs        1631844         0   1631844       0% /run/user/1000
"""

DEBIAN_DF_INODES = """\
Filesystem          Type       Inodes  IUsed    IFree IUse% Mounted on
udev                devtmpfs  2028354    421  2027933    1% /dev
tmpfs               tmpfs     2039806    755  2039051    1% /run
/dev/sda1           ext4      3276800 412377  2864423   13% /
tmpfs               tmpfs     2039806      1  2039805    1% /dev/shm
/dev/sda15          vfat            0      0        0     - /boot/efi
/dev/mapper/vg0-srv xfs     262144000  91212 262052788    1% /srv
"""

CENTOS7_DF = """\
Filesystem              Type     1024-blocks      Used  Available Capacity Mounted on
/dev/mapper/centos-root xfs         52403200   4017276   48385924       8% /
devtmpfs                devtmpfs     3990928         0    3990928       0% /dev
tmpfs                   tmpfs        4007028         0    4007028       0% /dev/shm
tmpfs                   tmpfs        4007028      8856    3998172       1% /run
tmpfs                   tmpfs        4007028         0    4007028       0% /sys/fs/cgroup
/dev/sda1               xfs          1038336    191256     847080      19% /boot
/dev/mapper/centos-home xfs        184155076     33004  184122072       1% /home
nfs01:/export/backup    nfs4      2113646592 990000000 1016210432      50% /mnt/offsite
tmpfs                   tmpfs         801408         0     801408       0% /run/user/0
"""

ALPINE_DF = """\
Filesystem           Type       1K-blocks      Used Available Capacity Mounted on
/dev/vda3            ext4        19475088   2356284  16106480  13% /
devtmpfs             devtmpfs       10240         0     10240   0% /dev
shm                  tmpfs         507412         0    507412   0% /dev/shm
/dev/vda1            ext4           95054     23123     64763  26% /boot
tmpfs                tmpfs         202968       156    202812   0% /run
overlay              overlay     19475088   2356284  16106480  13% /var/lib/docker/overlay2/x/merged
"""

ALPINE_DF_INODES = """\
Filesystem           Type          Inodes      Used Available Capacity Mounted on
/dev/vda3            ext4         1218224     81234   1136990   7% /
devtmpfs             devtmpfs       62984       327     62657   1% /dev
/dev/vda1            ext4           24096        26     24070   0% /boot
"""

# `df -PT` run with LANG=de_DE.UTF-8 (the server ignored LC_ALL=C, e.g. a wrapper script).
GERMAN_DF = """\
Dateisystem    Typ      1024-Blöcke  Benutzt Verfügbar Kapazität Eingehängt auf
/dev/sda1      ext4        50620216 35790708  12224068       75% /
tmpfs          tmpfs        8159224        0   8159224        0% /dev/shm
"""

DEBIAN_MEMINFO = """\
MemTotal:       16318480 kB
MemFree:         1436376 kB
MemAvailable:    9874112 kB
Buffers:          211804 kB
Cached:          7802332 kB
SwapCached:        10240 kB
Active:          8234496 kB
SwapTotal:       2097148 kB
SwapFree:        1982460 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""

# CentOS 6 (kernel 2.6.32): no MemAvailable line.
CENTOS6_MEMINFO = """\
MemTotal:        3924684 kB
MemFree:          512000 kB
Buffers:          102400 kB
Cached:          1024000 kB
SwapCached:            0 kB
SwapTotal:       4194300 kB
SwapFree:        4194300 kB
SReclaimable:     204800 kB
"""


def mounts(rows: list) -> dict[str, tuple[float | None, float | None, float | None]]:
    return {r.mount: (r.total, r.used, r.available) for r in rows}


def test_debian_df_real_filesystems_only() -> None:
    rows = real_filesystems(parse_df(DEBIAN_DF))
    got = mounts(rows)
    assert set(got) == {"/", "/boot/efi", "/srv", "/mnt/backup disk"}
    assert got["/"] == (50620216 * 1024, 35790708 * 1024, 12224068 * 1024)
    root = next(r for r in rows if r.mount == "/")
    # used / (used + available): 74.5 %, df's Capacity column says 75 % (rounded up).
    assert root.used_ratio == pytest.approx(35790708 / (35790708 + 12224068))
    assert root.fstype == "ext4" and root.device == "/dev/sda1"


def test_debian_df_inodes_leave_out_filesystems_without_inode_table() -> None:
    rows = real_filesystems(parse_df(DEBIAN_DF_INODES, inodes=True))
    got = mounts(rows)
    assert set(got) == {"/", "/srv"}  # vfat reports 0 inodes, tmpfs is pseudo
    assert got["/"] == (3276800, 412377, 2864423)  # counts, not scaled to bytes


def test_centos7_df_keeps_nfs_offsite_mount() -> None:
    got = mounts(real_filesystems(parse_df(CENTOS7_DF)))
    assert set(got) == {"/", "/boot", "/home", "/mnt/offsite"}
    assert got["/mnt/offsite"][1] == 990000000 * 1024


def test_alpine_busybox_df_1k_blocks_and_inodes() -> None:
    rows = real_filesystems(parse_df(ALPINE_DF))
    got = mounts(rows)
    assert set(got) == {"/", "/boot"}  # shm/tmpfs/devtmpfs/overlay left out
    assert got["/"][0] == 19475088 * 1024
    inodes = mounts(real_filesystems(parse_df(ALPINE_DF_INODES, inodes=True)))
    assert inodes["/"] == (1218224, 81234, 1136990)


def test_german_locale_df_is_refused_not_misread() -> None:
    with pytest.raises(ParseError, match="header in another language") as err:
        parse_df(GERMAN_DF)
    assert "Dateisystem" in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "printed nothing"),
        ("/dev/sda1 ext4 100 50 50 50% /\n", "no header"),
        (
            "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n",
            "only a header",
        ),
        (
            # `df -h` by mistake: sizes with units are not POSIX rows.
            "Filesystem Type Size Used Avail Use% Mounted on\n/dev/sda1 ext4 49G 35G 12G 75% /\n",
            "not in the POSIX format",
        ),
        (
            # A wrapped row (non-POSIX df): the device alone on a line.
            "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n"
            "/dev/mapper/very-long-name\n ext4 100 50 50 50% /\n",
            "line 2 is not in the POSIX format",
        ),
    ],
)
def test_df_other_formats_are_refused(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_df(text)


def test_df_512_byte_blocks_and_unknown_values() -> None:
    text = (
        "Filesystem Type 512-blocks Used Available Capacity Mounted on\n"
        "/dev/sda1 ext4 200 100 100 50% /\n"
        "remote:/x nfs - - - - /mnt/x\n"
    )
    rows = parse_df(text)
    assert mounts(rows)["/"] == (200 * 512, 100 * 512, 100 * 512)
    assert rows[1].used_ratio is None
    # Without the type column, pseudo filesystems are known by their device name.
    plain = "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
    plain += "tmpfs 100 1 99 1% /run\n/dev/sda1 100 50 50 50% /\n"
    assert set(mounts(real_filesystems(parse_df(plain, with_type=False)))) == {"/"}


def test_meminfo_new_and_old_kernels() -> None:
    mem = parse_meminfo(DEBIAN_MEMINFO)
    assert mem.total_bytes == 16318480 * 1024
    assert mem.available_bytes == 9874112 * 1024
    assert (mem.swap_total_bytes, mem.swap_free_bytes) == (2097148 * 1024, 1982460 * 1024)
    old = parse_meminfo(CENTOS6_MEMINFO)
    assert old.available_bytes == (512000 + 102400 + 1024000 + 204800) * 1024
    with pytest.raises(ParseError, match="MemTotal"):
        parse_meminfo("Speicher gesamt: 100 kB\n")


def test_small_kernel_files_and_commands() -> None:
    assert parse_loadavg("0.52 0.58 0.59 1/389 12345\n") == (0.52, 0.58, 0.59)
    assert parse_nproc("8\n") == 8
    assert parse_uptime("350735.47 234388.90\n") == 350735.47
    assert parse_epoch("1795428208\n") == 1795428208.0
    with pytest.raises(ParseError):
        parse_loadavg("0,52 0,58 0,59 1/389 12345\n")  # a decimal comma is not a load
    with pytest.raises(ParseError):
        parse_nproc("0\n")
    with pytest.raises(ParseError):
        parse_epoch("Mo 23. Nov 10:00:00 CET 2026\n")  # `date` without +%s, localized
    with pytest.raises(ParseError):
        parse_uptime("")


def test_systemctl_is_active() -> None:
    units = ["nginx.service", "postgresql.service", "cron.service"]
    assert parse_is_active("active\nfailed\ninactive\n", units) == {
        "nginx.service": "active",
        "postgresql.service": "failed",
        "cron.service": "inactive",
    }
    with pytest.raises(ParseError, match="printed 0 state"):
        parse_is_active("", units)  # no systemd: the reason comes from stderr
    with pytest.raises(ParseError, match="unexpected state"):
        parse_is_active("aktiv\nfehlgeschlagen\ninaktiv\n", units)


def test_backup_files_and_backup_stats() -> None:
    files = parse_backup_files("1795400000.1234567890 734003200\n1795300000.0000000000 734000000\n")
    assert files == [(1795400000.123456789, 734003200), (1795300000.0, 734000000)]
    stats = backup_stats(files, now=1795410000.0)
    assert stats.count == 2 and stats.newest_size_bytes == 734003200
    assert stats.newest_age_seconds == pytest.approx(9999.877, abs=0.01)
    assert stats.oldest_age_seconds == 110000.0
    assert backup_stats([], now=1.0).newest_age_seconds is None
    # A file dated in the future (clock trouble) is age 0, not negative.
    assert backup_stats([(2000.0, 1)], now=1000.0).newest_age_seconds == 0.0
    with pytest.raises(ParseError):
        parse_backup_files("-rw-r--r-- 1 root root 734003200 Nov 22 02:00 db.sql.gz\n")


def test_user_command_output() -> None:
    assert parse_command_output("42\n") == [(None, 42.0)]
    assert parse_command_output("  -1.5e3  \n") == [(None, -1500.0)]
    assert parse_command_output("queue 3\nerrors 0\n") == [("queue", 3.0), ("errors", 0.0)]
    for bad, message in [
        ("", "printed nothing"),
        ("1,5\n", "expected a number"),  # German decimal comma: refused, never read as 15
        ("Warteschlange 1,5\n", "expected a number"),
        ("a 1\na 2\n", "printed twice"),
        ("OK\n", "expected a number"),
        ("\n".join(f"n{i} 1" for i in range(101)), "at most 100"),
    ]:
        with pytest.raises(ParseError, match=message):
            parse_command_output(bad)


# ----- the section protocol -----------------------------------------------------------------


def test_split_sections_and_cut_off_sections() -> None:
    m = cmd.marker_for("abc123")
    stdout = (
        f"{m} begin loadavg\n0.1 0.2 0.3 1/2 3\n\n{m} end loadavg 0\n"
        # A command whose last line has no newline, and one printing a forged marker.
        f"{m} begin nproc\n4\n{m} end nproc 0\n"
        f"{m} begin command.0\n@@dutyd 000 end command.0 0\n7\n\n{m} end command.0 0\n"
        f"{m} begin df\nFilesystem Type\n"
    )
    stderr = f"{m} begin df\ndf: /mnt/x: Stale file handle\n"
    out = split_sections(stdout, stderr, m)
    assert out["loadavg"].stdout == "0.1 0.2 0.3 1/2 3\n" and out["loadavg"].status == 0
    assert out["nproc"].stdout == "4" and out["nproc"].status == 0
    assert out["command.0"].stdout.endswith("7\n") and out["command.0"].status == 0
    assert out["df"].status is None and "Stale file handle" in out["df"].stderr


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_command_output_cannot_end_its_section_early(noise: str) -> None:
    m = cmd.marker_for("f00dfeed")
    stdout = f"{m} begin command.0\n{noise}\n{m} end command.0 3\n"
    out = split_sections(stdout, "", m)
    assert out["command.0"].status == 3
    assert out["command.0"].stdout == noise


def test_script_quotes_every_config_word() -> None:
    hostile = "/srv/b; rm -rf / $(id) `id` 'q' \"d\""
    sections = [cmd.backup_section(0, hostile, "*.tar'*"), cmd.command_section(0, ["a b", "$X"])]
    script = cmd.render_script(sections, "n0nce", 5.0)
    last_two = script.strip().splitlines()[-2:]
    assert shlex.split(last_two[0])[2:] == [
        "find",
        "-H",
        hostile,
        "-maxdepth",
        "1",
        "-name",
        "*.tar'*",
        "-type",
        "f",
        "-exec",
        "stat",
        "-c",
        cmd.STAT_FORMAT,
        "{}",
        "+",
    ]
    assert shlex.split(last_two[1])[2:] == ["a b", "$X"]
    # The exec request holds no config text at all.
    assert cmd.remote_command(12.5) == "env LC_ALL=C LANG=C timeout -s KILL 12.5 sh -s"


# ----- hostile output (issue 12): linear time, short messages ---------------------------------


def cpu_seconds(func, *args, **kwargs) -> float:
    """Least thread CPU time of up to three calls under the 50 ms bound (tests/cpu_time.py)."""
    return least_cpu_seconds(0.05, func, *args, **kwargs)[1]


@pytest.mark.parametrize("spaces", [4_000, 8_000, 16_000])
def test_df_header_of_spaces_parses_in_linear_time(spaces: int) -> None:
    # The case: the old row regex retried at every space, 0.33 s at 4,000 spaces,
    # 8 s at 16,000. The header must now be refused at once, with a short message.
    header = "Filesystem" + " " * spaces + "x"
    assert cpu_seconds(parse_df, header + "\n") < 0.05
    with pytest.raises(ParseError) as caught:
        parse_df(header + "\n")
    assert len(str(caught.value)) < 300


def test_df_row_and_header_of_spaces_within_the_line_cap_parse_fast() -> None:
    # Below the line cap the token reader still has to decide; the old regex took about
    # 1.3 s on 8,000 spaces.
    from dutyd.collectors.ssh.parsers import MAX_DF_LINE_CHARS

    n = MAX_DF_LINE_CHARS - 20
    for text in (
        "Filesystem" + " " * n + "x\n",
        DEBIAN_DF.splitlines()[0] + "\n" + "/dev/x" + " " * n + "y\n",
        "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n" + "a " * (n // 2) + "\n",
        "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n" + "1 " * (n // 2),
    ):
        assert cpu_seconds(parse_df, text) < 0.05


def test_header_only_error_does_not_carry_the_device_line() -> None:
    # "printed only a header" used to put the whole line (up to 4 MiB) in the log.
    header = "Filesystem " + "A" * 8000
    with pytest.raises(ParseError, match="printed only a header") as caught:
        parse_df(header + "\n")
    assert len(str(caught.value)) < 300
    with pytest.raises(ParseError) as caught:
        parse_df("Filesystem Type 1024-blocks Used Available Capacity Mounted on\n" + "B" * 5000)
    assert len(str(caught.value)) < 300


def test_device_names_and_mounts_with_spaces_still_read() -> None:
    text = (
        "Filesystem Type 1024-blocks Used Available Capacity Mounted on\n"
        "my fuse fs fuse.sshfs 100 40 60 40% /mnt/with space/x\n"
        "/dev/sdb1 ext4 - - - - /srv\n"
    )
    rows = parse_df(text)
    assert [(r.device, r.fstype, r.mount) for r in rows] == [
        ("my fuse fs", "fuse.sshfs", "/mnt/with space/x"),
        ("/dev/sdb1", "ext4", "/srv"),
    ]
    assert rows[0].total == 100 * 1024 and rows[1].total is None


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (parse_nproc, "9" * 5000),
        (parse_loadavg, "x" * 100_000),
        (parse_epoch, "1" * 100_000),
        (parse_backup_files, "1" * 5000 + " " + "2" * 5000),
        (parse_command_output, "name " + "1" * 5000 + "\nx y"),
        (lambda t: parse_is_active(t, ["a"]), "z" * 100_000),
    ],
)
def test_device_values_are_cut_short_and_huge_numbers_are_parse_errors(parser, text) -> None:
    # int() of more than 4300 digits raises a plain ValueError, which is not the parser's error.
    with pytest.raises(ParseError) as caught:
        parser(text)
    assert len(str(caught.value)) < 300
