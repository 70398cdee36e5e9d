"""The dead man's switch URL is a credential (issue 24, finding 7): it comes from the
environment or a file, and a failed ping's log line never holds it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from dutyd.cluster.config import DeadManConfig
from dutyd.cluster.deadman import DeadMansSwitch, scrub_urls
from tests.peers import free_port

TOKEN = "f3c1e0d2-hc-secret-token"


async def failed_pings(config: DeadManConfig, caplog: pytest.LogCaptureFixture) -> list[str]:
    switch = DeadMansSwitch(config, "duty-a")
    with caplog.at_level(logging.WARNING, logger="dutyd.cluster"):
        switch.start()
        try:
            for _ in range(100):
                if switch.failed >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await switch.stop()
    assert switch.failed >= 2
    return [
        f"{r.getMessage()} {getattr(r, 'fields', '')}"
        for r in caplog.records
        if r.name == "dutyd.cluster"
    ]


# `{port}`: a port free when the test runs (filled in then, not at collection: the parallel
# run's workers must collect the same test ids, and a port taken early may be reused by then).
@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:{{port}}/ping/{TOKEN}?key={TOKEN}",  # refused
        f"http://127.0.0.1:99999/ping/{TOKEN}",  # not a valid URL: quoted by the exception
        f"http://user:{TOKEN}@127.0.0.1:{{port}}/ping",
    ],
)
async def test_url_env_is_read_and_failed_pings_never_log_the_url(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DUTYD_DEADMAN_URL", url.replace("{port}", str(free_port())))
    config = DeadManConfig(url_env="DUTYD_DEADMAN_URL", every=0.05, timeout=1)
    lines = await failed_pings(config, caplog)
    assert lines and all("ping failed" in line for line in lines), lines
    assert not any(TOKEN in line for line in lines), lines
    assert any("127.0.0.1" in line for line in lines), lines  # where it failed still shows


async def test_url_file_is_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "deadman.url"
    secret.write_text(f"http://127.0.0.1:{free_port()}/ping/{TOKEN}\n")
    config = DeadManConfig(url_file=str(secret), every=0.05, timeout=1)
    assert config.secret_url().endswith(TOKEN)
    lines = await failed_pings(config, caplog)
    assert not any(TOKEN in line for line in lines), lines


def test_one_url_form_at_most_and_the_literal_is_a_secret() -> None:
    with pytest.raises(ValueError, match="at most one of url, url_env, url_file"):
        DeadManConfig(url="http://a.example/x", url_file="/dev/null")
    config = DeadManConfig(url=f"https://hc-ping.com/{TOKEN}")
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())


def test_scrub_urls_keeps_scheme_and_host_only() -> None:
    text = f"InvalidURL: http://u:{TOKEN}@hc.example:8080/{TOKEN}?k={TOKEN} and json://h/{TOKEN}"
    scrubbed = scrub_urls(text)
    assert TOKEN not in scrubbed
    assert "http://hc.example:8080/…" in scrubbed and "json://h/…" in scrubbed
