"""Every rule of the duty pack fires on a sequence that breaks its duty rule, stays quiet on
one that keeps it, and carries the reference of the rule it enforces."""

from __future__ import annotations

from typing import Any

import pytest

from dutyd.core.records import AlertChange, AlertState, Sample
from dutyd.rules.engine import RuleEngine
from dutyd.rules.packs import load_pack

DAY = 86400.0
H = 3600.0

# rule: (metric, labels, (step seconds, breaking values), (step seconds, keeping values))
CASES: dict[
    str, tuple[str, dict[str, str], tuple[float, list[float]], tuple[float, list[float]]]
] = {
    "room_temperature_out_of_range": (
        "room_temperature_celsius",
        {"kind": "modbus"},
        (60, [22, 27, 27, 27, 27, 27, 27.5]),
        (60, [22, 25.9, 18.1, 26, 18, 26, 26, 26, 26, 26]),
    ),
    "room_humidity_out_of_range": (
        "room_humidity_percent",
        {"kind": "modbus"},
        (60, [50] + [65] * 11),
        (60, [50, 59, 41, 60, 40] * 3),
    ),
    "ups_on_battery": ("ups_on_battery", {"kind": "nut"}, (10, [0, 1, 1]), (5, [0, 1, 0, 0])),
    "ups_low_battery": ("ups_battery_low", {"kind": "nut"}, (10, [0, 1]), (10, [0, 0, 0])),
    "ups_unreachable": ("target_up", {"kind": "nut"}, (30, [1, 0, 0, 0]), (30, [1, 1, 0, 1])),
    "ups_snmp_unreachable": (
        "target_up",
        {"kind": "snmp", "role": "ups"},
        (30, [1, 0, 0, 0]),
        (30, [1, 0, 1, 1]),
    ),
    "device_down": ("target_up", {"kind": "ssh"}, (30, [1, 0, 0, 0]), (30, [1, 0, 1, 0, 1])),
    "switch_uplink_down": (
        "if_oper_up",
        {"kind": "snmp", "role": "uplink", "port": "Te1/1"},
        (15, [1, 0, 0, 0]),
        (15, [1, 1, 0, 1]),
    ),
    "datacentre_network_outage": (
        "target_up",
        {"kind": "snmp", "role": "network"},
        (30, [1, 0, 0, 0]),
        (30, [1, 0, 1]),
    ),
    "core_backbone_outage": (
        "target_up",
        {"kind": "snmp", "role": "core"},
        (30, [1, 0, 0, 0]),
        (30, [1, 0, 1]),
    ),
    "application_fault": (
        "probe_success",
        {"kind": "http", "role": "application"},
        (60, [1, 0, 0, 0]),
        (60, [1, 0, 1, 1]),
    ),
    "application_unreachable": (
        "target_up",
        {"kind": "http", "role": "application"},
        (60, [1, 0, 0, 0]),
        (60, [1, 0, 1, 1]),
    ),
    "disk_almost_full": (
        "node_filesystem_used_ratio",
        {"kind": "ssh", "mount": "/var"},
        (60, [0.5] + [0.9] * 6),
        (60, [0.5, 0.84, 0.85, 0.85, 0.8, 0.85, 0.85, 0.85, 0.85]),
    ),
    "disk_full": (
        "node_filesystem_used_ratio",
        {"kind": "ssh", "mount": "/"},
        (30, [0.5, 0.97, 0.97, 0.97]),
        (30, [0.94] * 5),
    ),
    "disk_inodes_almost_full": (
        "node_filesystem_inodes_used_ratio",
        {"kind": "ssh", "mount": "/var"},
        (60, [0.5] + [0.95] * 6),
        (60, [0.5, 0.89, 0.9, 0.5, 0.9]),
    ),
    "unexpected_reboot": ("node_rebooted", {"kind": "ssh"}, (60, [0, 1, 0]), (60, [0, 0, 0])),
    "unexpected_device_reboot": (
        "device_rebooted",
        {"kind": "snmp", "role": "network"},
        (60, [0, 1, 0]),
        (60, [0, 0, 0]),
    ),
    "web_content_changed": (
        "http_content_changed",
        {"kind": "http"},
        (60, [0, 1]),
        (60, [0, 0, 0]),
    ),
    # backup_stale: the collector judges each backup against its own max_age.
    "backup_too_old": (
        "backup_stale",
        {"kind": "ssh", "backup": "db", "copy": "local"},
        (H, [0, 1]),
        (H, [0, 0, 0]),
    ),
    "backup_empty": (
        "backup_newest_size_bytes",
        {"kind": "ssh", "backup": "db", "copy": "local"},
        (H, [5e9, 0, 0, 0]),
        # A job that has just created its file: empty for less than an hour.
        (20 * 60, [5e9, 0, 0, 5e9, 1]),
    ),
    "backup_retention_too_short": (
        "backup_retention_shortfall_seconds",
        {"kind": "ssh", "backup": "db", "copy": "offsite"},
        (H, [0, 8 * DAY]),
        (H, [0, 0, 0]),
    ),
    "virus_outbreaks_red_line": (
        "security_virus_outbreaks_total",
        {"kind": "snmp"},
        (30 * DAY, [0, 1, 2, 3, 4]),
        # Four outbreaks, but never more than three within one year.
        (130 * DAY, [0, 1, 2, 3, 4, 5]),
    ),
    # The entry register's samples (duty/entries.py): target "dutyd", kind "register".
    "room_entered_alone": (
        "room_people_inside",
        {"kind": "register", "room": "A"},
        (60, [0, 1, 1, 1, 1]),
        # Alone for a minute while the second person registers, then two.
        (60, [0, 1, 2, 2, 2, 0, 2, 1, 0]),
    ),
    "room_door_open_unregistered": (
        "room_door_open_unregistered",
        {"kind": "register", "room": "A"},
        (10, [0, 1]),
        (10, [0, 0, 0]),
    ),
    "room_door_held_open": (
        "room_door_open",
        {"kind": "modbus", "room": "A"},
        (60, [0, 1, 1, 1, 1, 1, 1, 1]),
        (60, [0, 1, 1, 0, 1, 1, 1, 0, 1, 0]),
    ),
    "room_occupied_at_handover": (
        "room_occupied_at_handover",
        {"kind": "register", "room": "A"},
        (60, [0, 1]),
        (60, [0, 0, 0]),
    ),
    # The shift check-in (duty/handover.py): 0 from the hand-over until someone confirms.
    "duty_post_unattended": (
        "duty_shift_confirmed_people",
        {"kind": "shift"},
        (300, [0, 0, 0, 0, 0]),
        (300, [0, 0, 1, 2, 0, 0, 1]),
    ),
    "emergency_drill_overdue": (
        "drill_last_timestamp_seconds",
        {},
        (DAY, [0.0] * 33),
        (DAY, [(i // 30) * 30 * DAY for i in range(70)]),
    ),
}


def run(rule: str, step: float, values: list[float]) -> list:
    metric, labels, _, _ = CASES[rule]
    engine = RuleEngine(load_pack("duty"))
    events = []
    for i, v in enumerate(values):
        now = 1_000.0 + i * step
        sample = Sample.of(metric, v, now, {"target": "t1", **labels})
        events += engine.ingest([sample], now)
        # Tick through the step as the daemon does (once a second; coarser is enough here).
        events += engine.tick(now + step / 2)
    return events


def test_every_pack_rule_has_a_case_and_a_reference():
    pack = load_pack("duty")
    assert {r.name for r in pack} == set(CASES)
    for r in pack:
        for text in (r.reference.en, r.reference.zh):
            assert text and "\n" not in text, r.name


@pytest.mark.parametrize("rule", sorted(CASES))
def test_pack_rule_fires_on_a_breaking_sequence(rule: str):
    events = run(rule, *CASES[rule][2])
    fired = {e.rule for e in events if e.state is AlertState.FIRING}
    assert rule in fired
    if CASES[rule][0] == "target_up":
        assert fired == {rule}  # one fault, one alert


@pytest.mark.parametrize("rule", sorted(CASES))
def test_pack_rule_stays_quiet_on_a_keeping_sequence(rule: str):
    events = run(rule, *CASES[rule][3])
    assert [e for e in events if e.state is AlertState.FIRING] == []


@pytest.mark.parametrize(
    ("rule", "red_line"),
    [
        ("datacentre_network_outage", 2 * H),
        ("switch_uplink_down", 2 * H),  # a major network fault affecting operations
        ("core_backbone_outage", 4 * H),
        ("application_unreachable", 2 * H),
        ("application_fault", 2 * H),
    ],
)
def test_red_lines(rule: str, red_line: float):
    metric, labels, _, _ = CASES[rule]
    engine = RuleEngine(load_pack("duty"))
    crossed: list[Any] = []
    for i in range(int(5 * H / 60)):
        now = i * 60.0
        value = 1.0 if i == 0 else 0.0
        events = engine.ingest([Sample.of(metric, value, now, {"target": "t1", **labels})], now)
        crossed += [e for e in events + engine.tick(now) if e.change is AlertChange.RED_LINE]
    (event,) = crossed
    assert event.rule == rule and event.red_line == red_line
    assert event.timestamp == 60 + red_line  # counted from when the outage began


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        # Seconds in the exposition, days on the page.
        ("backup_retention_too_short", "offsite backup db on t1 keeps 8d less of copies"),
        ("unexpected_device_reboot", "t1 (snmp) restarted"),
    ],
)
def test_summaries_read_as_people_say_them(rule: str, words: str):
    (event,) = [e for e in run(rule, *CASES[rule][2]) if e.state is AlertState.FIRING]
    assert words in event.summary


def test_backup_alert_fires_when_no_backup_file_is_left():
    """An emptied backup directory has no newest-file age at all; the pack must still page."""
    engine = RuleEngine(load_pack("duty"))
    labels = {"target": "db1", "kind": "ssh", "backup": "db", "copy": "offsite"}
    # What the ssh collector emits for a backup with no file: a count of 0 and stale 1,
    # no backup_newest_age_seconds.
    samples = [
        Sample.of("backup_files", 0.0, 1_000.0, labels),
        Sample.of("backup_stale", 1.0, 1_000.0, labels),
    ]
    events = engine.ingest(samples, 1_000.0) + engine.tick(1_001.0)
    (event,) = [e for e in events if e.state is AlertState.FIRING]
    assert event.rule == "backup_too_old" and event.severity == "critical"
    assert "No offsite backup db on db1" in event.summary
