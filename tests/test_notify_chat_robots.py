"""DingTalk, WeCom and Feishu group robots (notify/channels/chat_robots.py) at the HTTP level: a
loopback receiver stands in for each service's host (as the services answer: HTTP 200 with an
error code when they refuse), and checks what dutyd sends: the robot's token, DingTalk's and
Feishu's signatures, Markdown with the ack link as a link, the page's Chinese text."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from dutyd.core.records import AlertEvent, AlertState, labels_of
from dutyd.notify.channels import chat_robots
from dutyd.notify.channels.apprise import AppriseChannel, AppriseConfig
from dutyd.notify.escalation import Page, PageKind
from dutyd.notify.templates import TEXT, render
from dutyd.web.server import serve_on_loopback

DING_TOKEN = "d1ng7a1k70ken"
DING_SECRET = "SEC0123456789abcdef"
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
FEISHU_TOKEN = "f3i5hu-70ken"
FEISHU_SECRET = "fs-secret-42"
ACK = "https://dutyd.example.cn/ack/Zx9_a-1"
T = dt.datetime(2026, 11, 23, 1, 0, tzinfo=dt.UTC).timestamp()


class Services:
    """The three services' robot endpoints on one loopback port, answering as they do."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answer: dict[str, Any] | None = None  # forced answer (rate limit, ...)
        self.url = ""
        self._runner: web.AppRunner | None = None

    def _take(self, request: web.Request, raw: bytes) -> dict[str, Any]:
        doc = json.loads(raw.decode("utf-8"))
        self.received.append(
            {"path": request.path, "query": dict(request.query), "doc": doc, "raw": raw}
        )
        return doc

    async def _dingtalk(self, request: web.Request) -> web.Response:
        self._take(request, await request.read())
        q = request.query
        if self.answer is not None:
            return web.json_response(self.answer)
        if q.get("access_token") != DING_TOKEN:
            return web.json_response({"errcode": 300001, "errmsg": "token is not exist"})
        stamp = q.get("timestamp", "")
        expected = base64.b64encode(
            hmac.new(
                DING_SECRET.encode(), f"{stamp}\n{DING_SECRET}".encode(), hashlib.sha256
            ).digest()
        ).decode()
        fresh = stamp.isdigit() and abs(int(stamp) / 1000 - time.time()) < 3600
        if not fresh or q.get("sign") != expected:
            return web.json_response(
                {"errcode": 310000, "errmsg": "sign not match, more: [https://ding-doc...]"}
            )
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _wecom(self, request: web.Request) -> web.Response:
        self._take(request, await request.read())
        if self.answer is not None:
            return web.json_response(self.answer)
        if request.query.get("key") != WECOM_KEY:
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _feishu(self, request: web.Request) -> web.Response:
        doc = self._take(request, await request.read())
        if self.answer is not None:
            return web.json_response(self.answer)
        stamp = str(doc.get("timestamp", ""))
        expected = base64.b64encode(
            hmac.new(f"{stamp}\n{FEISHU_SECRET}".encode(), b"", hashlib.sha256).digest()
        ).decode()
        if request.match_info["token"] != FEISHU_TOKEN or doc.get("sign") != expected:
            return web.json_response(
                {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}
            )
        return web.json_response({"code": 0, "msg": "success", "data": {}})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/robot/send", self._dingtalk)
        app.router.add_post("/cgi-bin/webhook/send", self._wecom)
        app.router.add_post("/open-apis/bot/v2/hook/{token}", self._feishu)
        self._runner, port = await serve_on_loopback(app)
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def services(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Services]:
    peer = Services()
    await peer.start()
    monkeypatch.setitem(chat_robots.ENDPOINTS, "dingtalk", f"{peer.url}/robot/send")
    monkeypatch.setitem(chat_robots.ENDPOINTS, "wecom", f"{peer.url}/cgi-bin/webhook/send")
    monkeypatch.setitem(chat_robots.ENDPOINTS, "feishu", f"{peer.url}/open-apis/bot/v2/hook/")
    yield peer
    await peer.stop()


def page(kind: PageKind = PageKind.FIRING, summary: str = "A 机房温度 29.5 °C") -> dict[str, str]:
    """A page as the service renders it for a Chinese duty room, with its ack link."""
    event = AlertEvent(
        fingerprint="fp1",
        rule="room_too_hot",
        labels=labels_of({"target": "env_a", "site": "hq", "room": "A"}),
        state=AlertState.RESOLVED if kind is PageKind.RESOLVED else AlertState.FIRING,
        previous=AlertState.PENDING,
        severity="critical",
        summary=summary,
        value=29.5,
        active_since=T,
        timestamp=T + 600,
    )
    links = {"fp1": ACK} if kind is PageKind.FIRING else {}
    title, body = render(
        [Page(kind, event, (), 1, T + 600, "k1")], "zh", "Asia/Shanghai", T + 900, "m1", links
    )
    return {"title": title, "body": body}


async def send(url: str, payload: dict[str, str]) -> Any:
    channel = AppriseChannel("robot", AppriseConfig(url=url))
    try:
        return await channel.send("m1", payload)
    finally:
        await channel.close()


async def test_dingtalk_signed_markdown_in_chinese_with_the_ack_link(services: Services) -> None:
    result = await send(f"dingtalk://{DING_SECRET}@{DING_TOKEN}/13800138000", page())
    assert result.ok, result.error
    (got,) = services.received
    assert got["query"]["access_token"] == DING_TOKEN and got["query"]["sign"]
    doc = got["doc"]
    assert doc["msgtype"] == "markdown"
    assert doc["markdown"]["title"] == "告警: A 机房温度 29.5 °C"
    assert doc["markdown"]["text"] == (
        "### 告警: A 机房温度 29.5 °C\n\n"
        "**\\[严重\\] A 机房温度 29.5 °C (site=hq room=A target=env\\_a)**\n\n"
        "开始于 2026-11-23 09:00:00 CST, 持续 15分钟\n\n"
        f"[点击确认]({ACK})\n\n"
        "编号: m1\n\n"
        "@13800138000"
    )
    assert doc["at"] == {"atMobiles": ["13800138000"], "isAtAll": False}
    # UTF-8 as is, not \\u escapes (DingTalk's 20,000-byte limit counts bytes).
    assert "机房".encode() in got["raw"]


async def test_dingtalk_refusals_are_failed_sends_without_secrets(services: Services) -> None:
    # A wrong signing secret: DingTalk answers HTTP 200 with errcode 310000. Before, apprise
    # counted that as sent.
    result = await send(f"dingtalk://WRONGSECRET@{DING_TOKEN}/", page())
    assert not result.ok and not result.retry
    assert result.error.startswith("not accepted by dingtalk: error 310000 'sign not match")
    assert DING_TOKEN not in result.error and "WRONGSECRET" not in result.error
    # "send too fast" (20 a minute per robot): retried later.
    services.answer = {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
    result = await send(f"dingtalk://{DING_SECRET}@{DING_TOKEN}/", page())
    assert not result.ok and result.retry and "130101" in result.error


async def test_the_webhook_address_as_copied_from_wecom_is_the_same_robot(
    services: Services,
) -> None:
    native = f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}"
    result = await send(native, page())
    assert result.ok, result.error
    assert services.received[0]["doc"]["msgtype"] == "markdown"


async def test_wecom_markdown_keeps_the_title_and_links_the_ack(services: Services) -> None:
    result = await send(f"wecombot://{WECOM_KEY}", page())
    assert result.ok, result.error
    (got,) = services.received
    assert got["query"] == {"key": WECOM_KEY}
    assert got["doc"]["msgtype"] == "markdown"
    content = got["doc"]["markdown"]["content"]
    assert content.startswith('### <font color="warning">告警: A 机房温度 29.5 °C</font>\n')
    assert f"\n[点击确认]({ACK})\n" in content and content.endswith("编号: m1")
    # A removed robot (HTTP 200, errcode 93000) is a refusal, not a sent page.
    result = await send("wecombot://0000-not-the-key", page())
    assert not result.ok and not result.retry and "error 93000" in result.error


async def test_feishu_signed_card_green_when_resolved(services: Services) -> None:
    url = f"feishu://{FEISHU_TOKEN}/?secret={FEISHU_SECRET}"
    result = await send(url, page())
    assert result.ok, result.error
    card = services.received[0]["doc"]["card"]
    assert services.received[0]["doc"]["msg_type"] == "interactive"
    assert card["header"]["title"]["content"] == "告警: A 机房温度 29.5 °C"
    assert card["header"]["template"] == "red"
    text = card["elements"][0]["text"]
    assert text["tag"] == "lark_md" and f"[点击确认]({ACK})" in text["content"]
    assert (await send(url, page(PageKind.RESOLVED))).ok
    assert services.received[1]["doc"]["card"]["header"]["template"] == "green"
    # Without the secret the robot (签名校验 on) refuses: reported, not counted as sent.
    result = await send(f"feishu://{FEISHU_TOKEN}", page())
    assert not result.ok and not result.retry and "error 19021" in result.error


async def test_device_text_cannot_make_links_or_markup(services: Services) -> None:
    hostile = page(summary="[点我](http://evil.example/x) <font color=red>*x*</font> # h")
    assert (await send(f"wecombot://{WECOM_KEY}", hostile)).ok
    content = services.received[0]["doc"]["markdown"]["content"]
    assert not re.search(r"(?<!\\)\]\(http://evil", content), content
    assert not re.search(r"(?<!\\)<font color=red", content), content
    assert "\\[点我\\](http://evil.example/x) \\<font color=red\\>\\*x\\*\\</font\\>" in content


def test_the_resolve_words_are_the_templates() -> None:
    assert set(chat_robots.RESOLVED_WORDS) == {t["resolved"] for t in TEXT.values()}


async def test_a_url_in_device_text_is_not_made_a_link(services: Services) -> None:
    hostile = page(summary="ack here: https://evil.example/ack")
    assert (await send(f"wecombot://{WECOM_KEY}", hostile)).ok
    content = services.received[0]["doc"]["markdown"]["content"]
    assert "](https://evil.example/ack)" not in content
    assert f"[点击确认]({ACK})" in content
