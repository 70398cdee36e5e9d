"""Channels through apprise: email, SMS gateways, DingTalk, WeCom, Feishu, Telegram, Slack,
webhooks (json://, form://) ... one apprise URL per channel.

apprise's `notify` blocks (requests); it runs on this channel's own small thread pool, so a
slow gateway never stalls the event loop or the other channels. The JSON webhook (json://,
jsons://) is parsed by apprise and posted on the event loop (`json_webhook`): a burst of
pages is not bound by apprise's per-message cost. For the generic webhook schemes the message
id also travels as the `X-Dutyd-Message-Id` header and, for json://, as a `message_id` field,
so receivers can drop duplicates; every text carries it as `ref:`.

Each send declares its body format to apprise (`body_format`): the format the service renders
(HTML for e-mail, Markdown for DingTalk/WeCom/Matrix ..., text for SMS), in which dutyd has
escaped the text itself (`safetext`), so apprise converts nothing and device text can never
become markup; the title is one line of at most `safetext.TITLE_MAX` characters.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator

from dutyd.core.configtypes import Language, SecretEnv, SecretFile, StrictModel, pick_secret
from dutyd.notify.channels.base import RateLimit, SendResult
from dutyd.notify.channels.chat_robots import ChatRobot, robot_service
from dutyd.notify.channels.json_webhook import JsonWebhook
from dutyd.notify.channels.safetext import FORMATS, MARKDOWN, TEXT, one_line_title, render

_HTTP_SCHEMES = ("json", "jsons", "form", "forms", "xml", "xmls")

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://\S*")


_sending = threading.local()  # .lines: what apprise said during this thread's send


class _AppriseLog(logging.Filter):
    """apprise says why a send failed only in its log (the exception at DEBUG). While a send
    runs on a thread, what apprise says on that thread is kept (in memory, to classify the
    failure; never logged as is). Below WARNING nothing goes further (its INFO chatter is one
    line per message sent). And apprise names the whole URL (tokens included) when it cannot
    parse or load one; secrets never reach a log, so every URL in its messages is cut to the
    scheme."""

    def filter(self, record: logging.LogRecord) -> bool:
        lines = getattr(_sending, "lines", None)
        if record.levelno < logging.WARNING:
            if lines is not None and "xception" in str(record.msg):
                lines.append(record.getMessage())
            return False
        if lines is not None:
            lines.append(record.getMessage())
        record.msg = _URL.sub(r"\1://<redacted>", record.getMessage())
        record.args = None
        return True


_apprise_log = logging.getLogger("apprise")
_apprise_log.setLevel(logging.DEBUG)  # for the exceptions; the filter stops the rest
_apprise_log.addFilter(_AppriseLog())

_HTTP_ERROR = re.compile(r"error=(\d{3})")
# What the exception text of a failed connection says, most specific first.
_CAUSES = (
    (re.compile(r"Connection refused|Errno 111", re.I), "connection refused"),
    (
        re.compile(
            r"Name or service not known|NameResolution|getaddrinfo|name resolution|"
            r"nodename nor servname|No address associated",
            re.I,
        ),
        "DNS lookup failed",
    ),
    (re.compile(r"SSL|TLS|certificate", re.I), "TLS handshake failed"),
    (re.compile(r"timed out|timeout", re.I), "timeout"),
    (re.compile(r"Connection reset|aborted|RemoteDisconnected|closed", re.I), "connection lost"),
)


def failure_reason(lines: list[str]) -> str:
    """Why a send failed, from what apprise logged during it: the receiver unreachable (and
    why: connection refused, timeout, DNS, TLS) or its answer. Never the URL or a secret."""
    text = "\n".join(lines)
    for pattern, cause in _CAUSES:
        if pattern.search(text):
            return f"receiver unreachable: {cause}"
    status = _HTTP_ERROR.search(text)
    if status:
        return f"not accepted by the receiver: HTTP {status.group(1)}"
    if re.search(r"connection error|socket", text, re.I):
        return "receiver unreachable"
    return "not accepted by the receiver"


class AppriseConfig(StrictModel):
    """An apprise URL (json://, mailto://, dingtalk://, wecombot://, tgram://, ...)."""

    kind: Literal["apprise"] = "apprise"
    url: SecretStr | None = None
    url_env: SecretEnv | None = None
    url_file: SecretFile | None = None
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    language: Language | None = Field(default=None, description="for group channels")

    @model_validator(mode="after")
    def _one_url(self) -> AppriseConfig:
        given = [x for x in (self.url, self.url_env, self.url_file) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of url, url_env, url_file")
        if not understood(self.secret_url()):
            # Never echo the URL: it holds the channel's token.
            raise ValueError("apprise does not understand this URL (see apprise's URL list)")
        return self

    def secret_url(self) -> str:
        return pick_secret(self.url, self.url_env, self.url_file) or ""


@functools.cache
def _apprise() -> Any:
    """The apprise library, imported when a channel is first configured (it takes a while)."""
    import apprise

    return apprise


@functools.cache
def _load_plugins() -> None:
    """apprise discovers its plugins on first use; some import modules deprecated in newer
    Pythons (imghdr). Do it once, here, with that warning silenced, not inside a send."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _apprise().Apprise().add("json://127.0.0.1/")


_JSON_SCHEMES = ("json", "jsons")


@functools.cache
def _json_plugin() -> Any:
    """apprise's JSON webhook plugin on its own: apprise's plugin table loads all of its ~190
    plugins (about 11 MiB kept for the daemon's life), which a site paging only through
    webhooks never uses. The plugin's own `parse_url` and constructor are what
    `Apprise.instantiate` calls."""
    from apprise.plugins.custom_json import NotifyJSON

    return NotifyJSON


def _json_service(url: str) -> Any | None:
    """The apprise JSON webhook service of a json:// or jsons:// URL, None if not valid."""
    plugin = _json_plugin()
    results = plugin.parse_url(url)
    if not results:
        return None
    try:
        return plugin(**results)
    except Exception:  # as Apprise.instantiate does: a bad URL is "not understood"
        return None


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def understood(url: str) -> bool:
    """True when apprise has a plugin for this URL and can parse it."""
    if _scheme(url) in _JSON_SCHEMES:
        return _json_service(url) is not None
    _load_plugins()
    return bool(_apprise().Apprise().add(url))


def _service_format(service: Any) -> tuple[str, bool]:
    """(the body format a parsed apprise service renders, whether it blends the title into
    the body). Newer apprise resolves a service of several formats (e-mail: HTML, then text;
    `?format=` picks) with `resolve_format`; older ones name one format in `notify_format`."""
    resolve = getattr(service, "resolve_format", None)
    found = resolve(None) if callable(resolve) else service.notify_format
    if isinstance(found, tuple | list):
        found = found[0]
    name = str(getattr(found, "value", found)).lower()
    return (name if name in FORMATS else TEXT), getattr(service, "title_maxlen", 1) <= 0


class AppriseChannel:
    payload_kind = "text"

    def __init__(self, name: str, config: AppriseConfig, workers: int = 16) -> None:
        self.name = name
        self._url = config.secret_url()
        self._scheme = _scheme(self._url)
        # The JSON webhook carries plain text in JSON; other services are asked below.
        self.body_format = TEXT
        self._title_in_body = False
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"notify-{name}"[:15])
        self._webhook: JsonWebhook | None = None
        self._robot: ChatRobot | None = None
        self._asset: Any = None
        if self._scheme in _JSON_SCHEMES:
            # Posted on the event loop (`json_webhook`); apprise only parses the URL.
            service = _json_service(self._url)
            if service is None:
                # Never echo the URL: it holds the channel's token.
                raise ValueError(f"channel {name}: apprise does not understand this URL")
            self._webhook = JsonWebhook(service)
        else:
            self._asset = self._apprise_asset(name)
            # DingTalk, WeCom and Feishu robots: Markdown, signatures, their error codes read.
            plugin = _apprise().Apprise.instantiate(self._url)
            if robot_service(plugin) is not None:
                self._robot = ChatRobot(plugin, self._url)
                self.body_format = MARKDOWN

    def _apprise_asset(self, name: str) -> Any:
        """apprise's settings for this channel's sends, once apprise knows the URL."""
        _load_plugins()
        probe = _apprise().Apprise()
        if not probe.add(self._url):
            # Never echo the URL: it holds the channel's token.
            raise ValueError(f"channel {name}: apprise does not understand this URL")
        self.body_format, self._title_in_body = _service_format(probe[0])
        # No apprise deadline: the send then runs on this channel's thread, not on apprise's
        # process-wide pool (cpu count + 4 threads shared by every channel, which capped a
        # burst's parallelism, and where what apprise logs cannot be told apart per send).
        # The service bounds each send (`send_timeout`), the plugins their requests.
        try:
            return _apprise().AppriseAsset(service_timeout=0)
        except TypeError:  # apprise 1.x: no service deadline to turn off
            return _apprise().AppriseAsset()

    def _url_for(self, message_id: str) -> str:
        if self._scheme not in _HTTP_SCHEMES:
            return self._url
        extra = f"%2BX-Dutyd-Message-Id={quote(message_id)}".replace("%2B", "+")
        if self._scheme in _JSON_SCHEMES:
            extra += f"&:message_id={quote(message_id)}"
        return self._url + ("&" if "?" in self._url else "?") + extra

    def _send(self, message_id: str, title: str, body: str) -> str | None:
        """None when the receiver accepted the message, else why not."""
        ap = _apprise().Apprise(asset=self._asset)
        ap.add(self._url_for(message_id))
        fmt = self.body_format
        title = one_line_title(title)
        if self._title_in_body:  # apprise puts it into the body as it is
            title = render(title, fmt)
        lines: list[str] = []
        _sending.lines = lines
        try:
            ok = bool(ap.notify(body=render(body, fmt), title=title, body_format=fmt))
        finally:
            _sending.lines = None
        return None if ok else failure_reason(lines)

    async def send(self, message_id: str, payload: dict[str, Any]) -> SendResult:
        if self._webhook is not None:
            title = one_line_title(payload["title"])
            return await self._webhook.send(message_id, title, payload["body"])
        if self._robot is not None:
            # Its own Markdown (the ack link as a link, device text escaped): chat_robots.
            title = one_line_title(payload["title"])
            return await self._robot.send(message_id, title, payload["body"])
        loop = asyncio.get_running_loop()
        try:
            error = await loop.run_in_executor(
                self._pool, self._send, message_id, payload["title"], payload["body"]
            )
        except Exception as exc:  # a plugin bug must not kill delivery of other messages
            return SendResult(False, True, f"apprise failed: {type(exc).__name__}")
        return SendResult(True) if error is None else SendResult(False, True, error)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._webhook is not None:
            await self._webhook.close()
        if self._robot is not None:
            await self._robot.close()
