"""The group robots of Chinese duty rooms: DingTalk (`dingtalk://`), WeCom (`wecombot://`) and
Feishu (`feishu://`) apprise URLs (or the services' own https URLs), posted by dutyd itself.

apprise parses the URL (the robot's token or key, DingTalk's signing secret and the mobiles
to @); the message is sent here, on the event loop, because apprise's plugins lose pages and
read poorly in these rooms:
- DingTalk and WeCom answer a refused message (a wrong signature, a missing keyword, a robot
  removed, "send too fast") with HTTP 200 and an `errcode`, which apprise does not read: the
  page would be counted as sent. Here a non-zero `errcode` (Feishu: `code`) is a failed send
  whose reason names the service's code and message; rate limiting and "system busy" are
  retried, the rest refused (the outbox fails over to the person's next contact).
- apprise's WeCom robot sends the body alone, as plain text: the title ("告警: ...") is lost.
- Feishu's signature (签名校验) is not supported by apprise; here `feishu://TOKEN/?secret=S`.

The page is Markdown where the service renders it (DingTalk `markdown`, WeCom `markdown`,
Feishu an interactive card with `lark_md`): the title as a heading (WeCom: coloured), each
alert's first line in bold, the ack link as a link (`[点击确认](https://...)`), text from the
devices escaped so it cannot make links or markup. The texts are the page's own (the
recipient's or the channel's `language`: Chinese for `language: zh`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import aiohttp
from yarl import URL

from dutyd.core.errors import shown
from dutyd.notify.channels.base import SendResult
from dutyd.notify.channels.json_webhook import MAX_CONNECTIONS, cause

# The services' robot endpoints. Tests put a loopback receiver in their place (nothing else
# may: a robot's token goes wherever this says).
ENDPOINTS: dict[str, str] = {
    "dingtalk": "https://oapi.dingtalk.com/robot/send",
    "wecom": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send",
    "feishu": "https://open.feishu.cn/open-apis/bot/v2/hook/",
}
# apprise's plugin class -> service.
_PLUGINS = {"NotifyDingTalk": "dingtalk", "NotifyWeComBot": "wecom", "NotifyFeishu": "feishu"}
# The largest message each accepts (bytes of the Markdown text); longer is cut with a mark.
_MAX_BYTES = {"dingtalk": 19000, "wecom": 4000, "feishu": 19000}
# Error codes worth retrying: rate limits and "system busy"; any other refusal is final.
_RETRY = {
    "dingtalk": frozenset({-1, 130101, 660026}),
    "wecom": frozenset({-1, 45009, 45033}),
    "feishu": frozenset({-1, 11232, 9499}),
}
# An ack link line: indented (the page's own detail lines are; an alert's first line, which
# holds device text, is not), a short label, the URL.
_LINK_LINE = re.compile(r"^(\s+)(\S[^:]{0,40}): (https?://\S+)$")
# CommonMark's escapable characters that change rendering in these services' Markdown.
_MARKUP = re.compile(r"([\\`*_\[\]<>#|~])")
MAX_ANSWER = 64 * 1024  # bytes of the service's answer read


def robot_service(plugin: Any) -> str | None:
    """The robot service of an apprise plugin instance, None for any other plugin."""
    return _PLUGINS.get(type(plugin).__name__)


def escape(text: str) -> str:
    return _MARKUP.sub(r"\\\1", text)


def markdown(body: str, line_break: str) -> str:
    """A page's plain text (notify/templates.render) as Markdown: each alert's first line in
    bold, its detail lines under it, an ack link line as a link, the reference last."""
    lines = body.split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        link = _LINK_LINE.match(line)
        if link:
            out.append(f"[{escape(link.group(2))}]({link.group(3)})")
        elif line.startswith(" "):
            out.append(escape(line.strip()))
        elif i == len(lines) - 1:
            out.append("")  # a blank line before the reference
            out.append(escape(line))
        else:
            if out:
                out.append("")  # a blank line between alerts
            out.append(f"**{escape(line)}**")
    text = ""
    for piece in out:
        if not piece:
            text += "\n\n" if not text.endswith("\n\n") else ""
        else:
            text += piece if not text or text.endswith("\n\n") else line_break + piece
    return text


def _cut(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 8].decode("utf-8", "ignore") + "\n\n……"


@dataclass(frozen=True)
class _Robot:
    service: str
    token: str
    secret: str = ""
    mobiles: tuple[str, ...] = ()


class ChatRobot:
    """One DingTalk, WeCom or Feishu group robot."""

    def __init__(self, plugin: Any, url: str) -> None:
        """`plugin`: apprise's parsed URL; `url`: the URL itself (Feishu's `secret=`)."""
        service = robot_service(plugin)
        if service is None:
            raise ValueError("not a DingTalk, WeCom or Feishu robot URL")
        if service == "dingtalk":
            robot = _Robot(service, plugin.token, plugin.secret or "", tuple(plugin.targets or ()))
        elif service == "wecom":
            robot = _Robot(service, plugin.key)
        else:
            secret = parse_qs(urlsplit(url).query).get("secret", [""])[0]
            robot = _Robot(service, plugin.token, secret)
        self.robot = robot
        self._ssl = bool(plugin.verify_certificate)
        connect, read = plugin.request_timeout
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect, sock_read=read)
        self._user_agent = plugin.app_id
        self._session: aiohttp.ClientSession | None = None

    # -- the request ------------------------------------------------------------------------------

    def request(
        self, title: str, body: str, now: float | None = None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(url, query, JSON document) of one message; `now` for the signature (tests)."""
        robot = self.robot
        now = time.time() if now is None else now
        limit = _MAX_BYTES[robot.service]
        if robot.service == "dingtalk":
            text = markdown(body, "\n\n")
            if robot.mobiles:  # DingTalk @s only the mobiles the text names
                text += "\n\n" + " ".join(f"@{m}" for m in robot.mobiles)
            doc: dict[str, Any] = {
                "msgtype": "markdown",
                "markdown": {"title": title, "text": _cut(f"### {escape(title)}\n\n{text}", limit)},
                "at": {"atMobiles": list(robot.mobiles), "isAtAll": False},
            }
            query = {"access_token": robot.token}
            if robot.secret:
                query.update(dingtalk_signature(robot.secret, now))
            return ENDPOINTS["dingtalk"], query, doc
        if robot.service == "wecom":
            color = "info" if _resolved(title) else "warning"
            head = f'### <font color="{color}">{escape(title)}</font>'
            content = _cut(f"{head}\n{markdown(body, chr(10))}", limit)
            doc = {"msgtype": "markdown", "markdown": {"content": content}}
            return ENDPOINTS["wecom"], {"key": robot.token}, doc
        doc = {
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": True},
                "header": {
                    "title": {"tag": "plain_text", "content": title},
                    "template": "green" if _resolved(title) else "red",
                },
                "elements": [
                    {
                        "tag": "div",
                        "text": {"tag": "lark_md", "content": _cut(markdown(body, "\n"), limit)},
                    }
                ],
            },
        }
        if robot.secret:
            doc.update(feishu_signature(robot.secret, now))
        return ENDPOINTS["feishu"] + robot.token, {}, doc

    async def send(self, message_id: str, title: str, body: str) -> SendResult:
        url, query, doc = self.request(title, body)
        if query:
            # Encoded here: a signature's `+` and `/` must reach the service as %2B and %2F.
            url += "?" + urlencode(query, quote_via=quote)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS), timeout=self._timeout
            )
        try:
            async with self._session.post(
                URL(url, encoded=True),
                data=json.dumps(doc, ensure_ascii=False).encode(),
                headers={
                    "User-Agent": self._user_agent,
                    "Content-Type": "application/json; charset=utf-8",
                },
                ssl=self._ssl,
                allow_redirects=False,
            ) as resp:
                answer = await resp.content.read(MAX_ANSWER)
                if resp.status >= 400:
                    retry = resp.status >= 500 or resp.status == 429
                    return SendResult(
                        False, retry, f"not accepted by the receiver: HTTP {resp.status}"
                    )
                return self._verdict(resp.status, answer)
        except aiohttp.ClientError as exc:
            return SendResult(False, True, f"receiver unreachable: {cause(exc)}")
        except TimeoutError:
            return SendResult(False, True, "receiver unreachable: timeout")

    def _verdict(self, status: int, answer: bytes) -> SendResult:
        """The service's answer: HTTP 200 with a code, 0 when the message was taken."""
        service = self.robot.service
        try:
            doc = json.loads(answer)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            if 200 <= status < 300:
                return SendResult(
                    False, True, f"{service} answered HTTP {status} without its JSON result"
                )
            return SendResult(False, True, f"not accepted by the receiver: HTTP {status}")
        code = doc.get("errcode", doc.get("code", doc.get("StatusCode", 0)))
        if code in (0, None) and 200 <= status < 300:
            return SendResult(True)
        why = doc.get("errmsg") or doc.get("msg") or doc.get("StatusMessage") or ""
        retry = isinstance(code, int) and code in _RETRY[service]
        # The service's message is its own text: cut and quoted (it is logged and shown).
        return SendResult(
            False, retry, f"not accepted by {service}: error {code} {shown(str(why), 120)}"
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# How a resolve's title begins in each language (notify/templates.py's TEXT "resolved", a
# drill's prefix before it: a channel may not import the templates; a test keeps them equal).
RESOLVED_WORDS = ("RESOLVED", "已恢复")


def _resolved(title: str) -> bool:
    """A resolve (a drill's too) reads green, everything else red."""
    head = title.split("] ", 1)[-1].split("】 ", 1)[-1]
    return head.startswith(RESOLVED_WORDS)


def dingtalk_signature(secret: str, now: float) -> dict[str, str]:
    """DingTalk's 加签: `timestamp` (ms) and `sign` = base64(HMAC-SHA256(secret,
    "timestamp\\nsecret")); the service refuses a timestamp more than an hour off."""
    timestamp = str(int(now * 1000))
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return {"timestamp": timestamp, "sign": base64.b64encode(digest).decode()}


def feishu_signature(secret: str, now: float) -> dict[str, str]:
    """Feishu's 签名校验: `timestamp` (s) and `sign` = base64(HMAC-SHA256 keyed with
    "timestamp\\nsecret" over nothing), in the JSON document."""
    timestamp = str(int(now))
    digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return {"timestamp": timestamp, "sign": base64.b64encode(digest).decode()}
