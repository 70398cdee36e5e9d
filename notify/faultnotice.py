""" "dutyd cannot write its database": the notice of a storage fault to `notify.fallback_channel`.

It goes to the channel directly, not through the outbox (the outbox is on the disk that
fails), once per fault, retried with backoff until the channel accepts or refuses it; the
next fault is told again. The channel and the settings are read at each attempt, so a
reload in between is followed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping

from dutyd.core.clock import Clock
from dutyd.notify.channels import Channel, SendResult
from dutyd.notify.config import NotifyConfig
from dutyd.notify.outbox import backoff

log = logging.getLogger("dutyd.notify")


def fault_text(language: str, reason: str) -> tuple[str, str]:
    """The notice's title and body in `language` (en, zh)."""
    if language == "zh":
        return "dutyd 无法写入其数据库", (
            f"{reason}。告警仍从内存发出；磁盘恢复写入后补写值班日志和发件箱。"
            "请释放空间或修复磁盘。"
        )
    return "dutyd cannot write its database", (
        f"{reason}. Pages go out from memory; the duty log and the outbox are written "
        "when the disk takes writes again. Free space or fix the disk."
    )


class StorageFaultNotice:
    """Tells the fallback channel of each storage fault, once."""

    def __init__(
        self,
        config: Callable[[], NotifyConfig],
        channels: Callable[[], Mapping[str, Channel]],
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._channels = channels
        self._clock = clock
        self._rng = rng
        self._sending: asyncio.Future[None] | None = None  # the notice of this fault

    def storage_fault(self, writable: bool, reason: str) -> None:
        """The store stopped (or resumed) taking writes."""
        if writable:
            if self._sending is not None:
                self._sending.cancel()
            self._sending = None
            return
        name = self._config().fallback_channel
        if name is None or name not in self._channels() or self._sending is not None:
            return
        self._sending = asyncio.ensure_future(self._send(name, reason))

    def cancel(self) -> None:
        """At stop: a notice still being retried is given up."""
        if self._sending is not None and not self._sending.done():
            self._sending.cancel()

    async def _send(self, name: str, reason: str) -> None:
        title, body = fault_text(self._config().language, reason)
        mid = f"dutyd-storage-{self._clock.time():.0f}"  # one id for the retries of one notice
        attempt = 0
        while True:
            attempt += 1
            channel = self._channels().get(name)
            if channel is None:
                return  # removed by a reload meanwhile
            config = self._config()
            try:
                async with self._clock.timeout(config.send_timeout):
                    result = await channel.send(mid, {"title": title, "body": body})
            except TimeoutError:
                result = SendResult(False, True, "no answer")
            if result.ok or not result.retry:
                if not result.ok:
                    log.error(
                        "the fallback channel refused the storage fault notice",
                        extra={"fields": {"channel": name, "error": result.error}},
                    )
                return
            await self._clock.sleep(
                backoff(attempt, config.retry_initial, config.retry_max, self._rng)
            )
