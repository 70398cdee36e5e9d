"""Channel kinds, registered here in one place: config kind -> module's channel class."""

from __future__ import annotations

from dutyd.notify.channels.alertmanager import AlertmanagerChannel
from dutyd.notify.channels.apprise import AppriseChannel
from dutyd.notify.channels.base import Channel, SendResult

CHANNEL_KINDS = {
    "apprise": AppriseChannel,
    "alertmanager": AlertmanagerChannel,
}

__all__ = ["CHANNEL_KINDS", "AlertmanagerChannel", "AppriseChannel", "Channel", "SendResult"]
