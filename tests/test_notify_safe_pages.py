"""Device text in pages is escaped for the body format each channel renders (issue 24,
finding 4): an HTML e-mail through apprise mailto:// to a real SMTP server on loopback, a
Markdown webhook (apprise form:// with format=markdown) to a real HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import pytest
from aiohttp import web
from apprise.conversion.format import markdown_to_html

from dutyd.notify.channels import CHANNEL_KINDS, AlertmanagerForward, build_channel
from dutyd.notify.channels.apprise import AppriseChannel, AppriseConfig
from dutyd.notify.channels.safetext import (
    FORMATS,
    TITLE_MAX,
    escape_html,
    escape_markdown,
    one_line_title,
)
from dutyd.web.server import serve_on_loopback

HOSTILE_PORT = '<a href="https://phish.example/login">Gi0/1</a><img src=x onerror=alert(1)>'
HOSTILE_MD = "[click here](https://phish.example/x) **urgent** ![i](https://t.example/p.png)"
TITLE = "[critical] Port " + HOSTILE_PORT + " is down on core-sw-1 " + "x" * 300


def md_to_html(text: str) -> str:
    """Markdown rendered as CommonMark reads escapes (every ASCII punctuation character may be
    backslash-escaped): apprise's own Markdown to HTML (Python-Markdown, configured so)."""
    return markdown_to_html(text)


class SmtpSink:
    """A minimal SMTP server (RFC 5321's happy path) keeping every message's DATA."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.got = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 sink ESMTP")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while line := await reader.readline():
                verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
                if verb == "EHLO":
                    say("250-sink")
                    say("250 8BITMIME")
                elif verb == "DATA":
                    say("354 go ahead")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    self.messages.append(data[:-5])
                    self.got.set()
                    say("250 queued")
                elif verb == "QUIT":
                    say("221 bye")
                    await writer.drain()
                    break
                else:  # HELO, MAIL, RCPT, RSET, NOOP
                    say("250 ok")
                await writer.drain()
        writer.close()


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink()
    await sink.start()
    yield sink
    await sink.stop()


class _Text(HTMLParser):
    """The text a mail client shows of an HTML part, and the tags it would render."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def test_html_email_escapes_device_text_and_cuts_the_subject(smtp: SmtpSink) -> None:
    url = (
        f"mailto://127.0.0.1:{smtp.port}?from=dutyd@example.org&to=duty@example.org"
        "&mode=insecure&name=dutyd"
    )
    channel = AppriseChannel("mail", AppriseConfig(url=url))
    assert channel.body_format == "html"
    body = f"[critical] Port {HOSTILE_PORT} is down\nref: m-1"
    try:
        result = await channel.send("m-1", {"title": TITLE, "body": body})
    finally:
        await channel.close()
    assert result.ok, result.error
    assert smtp.messages
    message = email.message_from_bytes(smtp.messages[0], policy=email.policy.default)
    subject = str(message["Subject"])
    assert len(subject) <= TITLE_MAX
    assert subject.startswith("[critical] Port <a href=")  # a subject is text: shown as is
    html_part = message.get_body(("html",))
    assert html_part is not None, message.as_string()[:2000]
    html_text = html_part.get_content()
    parser = _Text()
    parser.feed(html_text)
    assert "a" not in parser.tags and "img" not in parser.tags, parser.tags
    assert HOSTILE_PORT in "".join(parser.text)  # shown as the characters it is
    assert "&lt;a href=&quot;https://phish.example/login&quot;&gt;" in html_text


class FormReceiver:
    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _hook(self, request: web.Request) -> web.Response:
        self.forms.append(dict(await request.post()))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._hook)
        self._runner, self.port = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def rendered_links(markdown_text: str) -> list[tuple[str, str]]:
    """(href, shown text) of every link a Markdown renderer makes of the text; and no raw
    HTML may survive."""
    out = md_to_html(markdown_text)
    assert "<img" not in out and '<a href="https://phish.example/login">Gi0' not in out, out
    return re.findall(r'<a href="([^"]*)">([^<]*)</a>', out)


async def test_markdown_channel_escapes_device_text() -> None:
    receiver = FormReceiver()
    await receiver.start()
    channel = AppriseChannel(
        "chat", AppriseConfig(url=f"form://127.0.0.1:{receiver.port}/hook?format=markdown")
    )
    assert channel.body_format == "markdown"
    ack = "https://duty.example.org/ack/abc-123.def?t=9_9"
    body = f"Port {HOSTILE_PORT} down; {HOSTILE_MD}\nAcknowledge: {ack}"
    try:
        result = await channel.send("m-2", {"title": "t\r\nBcc: x@example.org", "body": body})
    finally:
        await channel.close()
        await receiver.stop()
    assert result.ok, result.error
    form = receiver.forms[0]
    assert "\n" not in form["title"] and "\r" not in form["title"]
    links = rendered_links(form["message"])
    # Every link shows its own target (an autolink); the ack link survives whole.
    assert all(href == text for href, text in links), links
    assert (ack, ack) in links
    rendered = md_to_html(form["message"])
    assert "<strong>" not in rendered and "<em>" not in rendered, rendered


@pytest.mark.parametrize(
    "text",
    [
        HOSTILE_PORT,
        HOSTILE_MD,
        "# heading\n- item\n1. one\n> quote\n`code` | table | row\n---",
        "a_b_c *x* \\*y\\* a & b <script>alert(1)</script>",
        "see https://duty.example.org/ack/x-1.y?z=1, then (https://a.example/b).",
    ],
)
def test_escaped_text_renders_as_itself(text: str) -> None:
    # Markdown: the visible text of the rendered HTML is the input (URLs as their own links).
    html_out = md_to_html(escape_markdown(text))
    parser = _Text()
    parser.feed(html_out)
    assert set(parser.tags) <= {"p", "a", "br"}, (parser.tags, html_out)
    assert " ".join("".join(parser.text).split()) == " ".join(text.split())
    # HTML: the same.
    parser = _Text()
    parser.feed(escape_html(text))
    assert set(parser.tags) <= {"br"}
    assert "".join(parser.text).replace("\n", "") == text.replace("\n", "")


def test_titles_are_one_line_and_cut() -> None:
    assert one_line_title("a\r\nBcc: x\x00y") == "a Bcc: x y"
    long = one_line_title("x" * 500)
    assert len(long) == TITLE_MAX and long.endswith("…")


async def test_every_channel_kind_declares_its_body_format() -> None:
    configs = {
        "apprise": AppriseConfig(url="form://127.0.0.1:1/"),
        "alertmanager": AlertmanagerForward(url="http://127.0.0.1:1"),
    }
    assert configs.keys() == CHANNEL_KINDS.keys()
    for kind, config in configs.items():
        channel = build_channel(kind, config)
        try:
            assert channel.body_format in FORMATS, kind
        finally:
            await channel.close()
