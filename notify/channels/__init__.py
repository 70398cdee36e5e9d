"""Channel kinds, registered here and only here: kind -> its config model and channel class.

Adding a channel is one module beside these (its config model with a `kind` literal, and a
class taking `(name, config)` that implements `base.Channel`) and one line in `CHANNEL_KINDS`.
The notification service builds every channel with `build_channel`; the config accepts under
`notify.channels` the config model of every kind that is not a forwarder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field

from dutyd.notify.channels.alertmanager import AlertmanagerChannel, AlertmanagerForward
from dutyd.notify.channels.apprise import AppriseChannel, AppriseConfig
from dutyd.notify.channels.base import Channel, RateLimit, SendResult


@dataclass(frozen=True, slots=True)
class ChannelKind:
    config: type[BaseModel]
    channel: Callable[[str, Any], Channel]
    # A forwarder gets every alert (`notify.alertmanager`); other kinds carry pages to people
    # and rooms (`notify.channels`).
    forwarder: bool = False


CHANNEL_KINDS: dict[str, ChannelKind] = {
    "apprise": ChannelKind(AppriseConfig, AppriseChannel),
    "alertmanager": ChannelKind(AlertmanagerForward, AlertmanagerChannel, forwarder=True),
}


def build_channel(name: str, config: Any) -> Channel:
    """The channel for a config model of a registered kind (its `kind` field says which)."""
    kind = CHANNEL_KINDS.get(getattr(config, "kind", ""))
    if kind is None or not isinstance(config, kind.config):
        raise ValueError(f"channel {name}: no channel kind for {type(config).__name__}")
    return kind.channel(name, config)


def _page_channel_config() -> Any:
    configs = tuple(k.config for k in CHANNEL_KINDS.values() if not k.forwarder)
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007


# The type of a `notify.channels` entry: one of the page channel kinds' config models.
ChannelConfig: Any = _page_channel_config()

__all__ = [
    "CHANNEL_KINDS",
    "AlertmanagerChannel",
    "AlertmanagerForward",
    "AppriseChannel",
    "AppriseConfig",
    "Channel",
    "ChannelConfig",
    "ChannelKind",
    "RateLimit",
    "SendResult",
    "build_channel",
]
