"""HTTP(S) check: status, latency, expected text, TLS certificate expiry and page integrity."""

from __future__ import annotations

import asyncio
import base64
import codecs
import hashlib
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import aiohttp
from cryptography import x509
from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from dutyd.collectors.base import Collector, CollectorContext, Readings, TargetConfig
from dutyd.collectors.netutil import budget, hostport
from dutyd.collectors.probe_http.inflate import (
    ACCEPT_ENCODING,
    BadEncoding,
    BodyTooLarge,
    Inflater,
)
from dutyd.core.configtypes import SecretEnv, SecretFile, format_duration, pick_secret
from dutyd.core.errors import BadCredentials, BadResponse, TargetTimeout, TargetUnreachable
from dutyd.core.redact import redact_address

MIB = 1024 * 1024
USER_AGENT = "dutyd-probe"
# Key of the probes' own session in the CollectorContext: it carries the connect-time trace
# and closes every connection after its request, which a general-purpose session would not want.
SESSION_KEY = "aiohttp.probe"
_STATUS_RANGE = re.compile(r"^([1-5])xx$|^(\d{3})-(\d{3})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def parse_status_ranges(items: list[int | str]) -> tuple[tuple[int, int], ...]:
    """`[200, "301-302", "2xx"]` -> inclusive ranges."""
    out: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, int):
            lo = hi = item
        else:
            text = item.strip().lower()
            if text.isdigit():
                lo = hi = int(text)
            else:
                m = _STATUS_RANGE.match(text)
                if m is None:
                    raise ValueError(f"{item!r} is not a status, a range 200-299, or 2xx")
                if m.group(1):
                    lo, hi = int(m.group(1)) * 100, int(m.group(1)) * 100 + 99
                else:
                    lo, hi = int(m.group(2)), int(m.group(3))
        if not 100 <= lo <= hi <= 599:
            raise ValueError(f"{item!r} is not within HTTP statuses 100-599")
        out.append((lo, hi))
    return tuple(out)


class HttpTarget(TargetConfig):
    """An HTTP(S) check. `address` is the URL (http:// or https://).

    Connection failures, TLS failures and timeouts mark the target down. A server that answers
    with an unexpected status, or a page without `expected_text`, is up: `probe_success` is 0.
    """

    kind: Literal["http"]
    method: Literal["GET", "HEAD"] = Field(
        default="GET", description="HEAD reads no body: no text check and no fingerprint."
    )
    expected_status: list[int | str] = Field(
        default_factory=lambda: ["200-399"],
        description="Statuses that count as success: numbers, ranges `200-299` or `2xx`.",
    )
    expected_text: str | None = Field(
        default=None, min_length=1, description="A substring the page must contain."
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra request headers; values are kept as secrets (never shown).",
    )
    follow_redirects: bool = Field(
        default=True,
        description="Follow up to 10 redirects; headers, basic auth and tokens go only to the "
        "probed URL's origin (scheme, host, port).",
    )
    verify: bool = Field(default=True, description="Verify the server's TLS certificate.")
    ca_file: str | None = Field(
        default=None, description="PEM file of the CA(s) to trust instead of the system store."
    )
    username: str | None = Field(default=None, description="Basic auth user.")
    password: SecretStr | None = Field(default=None, description="Basic auth password.")
    password_env: SecretEnv | None = Field(
        default=None, description="Environment variable holding the basic auth password."
    )
    password_file: SecretFile | None = Field(
        default=None, description="File holding the basic auth password."
    )
    bearer_token: SecretStr | None = Field(
        default=None, description="`Authorization: Bearer` token, literally."
    )
    bearer_token_env: SecretEnv | None = Field(
        default=None, description="Environment variable holding the bearer token."
    )
    bearer_token_file: SecretFile | None = Field(
        default=None, description="File holding the bearer token."
    )
    ignore_patterns: list[str] = Field(
        default_factory=list,
        description="Regexes removed from the page before fingerprinting (dates, tokens).",
    )
    expected_sha256: str | None = Field(
        default=None,
        description="The page's known SHA-256 (of the raw body, or of the text after "
        "ignore_patterns are removed); without it the first good poll is the baseline.",
    )
    max_body_bytes: int = Field(
        default=MIB, ge=1, le=64 * MIB, description="Read at most this much of the body."
    )

    @field_validator("address")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            url = URL(v)
        except (ValueError, TypeError) as exc:
            # The URL may hold a password or token: shown redacted, and yarl's reason only
            # when it does not quote the URL.
            reason = str(exc)
            if "@" in reason or "//" in reason or "?" in reason or len(reason) > 80:
                reason = type(exc).__name__
            raise ValueError(f"{redact_address(v)!r} is not a URL: {reason}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # Checked here so a bad header is a config error, not an internal error on every poll.
        # The value is never echoed: it may hold a token.
        for name, secret in v.items():
            value = secret.get_secret_value()
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
                raise ValueError(f"the value of header {name!r} holds a control character")
        return v

    @field_validator("expected_status")
    @classmethod
    def _statuses(cls, v: list[int | str]) -> list[int | str]:
        if not v:
            raise ValueError("must list at least one status")
        parse_status_ranges(v)
        return v

    @field_validator("ignore_patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"{p!r} is not a valid regex: {exc}") from None
        return v

    @field_validator("expected_sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v.strip().lower()):
            raise ValueError("must be 64 hex digits (sha256sum output)")
        return v.strip().lower() if v else v

    @field_validator("ca_file")
    @classmethod
    def _ca(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ssl.create_default_context(cafile=v)
        except FileNotFoundError:
            raise ValueError(f"CA file {v!r} does not exist") from None
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"CA file {v!r} cannot be loaded: {exc}") from None
        return v

    @model_validator(mode="after")
    def _coherent(self) -> HttpTarget:
        secrets = [self.password, self.password_env, self.password_file]
        if sum(s is not None for s in secrets) > 1:
            raise ValueError("give only one of password, password_env, password_file")
        if any(s is not None for s in secrets) and not self.username:
            raise ValueError("a password needs a username")
        tokens = [self.bearer_token, self.bearer_token_env, self.bearer_token_file]
        if sum(t is not None for t in tokens) > 1:
            raise ValueError("give only one of bearer_token, bearer_token_env, bearer_token_file")
        has_auth_header = any(k.lower() == "authorization" for k in self.headers)
        if sum([self.username is not None, tokens != [None] * 3, has_auth_header]) > 1:
            raise ValueError(
                "give one of username/password, a bearer token or an Authorization header"
            )
        if self.method == "HEAD" and (
            self.expected_text or self.expected_sha256 or self.ignore_patterns
        ):
            raise ValueError(
                "HEAD reads no body: expected_text, expected_sha256 and ignore_patterns need GET"
            )
        if self.ca_file and not self.verify:
            raise ValueError("ca_file is given but verify is false; drop one")
        return self


@dataclass(slots=True)
class _Page:
    status: int
    body: bytes
    length: int
    charset: str


class _Timing:
    """What one request's connections showed; filled by the trace hooks and the connector."""

    __slots__ = ("connect_seconds", "connect_started", "der")

    def __init__(self) -> None:
        self.connect_started: float | None = None
        self.connect_seconds: float | None = None
        self.der: bytes | None = None  # the server certificate of the last connection (TLS)


# The request being made in this task, for the connector (which is shared by every target).
_CURRENT: ContextVar[_Timing | None] = ContextVar("dutyd_probe_request", default=None)


class _ProbeConnector(aiohttp.TCPConnector):
    """Notes each new connection's server certificate. Read later from the response it would
    be gone: aiohttp releases (here: closes) the connection as soon as a small body is in."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109
        conn = await super().connect(req, traces, timeout)
        timing = _CURRENT.get()
        transport = conn.transport
        if timing is not None and transport is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            # After a redirect the last connection's certificate is the page's.
            timing.der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        return conn


async def _connect_start(_s: aiohttp.ClientSession, ctx: SimpleNamespace, _p: object) -> None:
    timing = ctx.trace_request_ctx
    # After a redirect a second connection is opened; the probed URL's first one is reported.
    if isinstance(timing, _Timing) and timing.connect_started is None:
        timing.connect_started = time.perf_counter()


async def _connect_end(_s: aiohttp.ClientSession, ctx: SimpleNamespace, _p: object) -> None:
    timing = ctx.trace_request_ctx
    if (
        isinstance(timing, _Timing)
        and timing.connect_started is not None
        and timing.connect_seconds is None
    ):
        timing.connect_seconds = time.perf_counter() - timing.connect_started


def _new_session() -> aiohttp.ClientSession:
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_start.append(_connect_start)
    trace.on_connection_create_end.append(_connect_end)
    # force_close: every probe opens a fresh connection, so connect time and the certificate
    # are measured each poll (servers drop idle keep-alive long before the next poll anyway).
    # limit=0: the scheduler's global limit already bounds requests in flight.
    connector = _ProbeConnector(force_close=True, limit=0, ttl_dns_cache=60)
    return aiohttp.ClientSession(
        connector=connector,
        trace_configs=[trace],
        # The poll's own budget (asyncio.timeout) bounds the request instead.
        timeout=aiohttp.ClientTimeout(total=None),
        # One session serves every target: a cookie from one site must not reach another.
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
        # Bodies are inflated by `inflate.Inflater`, counted against max_body_bytes.
        auto_decompress=False,
    )


async def _close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


def _unverified_context() -> ssl.SSLContext:
    # verify: false still completes the handshake, so the certificate's expiry is read.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _seconds_left(der: bytes) -> float:
    cert = x509.load_der_x509_certificate(der)
    return (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds()


# Text charsets a web page may really be in. Anything else a server names (punycode, idna,
# rot13, base64, zlib, uu, ... are Python codecs too, some with super-linear decoders) is read
# as UTF-8: the charset comes from the server, or from any page a redirect leads to.
TEXT_CHARSETS = frozenset(
    codecs.lookup(name).name
    for name in (
        "utf-8",
        "utf-8-sig",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "utf-32",
        "utf-32-le",
        "utf-32-be",
        "ascii",
        *(f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)),
        *(f"cp{n}" for n in range(1250, 1259)),
        "cp437",
        "cp850",
        "cp866",
        "cp874",
        "koi8-r",
        "koi8-u",
        "mac-roman",
        "gbk",
        "gb2312",
        "gb18030",
        "big5",
        "big5hkscs",
        "shift_jis",
        "cp932",
        "euc-jp",
        "iso2022-jp",
        "euc-kr",
        "cp949",
        "tis-620",
    )
)


def text_charset(name: str | None) -> str:
    """The codec to decode a page with: the server's charset if it is a real text charset
    (aliases such as latin1, windows-1252, sjis included), else UTF-8."""
    if not name:
        return "utf-8"
    try:
        codec = codecs.lookup(name.strip()).name
    except (LookupError, ValueError):
        return "utf-8"
    return codec if codec in TEXT_CHARSETS else "utf-8"


def examine_body(
    body: bytes, charset: str, expected_text: str | None, patterns: Sequence[re.Pattern[str]]
) -> tuple[bool, str]:
    """(expected text found, fingerprint) of a body read with `charset` (a `text_charset`).

    Without ignore patterns the fingerprint is the SHA-256 of the raw bytes, so
    `curl -s URL | sha256sum` gives the same value for expected_sha256; with them, of the text
    (UTF-8) after every pattern is removed. Blocking (up to max_body_bytes of work)."""
    text: str | None = None
    if expected_text is not None or patterns:
        text = body.decode(charset, errors="replace")
    text_ok = expected_text is None or expected_text in (text or "")
    if not patterns:
        return text_ok, hashlib.sha256(body).hexdigest()
    assert text is not None
    for pattern in patterns:
        text = pattern.sub("", text)
    return text_ok, hashlib.sha256(text.encode("utf-8")).hexdigest()


# As aiohttp's own redirect following: these statuses with a Location header.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    """Scheme, host and port (the default one when not written)."""
    return url.scheme, url.host, url.port


def _charset(resp: aiohttp.ClientResponse) -> str:
    return text_charset(resp.charset)


class HttpProbeCollector(Collector[HttpTarget]):
    kind: ClassVar[str] = "http"
    config_model: ClassVar[type[TargetConfig]] = HttpTarget
    metric_help: ClassVar[Mapping[str, str]] = {
        "probe_success": "1 when the status is expected and the expected text is present",
        "http_status_code": "HTTP status of the last response (after redirects)",
        "http_duration_seconds": "Time from sending the request to the end of the body read",
        "http_connect_seconds": "Time to open the connection (DNS, TCP and TLS handshake)",
        "http_content_length_bytes": "Body bytes read (decompressed, capped at max_body_bytes)",
        "http_expected_text_found": "1 when the page contains expected_text",
        "http_tls_cert_expiry_seconds": "Seconds until the server certificate's notAfter "
        "(negative once expired)",
        "http_content_changed": "1 when the page's fingerprint differs from the accepted one",
    }

    def __init__(self, config: HttpTarget, context: CollectorContext) -> None:
        super().__init__(config, context)
        url = URL(config.address)
        self._url = url
        # Messages name the page without credentials or query (tokens live there).
        self._shown = redact_address(config.address)
        self._where = hostport(url.host or "", url.port or 0)
        self._statuses = parse_status_ranges(config.expected_status)
        self._patterns = [re.compile(p) for p in config.ignore_patterns]
        password = pick_secret(config.password, config.password_env, config.password_file)
        # The header is built here (aiohttp's BasicAuth is deprecated). Like every configured
        # header it is sent only to the probed URL's origin (see _fetch): the password never
        # follows a redirect off-site.
        self._headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        bearer = pick_secret(config.bearer_token, config.bearer_token_env, config.bearer_token_file)
        if bearer:
            self._headers["Authorization"] = f"Bearer {bearer.strip()}"
        if config.username:
            token = base64.b64encode(f"{config.username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._baseline: str | None = config.expected_sha256
        self._changed: bool | None = None
        self._last_der: bytes | None = None
        # (seconds left, computed at monotonic)
        self._last_left_at: tuple[float, float] | None = None
        # Fingerprint of the last page read; kept here, never exposed as a label (unbounded).
        self.fingerprint: str | None = None

    @property
    def baseline(self) -> str | None:
        return self._baseline

    def accept_current_content(self) -> str | None:
        """Take the last page read as the expected content (after a legitimate change)."""
        if self.fingerprint is not None:
            self._baseline = self.fingerprint
            self._changed = False
        return self._baseline

    def _ssl(self, url: URL) -> ssl.SSLContext | bool:
        if url.scheme != "https":
            return True
        if not self.config.verify:
            return self.context.shared("ssl.unverified", _unverified_context)
        if self.config.ca_file:
            ca = self.config.ca_file
            return self.context.shared(
                f"ssl.cafile:{ca}", lambda: ssl.create_default_context(cafile=ca)
            )
        return True  # aiohttp's own cached context on the system store

    async def collect(self, readings: Readings) -> None:
        session: aiohttp.ClientSession = self.context.shared(
            SESSION_KEY, _new_session, _close_session
        )
        seconds = budget(self.config.timeout)
        timing = _Timing()
        started = time.perf_counter()
        token = _CURRENT.set(timing)
        try:
            async with asyncio.timeout(seconds):
                page = await self._fetch(session, timing)
        except TimeoutError as exc:
            raise TargetTimeout(
                f"{self.config.method} {self._shown}: no complete answer within "
                f"{format_duration(self.config.timeout)}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise self._translate(exc) from exc
        except OSError as exc:
            raise TargetUnreachable(
                f"{self.config.method} {self._shown} failed: {exc.strerror or exc}"
            ) from exc
        finally:
            _CURRENT.reset(token)
        duration = time.perf_counter() - started

        status_ok = any(lo <= page.status <= hi for lo, hi in self._statuses)
        readings.add("http_status_code", page.status)
        readings.add("http_duration_seconds", duration)
        if timing.connect_seconds is not None:
            readings.add("http_connect_seconds", timing.connect_seconds)
        readings.add("http_content_length_bytes", page.length)
        if timing.der is not None:
            readings.add("http_tls_cert_expiry_seconds", self._cert_seconds(timing.der))

        text_ok = True
        if self.config.method == "GET":
            # Up to max_body_bytes (64 MiB at most) of decoding, searching, regexes and hashing:
            # off the event loop.
            text_ok, fingerprint = await self.context.run_blocking(self._examine, page)
            if self.config.expected_text is not None:
                readings.add("http_expected_text_found", 1.0 if text_ok else 0.0)
            if status_ok:
                self._compare(fingerprint, text_ok)
            # An error page is not compared (it is not the page), but a change seen before
            # stays visible while the server errs.
            if self._changed is not None:
                readings.add("http_content_changed", 1.0 if self._changed else 0.0)
        readings.add("probe_success", 1.0 if status_ok and text_ok else 0.0)

    async def _fetch(self, session: aiohttp.ClientSession, timing: _Timing) -> _Page:
        """The page, following redirects here rather than in aiohttp: aiohttp drops only
        Authorization and cookies on a redirect to another origin, and the configured
        `headers` (API keys) must not follow a redirect off-site either."""
        cfg = self.config
        url = self._url
        for _ in range(MAX_REDIRECTS + 1):
            # Secrets go only to the probed URL's own origin (scheme, host and port).
            same_origin = _origin(url) == _origin(self._url)
            async with session.request(
                cfg.method,
                url,
                headers=(self._headers or None) if same_origin else None,
                allow_redirects=False,
                ssl=self._ssl(url),
                trace_request_ctx=timing,
            ) as resp:
                location = resp.headers.get(aiohttp.hdrs.LOCATION)
                if not (cfg.follow_redirects and resp.status in _REDIRECTS and location):
                    return await self._read(resp)
                url = self._redirect_target(resp.url, location)
        raise BadResponse(f"{cfg.method} {self._shown}: more than {MAX_REDIRECTS} redirects")

    def _redirect_target(self, base: URL, location: str) -> URL:
        try:
            target = base.join(URL(location))
        except ValueError:
            target = None
        if target is None or target.scheme not in ("http", "https") or not target.host:
            raise BadResponse(
                f"{self.config.method} {self._shown}: redirected to "
                f"{redact_address(location[:200])!r}, which is not an http(s) URL"
            )
        return target

    async def _read(self, resp: aiohttp.ClientResponse) -> _Page:
        cfg = self.config
        if cfg.method == "HEAD":
            return _Page(resp.status, b"", resp.content_length or 0, "utf-8")
        cap = cfg.max_body_bytes
        what = f"{cfg.method} {self._shown}"
        try:
            inflater = Inflater(resp.headers.get(aiohttp.hdrs.CONTENT_ENCODING, ""), cap)
        except BadEncoding as exc:
            raise BadResponse(f"{what}: {exc}") from None
        if not inflater.encoded:
            body = bytearray()
            # Read in pieces up to the cap: a huge (or endless) page cannot exhaust memory.
            while len(body) < cap:
                chunk = await resp.content.read(min(cap - len(body), 256 * 1024))
                if not chunk:
                    break
                body += chunk
            return _Page(resp.status, bytes(body), len(body), _charset(resp))
        return await self._inflate(resp, inflater, cap, what)

    async def _inflate(
        self, resp: aiohttp.ClientResponse, inflater: Inflater, cap: int, what: str
    ) -> _Page:
        """A compressed body, inflated piece by piece (off the event loop: a piece may
        inflate to the whole cap) and refused once it inflates past the cap."""
        body = bytearray()
        raw = 0
        try:
            while True:
                chunk = await resp.content.read(64 * 1024)
                if not chunk:
                    inflater.finish()
                    break
                raw += len(chunk)
                if raw > cap:
                    raise BodyTooLarge
                body += await self.context.run_blocking(inflater.feed, chunk)
        except BodyTooLarge:
            raise BadResponse(
                f"{what}: the {resp.headers.get(aiohttp.hdrs.CONTENT_ENCODING)} body inflates "
                f"past max_body_bytes ({cap} bytes); refused"
            ) from None
        except BadEncoding as exc:
            raise BadResponse(f"{what}: {exc}") from None
        return _Page(resp.status, bytes(body), len(body), _charset(resp))

    def _cert_seconds(self, der: bytes) -> float:
        # The same certificate poll after poll: parse it once, then count down.
        now = time.monotonic()
        if der != self._last_der or self._last_left_at is None:
            self._last_der = der
            self._last_left_at = (_seconds_left(der), now)
        left, at = self._last_left_at
        return left - (now - at)

    def _examine(self, page: _Page) -> tuple[bool, str]:
        """(expected text found, fingerprint) of a page. Blocking: run in the thread pool."""
        return examine_body(page.body, page.charset, self.config.expected_text, self._patterns)

    def _compare(self, fingerprint: str, text_ok: bool) -> None:
        self.fingerprint = fingerprint
        if self._baseline is None:
            # The first good page is the baseline, unless it already lacks the expected text.
            if not text_ok:
                return
            self._baseline = fingerprint
        self._changed = fingerprint != self._baseline

    def _translate(self, exc: aiohttp.ClientError) -> Exception:
        what = f"{self.config.method} {self._shown}"
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            cert_err: Any = exc.certificate_error
            detail = getattr(cert_err, "verify_message", None) or str(cert_err)
            return BadCredentials(
                f"{what}: TLS certificate of {self._where} not trusted: certificate verify "
                f"failed: {detail} (set ca_file to its CA, or verify: false)"
            )
        if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
            return BadResponse(f"{what}: TLS handshake with {self._where} failed: {exc}")
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return TargetUnreachable(f"{what}: host {self._url.host!r} not found")
        if isinstance(exc, aiohttp.ClientConnectorError):
            os_error = exc.os_error
            if isinstance(os_error, ConnectionRefusedError):
                return TargetUnreachable(f"{what}: connection to {self._where} refused")
            reason = os_error.strerror or str(os_error)
            return TargetUnreachable(f"{what}: cannot connect to {self._where}: {reason}")
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return BadResponse(f"{what}: {self._where} closed the connection without an answer")
        if isinstance(exc, aiohttp.ClientResponseError):
            return BadResponse(f"{what}: malformed HTTP answer ({exc.message})")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return BadResponse(f"{what}: the body was cut off or malformed")
        return BadResponse(f"{what} failed: {type(exc).__name__}: {exc}")


__all__ = [
    "HttpProbeCollector",
    "HttpTarget",
    "examine_body",
    "parse_status_ranges",
    "text_charset",
]
