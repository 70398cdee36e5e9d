"""What one poll asks an agent for (`Query`), and the lean v1/v2c client that fetches it.

A poll is one `fetch`: a GET of the scalars plus a walk of the table columns, all columns
side by side in each GETBULK (v2c) or GETNEXT (v1), so a 48-port switch costs two round
trips. The walk stops a column when the agent leaves it or reports endOfMibView, and is
refused (BadResponse) when an OID does not increase or a column exceeds `max_rows`.
"""

from __future__ import annotations

import asyncio
import socket
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Sequence

from dutyd.collectors.snmp.codec import (
    END_OF_MIB_VIEW,
    ERROR_NAMES,
    GET,
    GETBULK,
    GETNEXT,
    NO_SUCH_NAME,
    NO_SUCH_OBJECT,
    TOO_BIG,
    VERSION_1,
    AnyValue,
    Oid,
    Reply,
    RequestTemplate,
    decode_subids,
    encode_oid_content,
    encode_request,
    format_oid,
)
from dutyd.collectors.snmp.transport import Address, NoAnswer, SnmpTransport, family_of
from dutyd.core.errors import BadResponse, CollectError, TargetTimeout, TargetUnreachable

# A GET asks for at most this many OIDs at once (a UPS or a filtered switch fits in one).
GET_CHUNK = 40
# Scalars riding along in a GETBULK as non-repeaters (v2c): saves the switch's GET round trip.
MAX_NON_REPEATERS = 8

Column = dict[bytes, AnyValue]


class Query:
    """Scalars to GET and table columns to walk, encoded once and reused every poll."""

    __slots__ = (
        "column_bytes",
        "column_ends",
        "columns",
        "scalar_bytes",
        "scalar_index",
        "scalar_parents",
        "scalars",
        "templates",
    )

    def __init__(self, scalars: Sequence[Oid], columns: Sequence[Oid]) -> None:
        self.scalars = list(scalars)
        self.columns = list(columns)
        self.scalar_bytes = [encode_oid_content(o) for o in self.scalars]
        self.column_bytes = [encode_oid_content(o) for o in self.columns]
        # The least name above each column's subtree: a column's names are exactly those
        # from its prefix up to this, in byte order (a name's last octet is below 0x80).
        self.column_ends = [b[:-1] + bytes((b[-1] + 1,)) for b in self.column_bytes]
        self.scalar_index = {b: i for i, b in enumerate(self.scalar_bytes)}
        # A scalar x.0 is the GETNEXT successor of x, so it can ride in a GETBULK.
        rideable = (
            0 < len(self.scalars) <= MAX_NON_REPEATERS
            and all(o[-1] == 0 and len(o) > 2 for o in self.scalars)
            and len(set(self.scalars)) == len(self.scalars)
        )
        self.scalar_parents = (
            [encode_oid_content(o[:-1]) for o in self.scalars] if rideable else None
        )
        self.templates: dict[object, list[RequestTemplate]] = {}


class SnmpClient(ABC):
    """One target's way of fetching a Query (the lean codec for v1/v2c, pysnmp for v3)."""

    @abstractmethod
    async def fetch(self, query: Query, max_rows: int) -> tuple[list[AnyValue], list[Column]]:
        """Values of `query.scalars` (same order; an `Exception_` or None where missing) and,
        per column, {index bytes: value} in walk order."""

    async def close(self) -> None:  # noqa: B027 - the shared socket outlives a target
        """Release what this target alone holds."""


class FastClient(SnmpClient):
    """SNMP v1/v2c over the shared `SnmpTransport` with dutyd's own codec."""

    def __init__(
        self,
        transport: SnmpTransport,
        host: str,
        port: int,
        version: int,
        community: str,
        timeout: float,
        retries: int,
        max_repetitions: int,
        resolve: Callable[[], asyncio.Future[Address]] | None = None,
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.version = version
        self.community = community.encode()
        self.timeout = timeout
        self.retries = retries
        self.max_repetitions = max_repetitions
        self.where = f"{host}:{port}"
        self.addr: Address | None = None
        self._deadline = 0.0
        self._answered = 0  # requests of this poll answered so far
        self._template_key = (version, self.community)

    async def _address(self) -> Address:
        if self.addr is None:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise TargetUnreachable(f"cannot resolve {self.host}: {exc}") from exc
            self.addr = (str(infos[0][4][0]), int(infos[0][4][1]))
        return self.addr

    async def _request(self, build: Callable[[int], bytes]) -> Reply:
        addr = self.addr or await self._address()
        tries = self.retries + 1
        loop = asyncio.get_running_loop()
        remaining = self._deadline - loop.time()
        wait = min(self.timeout, remaining) / tries
        if wait <= 0.001:
            raise TargetTimeout(
                f"{self.where} did not complete the poll within {self.timeout:g}s "
                "(answers too slow for the table size; raise timeout or max_repetitions)"
            )
        msg = await self.transport.request(addr, family_of(addr), build, wait, self.retries)
        if isinstance(msg, NoAnswer):
            # Resolve again next time: the name may point elsewhere now.
            if addr[0] != self.host:
                self.addr = None
            if self._answered:
                # Part of the poll came back: the device is there but too slow for the
                # table within the budget; say so rather than "host down".
                raise TargetTimeout(
                    f"{self.where} stopped answering part-way through the poll: "
                    f"{self._answered} request(s) answered, then no answer within the "
                    f"{wait * tries:.2g}s left of the {self.timeout:.3g}s budget (overloaded "
                    "agent or a table too big for the timeout)"
                )
            raise self._no_answer(msg, wait * tries, tries)
        self._answered += 1
        return msg

    def _no_answer(self, why: NoAnswer, waited: float, tries: int) -> CollectError:
        if why.garbage:
            return BadResponse(
                f"{self.where} sent {why.garbage} datagram(s) that are not SNMP v1/v2c replies "
                f"and no valid answer within {waited:.3g}s (last: {why.problem})"
            )
        if why.stray:
            return BadResponse(
                f"{self.where} sent {why.stray} reply(ies) to requests we did not make and no "
                f"answer to ours within {waited:.3g}s (last: {why.problem}; broken agent?)"
            )
        if why.late:
            return TargetTimeout(
                f"no answer from {self.where} within {waited:.3g}s; it sent {why.late} late "
                "reply(ies) to requests that had timed out: slow agent (raise timeout?)"
            )
        if why.wrong_from is not None:
            return TargetTimeout(
                f"no answer from {self.where} within {waited:.3g}s; its reply came from "
                f"{why.wrong_from[0]}:{why.wrong_from[1]} instead and was ignored (NAT, or an "
                "agent answering from another address)"
            )
        return TargetTimeout(
            f"no answer from {self.where} within {waited:.3g}s ({tries} tries); wrong "
            "community or host down"
        )

    async def fetch(self, query: Query, max_rows: int) -> tuple[list[AnyValue], list[Column]]:
        self._deadline = asyncio.get_running_loop().time() + self.timeout
        self._answered = 0
        if not query.columns:
            return await self._get(query), []
        if self.version != VERSION_1 and query.scalar_parents is not None:
            return await self._walk_bulk(query, max_rows, with_scalars=True)
        scalars = await self._get(query) if query.scalars else []
        if self.version == VERSION_1:
            return scalars, await self._walk_next(query, max_rows)
        _, columns = await self._walk_bulk(query, max_rows, with_scalars=False)
        return scalars, columns

    # -- GET --------------------------------------------------------------------------------

    async def _get(self, query: Query) -> list[AnyValue]:
        templates = query.templates.get(self._template_key)
        if templates is None:
            templates = [
                RequestTemplate(
                    self.version, self.community, GET, query.scalar_bytes[i : i + GET_CHUNK]
                )
                for i in range(0, len(query.scalar_bytes), GET_CHUNK)
            ]
            query.templates[self._template_key] = templates
        out: list[AnyValue] = []
        for n, template in enumerate(templates):
            chunk = query.scalar_bytes[n * GET_CHUNK : (n + 1) * GET_CHUNK]
            msg = await self._request(template.build)
            if msg[2] != 0:
                out.extend(await self._get_slow(chunk, msg))
                continue
            names = msg[4]
            if names != chunk:
                if len(names) != len(chunk):
                    raise BadResponse(
                        f"{self.where} answered {len(names)} values to a GET of {len(chunk)}"
                    )
                for want, oid in zip(chunk, names, strict=True):
                    if oid != want:
                        raise BadResponse(
                            f"{self.where} answered OID {format_oid(_oid(oid))} to a GET of "
                            f"{format_oid(_oid(want))}"
                        )
            out += msg[5]
        return out

    async def _get_slow(self, oids: list[bytes], first: Reply) -> list[AnyValue]:
        """A GET the agent refused as a whole: v1 noSuchName (drop that OID, ask again) or
        tooBig (ask in halves)."""
        values: dict[bytes, AnyValue] = {}
        todo = [oids]
        msg: Reply | None = first
        while todo:
            batch = todo.pop()
            if msg is None:
                request_oids = batch

                def build(rid: int, request_oids: list[bytes] = request_oids) -> bytes:
                    return encode_request(self.version, self.community, GET, rid, request_oids)

                msg = await self._request(build)
            status, index = msg[2], msg[3]
            if status == 0:
                values.update(zip(msg[4], msg[5], strict=True))
            elif status == NO_SUCH_NAME and 1 <= index <= len(batch):
                values[batch[index - 1]] = NO_SUCH_OBJECT
                rest = batch[: index - 1] + batch[index:]
                if rest:
                    todo.append(rest)
            elif status == TOO_BIG and len(batch) > 1:
                half = len(batch) // 2
                todo += [batch[:half], batch[half:]]
            else:
                raise BadResponse(self._error_text(msg, batch))
            msg = None
        return [values.get(o, NO_SUCH_OBJECT) for o in oids]

    def _error_text(self, msg: Reply, oids: Sequence[bytes]) -> str:
        status, index = msg[2], msg[3]
        name = ERROR_NAMES.get(status, f"error {status}")
        where = ""
        if 1 <= index <= len(oids):
            where = f" on {format_oid(_oid(oids[index - 1]))}"
        return f"{self.where} answered {name}{where}"

    # -- walks ------------------------------------------------------------------------------

    async def _walk_bulk(
        self, query: Query, max_rows: int, with_scalars: bool
    ) -> tuple[list[AnyValue], list[Column]]:
        prefixes = query.column_bytes
        ends = query.column_ends
        k = len(prefixes)
        pos = list(prefixes)
        last: list[bytes] = [b""] * k
        results: list[Column] = [{} for _ in range(k)]
        # Columns whose rows came out of byte order (multi-byte arcs): checked row by row.
        unordered = [False] * k
        active = list(range(k))
        reps = self.max_repetitions
        parents = query.scalar_parents if with_scalars else None
        scalars: list[AnyValue] = []
        version, community = self.version, self.community
        while active:
            lead = parents or []
            oids = lead + [pos[i] for i in active]

            def build(
                rid: int, oids: list[bytes] = oids, nr: int = len(lead), r: int = reps
            ) -> bytes:
                return encode_request(version, community, GETBULK, rid, oids, nr, r)

            msg = await self._request(build)
            if msg[2] != 0:
                if msg[2] == TOO_BIG and reps > 1:
                    reps = max(1, reps // 2)
                    continue
                raise BadResponse(self._error_text(msg, oids))
            names, values = msg[4], msg[5]
            with_lead = bool(parents)
            if parents:
                m = len(parents)
                if len(names) < m:
                    raise BadResponse(f"{self.where} answered a GETBULK without its scalars")
                want = query.scalar_bytes
                scalars = [values[i] if names[i] == want[i] else NO_SUCH_OBJECT for i in range(m)]
                del names[:m], values[:m]
                parents = None
            n = len(active)
            if not names:
                if with_lead:
                    continue  # the scalars filled the agent's reply; the rows come next
                raise BadResponse(f"{self.where} answered a GETBULK walk with no values")
            still = []
            # Replies are row-major: column s holds names[s], names[s + n], ...
            for s in range(n):
                c = active[s]
                col = results[c]
                if n > 1:
                    cn, cv = names[s::n], values[s::n]
                else:
                    cn, cv = names, values
                if not cn:
                    still.append(c)  # a short reply: this column's next row comes next time
                    continue
                # The common case in a few C calls: names in byte order, the first after
                # where the column stands. Those below the column's end are then exactly its
                # rows (the names with its prefix form an interval in byte order).
                if not unordered[c] and cn[0] > pos[c] and cn == sorted(cn):
                    rows = bisect_left(cn, ends[c])
                    if END_OF_MIB_VIEW in cv:
                        rows = min(rows, cv.index(END_OF_MIB_VIEW))
                    if rows:
                        plen = len(prefixes[c])
                        taken = cn[:rows] if rows < len(cn) else cn
                        keys = [name[plen:] for name in taken]
                        before = len(col)
                        col.update(zip(keys, cv, strict=False))  # cv may run past the column
                        if len(col) != before + rows:
                            # Only a repeat within this reply can collide (the rest sort
                            # after every row so far): name it.
                            at = next((i for i in range(1, rows) if keys[i] == keys[i - 1]), 0)
                            before_key = keys[at - 1] if at else last[c]
                            raise BadResponse(
                                self._not_increasing(query.columns[c], before_key, keys[at])
                            )
                        if len(col) > max_rows:
                            raise BadResponse(self._too_long(query.columns[c], max_rows))
                        pos[c] = taken[-1]
                        last[c] = keys[-1]
                    if rows == len(cn):
                        still.append(c)
                    continue
                prefix = prefixes[c]
                plen = len(prefix)
                prev = last[c]
                finished = False
                for oid, value in zip(cn, cv, strict=True):
                    if value is END_OF_MIB_VIEW or len(oid) <= plen or not oid.startswith(prefix):
                        finished = True
                        break
                    ib = oid[plen:]
                    # Bytewise order is OID order but for rare multi-byte arcs: those (and
                    # broken agents) take the exact check. A repeat is never progress.
                    if ib <= prev:
                        if not _after(ib, prev) or ib in col:
                            raise BadResponse(self._not_increasing(query.columns[c], prev, ib))
                        unordered[c] = True
                    elif ib in col:
                        raise BadResponse(self._not_increasing(query.columns[c], prev, ib))
                    col[ib] = value
                    prev = ib
                    pos[c] = oid
                if len(col) > max_rows:
                    raise BadResponse(self._too_long(query.columns[c], max_rows))
                last[c] = prev
                if not finished:
                    still.append(c)
            active = still
        if with_scalars and not scalars:
            scalars = [NO_SUCH_OBJECT] * len(query.scalars)
        return scalars, results

    async def _walk_next(self, query: Query, max_rows: int) -> list[Column]:
        """SNMP v1 has no GETBULK: one GETNEXT per row, all columns at once."""
        prefixes = query.column_bytes
        k = len(prefixes)
        pos = list(prefixes)
        last: list[Oid] = [()] * k
        results: list[Column] = [{} for _ in range(k)]
        active = list(range(k))
        version, community = self.version, self.community
        while active:
            oids = [pos[i] for i in active]

            def build(rid: int, oids: list[bytes] = oids) -> bytes:
                return encode_request(version, community, GETNEXT, rid, oids)

            msg = await self._request(build)
            status, index = msg[2], msg[3]
            if status == NO_SUCH_NAME and 1 <= index <= len(active):
                # v1's end of the MIB: that column is finished.
                del active[index - 1]
                continue
            if status != 0:
                raise BadResponse(self._error_text(msg, oids))
            names, values = msg[4], msg[5]
            if len(names) != len(active):
                raise BadResponse(
                    f"{self.where} answered {len(names)} values to a GETNEXT of {len(active)}"
                )
            still = []
            for c, oid, value in zip(active, names, values, strict=True):
                prefix = prefixes[c]
                plen = len(prefix)
                if value is END_OF_MIB_VIEW or len(oid) <= plen or not oid.startswith(prefix):
                    continue
                ib = oid[plen:]
                idx = decode_subids(ib)
                if idx <= last[c]:
                    raise BadResponse(self._not_increasing(query.columns[c], last[c], idx))
                last[c] = idx
                pos[c] = oid
                col = results[c]
                col[ib] = value
                if len(col) > max_rows:
                    raise BadResponse(self._too_long(query.columns[c], max_rows))
                still.append(c)
            active = still
        return results

    def _not_increasing(self, column: Oid, before: Oid | bytes, after: Oid | bytes) -> str:
        if isinstance(before, bytes):
            before = decode_subids(before) if before else ()
        if isinstance(after, bytes):
            after = decode_subids(after)
        return (
            f"{self.where} walk of {format_oid(column)} is not advancing: index "
            f"{format_oid(after)} came after {format_oid(before)} (broken agent)"
        )

    def _too_long(self, column: Oid, max_rows: int) -> str:
        return (
            f"{self.where} table {format_oid(column)} has more than {max_rows} rows "
            "(raise max_rows if that is real)"
        )


def _after(index: bytes, before: bytes) -> bool:
    """Whether row index `index` comes after `before` in OID order (raw BER sub-ids)."""
    try:
        return decode_subids(index) > (decode_subids(before) if before else ())
    except ValueError:
        return False


def _oid(content: bytes) -> Oid:
    from dutyd.collectors.snmp.codec import decode_oid_content

    try:
        return decode_oid_content(content)
    except ValueError:
        return ()
