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
    assert zh["summary"] == "机房温度告警：rig-room 当前 27.5 °C，超出 18..26 °C，已持续 5m40s"
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
        "机房湿度告警：room-a-sensor 当前 40.1 %RH，尚未回到 41..59 %RH，已持续 10m"
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
        "机房温度恢复：rig-room 已恢复到 18..26 °C，历时 3s，峰值 27.5 °C"
    )
    title, body = render([_page(resolved, PageKind.RESOLVED)], "zh", "UTC", 100.0, "m2")
    assert title == "已恢复: 机房温度恢复：rig-room 已恢复到 18..26 °C，历时 3s，峰值 27.5 °C"
    assert "Room" not in title + body


def test_summary_duration_is_the_one_at_sending():
    event = _firing("ups_on_battery")  # active since 1010, fired at 1020
    assert event.summary == "UPS t1 runs on battery for 10s: mains power is out"
    later = event.timestamp + 3600
    assert event.summary_in("en", later) == "UPS t1 runs on battery for 1h10s: mains power is out"
    title, _ = render([_page(event)], "zh", "UTC", later, "m3")
    assert title == "告警: 市电中断：UPS t1 已转电池供电 1h10s"


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
