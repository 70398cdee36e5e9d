"""A probed page's Content-Encoding undone by dutyd itself, its output counted.

aiohttp below 3.13.3 inflated a compressed body without bound before the probe saw a byte
(CVE-2025-69223: a 1 MB gzip page inflating to 1 GiB took dutyd from 75 to 716 MiB), and
`max_body_bytes` applied only to what came out. The probe's session asks aiohttp not to
decompress (`auto_decompress=False`) and offers only gzip and deflate; each raw piece is
inflated here with zlib's `max_length`, so no more than the room left under the cap is ever
produced, whatever the aiohttp version. A body that inflates past the cap is refused.
"""

from __future__ import annotations

import zlib
from typing import Any

# What the probe's requests offer (Accept-Encoding); anything else in an answer is refused.
ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(Exception):
    """The body inflates past the cap."""


class BadEncoding(Exception):
    """The body's Content-Encoding is not one offered, or the data is not valid for it."""


class Inflater:
    """Undoes one Content-Encoding (`gzip`, `deflate`, `identity`), at most `cap` bytes out."""

    def __init__(self, content_encoding: str, cap: int) -> None:
        codings = [
            c.strip().lower()
            for c in content_encoding.split(",")
            if c.strip().lower() not in ("", "identity")
        ]
        self._left = cap
        self._deflate = False
        self._z: Any = None  # a zlib decompressor when the body is encoded
        if not codings:
            return
        if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
            raise BadEncoding(f"Content-Encoding {content_encoding[:40]!r} was not asked for")
        self._deflate = codings[0] == "deflate"
        self._z = zlib.decompressobj(zlib.MAX_WBITS if self._deflate else 16 + zlib.MAX_WBITS)
        self._started = False

    @property
    def encoded(self) -> bool:
        return self._z is not None

    def feed(self, data: bytes) -> bytes:
        """The decoded bytes of the next raw piece. Raises BodyTooLarge past the cap."""
        if self._z is None:
            return data
        try:
            out = self._z.decompress(data, self._left + 1)
        except zlib.error:
            if self._deflate and not self._started:
                # "deflate" is sent raw (no zlib header) by some servers, as browsers accept.
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                self._started = True
                return self.feed(data)
            raise BadEncoding("the body is not valid for its Content-Encoding") from None
        self._started = True
        if len(out) > self._left or self._z.unconsumed_tail:
            raise BodyTooLarge
        self._left -= len(out)
        return out

    def finish(self) -> None:
        """At the end of the raw body: the compressed stream must be complete."""
        if self._z is not None and self._started and not self._z.eof:
            raise BadEncoding("the compressed body was cut off")
