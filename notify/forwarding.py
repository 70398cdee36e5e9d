"""Alertmanager forwarders: every firing and resolved alert (not escalations) goes to each
`notify.alertmanager` entry through the same outbox as the pages, and the firing ones are
refreshed while they last (every `AM_REFRESH`, `endsAt` `AM_ENDS_IN` ahead, as Prometheus
does), so Alertmanager never resolves an alert dutyd still has firing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from dutyd.core.records import AlertEvent, AlertState
from dutyd.notify.channels import Channel
from dutyd.notify.channels.alertmanager import am_alert
from dutyd.notify.escalation import Page, PageKind, Recipient, moved_event
from dutyd.notify.grouping import message_id
from dutyd.storage import OutboxMessage

log = logging.getLogger("dutyd.notify")

AM_REFRESH = 60.0  # resend firing alerts to Alertmanager this often
AM_ENDS_IN = 4 * AM_REFRESH  # endsAt ahead of now, as Prometheus does (4 x resend delay)
ALERTMANAGER = "alertmanager"


def forwarder_name(index: int) -> str:
    """The channel name of the `index`th `notify.alertmanager` entry."""
    return f"{ALERTMANAGER}-{index}"


class AlertmanagerForwarding:
    """The forwarder channels and the firing alerts Alertmanager knows of."""

    def __init__(self, generator_url: str) -> None:
        self.generator_url = generator_url
        self.names: list[str] = []  # the forwarder channels, as configured now
        self.firing: dict[str, AlertEvent] = {}  # by fingerprint

    def rows(
        self, event: AlertEvent, now: float, stamp: Callable[[float], float]
    ) -> list[OutboxMessage]:
        """The outbox rows telling each forwarder of `event` (a change of state): a firing
        alert that pages, or the resolve of one it was told of; none otherwise. `stamp` gives
        each row its creation time."""
        fp = event.fingerprint
        if event.state is AlertState.FIRING and event.notify:
            self.firing[fp] = event
        elif event.state is AlertState.RESOLVED and fp in self.firing:
            del self.firing[fp]
        else:
            return []
        alert = am_alert(event, now, self.generator_url, AM_ENDS_IN)
        return [
            OutboxMessage(
                message_id([_am_page(event)], Recipient("channel", name)),
                ALERTMANAGER,
                str(event.state),
                name,
                {"alerts": [alert], "fingerprints": [fp], "due": now},
                created=(created := stamp(now)),
                next_at=created,
            )
            for name in self.names
        ]

    def keep(self, event: AlertEvent) -> None:
        """A firing alert taken up after a restart: keep Alertmanager's copy alive, and tell
        it the resolve."""
        if self.names:
            self.firing[event.fingerprint] = event

    def shift(self, seconds: float) -> None:
        """The daemon's clock was re-anchored: the alerts' moments move with it."""
        self.firing = {fp: moved_event(e, seconds) for fp, e in self.firing.items()}

    async def refresh(self, channels: Mapping[str, Channel], now: float) -> None:
        """Send every firing alert to each forwarder again, directly (a failure waits for the
        next refresh)."""
        alerts = [am_alert(e, now, self.generator_url, AM_ENDS_IN) for e in self.firing.values()]
        if not alerts:
            return
        for name in self.names:
            result = await channels[name].send("refresh", {"alerts": alerts})
            if not result.ok:
                log.warning(
                    "alertmanager refresh failed",
                    extra={"fields": {"channel": name, "error": result.error}},
                )


def _am_page(event: AlertEvent) -> Page:
    key = f"{event.fingerprint}|am|{event.state}|{event.timestamp:.3f}"
    return Page(PageKind.FIRING, event, (), 0, event.timestamp, key)
