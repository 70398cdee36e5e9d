"""SNMP through pysnmp 7 (`pysnmp.hlapi.v3arch.asyncio`): v3 with USM, and v1/v2c on request.

Every target shares ONE `SnmpEngine` (`context.shared("snmp.engine", ...)`). Requests go
through pysnmp's command generators with numeric `ObjectName`s, skipping the hlapi's MIB
resolution, which would otherwise run on every poll. pysnmp's error indications, including
the report PDUs of RFC 3414 (usmStatsWrongDigests, usmStatsUnknownUserNames, ...), are
translated here into dutyd's errors, naming the likely cause.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pyasn1.type import univ
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import cmdgen
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import auth as hauth
from pysnmp.hlapi.v3arch.asyncio.auth import CommunityData, UsmUserData
from pysnmp.hlapi.v3arch.asyncio.lcd import CommandGeneratorLcdConfigurator
from pysnmp.hlapi.v3arch.asyncio.transport import Udp6TransportTarget, UdpTransportTarget
from pysnmp.proto import errind, rfc1902, rfc1905

from dutyd.collectors.snmp.client import Column, Query, SnmpClient
from dutyd.collectors.snmp.codec import (
    END_OF_MIB_VIEW,
    GET,
    NO_SUCH_INSTANCE,
    NO_SUCH_OBJECT,
    AnyValue,
    Oid,
    encode_int,
    encode_oid_content,
    format_oid,
    tlv,
)
from dutyd.core.errors import (
    BadCredentials,
    BadResponse,
    CollectError,
    TargetTimeout,
    TargetUnreachable,
)

if TYPE_CHECKING:
    from dutyd.collectors.base import CollectorContext


class ClientSettings(Protocol):
    """What `make_client` reads of a target's `SnmpTarget` (collector.py imports this module,
    so it is named by what it offers, not by the model)."""

    version: str
    user: str | None
    auth_protocol: str | None
    priv_protocol: str | None
    retries: int
    max_repetitions: int

    def community_secret(self) -> str | None: ...
    def auth_secret(self) -> str | None: ...
    def priv_secret(self) -> str | None: ...


AUTH_PROTOCOLS: dict[str, Any] = {
    "none": hauth.USM_AUTH_NONE,
    "MD5": hauth.USM_AUTH_HMAC96_MD5,
    "SHA": hauth.USM_AUTH_HMAC96_SHA,
    "SHA224": hauth.USM_AUTH_HMAC128_SHA224,
    "SHA256": hauth.USM_AUTH_HMAC192_SHA256,
    "SHA384": hauth.USM_AUTH_HMAC256_SHA384,
    "SHA512": hauth.USM_AUTH_HMAC384_SHA512,
}
PRIV_PROTOCOLS: dict[str, Any] = {
    "none": hauth.USM_PRIV_NONE,
    "DES": hauth.USM_PRIV_CBC56_DES,
    "AES128": hauth.USM_PRIV_CFB128_AES,
    # AES-192/256 key extension as in net-snmp and draft-blumenthal-aes-usm.
    "AES192": hauth.USM_PRIV_CFB192_AES_BLUMENTHAL,
    "AES256": hauth.USM_PRIV_CFB256_AES_BLUMENTHAL,
    # The "Reeder" key extension Cisco devices use for AES-192/256.
    "AES192C": hauth.USM_PRIV_CFB192_AES,
    "AES256C": hauth.USM_PRIV_CFB256_AES,
}

ENGINE_KEY = "snmp.engine"
USERS_KEY = "snmp.v3users"
_LCD = CommandGeneratorLcdConfigurator()
_NULL = univ.Null("")


def new_engine() -> SnmpEngine:
    return SnmpEngine()


async def close_engine(engine: SnmpEngine) -> None:
    engine.close_dispatcher()
    await asyncio.sleep(0)


def credential_fingerprint(*parts: str | None) -> str:
    """A digest of a user's protocols and passwords, to spot conflicting definitions
    without keeping the passwords around in another place."""
    return hashlib.sha256("\0".join(p or "" for p in parts).encode()).hexdigest()


class _EndOfView(Exception):
    """SNMP v1 answered GETNEXT with noSuchName: the column at `index` (1-based) ended."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class PysnmpClient(SnmpClient):
    """Fetches a Query through the shared pysnmp engine (v3, or v1/v2c with `client: pysnmp`)."""

    def __init__(
        self,
        engine: SnmpEngine,
        auth_data: CommunityData | UsmUserData,
        host: str,
        port: int,
        timeout: float,
        retries: int,
        max_repetitions: int,
        version: str,
        priv: bool = False,
    ) -> None:
        self.engine = engine
        self.priv = priv
        self.auth_data = auth_data
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.max_repetitions = max_repetitions
        self.version = version
        self.where = f"{host}:{port}"
        # authPriv keeps some of the budget to tell a wrong privacy password from a dead host.
        self.probe_wait = timeout * 0.12 if priv else 0.0
        self._pysnmp_budget = timeout - self.probe_wait
        self._addr_name: str | None = None
        self._deadline = 0.0

    async def _target(self) -> str:
        if self._addr_name is None:
            per_try = self._pysnmp_budget / (self.retries + 1)
            cls = Udp6TransportTarget if ":" in self.host else UdpTransportTarget
            try:
                target = await cls.create(
                    (self.host.strip("[]"), self.port), timeout=per_try, retries=self.retries
                )
            except PySnmpError as exc:
                raise TargetUnreachable(f"cannot resolve {self.host}: {exc}") from exc
            self._addr_name, _ = _LCD.configure(self.engine, self.auth_data, target, b"")
        return self._addr_name

    async def _send(self, kind: str, varbinds: list[tuple[Any, Any]], *bulk: int) -> list[Any]:
        """One request; returns the response varbinds or raises a CollectError."""
        addr_name = await self._target()
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            raise TargetTimeout(f"{self.where} did not complete the poll within {self.timeout:g}s")
        future: asyncio.Future[tuple[Any, int, int, Any]] = loop.create_future()

        def done(
            engine: Any, handle: Any, indication: Any, status: Any, index: Any, vbs: Any, ctx: Any
        ) -> None:
            if not future.done():
                future.set_result((indication, int(status or 0), int(index or 0), vbs))

        generator: Any
        if kind == "get":
            generator = cmdgen.GetCommandGenerator()
            generator.send_varbinds(self.engine, addr_name, None, b"", varbinds, done)
        elif kind == "next":
            generator = cmdgen.NextCommandGenerator()
            generator.send_varbinds(self.engine, addr_name, None, b"", varbinds, done)
        else:
            generator = cmdgen.BulkCommandGenerator()
            generator.send_varbinds(
                self.engine, addr_name, None, b"", bulk[0], bulk[1], varbinds, done
            )
        try:
            async with asyncio.timeout(max(0.001, self._deadline - loop.time())):
                indication, status, index, vbs = await future
        except TimeoutError:
            # pysnmp's own retries outlived the poll's budget; its late callback is ignored.
            indication, status, index, vbs = errind.requestTimedOut, 0, 0, ()
        if indication:
            if isinstance(indication, errind.RequestTimedOut) and self.priv:
                raise await self._why_silent()
            raise self._translate(indication)
        if status:
            name = rfc1905.errorStatus.getNamedValues().getName(status) or f"error {status}"
            where = ""
            if 1 <= index <= len(varbinds):
                where = f" on {varbinds[index - 1][0]}"
            if kind == "next" and status == 2 and 1 <= index <= len(varbinds):
                # v1's end of the MIB view: that one column is finished.
                raise _EndOfView(index)
            raise BadResponse(f"{self.where} answered {name}{where}")
        return list(vbs)

    async def _why_silent(self) -> CollectError:
        """An authPriv request went unanswered. An agent that cannot decrypt a request drops
        it without a report (net-snmp does), so ask it the one question that needs no keys:
        if it answers engine discovery, it is up and the privacy password is wrong."""
        if await answers_v3_discovery(self.host, self.port, self.probe_wait):
            user = getattr(self.auth_data, "userName", "?")
            return BadCredentials(
                f"{self.where} answers SNMPv3 but dropped every encrypted request of v3 user "
                f"{user!s}: wrong privacy password (or privacy protocol)"
            )
        return TargetTimeout(
            f"no answer from {self.where} within {self.timeout:g}s ({self.retries + 1} tries), "
            "not even to SNMPv3 engine discovery; host down or not speaking SNMPv3"
        )

    def _translate(self, indication: Any) -> CollectError:
        user = getattr(self.auth_data, "userName", None)
        who = f"v3 user {user!s}" if user is not None else "community"
        tries = self.retries + 1
        if isinstance(indication, errind.RequestTimedOut):
            cause = (
                "host down or not speaking SNMPv3"
                if self.version == "3"
                else "wrong community or host down"
            )
            return TargetTimeout(
                f"no answer from {self.where} within {self.timeout:g}s ({tries} tries; {cause})"
            )
        if isinstance(indication, errind.WrongDigest | errind.AuthenticationFailure):
            return BadCredentials(
                f"{self.where} rejected {who}: authentication failure "
                "(wrong auth password or auth protocol?)"
            )
        if isinstance(indication, errind.UnknownUserName | errind.UnknownSecurityName):
            return BadCredentials(f"{self.where} does not know {who} (unknown user)")
        if isinstance(indication, errind.DecryptionError):
            return BadCredentials(
                f"{self.where} could not decrypt the request of {who}: decryption error "
                "(wrong privacy password or privacy protocol?)"
            )
        if isinstance(indication, errind.UnsupportedSecurityLevel):
            return BadCredentials(
                f"{self.where} refused the security level of {who} "
                "(the user is not set up for this auth/priv combination)"
            )
        if isinstance(indication, errind.NotInTimeWindow):
            return BadResponse(f"{self.where}: request not in time window (engine clock jumped?)")
        if isinstance(indication, errind.UnknownEngineID):
            return BadCredentials(
                f"{self.where} reported an unknown engine id for {who} (wrong engine_id?)"
            )
        if isinstance(indication, errind.OidNotIncreasing):
            return BadResponse(f"{self.where} walk is not advancing (OID not increasing)")
        return BadResponse(f"{self.where}: {indication}")

    async def fetch(self, query: Query, max_rows: int) -> tuple[list[AnyValue], list[Column]]:
        self._deadline = asyncio.get_running_loop().time() + self._pysnmp_budget
        scalars: list[AnyValue] = []
        if query.scalars:
            names = [rfc1902.ObjectName(o) for o in query.scalars]
            for i in range(0, len(names), 40):
                chunk = names[i : i + 40]
                vbs = await self._get_chunk(chunk)
                scalars.extend(vbs)
        columns = await self._walk(query, max_rows) if query.columns else []
        return scalars, columns

    async def _get_chunk(self, names: list[Any]) -> list[AnyValue]:
        try:
            vbs = await self._send("get", [(n, _NULL) for n in names])
        except BadResponse:
            if self.version != "1" or len(names) == 1:
                raise
            # v1 refuses the whole GET for one missing OID: ask one by one.
            out: list[AnyValue] = []
            for n in names:
                try:
                    out += await self._get_chunk([n])
                except BadResponse:
                    out.append(NO_SUCH_OBJECT)
            return out
        if len(vbs) != len(names):
            raise BadResponse(f"{self.where} answered {len(vbs)} values to a GET of {len(names)}")
        return [to_python(v) for _, v in vbs]

    async def _walk(self, query: Query, max_rows: int) -> list[Column]:
        columns = query.columns
        k = len(columns)
        pos: list[Oid] = list(columns)
        last: list[Oid] = [()] * k
        results: list[Column] = [{} for _ in range(k)]
        active = list(range(k))
        while active:
            varbinds = [(rfc1902.ObjectName(pos[i]), _NULL) for i in active]
            if self.version == "1":
                try:
                    vbs = await self._send("next", varbinds)
                except _EndOfView as end:
                    del active[end.index - 1]
                    continue
            else:
                vbs = await self._send("bulk", varbinds, 0, self.max_repetitions)
            n = len(active)
            if not vbs:
                raise BadResponse(f"{self.where} answered a walk with no values")
            if self.version == "1" and len(vbs) != n:
                raise BadResponse(f"{self.where} answered {len(vbs)} values to a GETNEXT of {n}")
            done = [False] * n
            for j, (name, value) in enumerate(vbs):
                s = j % n
                if done[s]:
                    continue
                c = active[s]
                oid = tuple(name)
                col_oid = columns[c]
                plen = len(col_oid)
                if (
                    isinstance(value, rfc1905.EndOfMibView)
                    or len(oid) <= plen
                    or oid[:plen] != col_oid
                ):
                    done[s] = True
                    continue
                idx = oid[plen:]
                if idx <= last[c]:
                    raise BadResponse(
                        f"{self.where} walk of {format_oid(col_oid)} is not advancing: index "
                        f"{format_oid(idx)} came after {format_oid(last[c])} (broken agent)"
                    )
                last[c] = idx
                pos[c] = oid
                col = results[c]
                col[encode_oid_content((1, 3, *idx))[1:]] = to_python(value)
                if len(col) > max_rows:
                    raise BadResponse(
                        f"{self.where} table {format_oid(col_oid)} has more than {max_rows} "
                        "rows (raise max_rows if that is real)"
                    )
            # A GETBULK reply cut short (the agent's size limit) leaves the columns it did not
            # reach active: they are asked again from where they were.
            active = [active[s] for s in range(n) if not done[s]]
        return results


def to_python(value: Any) -> AnyValue:
    """A pysnmp value as the lean codec would decode it (so both paths can be compared)."""
    if isinstance(value, rfc1905.NoSuchObject):
        return NO_SUCH_OBJECT
    if isinstance(value, rfc1905.NoSuchInstance):
        return NO_SUCH_INSTANCE
    if isinstance(value, rfc1905.EndOfMibView):
        return END_OF_MIB_VIEW
    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, univ.OctetString):
        return value.asOctets()
    if isinstance(value, univ.ObjectIdentifier):
        return tuple(value)
    return None


def index_key(index: Sequence[int]) -> bytes:
    """The raw-bytes key the lean codec uses for a table index."""
    return encode_oid_content((1, 3, *index))[1:]


# ---------------------------------------------------------------------------------------------
# Building a target's client, and telling a wrong privacy password from a dead host


def make_client(
    context: CollectorContext, cfg: ClientSettings, host: str, port: int, timeout: float
) -> SnmpClient:
    """A PysnmpClient on the daemon's one engine for `cfg` (v3, or v1/v2c with client:
    pysnmp)."""
    engine = context.shared(ENGINE_KEY, new_engine, close_engine)
    auth_data: CommunityData | UsmUserData
    if cfg.version == "3":
        assert cfg.user is not None
        auth_pw, priv_pw = cfg.auth_secret(), cfg.priv_secret()
        auth_proto = cfg.auth_protocol or "none"
        priv_proto = cfg.priv_protocol or "none"
        # One engine holds one key set per user name: two targets naming the same user with
        # different secrets would silently overwrite each other's keys.
        users: dict[str, str] = context.shared(USERS_KEY, dict)
        mark = credential_fingerprint(auth_proto, auth_pw, priv_proto, priv_pw)
        if users.setdefault(cfg.user, mark) != mark:
            return _Refused(
                BadCredentials(
                    f"v3 user {cfg.user!r} is configured with other credentials on another "
                    "target; dutyd's one SNMP engine keeps one set per user name (use one "
                    "set, or a different user name per device)"
                )
            )
        auth_data = UsmUserData(
            cfg.user,
            authKey=auth_pw,
            privKey=priv_pw,
            authProtocol=AUTH_PROTOCOLS[auth_proto],
            privProtocol=PRIV_PROTOCOLS[priv_proto],
        )
    else:
        community = cfg.community_secret() or ""
        # The community index names the entry in pysnmp's tables; a digest keeps the
        # community itself out of them.
        index = "c" + credential_fingerprint(community)[:16]
        auth_data = CommunityData(index, community, mpModel=0 if cfg.version == "1" else 1)
    return PysnmpClient(
        engine,
        auth_data,
        host,
        port,
        timeout,
        cfg.retries,
        cfg.max_repetitions,
        cfg.version,
        priv=cfg.version == "3" and cfg.priv_protocol is not None,
    )


class _Refused(SnmpClient):
    """A client that cannot be built; every poll reports why."""

    def __init__(self, error: CollectError) -> None:
        self.error = error

    async def fetch(self, query: Query, max_rows: int) -> tuple[list[AnyValue], list[Column]]:
        raise type(self.error)(self.error.message)


class _Discovery(asyncio.DatagramProtocol):
    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.future.done():
            self.future.set_result(data)


def discovery_request(msg_id: int) -> bytes:
    """An SNMPv3 engine-discovery GET (RFC 3414 §4): noAuthNoPriv, reportable, no user."""
    usm = tlv(0x30, tlv(4, b"") + encode_int(0) + encode_int(0) + tlv(4, b"") * 3)
    header = tlv(0x30, encode_int(msg_id) + encode_int(65507) + tlv(4, b"\x04") + encode_int(3))
    pdu = tlv(GET, encode_int(msg_id) + encode_int(0) + encode_int(0) + tlv(0x30, b""))
    scoped = tlv(0x30, tlv(4, b"") + tlv(4, b"") + pdu)
    return tlv(0x30, encode_int(3) + header + tlv(4, usm) + scoped)


def is_v3_reply(data: bytes) -> bool:
    """Whether a datagram starts like an SNMPv3 message (SEQUENCE, version 3)."""
    return len(data) > 6 and data[0] == 0x30 and b"\x02\x01\x03" in data[1:6]


async def answers_v3_discovery(host: str, port: int, wait: float) -> bool:
    """Whether the agent answers SNMPv3 engine discovery: then it is up and speaks v3, and a
    request of ours that went unanswered was most likely dropped for a decryption error."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()
    try:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Discovery(future), remote_addr=(host.strip("[]"), port)
        )
    except OSError:
        return False
    try:
        transport.sendto(discovery_request(0x01020304))
        async with asyncio.timeout(wait):
            return is_v3_reply(await future)
    except (TimeoutError, OSError):
        return False
    finally:
        transport.close()
