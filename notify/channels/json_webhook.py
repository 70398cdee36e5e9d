"""The generic JSON webhook (apprise's json:// and jsons://) sent on the event loop.

apprise sends each message with `requests` on a thread: a new session, a new connection and
some milliseconds of CPU per message, all under the GIL, so a burst of a thousand pages took
seconds whatever the number of threads. For the webhook scheme the daemon's own receivers and
most integrations use, the channel lets apprise parse the URL once (host, port, path, auth,
`+header`, `:field` and query options, timeouts, TLS verification) and posts apprise's JSON
document itself with aiohttp over kept-alive connections. The document is the one apprise
sends: {"version", "title", "message", "attachments", "type"} with `:field` overrides, and
the message id as `message_id` and the `X-Dutyd-Message-Id` header.
"""

from __future__ import annotations

import base64
import socket
import ssl
from typing import Any

import aiohttp

from dutyd.notify.channels.base import SendResult

MAX_CONNECTIONS = 32  # per channel: parallel sends to one receiver


class JsonWebhook:
    def __init__(self, plugin: Any) -> None:
        """`plugin`: apprise's parsed json:// URL (a `NotifyJSON`)."""
        schema = "https" if plugin.secure else "http"
        port = f":{plugin.port}" if isinstance(plugin.port, int) else ""
        self._url = f"{schema}://{plugin.host}{port}{plugin.fullpath}"
        self._method = str(plugin.method).upper()
        self._params = dict(plugin.params or {})
        self._headers = {
            "User-Agent": plugin.app_id,
            "Content-Type": "application/json",
            **plugin.headers,
        }
        if plugin.user:
            secret = f"{plugin.user}:{plugin.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(secret).decode()
        self._extras = dict(plugin.payload_extras)
        self._version = plugin.json_version
        self._ssl: bool = bool(plugin.verify_certificate)
        connect, read = plugin.request_timeout
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect, sock_read=read)
        self._redirects = bool(getattr(plugin, "redirects", True))
        self._session: aiohttp.ClientSession | None = None

    def document(self, message_id: str, title: str, body: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": self._version,
            "title": title,
            "message": body,
            "attachments": [],
            "type": "info",
        }
        for key, value in self._extras.items():
            if key in doc:
                # apprise's `:field=name` renames a field, `:field=` (empty) removes it.
                moved = doc.pop(key)
                if value:
                    doc[value] = moved
            else:
                doc[key] = value
        doc["message_id"] = message_id
        return doc

    async def send(self, message_id: str, title: str, body: str) -> SendResult:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS), timeout=self._timeout
            )
        try:
            async with self._session.request(
                self._method,
                self._url,
                json=self.document(message_id, title, body),
                params=self._params,
                headers={**self._headers, "X-Dutyd-Message-Id": message_id},
                ssl=self._ssl,
                allow_redirects=self._redirects,
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return SendResult(True)
                return SendResult(False, True, f"not accepted by the receiver: HTTP {resp.status}")
        except aiohttp.ClientError as exc:
            return SendResult(False, True, f"receiver unreachable: {cause(exc)}")
        except TimeoutError:  # aiohttp's connect/read timeouts (not a cancel from outside)
            return SendResult(False, True, "receiver unreachable: timeout")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def cause(exc: aiohttp.ClientError) -> str:
    """Why the receiver could not be reached (never the URL)."""
    if isinstance(getattr(exc, "os_error", None), socket.gaierror):
        return "DNS lookup failed"
    if isinstance(exc, aiohttp.ClientSSLError) or isinstance(
        getattr(exc, "os_error", None), ssl.SSLError
    ):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc.os_error, TimeoutError):
            return "timeout"
        return "connection failed"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        if "SSL" in str(exc):
            return "TLS handshake failed"
        return "connection lost"
    return type(exc).__name__
