"""Forward alerts to a Prometheus Alertmanager (API v2 `POST /api/v2/alerts`), for teams who
already route there. Firing alerts carry `startsAt` and an `endsAt` a few minutes ahead that the
service refreshes while the alert lasts (as Prometheus does); a resolve sets `endsAt` to the
resolve time. 5xx and connection failures are retried, a 4xx means the alert itself is refused.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import aiohttp
from pydantic import Field, field_validator

from dutyd.core.configtypes import PositiveDuration, StrictModel
from dutyd.core.records import AlertEvent, AlertState
from dutyd.notify.channels.base import SendResult


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def am_alert(event: AlertEvent, now: float, generator_url: str, ends_in: float) -> dict[str, Any]:
    """One alert in API v2 shape: labels (alertname, severity and the alert's labels)."""
    labels = {"alertname": event.rule, "severity": event.severity, **dict(event.labels)}
    annotations = {"summary": event.summary, **dict(event.annotations)}
    starts = event.active_since or event.timestamp
    resolved = event.state is AlertState.RESOLVED
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso(starts),
        "endsAt": iso(event.timestamp if resolved else now + ends_in),
        "generatorURL": generator_url,
    }


class AlertmanagerForward(StrictModel):
    """Every alert (firing, resolved) also goes to this Alertmanager's API v2."""

    kind: Literal["alertmanager"] = "alertmanager"
    url: str = Field(description="base URL, e.g. http://127.0.0.1:9093")
    timeout: PositiveDuration = 5.0

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/")


class AlertmanagerChannel:
    payload_kind = "alerts"
    body_format = "text"  # Alertmanager's JSON: the receivers it routes to escape what they show

    def __init__(self, name: str, config: AlertmanagerForward) -> None:
        self.name = name
        self.url = config.url + "/api/v2/alerts"
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message_id: str, payload: dict[str, Any]) -> SendResult:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self.url, json=payload["alerts"]) as resp:
                if resp.status < 300:
                    return SendResult(True)
                text = (await resp.text())[:200]
                # 408 and 429 say "later", not "never": dropping them would lose the alert.
                retry = resp.status >= 500 or resp.status in (408, 429)
                return SendResult(False, retry, f"HTTP {resp.status}: {text}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SendResult(False, True, f"alertmanager unreachable: {type(exc).__name__}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
