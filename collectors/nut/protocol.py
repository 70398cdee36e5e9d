"""The upsd network protocol (NUT docs/net-protocol.txt): quoting arguments, splitting reply
lines, and one TCP connection with a bounded line reader. No knowledge of UPS variables here."""

from __future__ import annotations

import asyncio
import contextlib

from dutyd.core.errors import BadResponse

# upsd's own buffers are 4 KiB (LARGEBUF); a longer line is not NUT talking.
MAX_LINE_BYTES = 4096
# A large UPS (a three-phase unit through snmp-ups) lists about 400 variables; ten times that
# is a server that does not stop.
MAX_LIST_LINES = 4000
READ_CHUNK = 65536


def has_control(text: str) -> bool:
    """Whether `text` holds a control character (a line break would end the command)."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def quote_arg(value: str) -> str:
    """One argument for a command line to upsd, quoted when it holds a space, quote or
    backslash so that it stays one argument (upsd unescapes `\\` and `\"` as `split_line`
    does); plain words are sent bare, as upsmon sends them."""
    if value and not any(c.isspace() or c in '"\\' for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unescape(value: str) -> str:
    """`\\x` -> `x` for every x, escapes read left to right (the value holds no unpaired final
    backslash). Three C-speed replaces through a placeholder character the value does not
    hold: a regex substitution per escape took 2 ms for one 4 KB line, 9 s of event loop for
    a LIST VAR answer at its caps."""
    present = set(value)
    hold = next(c for c in map(chr, range(0xE000, 0x110000)) if c not in present)
    return value.replace("\\\\", hold).replace("\\", "").replace(hold, "\\")


def split_line(line: str) -> list[str]:
    """One protocol line -> its words, with a final quoted argument unquoted and unescaped.

    upsd quotes only the last argument (`VAR rack ups.mfr "APC \\"x\\""`), escaping `"` and
    `\\` inside it. Raises ValueError on a broken quote."""
    head, sep, tail = line.partition(' "')
    words = head.split(" ")
    if not sep:
        if '"' in line:
            raise ValueError("stray quote")
        return words
    if len(tail) == 0 or tail[-1] != '"':
        raise ValueError("unterminated quoted value")
    value = tail[:-1]
    if "\\" in value:
        # The closing quote must not itself be escaped: an odd run of backslashes before it.
        run = len(value) - len(value.rstrip("\\"))
        if run % 2:
            raise ValueError("unterminated quoted value")
        value = _unescape(value)
    elif '"' in value:
        raise ValueError("unescaped quote inside a value")
    words.append(value)
    return words


def shorten(text: str, limit: int = 60) -> str:
    """Device text cut short, line breaks shown, for an error message."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "…"


class ConnectionClosed(Exception):
    """The server closed the connection (EOF or reset)."""


class NutConnection:
    """One TCP connection to upsd with a bounded line reader."""

    __slots__ = ("_buf", "_pos", "reader", "received", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buf = b""
        self._pos = 0
        # Whether any byte came back: a kept connection that fails before answering anything
        # was most likely dropped while idle (upsd restarted) and is worth one reconnect.
        self.received = False

    def partial(self) -> bytes:
        return self._buf[self._pos :]

    async def send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise ConnectionClosed from exc

    async def line(self, server: str) -> str:
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end >= 0:
                if end - self._pos > MAX_LINE_BYTES:
                    raise BadResponse(
                        f"NUT server {server} sent a line longer than {MAX_LINE_BYTES} bytes; "
                        "is this port really upsd?"
                    )
                raw = self._buf[self._pos : end]
                self._pos = end + 1
                return raw.decode("utf-8", "replace").rstrip("\r")
            if len(self._buf) - self._pos > MAX_LINE_BYTES:
                raise BadResponse(
                    f"NUT server {server} sent more than {MAX_LINE_BYTES} bytes without "
                    "a line end; is this port really upsd?"
                )
            try:
                chunk = await self.reader.read(READ_CHUNK)
            except ConnectionError as exc:
                raise ConnectionClosed from exc
            if not chunk:
                raise ConnectionClosed
            self.received = True
            self._buf = self._buf[self._pos :] + chunk if self._pos < len(self._buf) else chunk
            self._pos = 0

    async def close(self, logout_timeout: float = 0.0) -> None:
        """Say LOGOUT and close, all within `logout_timeout`; else (or with 0) abort.

        Never waits on the peer beyond that: a graceful close waits until every queued byte
        is delivered, which a frozen or restarting upsd may never allow."""
        if logout_timeout > 0 and not self.writer.is_closing():
            # LOGOUT is a courtesy so upsd logs a clean goodbye; never wait long for it.
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(logout_timeout):
                    self.writer.write(b"LOGOUT\n")
                    await self.writer.drain()
                    await self.reader.read(256)
                    self.writer.close()
                    await self.writer.wait_closed()
                    return
        # Out of step, hung peer or no goodbye in time: abort, dropping unsent bytes. The
        # transport then closes at the loop's next turn, whatever the peer does.
        self.writer.transport.abort()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
