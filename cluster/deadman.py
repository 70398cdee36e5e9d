"""The dead man's switch: a heartbeat to an external watchdog every N seconds, so someone is
paged when dutyd itself goes silent. The heartbeat is an HTTP GET of a ping URL (the watchdog
pages when pings stop) or an apprise notification ("dutyd <node> alive"). Each ping is sent
from the event loop, so a hung daemon stops pinging within one interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from dutyd.cluster.config import DeadManConfig
from dutyd.cluster.node import ClusterNode
from dutyd.core.records import AlertEvent, AlertState, labels_of

log = logging.getLogger("dutyd.cluster")

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://([^\s/?#'\"]*)[^\s'\"]*")


def scrub_urls(text: str) -> str:
    """`text` with every URL cut to its scheme and host: the ping URL is a credential (its
    path or query holds the check's token), and exception texts quote it."""
    return _URL.sub(lambda m: f"{m.group(1)}://{m.group(2).rpartition('@')[2]}/…", text)


class DeadMansSwitch:
    def __init__(
        self, config: DeadManConfig, node: str, on_result: Callable[[bool], None] = lambda ok: None
    ) -> None:
        self.config = config
        self.node = node
        self.on_result = on_result
        self.sent = 0
        self.failed = 0
        self.last_ok: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def http(self) -> bool:
        return urlsplit(self.config.secret_url()).scheme in ("http", "https")

    def start(self) -> None:
        if self.config.secret_url():
            self._task = asyncio.create_task(self._run(), name="deadman")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            ok, error = await self.ping()
            self.on_result(ok)
            if ok:
                self.sent += 1
                self.last_ok = time.time()
            else:
                self.failed += 1
                log.warning("dead man's switch ping failed", extra={"fields": {"error": error}})
            await asyncio.sleep(max(0.0, self.config.every - (time.monotonic() - started)))

    async def ping(self) -> tuple[bool, str]:
        """(sent, why not): the reason never holds the URL."""
        ok, error = await self._ping()
        return ok, scrub_urls(error)

    async def _ping(self) -> tuple[bool, str]:
        url = self.config.secret_url()
        try:
            async with asyncio.timeout(self.config.timeout):
                if self.http:
                    return await self._get(url)
                return await self._apprise(url)
        except TimeoutError:
            return False, f"no answer within {self.config.timeout:g}s"
        except Exception as exc:  # a watchdog outage must not stop the daemon
            return False, f"{type(exc).__name__}: {exc}"[:300]

    async def _get(self, url: str) -> tuple[bool, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.get(url, params={"node": self.node}) as resp:
            await resp.read()
            return resp.status < 400, f"HTTP {resp.status}"

    async def _apprise(self, url: str) -> tuple[bool, str]:
        def notify() -> bool:
            import apprise

            a = apprise.Apprise()
            if not a.add(url):
                return False
            return bool(
                a.notify(title=f"dutyd {self.node} alive", body=f"heartbeat {time.time():.0f}")
            )

        with contextlib.suppress(RuntimeError):
            ok = await asyncio.get_running_loop().run_in_executor(None, notify)
            return ok, "" if ok else "apprise refused the notification"
        return False, "executor closed"


PEER_RULE = "dutyd_peer_down"


class PeerWatch:
    """The nodes of a pair watch each other: when a peer's heartbeat row is older than
    `after`, the active node raises a critical `dutyd_peer_down` alert event (paged through
    its own escalation and channels), and resolves it when the peer is back. A standby that
    sees the active gone takes over first, then raises it."""

    def __init__(self, node: ClusterNode, after: float, put: Callable[[AlertEvent], None]) -> None:
        self.node = node
        self.after = after
        self.put = put
        self.down: dict[str, float] = {}  # peer -> when announced
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="peer-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.node.config.period)
            self.check(time.time())

    def check(self, now: float) -> None:
        if not self.node.is_active():
            self.down.clear()  # the active node announces; it starts afresh at takeover
            return
        gone = {m.node: m for m in self.node.gone_peers(self.after)}
        for peer, member in gone.items():
            if peer not in self.down:
                self.down[peer] = now
                age = self.node.store_now - member.last_seen
                log.error(
                    "a cluster peer is gone",
                    extra={"fields": {"peer": peer, "silent_s": round(age, 1)}},
                )
                self.put(self._event(peer, AlertState.FIRING, now, now - age, age))
        for peer in [p for p in self.down if p not in gone]:
            since = self.down.pop(peer)
            log.warning("a cluster peer is back", extra={"fields": {"peer": peer}})
            self.put(self._event(peer, AlertState.RESOLVED, now, since, 0.0))

    def _event(
        self, peer: str, state: AlertState, now: float, since: float, value: float
    ) -> AlertEvent:
        firing = state is AlertState.FIRING
        return AlertEvent(
            fingerprint=f"{PEER_RULE}:{peer}",
            rule=PEER_RULE,
            labels=labels_of({"peer": peer, "node": self.node.name, "target": peer}),
            state=state,
            previous=AlertState.PENDING if firing else AlertState.FIRING,
            severity="critical",
            summary=(
                f"dutyd peer {peer} silent for {value:.0f}s: no standby (or no agent)"
                if firing
                else f"dutyd peer {peer} is back"
            ),
            value=value,
            active_since=since,
            timestamp=now,
        )
