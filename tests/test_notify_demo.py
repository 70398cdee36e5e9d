"""The demo's duty layer: a critical alert walks the steps (in seconds) to the demo phones."""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path

from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.agent.demo.phones import PEOPLE, DemoPager, demo_duty_sections
from dutyd.core.records import Sample
from dutyd.duty.drill import DRILL_LABELS, DRILL_SAMPLE
from dutyd.rules.packs import load_pack
from tests.peers import free_port


async def test_demo_escalation_walks_to_the_manager(tmp_path: Path) -> None:
    out = io.StringIO()
    pager = DemoPager(out)
    await pager.start()
    port = free_port()
    config = {"http": {"port": port}, "storage": {"path": str(tmp_path / "d.db")}}
    config.update(demo_duty_sections(pager.port, port))
    # 20 s to the manager is too long for a test: the same sections, a shorter second step.
    config["escalation"]["policies"][1]["steps"][1]["after"] = "1s"
    daemon = Daemon(load_from_dict(config))
    await daemon.start()
    try:
        daemon.operations.ingest_samples([Sample.of(DRILL_SAMPLE, 0.0, time.time(), DRILL_LABELS)])
        for _ in range(60):
            if len(pager.pages) >= 3:
                break
            await asyncio.sleep(0.1)
        whos = [who for who, _ in pager.pages]
        assert sorted(whos[:2]) == ["Li Na", "Zhang Wei"] or sorted(whos[:2]) == [
            "Liu Yang",
            "Zhao Min",
        ]
        assert whos[2] == "Wang Fang"
        text = out.getvalue()
        assert "第 2 级升级" in text and f"http://127.0.0.1:{port}/ack/" in text
    finally:
        await daemon.stop()
        await pager.stop()


async def test_demo_in_chinese_pages_entirely_in_chinese(tmp_path: Path) -> None:
    """`dutyd demo --lang zh`: every phone gets the page in Chinese, summary included."""
    out = io.StringIO()
    pager = DemoPager(out)
    await pager.start()
    port = free_port()
    config = {"http": {"port": port}, "storage": {"path": str(tmp_path / "d.db")}}
    config.update(demo_duty_sections(pager.port, port, "zh"))
    daemon = Daemon(load_from_dict(config))
    await daemon.start()
    try:
        daemon.operations.ingest_samples([Sample.of(DRILL_SAMPLE, 0.0, time.time(), DRILL_LABELS)])
        for _ in range(60):
            if len(pager.pages) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(pager.pages) >= 2
        text = out.getvalue()
        assert "No emergency drill" not in text and "ALERT" not in text, text
        assert "演练" in text and "告警" in text, text
    finally:
        await daemon.stop()
        await pager.stop()


# The machine room of the wide test below: the demo's devices, each breaking its duty rules.
SITE = {"site": "demo", "room": "A"}
UPS_NUT = {**SITE, "target": "ups-nut", "kind": "nut"}
UPS_SNMP = {**SITE, "target": "ups-snmp", "kind": "snmp", "role": "ups"}
SWITCH = {**SITE, "target": "access-sw1", "kind": "snmp", "role": "network"}
UPLINK = {**SITE, "target": "access-sw1", "kind": "snmp", "role": "uplink", "port": "Gi0/24"}
CORE = {**SITE, "target": "core-sw1", "kind": "snmp", "role": "core"}
SERVER = {"site": "demo", "target": "app-server", "kind": "ssh"}
ROOT_FS = {**SERVER, "mount": "/"}
BACKUP = {**SERVER, "backup": "db", "copy": "offsite"}
PORTAL = {"site": "demo", "target": "portal", "kind": "http", "role": "application"}
SENSOR = {**SITE, "target": "room-a-sensor", "kind": "modbus"}
DAY = 86400.0

# (metric, labels, breaking value, value that clears it or None when it stays): one of each
# duty-pack rule, so every kind of summary and resolve notice is paged.
ROOM = {"target": "dutyd", "kind": "register", "room": "room-a"}
BREAKS: list[tuple[str, dict[str, str], float, float | None]] = [
    ("room_temperature_celsius", SENSOR, 27.5, 22.0),
    ("room_humidity_percent", {**SENSOR, "target": "room-b-sensor"}, 38.0, 50.0),
    ("ups_on_battery", UPS_NUT, 1, 0),
    ("ups_battery_low", UPS_SNMP, 1, 0),
    ("target_up", UPS_NUT, 0, 1),
    ("target_up", UPS_SNMP, 0, 1),
    ("target_up", SERVER, 0, 1),
    ("target_up", SWITCH, 0, 1),
    ("target_up", CORE, 0, 1),
    ("target_up", PORTAL, 0, 1),
    ("if_oper_up", UPLINK, 0, 1),
    ("probe_success", PORTAL, 0, 1),
    ("node_filesystem_used_ratio", ROOT_FS, 0.97, 0.5),
    ("node_filesystem_inodes_used_ratio", ROOT_FS, 0.95, 0.5),
    ("node_rebooted", SERVER, 1, None),  # keeps firing an hour
    ("device_rebooted", SWITCH, 1, None),
    ("http_content_changed", PORTAL, 1, 0),
    ("backup_stale", BACKUP, 1, 0),
    ("backup_newest_size_bytes", BACKUP, 0, 5e9),
    ("backup_retention_shortfall_seconds", BACKUP, 8 * DAY, 0),
    # The people rules: dutyd's entry register and shift check-in (duty/entries.py,
    # duty/handover.py) and a door contact.
    ("room_people_inside", ROOM, 1, 2),
    ("room_door_open_unregistered", ROOM, 1, 0),
    ("room_door_open", {**ROOM, "kind": "modbus", "target": "door-a"}, 1, 0),
    ("room_occupied_at_handover", ROOM, 1, 0),
    ("duty_shift_confirmed_people", {"target": "dutyd", "kind": "shift"}, 0, 1),
]

# What a Chinese page may carry in Latin letters, and nothing else: people's names, the ids of
# the room's devices and their label values (kinds, ports, backups), label keys, units and
# acronyms read as they are, the time zone. URLs (ack links) and tokens with digits (message
# ids, ports such as Gi0/24, figures) are data and taken out before the words are read.
NAMES = {part for name, _ in PEOPLE for part in name.split()}
IDS = {
    v
    for labels in [*(b[1] for b in BREAKS), DRILL_LABELS]
    for v in labels.values()
    if re.fullmatch(r"[A-Za-z-]+", v)
}
LABEL_KEYS = {"site", "room", "target"}
UNITS_AND_ACRONYMS = {"UPS", "SNMP", "inode", "RH", "C", "CST"}
ALLOWED = NAMES | IDS | LABEL_KEYS | UNITS_AND_ACRONYMS


def english_words(text: str) -> set[str]:
    text = re.sub(r"https?://\S+", " ", text)
    tokens = re.findall(r"[A-Za-z0-9_./:%-]+", text)
    data = [t for t in tokens if not any(c.isdigit() for c in t)]
    return {w for t in data for w in re.findall(r"[A-Za-z][A-Za-z-]*", t)} - ALLOWED


def durations_out(text: str) -> str:
    return re.sub(r"\d+(?:毫秒|秒|分钟|分|小时|天)", "D", text)


async def settled(pager: DemoPager, since: int, within: float = 20.0) -> None:
    """Wait until pages beyond `since` came and none more for a second (the group windows
    and escalation's first step are at most a fraction of that)."""
    deadline = time.monotonic() + within
    seen, quiet_since = len(pager.pages), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if len(pager.pages) != seen:
            seen, quiet_since = len(pager.pages), time.monotonic()
        elif seen > since and time.monotonic() - quiet_since >= 1.0:
            return
    raise AssertionError(f"pages did not settle: {len(pager.pages) - since} new")


async def test_every_page_of_the_chinese_demo_is_in_chinese(tmp_path: Path) -> None:
    """`dutyd demo --lang zh` with every duty-pack rule broken and then cleared: each page
    (firing, grouped, resolve notices) is Chinese; the only Latin words are those of ALLOWED."""
    out = io.StringIO()
    pager = DemoPager(out)
    await pager.start()
    port = free_port()
    # The duty pack with no waiting, so a sample fires at once (the demo plays the waits in
    # seconds; the words are the same).
    rules = {"overrides": {r.name: {"for": "0s"} for r in load_pack("duty")}}
    config = {"http": {"port": port}, "storage": {"path": str(tmp_path / "d.db")}, "rules": rules}
    config.update(demo_duty_sections(pager.port, port, "zh"))
    daemon = Daemon(load_from_dict(config))
    await daemon.start()
    try:
        now = time.time()
        samples = [Sample.of(m, v, now, labels) for m, labels, v, _ in BREAKS]
        # Four virus outbreaks within the year, and no drill for 40 days.
        samples += [
            Sample.of("security_virus_outbreaks_total", n, now - (4 - n), SERVER) for n in range(5)
        ]
        samples.append(Sample.of(DRILL_SAMPLE, now - 40 * DAY, now, DRILL_LABELS))
        for sample in samples:
            daemon.operations.ingest_samples([sample])
        await settled(pager, 0)
        fired = {v["rule"] for v in daemon.operations.list_alerts(["firing"])}
        assert fired == {r.name for r in load_pack("duty")}, fired

        later = time.time()
        cleared = [Sample.of(m, v, later, labels) for m, labels, _, v in BREAKS if v is not None]
        cleared.append(Sample.of(DRILL_SAMPLE, later, later, DRILL_LABELS))
        paged = len(pager.pages)
        for sample in cleared:
            daemon.operations.ingest_samples([sample])
        await settled(pager, paged)

        text = out.getvalue()
        # Every alert's Chinese summary and resolve notice went out (durations as of sending).
        sent = durations_out(text)
        for view in daemon.operations.list_alerts():
            assert durations_out(view["summaries"]["zh"]) in sent, view["summaries"]["zh"]
        assert "已恢复" in text and "最低 38 %RH" in text and "（高于 85 %）" in text, text
        assert english_words(text) == set(), text
    finally:
        await daemon.stop()
        await pager.stop()
