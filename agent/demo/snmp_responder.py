"""A small SNMP v1/v2c agent on asyncio UDP, built on dutyd's codec: GET, GETNEXT, GETBULK.

It serves a table of OID -> (type tag, value) that its owner changes at will. The demo's
switch and UPS use it, and so does the benchmark's fleet. Requests with another community are
dropped unanswered, as real agents do.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Any

from dutyd.collectors.snmp import codec

# Keep replies inside one unfragmented-enough UDP datagram; GETBULK stops adding rows here.
MAX_REPLY_BYTES = 1400


class SnmpResponder(asyncio.DatagramProtocol):
    def __init__(self, community: str) -> None:
        self.community = community.encode()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.requests = 0
        self._values: dict[tuple[int, ...], bytes] = {}  # oid -> encoded varbind
        self._sorted: list[tuple[int, ...]] = []
        self._dirty = False

    # -- values --------------------------------------------------------------------------

    def set(self, oid: tuple[int, ...], tag: int, value: Any) -> None:
        if oid not in self._values:
            self._dirty = True
        content = codec.encode_oid_content(oid)
        self._values[oid] = codec.encode_varbind(content, codec.encode_value(tag, value))

    def _keys(self) -> list[tuple[int, ...]]:
        if self._dirty:
            self._sorted = sorted(self._values)
            self._dirty = False
        return self._sorted

    def _next(self, oid: tuple[int, ...]) -> tuple[int, ...] | None:
        keys = self._keys()
        i = bisect.bisect_right(keys, oid)
        return keys[i] if i < len(keys) else None

    # -- serving -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
            await asyncio.sleep(0)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.requests += 1
        try:
            msg = codec.decode_message(data)
        except codec.DecodeError:
            return
        if msg[1] != self.community or self.transport is None:
            return
        answer = self.answer(msg)
        if answer is not None:
            self.transport.sendto(answer, addr)

    def answer(self, msg: codec.Message) -> bytes | None:
        version, community, pdu, rid, f1, f2, varbinds = msg
        oids = [codec.decode_oid_content(o) for o, _ in varbinds]
        v1 = version == codec.VERSION_1
        out: list[bytes] = []
        # An error reply carries the request's varbinds unchanged (RFC 3416 §4.2).
        asked = b"".join(codec.encode_varbind(o) for o, _ in varbinds)
        if pdu == codec.GET:
            for i, (oid, (raw, _)) in enumerate(zip(oids, varbinds, strict=True)):
                vb = self._values.get(oid)
                if vb is None:
                    if v1:
                        return codec.encode_response(version, community, rid, asked, 2, i + 1)
                    vb = codec.encode_varbind(raw, b"\x81\x00")  # noSuchInstance
                out.append(vb)
        elif pdu == codec.GETNEXT or (pdu == codec.GETBULK and not v1):
            non_rep, reps = (f1, f2) if pdu == codec.GETBULK else (len(oids), 1)
            non_rep = max(0, min(non_rep, len(oids)))
            size = 0
            for i, oid in enumerate(oids[:non_rep]):
                vb = self._walk_one(oid, varbinds[i][0], v1)
                if vb is None:
                    return codec.encode_response(version, community, rid, asked, 2, i + 1)
                out.append(vb)
            pos = oids[non_rep:]
            raws = [raw for raw, _ in varbinds[non_rep:]]
            for _ in range(max(0, min(reps, 200)) if pos else 0):
                row = []
                for j, oid in enumerate(pos):
                    nxt = self._next(oid)
                    if nxt is None:
                        if v1:
                            return codec.encode_response(
                                version, community, rid, asked, 2, non_rep + j + 1
                            )
                        row.append(codec.encode_varbind(raws[j], b"\x82\x00"))
                    else:
                        pos[j] = nxt
                        raws[j] = codec.encode_oid_content(nxt)
                        row.append(self._values[nxt])
                row_size = sum(map(len, row))
                if out and size + row_size > MAX_REPLY_BYTES:
                    break
                size += row_size
                out.extend(row)
        else:
            return None
        return codec.encode_response(version, community, rid, b"".join(out))

    def _walk_one(self, oid: tuple[int, ...], raw: bytes, v1: bool) -> bytes | None:
        nxt = self._next(oid)
        if nxt is None:
            return None if v1 else codec.encode_varbind(raw, b"\x82\x00")
        return self._values[nxt]
