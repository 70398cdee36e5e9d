"""Message texts: English and Simplified Chinese, times in the site's time zone."""

from __future__ import annotations

import datetime as dt

from dutyd.core.records import AlertChange, AlertEvent, AlertState, labels_of
from dutyd.notify.escalation import Page, PageKind
from dutyd.notify.templates import render

T = dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC).timestamp()


def page(kind: PageKind, n: int = 1, **kw: object) -> Page:
    ev = AlertEvent(
        fingerprint=f"fp{n}",
        rule="room_too_hot",
        labels=labels_of({"target": f"env{n}", "site": "hq", "room": "A"}),
        state=AlertState.FIRING,
        previous=AlertState.PENDING,
        severity="critical",
        summary=f"Room A at 29.5 °C ({n})",
        value=29.5,
        active_since=T,
        timestamp=T + 600,
        **kw,  # type: ignore[arg-type]
    )
    return Page(kind, ev, (), 2, T + 600, f"k{n}")


def test_english_in_site_time_zone_with_ack_link() -> None:
    title, body = render(
        [page(PageKind.FIRING)], "en", "Asia/Shanghai", T + 900, "m1", {"fp1": "https://x/ack/t"}
    )
    assert title == "ALERT: Room A at 29.5 °C (1)"
    assert "since 2026-11-23 09:00:00 CST, for 15m, escalation step 2" in body
    assert "Acknowledge: https://x/ack/t" in body and body.endswith("ref: m1")


def test_chinese_grouped_and_notices() -> None:
    title, body = render(
        [page(PageKind.FIRING, 1), page(PageKind.FIRING, 2)], "zh", "Asia/Shanghai", T, "m2"
    )
    assert title == "告警: 2 条告警 (机房 hq)"
    assert "[严重] Room A at 29.5 °C (2) (site=hq room=A target=env2)" in body
    assert "开始于 2026-11-23 09:00:00 CST" in body
    ack = page(PageKind.ACKNOWLEDGED, change=AlertChange.ACKNOWLEDGED, actor="李娜", note="处理中")
    title, body = render([ack], "zh", "UTC", T, "m3")
    assert title.startswith("已确认") and "确认人 李娜: 处理中" in body


def test_drill_is_marked() -> None:
    ev = page(PageKind.FIRING).event
    drill = Page(
        PageKind.FIRING,
        AlertEvent(
            **{
                **{k: getattr(ev, k) for k in ev.__dataclass_fields__},
                "labels": labels_of({"drill": "true", "target": "dutyd"}),
            }
        ),
        (),
        1,
        T,
        "d",
    )
    assert render([drill], "en", "UTC", T, "m")[0].startswith("[DRILL - TEST ONLY] ALERT")
    assert render([drill], "zh", "UTC", T, "m")[0].startswith("【演练 - 仅为测试】 告警")
