"""Rule texts in English and Simplified Chinese: every pack rule has both; pages, resolve
notices and the status-page view speak the recipient's language; summaries read right."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dutyd.core.records import AlertEvent, AlertState, Sample
from dutyd.notify.escalation import Page, PageKind
from dutyd.notify.templates import render
from dutyd.rules.config import RuleConfig
from dutyd.rules.engine import RuleEngine
from dutyd.rules.packs import load_pack
from dutyd.web.statuspage import in_language
from tests.test_rules_duty_pack import CASES, run

CJK = re.compile(r"[\u4e00-\u9fff]")
# ASCII words a Chinese duty engineer reads as they are (units, device kinds, protocols).
KEPT_AS_IS = {"UPS", "SNMP", "inode", "RH", "C"}


def _firing(rule: str) -> AlertEvent:
    _, _, (step, values), _ = CASES[rule]
    events = [e for e in run(rule, step, values) if e.rule == rule]
    return next(e for e in events if e.state is AlertState.FIRING)


def _page(event: AlertEvent, kind: PageKind = PageKind.FIRING) -> Page:
    return Page(kind, event, (), 1, event.timestamp, "k")


def test_every_pack_rule_has_summary_resolve_and_reference_in_both_languages():
    for r in load_pack("duty"):
        texts = [r.summary, r.reference, r.resolved]
        for text in texts:
            assert text is not None, r.name
            assert text.en and text.zh and text.en != text.zh, r.name
            assert CJK.search(text.zh) and not CJK.search(text.en), r.name


@pytest.mark.parametrize("rule", sorted(CASES))
def test_a_chinese_page_carries_no_english_summary(rule: str):
    event = _firing(rule)
    labels = dict(event.labels)
    en, zh = event.summary_in("en"), event.summary_in("zh")
    title, body = render([_page(event)], "zh", "Asia/Shanghai", event.timestamp, "m1")
    page = f"{title}\n{body}"
    assert zh in page and en not in page
    # Beyond label values (data, not words), the Chinese summary has no English words.
    # Durations (2m, 1h30m, 15d) are figures, not words.
    words = set(re.findall(r"[A-Za-z][A-Za-z_-]*", re.sub(r"\d[\dhmsd.]*", " ", zh)))
    data = {w for v in labels.values() for w in re.findall(r"[A-Za-z][A-Za-z_-]*", v)}
    assert words - data - KEPT_AS_IS == set(), (rule, zh)
    # And the English page is English.
    title, body = render([_page(event)], "en", "Asia/Shanghai", event.timestamp, "m1")
    assert en in title and not CJK.search(title + body)


def test_status_page_view_in_chinese_shows_the_chinese_summary():
    engine = RuleEngine(load_pack("duty"))
    for i, v in enumerate([22, 27.5, 27.5, 27.5, 27.5, 27.5, 27.5]):
        now = i * 60.0
        labels = {"target": "rig-room", "kind": "modbus"}
        engine.ingest([Sample.of("room_temperature_celsius", v, now, labels)], now)
        engine.tick(now)
    (alert,) = engine.alerts.values()
    view = engine.view(alert, 400.0)
    zh = in_language(view, "zh")
    assert zh["summary"] == "机房温度告警：rig-room 当前 27.5 °C，超出 18..26 °C，已持续 5分40秒"
    assert zh["reference"].startswith("卡中心机房管理规定")
    en = in_language(view, "en")
    assert en["summary"] == ("Room temperature 27.5 °C on rig-room is outside 18..26 °C for 5m40s")


def humidity_feed() -> Any:
    engine = RuleEngine([r for r in load_pack("duty") if r.name == "room_humidity_out_of_range"])

    def rh(value: float, ts: float) -> list[AlertEvent]:
        sample = Sample.of("room_humidity_percent", value, ts, {"target": "room-a-sensor"})
        return engine.ingest([sample], ts) + engine.tick(ts)

    return rh


def test_held_alert_says_it_is_still_held_with_the_unit_in_place():
    rh = humidity_feed()
    rh(39.0, 0.0)
    (firing,) = rh(40.1, 600.0)  # back inside 40..60, not yet inside 41..59: still held
    assert firing.state is AlertState.FIRING
    assert firing.summary_in("en") == (
        "Room humidity 40.1 %RH on room-a-sensor is still held until back within 41..59 %RH for 10m"
    )
    assert firing.summary_in("zh") == (
        "机房湿度告警：room-a-sensor 当前 40.1 %RH，尚未回到 41..59 %RH，已持续 10分钟"
    )


def test_resolve_says_what_recovered_with_its_peak():
    engine = RuleEngine(
        [
            r.model_copy(update={"for_": 0.0})
            for r in load_pack("duty")
            if r.name == "room_temperature_out_of_range"
        ]
    )
    events: list[AlertEvent] = []
    for i, v in enumerate([27.0, 27.5, 26.5, 22.0]):
        now = 1.0 * i + 1.0
        sample = Sample.of("room_temperature_celsius", v, now, {"target": "rig-room"})
        events += engine.ingest([sample], now)
    resolved = events[-1]
    assert resolved.state is AlertState.RESOLVED
    assert (
        resolved.summary
        == "Room temperature on rig-room back within 18..26 °C after 3s, peak 27.5 °C"
    )
    assert resolved.summary_in("zh") == (
        "机房温度恢复：rig-room 已恢复到 18..26 °C，历时 3秒，峰值 27.5 °C"
    )
    title, body = render([_page(resolved, PageKind.RESOLVED)], "zh", "UTC", 100.0, "m2")
    assert title == "已恢复: 机房温度恢复：rig-room 已恢复到 18..26 °C，历时 3秒，峰值 27.5 °C"
    assert "Room" not in title + body


def test_summary_duration_is_the_one_at_sending():
    event = _firing("ups_on_battery")  # active since 1010, fired at 1020
    assert event.summary == "UPS t1 runs on battery for 10s: mains power is out"
    later = event.timestamp + 3600
    assert event.summary_in("en", later) == "UPS t1 runs on battery for 1h10s: mains power is out"
    title, _ = render([_page(event)], "zh", "UTC", later, "m3")
    assert title == "告警: 市电中断：UPS t1 已转电池供电 1小时10秒"


def test_rule_language_accepts_one_string_both_or_one_language():
    base = {"name": "hot", "metric": "room_temperature_celsius", "condition": {"above": 26}}
    one = RuleConfig.model_validate({**base, "summary": "hot {target}"})
    assert (one.summary.en, one.summary.zh) == ("hot {target}", "hot {target}")
    both = RuleConfig.model_validate({**base, "summary": {"en": "hot", "zh": "过热"}})
    assert (both.summary.get("en"), both.summary.get("zh")) == ("hot", "过热")
    only_zh = RuleConfig.model_validate({**base, "reference": {"zh": "机房温度"}})
    assert (only_zh.reference.en, only_zh.reference.zh) == ("机房温度", "机房温度")
    with pytest.raises(ValueError, match="fr"):
        RuleConfig.model_validate({**base, "summary": {"en": "hot", "fr": "chaud"}})


def _one_rule_engine(name: str) -> RuleEngine:
    return RuleEngine(
        [r.model_copy(update={"for_": 0.0}) for r in load_pack("duty") if r.name == name]
    )


def test_a_ratio_threshold_reads_as_a_percentage_beside_a_percentage():
    """`已用 98 %（高于 0.85）` put a ratio beside a percentage: the disk rules show their
    threshold as percent, in both languages, and so does a held alert's hysteresis."""
    engine = _one_rule_engine("disk_almost_full")
    labels = {"target": "db1", "mount": "/var"}

    def used(ratio: float, ts: float) -> list[AlertEvent]:
        sample = Sample.of("node_filesystem_used_ratio", ratio, ts, labels)
        return engine.ingest([sample], ts) + engine.tick(ts)

    (firing,) = used(0.98, 10.0)
    assert firing.summary_in("en") == "/var on db1 is 98 % full (above 85 %) for 0s"
    assert firing.summary_in("zh") == "磁盘空间不足：db1 的 /var 已用 98 %（高于 85 %），已持续 0秒"
    used(0.84, 20.0)  # below 85 %, not yet below 83 %: still held
    (alert,) = engine.alerts.values()
    held = engine.view(alert, 20.0)["summaries"]
    assert held["en"] == "/var on db1 is 84 % full (still held until below 83 %) for 10s"
    assert held["zh"] == "磁盘空间不足：db1 的 /var 已用 84 %（尚未回落至低于 83 %），已持续 10秒"
    for rule in ("disk_full", "disk_inodes_almost_full"):
        event = _firing(rule)
        for lang in ("en", "zh"):
            assert re.search(r"[（(](above|高于) (95|90) %[)）]", event.summary_in(lang)), rule
            assert "0.9" not in event.summary_in(lang), rule


def test_a_resolve_after_an_excursion_below_the_range_names_the_lowest_value():
    """A humidity that fell to 39.8 %RH did not peak there: the resolve says lowest / 最低;
    after an excursion above the range it still says peak / 峰值."""
    engine = _one_rule_engine("room_humidity_out_of_range")
    events: list[AlertEvent] = []
    for i, v in enumerate([39.8, 39.9, 50.0]):
        ts = 10.0 * i + 10.0
        events += engine.ingest([Sample.of("room_humidity_percent", v, ts, {"target": "s1"})], ts)
    resolved = events[-1]
    assert resolved.state is AlertState.RESOLVED
    assert resolved.summary_in("en") == (
        "Room humidity on s1 back within 40..60 %RH after 20s, lowest 39.8 %RH"
    )
    assert resolved.summary_in("zh") == (
        "机房湿度恢复：s1 已恢复到 40..60 %RH，历时 20秒，最低 39.8 %RH"
    )
    high = _one_rule_engine("room_humidity_out_of_range")
    events = []
    for i, v in enumerate([61.0, 65.0, 50.0]):
        ts = 10.0 * i + 10.0
        events += high.ingest([Sample.of("room_humidity_percent", v, ts, {"target": "s1"})], ts)
    assert events[-1].summary_in("en").endswith("peak 65 %RH")
    assert events[-1].summary_in("zh").endswith("峰值 65 %RH")


@pytest.mark.parametrize(
    ("seconds", "en", "zh"),
    [
        (0.25, "250ms", "250毫秒"),
        (10, "10s", "10秒"),
        (150, "2m30s", "2分30秒"),
        (300, "5m", "5分钟"),
        (6120, "1h42m", "1小时42分钟"),
        (3610, "1h10s", "1小时10秒"),
        (15 * 86400, "15d", "15天"),
    ],
)
def test_durations_read_in_each_language(seconds: float, en: str, zh: str):
    from dutyd.core.configtypes import format_duration

    assert (format_duration(seconds), format_duration(seconds, "zh")) == (en, zh)


def test_a_chinese_page_says_its_durations_in_chinese_units():
    event = _firing("switch_uplink_down")  # red line 2h, for 30s
    title, body = render([_page(event)], "zh", "Asia/Shanghai", event.timestamp + 150, "m4")
    assert "红线 2小时" in title and "持续 3分钟" in body, (title, body)
    assert not re.search(r"\d[smhd]\b", title + body), (title, body)
