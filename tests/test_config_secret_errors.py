"""A secret given with the wrong type is never echoed (issue 24, finding 8): not by
`dutyd check-config`, not in the log of a rejected reload, whatever the type."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from dutyd.agent.cli import main
from dutyd.agent.config import load_config, load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.core.errors import ConfigError

TOKEN = "tok-9f8e7d6c5b4a"

WRONG_TYPES = [
    {"notify": {"channels": {"hook": {"url": [f"json://127.0.0.1/{TOKEN}"]}}}},
    {"notify": {"channels": {"hook": {"url": {"u": f"tgram://{TOKEN}/123"}}}}},
    {"notify": {"channels": {"hook": {"url": 123456789}}}},
    {"storage": {"url": [f"postgresql://dutyd:{TOKEN}@db.example/dutyd"]}},
    {"cluster": {"deadman": {"url": [f"https://hc-ping.com/{TOKEN}"]}}},
    {"notify": {"ack_secret": [TOKEN]}},
    {"api": {"token": {"value": TOKEN}}},
    {"targets": [{"name": "a", "kind": "http", "address": [f"http://u:{TOKEN}@h/"]}]},
    {"targets": [{"name": "a", "kind": "http", "address": "http://h/", "headers": [TOKEN]}]},
]


@pytest.mark.parametrize("config", WRONG_TYPES)
def test_check_config_never_echoes_a_wrong_typed_secret(
    config: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dutyd.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check-config", str(path)]) != 0
    out = capsys.readouterr()
    report = out.out + out.err
    assert "problem" in report, report
    assert TOKEN not in report, report


async def test_a_rejected_reload_never_logs_a_wrong_typed_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dutyd.yaml"
    good = {"http": {"port": 0}, "storage": {"path": str(tmp_path / "d.db")}}
    path.write_text(yaml.safe_dump(good))
    daemon = Daemon(load_from_dict(good), path)
    await daemon.start()
    try:
        bad = {**good, "notify": {"channels": {"hook": {"url": [f"json://h/{TOKEN}"]}}}}
        path.write_text(yaml.safe_dump(bad))
        with caplog.at_level(logging.INFO):
            assert await daemon.reload() is False
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "reload rejected" in logged and "notify.channels.hook.url" in logged
        assert TOKEN not in logged
        entries = await daemon.storage.log.read(kinds=["config.reload_rejected"])
        assert entries and TOKEN not in repr(entries)
    finally:
        await daemon.stop()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://dutyd@db.example:5432/dutyd?password={TOKEN}",
        f"postgres://dutyd@db.example/dutyd?sslmode=require&PassWord={TOKEN}",
        f"postgresql://dutyd@db.example/dutyd?sslpassword={TOKEN}",
    ],
)
def test_a_postgresql_password_in_the_query_is_refused_too(url: str, tmp_path: Path) -> None:
    """Finding 9 of issue 24: `?password=` was accepted though documented as refused."""
    path = tmp_path / "dutyd.yaml"
    path.write_text(yaml.safe_dump({"storage": {"url": url}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = err.value.report()
    assert "storage.url" in text and "password_env" in text, text
    assert TOKEN not in text, text
    # Other query options stay allowed.
    load_from_dict({"storage": {"url": "postgresql://dutyd@db.example/dutyd?sslmode=require"}})
