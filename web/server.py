"""The daemon's HTTP server (aiohttp): /metrics, /healthz, /readyz.

Later layers (the JSON API, the on-call page) add their routes through `HttpServer.app`
before it starts. It binds 127.0.0.1 unless configured otherwise.

Optional TLS and basic auth come from a web config file in the format of Prometheus's
exporters (`--web.config.file`, exporter-toolkit), so one file serves both::

    tls_server_config:
      cert_file: dutyd.crt          # relative paths are relative to this file
      key_file: dutyd.key
      # client_auth_type: RequireAndVerifyClientCert   with client_ca_file: ca.crt
      # min_version: TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2y$10$...        # bcrypt hash: `htpasswd -nBC 10 prometheus`

With `basic_auth_users` every route asks for a password except those in
`HttpServer.open_paths` (`/healthz`, so a supervisor can see that the process lives).
The user who logged in is `authenticated_user()` for the routes that record an actor.

Connections come in through the front door (`frontdoor.py`): caps per client address and in
total with a reserve for the trusted clients (the supervisor, the scrapers), a deadline for a
request's headers and for an idle keep-alive connection.

Every response carries security headers (a strict Content-Security-Policy, `nosniff`, no
referrer; `no-store` on /api/ and /ack/).

Every request's Host header is checked, whatever the listen address, so that a web page cannot
reach dutyd through DNS rebinding (its page on attacker.example rebinds the name to 127.0.0.1
and sends `Host: attacker.example`). Served: loopback names and addresses, `allowed_hosts`, and
on a non-loopback listen address (0.0.0.0, ::, a LAN address) also any IP literal and this
host's own names (`gethostname()`, `getfqdn()`, the listen name): a page cannot rebind a name it
does not own, and an IP literal is no name at all. Any other Host gets 421; a DNS alias of a
public listener goes in `allowed_hosts`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import hashlib
import ipaddress
import logging
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field, ValidationError, field_validator

from dutyd.core.configtypes import StrictModel
from dutyd.core.memory import release_free_memory
from dutyd.exporters.prometheus import CONTENT_TYPE, iter_latest
from dutyd.web.frontdoor import DoorLimits, FrontDoor

log = logging.getLogger("dutyd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The basic-auth user of the request being handled ("" when basic auth is off or the path is
# open). A context variable, not request storage: typed request keys came only in aiohttp 3.14
# (below the floor, 3.10.11) and a plain string key warns there (NotAppKeyWarning). The auth
# middleware awaits the handler in its own context and resets the value after it, so a handler
# sees its own request's user and never another's.
_USER: contextvars.ContextVar[str] = contextvars.ContextVar("dutyd_http_user", default="")


def authenticated_user() -> str:
    """The basic-auth login of the request being handled, "" when there is none."""
    return _USER.get()


# Checked when the user is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = b"$2b$10$uCQgaEJNhXwV4tgdM2iI1.nFJDzFxLqC006oDHe4B5eVkTojGN1Ue"
# How long start-up waits for this host's FQDN (the Host check accepts it on a public listener).
_FQDN_TIMEOUT = 2.0
# Successful logins remembered (bcrypt costs ~50 ms; Prometheus scrapes every few seconds).
_AUTH_CACHE_SIZE = 256


def accepts_gzip(accept_encoding: str) -> bool:
    """True when the Accept-Encoding header allows gzip (and not with q=0)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


class TlsServerConfig(StrictModel):
    """`tls_server_config` of a Prometheus web config file."""

    cert_file: Path = Field(description="PEM certificate (chain) the server presents")
    key_file: Path = Field(description="PEM private key of cert_file")
    client_auth_type: Literal["NoClientCert", "RequireAndVerifyClientCert"] = "NoClientCert"
    client_ca_file: Path | None = Field(
        default=None, description="CA bundle client certificates must chain to"
    )
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


class WebConfig(StrictModel):
    """A Prometheus-style web config file: TLS and basic auth for the HTTP endpoint."""

    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, str] = Field(
        default_factory=dict, description="user name -> bcrypt hash ($2a$, $2b$ or $2y$)"
    )

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if ":" in user or not user:
                raise ValueError(f"user name {user!r} must be non-empty and contain no ':'")
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
                # Never echo the value: it may be a password pasted by mistake.
                raise ValueError(f"the password of {user!r} is not a bcrypt hash")
        return users


def load_web_config(path: str | Path) -> tuple[WebConfig, Path]:
    """Parse and validate a web config file; relative paths in it are resolved against its
    directory. Raises ValueError naming the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read web config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"web config {path} is not valid YAML: {exc}") from None
    try:
        config = WebConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"web config {path}: {problems}") from None
    base = path.parent
    tls = config.tls_server_config
    if tls is not None:
        if tls.client_auth_type == "RequireAndVerifyClientCert" and tls.client_ca_file is None:
            raise ValueError(f"web config {path}: RequireAndVerifyClientCert needs client_ca_file")
        for name in ("cert_file", "key_file", "client_ca_file"):
            file = getattr(tls, name)
            if file is not None and not (base / file).is_file():
                raise ValueError(f"web config {path}: {name} {base / file} is not a readable file")
    return config, base


def server_ssl_context(tls: TlsServerConfig, base: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
    )
    try:
        ctx.load_cert_chain(base / tls.cert_file, base / tls.key_file)
        if tls.client_auth_type == "RequireAndVerifyClientCert" and tls.client_ca_file:
            ctx.load_verify_locations(base / tls.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS certificate or key of the web config refused: {exc}") from None
    return ctx


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes, off the event loop."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {u: h.encode() for u, h in users.items()}
        self._ok: dict[tuple[str, bytes], None] = {}

    async def user(self, header: str) -> str | None:
        """The user name when the header carries valid credentials, else None."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            name, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep:
            return None
        # The cache key holds a digest of the password, never the password itself.
        key = (name, hashlib.sha256(password.encode()).digest())
        if key in self._ok:
            return name
        hashed = self._users.get(name)
        secret = password.encode()
        if len(secret) > 72:  # bcrypt's limit; a longer one cannot match any hash
            return None
        try:
            ok = await asyncio.to_thread(bcrypt.checkpw, secret, hashed or _DUMMY_HASH)
        except ValueError:  # a malformed hash in the web config matches nothing
            return None
        if not ok or hashed is None:
            return None
        if len(self._ok) >= _AUTH_CACHE_SIZE:
            self._ok.clear()
        self._ok[key] = None
        return name


class HttpServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, str]],
        listen: str = "127.0.0.1",
        port: int = 0,
        web_config_file: Path | None = None,
        allowed_hosts: Iterable[str] = (),
        limits: DoorLimits | None = None,
        degraded: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.registry = registry
        # Connection caps and deadlines (web/frontdoor.py), fitted to the open-file limit by
        # the daemon.
        self.limits = limits or DoorLimits()
        self.door: FrontDoor | None = None
        self._ready = ready
        # What is wrong while the process still works (its storage refuses writes): /healthz
        # says "degraded: ..." with 200, since a restart would not mend a disk.
        self._degraded = degraded
        self.listen = listen
        self.port = port
        self.web_config_file = web_config_file
        # Routes served without a password even when basic_auth_users is set.
        self.open_paths: set[str] = {"/healthz"}
        # Path prefixes served without a password: routes that carry their own proof (the
        # signed, expiring ack links of notifications, opened on a phone).
        self.open_prefixes: tuple[str, ...] = ()
        self._auth: BasicAuth | None = None
        self._ssl: ssl.SSLContext | None = None
        self._allowed_hosts = {_host_name(h) for h in allowed_hosts}
        # Reachable from other machines: they address it by IP or by this host's names.
        self._public = not _is_loopback_address(listen)
        self._own_names: set[str] = set()
        if self._public:
            self._own_names = {_host_name(socket.gethostname())}
            if listen not in _WILDCARDS and not _is_ip_literal(listen):
                self._own_names.add(_host_name(listen))
        self.app = web.Application(
            middlewares=[
                self._door_middleware,
                self._security_headers,
                self._host_middleware,
                self._auth_middleware,
            ]
        )
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._public:
            # getfqdn() may ask DNS: off the event loop, once, and never holding up start-up
            # for long (a broken resolver can take 5 s per try).
            try:
                async with asyncio.timeout(_FQDN_TIMEOUT):
                    self._own_names.add(_host_name(await asyncio.to_thread(socket.getfqdn)))
            except TimeoutError:
                log.warning(
                    "no FQDN for this host in time: requests naming it need http.allowed_hosts",
                    extra={"fields": {"timeout_s": _FQDN_TIMEOUT}},
                )
        if self.web_config_file is not None:
            config, base = load_web_config(self.web_config_file)
            if config.basic_auth_users:
                self._auth = BasicAuth(config.basic_auth_users)
            if config.tls_server_config is not None:
                self._ssl = server_ssl_context(config.tls_server_config, base)
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.limits.idle_timeout,
        )
        await self._runner.setup()
        # The door accepts, not an aiohttp site: it caps connections before they cost more
        # than a moment's descriptor.
        self.door = FrontDoor(self._runner.server, self.limits, self._ssl)
        await self.door.start(self.listen, self.port)
        self.port = self.door.port  # the port picked when 0 was asked for
        log.info(
            "http listening",
            extra={
                "fields": {"url": self.url, "basic_auth": "on" if self._auth else "off"},
            },
        )

    @property
    def authenticates(self) -> bool:
        """True when every request (but the open paths) has passed basic auth."""
        return self._auth is not None

    @property
    def url(self) -> str:
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    async def stop(self) -> None:
        if self.door is not None:
            await self.door.stop()
            self.door = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request with this Host header may be served (else 421)."""
        if host_header is None:
            # HTTP/1.0 without Host: not a browser, so not a rebinding page. Served on a
            # public listener as before; refused on loopback, as before.
            return self._public
        name = _host_name(host_header)
        if name in self._allowed_hosts or _is_loopback_address(name):
            return True
        return self._public and (_is_ip_literal(name) or name in self._own_names)

    @web.middleware
    async def _door_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # While a request is handled its connection has no header deadline; after it, the
        # next request's headers are due within idle_timeout + header_timeout.
        guard = self.door.guard_of(request.protocol) if self.door is not None else None
        if guard is None:
            return await handler(request)
        guard.request_started()
        try:
            return await handler(request)
        finally:
            guard.request_finished()

    @web.middleware
    async def _host_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.host_allowed(request.headers.get("Host")):
            return web.Response(
                status=421,
                text="421 Misdirected Request: this Host is not one dutyd answers to "
                "(http.allowed_hosts)\n",
            )
        return await handler(request)

    @web.middleware
    async def _security_headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
            _add_security_headers(request.path, response.headers)
            raise
        _add_security_headers(request.path, response.headers)
        return response

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            self._auth is None
            or request.path in self.open_paths
            or request.path.startswith(self.open_prefixes)
        ):
            return await handler(request)
        user = await self._auth.user(request.headers.get("Authorization", ""))
        if user is None:
            return web.Response(
                status=401,
                text="401 Unauthorized: this endpoint needs a user name and password\n",
                headers={"WWW-Authenticate": 'Basic realm="dutyd", charset="UTF-8"'},
            )
        token = _USER.set(user)
        try:
            return await handler(request)
        finally:
            _USER.reset(token)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        """Streamed family by family, gzipped when asked (Prometheus asks): the exposition is
        never held whole, and the event loop runs other work between families."""
        gzip_it = accepts_gzip(request.headers.get("Accept-Encoding", ""))
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        if gzip_it:
            response.headers["Content-Encoding"] = "gzip"
        await response.prepare(request)
        # Level 1 makes 100,000 series ~28x smaller for a fifth of the render time.
        packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if gzip_it else None
        for chunk in iter_latest(self.registry):
            data = packer.compress(chunk) if packer is not None else chunk
            if data:
                await response.write(data)
            await asyncio.sleep(0)
        if packer is not None:
            await response.write(packer.flush())
        await response.write_eof()
        release_free_memory()  # the chunks' heap pages, kept by glibc otherwise
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        problem = self._degraded()
        return web.Response(text="ok\n" if problem is None else f"degraded: {problem}\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, why = self._ready()
        return web.Response(text=f"{why}\n", status=200 if ok else 503)


class DoorMetrics:
    """The front door's counts, read at scrape time (a prometheus_client custom collector the
    daemon registers)."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server

    def collect(self) -> Iterable[Metric]:
        door = self._server.door
        limits = self._server.limits
        yield GaugeMetricFamily(
            "dutyd_http_connections",
            "Inbound HTTP connections open now",
            value=door.open if door else 0,
        )
        yield GaugeMetricFamily(
            "dutyd_http_connections_limit",
            "Inbound HTTP connections allowed in all (http.max_connections, fitted to the "
            "open-file limit)",
            value=limits.max_connections,
        )
        closed = CounterMetricFamily(
            "dutyd_http_connections_closed",
            "Inbound HTTP connections the front door closed: refused over a cap (limit) or "
            "cut for headers not complete in time (header_timeout)",
            labels=["reason"],
        )
        closed.add_metric(["limit"], door.refused if door else 0)
        closed.add_metric(["header_timeout"], door.timed_out if door else 0)
        yield closed
        yield CounterMetricFamily(
            "dutyd_http_accept_errors",
            "Failed accepts on the HTTP port (out of file descriptors)",
            value=door.accept_errors if door else 0,
        )


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Answers that carry duty data or a one-time ack form: never kept by a browser or a proxy.
_NO_STORE_PREFIXES = ("/api/", "/ack/")


def _add_security_headers(path: str, headers: MutableMapping[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    if path.startswith(_NO_STORE_PREFIXES):
        headers["Cache-Control"] = "no-store"


_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not a bind


def _host_name(host_header: str) -> str:
    """The name in a Host header, lower-cased, without port, IPv6 brackets or the root's
    trailing dot (`attacker.example.` is the same name to DNS)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _is_loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


async def serve_on_loopback(app: web.Application, **site_options: Any) -> tuple[web.AppRunner, int]:
    """Serve `app` on a free 127.0.0.1 port (demo devices and pagers, test peers): the runner,
    to `cleanup()` when done, and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, **site_options).start()
    return runner, int(runner.addresses[0][1])
