"""Compressed pages: dutyd inflates them itself, counted against max_body_bytes (issue 24,
finding 5: the zip bomb). Against a real HTTP server on loopback that writes the raw bytes."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import resource
import time
import zlib
from collections.abc import AsyncIterator, Callable

import pytest

from dutyd.collectors.base import CollectorContext, Readings
from dutyd.collectors.probe_http import HttpProbeCollector, HttpTarget
from dutyd.core.errors import BadResponse

MIB = 1024 * 1024
PAGE = b"<h1>Duty portal OK</h1>" * 100


def bomb_segments() -> tuple[bytes, bytes]:
    """A gzip stream of zeros as a head and a segment that may be repeated: after a full
    flush a deflate block refers to nothing before it, so N segments inflate to N MiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MIB)
    head = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    segment = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    return head, segment


@contextlib.asynccontextmanager
async def raw_server(encoding: str, chunks: Callable[[], list[bytes] | None]) -> AsyncIterator[str]:
    """An HTTP/1.1 server answering every request with `Content-Encoding: encoding` and the
    raw bytes `chunks()` gives (a None list: the 1 GiB bomb, streamed until the client
    leaves). Counts what it wrote in `sent`."""
    sent = {"bytes": 0}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                + f"Content-Encoding: {encoding}\r\n".encode()
                + b"Connection: close\r\n\r\n"
            )
            parts = chunks()
            if parts is None:
                head, segment = bomb_segments()
                parts_iter = [head] + [segment] * 1023  # 1 GiB inflated, ~1 MiB sent
            else:
                parts_iter = parts
            for part in parts_iter:
                writer.write(part)
                sent["bytes"] += len(part)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


async def poll(collector: HttpProbeCollector) -> dict[str, float]:
    readings = Readings({"target": collector.config.name}, time.time())
    await collector.collect(readings)
    return {s.name: s.value for s in readings.samples}


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_gzip_bomb_is_refused_without_the_memory_growing(
    context: CollectorContext,
) -> None:
    async with raw_server("gzip", lambda: None) as url:
        probe = HttpProbeCollector(
            HttpTarget(name="portal", kind="http", address=url, timeout=10), context
        )
        before = rss_mib()
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with pytest.raises(BadResponse, match=r"inflates past max_body_bytes \(1048576 bytes\)"):
            await poll(probe)
        grown = rss_mib() - before
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert grown < 16, f"RSS grew {grown:.1f} MiB"
        assert peak - max(peak_before, before) < 32, f"peak RSS {peak:.0f} MiB"


async def test_gzip_and_deflate_pages_read_as_the_plain_page(context: CollectorContext) -> None:
    expected = None
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    for encoding, data in (
        ("identity", PAGE),
        ("gzip", gzip.compress(PAGE)),
        ("deflate", zlib.compress(PAGE)),
        ("deflate", raw.compress(PAGE) + raw.flush()),  # deflate without the zlib header
    ):
        async with raw_server(encoding, lambda data=data: [data]) as url:
            probe = HttpProbeCollector(
                HttpTarget(name="portal", kind="http", address=url, expected_text="Duty portal"),
                context,
            )
            v = await poll(probe)
        assert v["probe_success"] == 1, encoding
        assert v["http_content_length_bytes"] == len(PAGE), encoding
        if expected is None:
            expected = probe.fingerprint
        assert probe.fingerprint == expected, encoding


async def test_a_page_inflating_just_to_the_cap_is_read_and_one_byte_more_refused(
    context: CollectorContext,
) -> None:
    for size, ok in ((1000, True), (1001, False)):
        data = gzip.compress(b"a" * size)
        async with raw_server("gzip", lambda data=data: [data]) as url:
            probe = HttpProbeCollector(
                HttpTarget(name="portal", kind="http", address=url, max_body_bytes=1000), context
            )
            if ok:
                assert (await poll(probe))["http_content_length_bytes"] == 1000
            else:
                with pytest.raises(BadResponse, match="inflates past max_body_bytes"):
                    await poll(probe)


async def test_an_encoding_not_asked_for_or_broken_data_is_a_bad_response(
    context: CollectorContext,
) -> None:
    cases = (
        ("br", [b"\x0b\x02\x80hello\x03"], "was not asked for"),
        ("gzip", [b"not gzip at all"], "not valid for its Content-Encoding"),
        ("gzip", [gzip.compress(PAGE)[:40]], "cut off"),
    )
    for encoding, parts, reason in cases:
        async with raw_server(encoding, lambda parts=parts: parts) as url:
            probe = HttpProbeCollector(HttpTarget(name="portal", kind="http", address=url), context)
            with pytest.raises(BadResponse, match=reason):
                await poll(probe)
