"""The channel registry is the one place channel kinds are known: every kind's config model
names its kind, the service's `build_channel` builds each from its config, and the config's
`notify.channels` accepts the page channel kinds' models."""

from __future__ import annotations

import pytest

from dutyd.notify.channels import (
    CHANNEL_KINDS,
    AlertmanagerChannel,
    AlertmanagerForward,
    AppriseChannel,
    AppriseConfig,
    build_channel,
)
from dutyd.notify.config import NotifyConfig


def test_every_kind_config_names_its_kind() -> None:
    for name, kind in CHANNEL_KINDS.items():
        assert kind.config.model_fields["kind"].default == name


async def test_build_channel_builds_each_registered_kind() -> None:
    apprise = build_channel("mail", AppriseConfig(url="json://127.0.0.1:9/hook"))
    forward = build_channel("alertmanager-0", AlertmanagerForward(url="http://127.0.0.1:9"))
    try:
        assert isinstance(apprise, AppriseChannel) and apprise.name == "mail"
        assert isinstance(forward, AlertmanagerChannel) and forward.name == "alertmanager-0"
    finally:
        await apprise.close()
        await forward.close()
    with pytest.raises(ValueError, match="no channel kind"):
        build_channel("odd", object())


def test_notify_channels_take_page_channel_configs() -> None:
    cfg = NotifyConfig.model_validate(
        {
            "channels": {"hook": {"url": "json://127.0.0.1:9/hook"}},
            "alertmanager": [{"url": "http://127.0.0.1:9093/"}],
        }
    )
    assert isinstance(cfg.channels["hook"], AppriseConfig)
    assert cfg.alertmanager[0].url == "http://127.0.0.1:9093"
    with pytest.raises(ValueError, match="kind"):
        NotifyConfig.model_validate({"channels": {"x": {"kind": "carrier-pigeon", "url": "x"}}})


def test_a_json_webhook_channel_does_not_load_every_apprise_plugin() -> None:
    # apprise's plugin table (~190 plugins, ~11 MiB for the daemon's life) is loaded only for
    # schemes other than the JSON webhook; a fresh interpreter shows what a daemon would hold.
    import subprocess
    import sys

    code = """
import sys
from dutyd.notify.channels.apprise import AppriseChannel, AppriseConfig
AppriseChannel("pager", AppriseConfig(url="json://127.0.0.1:9/hook"))
AppriseChannel("pager_tls", AppriseConfig(url="jsons://user:pw@127.0.0.1:9/hook"))
loaded = sorted(m for m in sys.modules if m.startswith("apprise.plugins."))
print(",".join(loaded))
AppriseChannel("mail", AppriseConfig(url="mailto://user:pw@example.org"))
print(sum(1 for m in sys.modules if m.startswith("apprise.plugins.")))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split("\n")
    assert "apprise.plugins.custom_json" in out[0].split(",")
    assert "apprise.plugins.email" not in out[0] and len(out[0].split(",")) < 10, out[0]
    assert int(out[1]) > 50  # another scheme still gets every plugin apprise has
