"""Why a send failed, as the duty log and the daemon's log say it (issue 13, item 10): a
refused connection is "receiver unreachable: connection refused", not "not accepted by the
receiver". Real peers on loopback: a closed port, a plain-HTTP receiver spoken to over TLS,
a receiver answering 500, and one that accepts."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from dutyd.notify.channels.apprise import AppriseChannel, AppriseConfig, failure_reason
from tests.peers import free_port
from tests.test_notify_delivery import Receiver, configs, firing, make_service

PAYLOAD = {"title": "ALERT: host1 unreachable", "body": "host1 unreachable"}


def channel(url: str) -> AppriseChannel:
    return AppriseChannel("hook", AppriseConfig.model_validate({"url": url}))


async def test_refused_connection_says_unreachable_and_why() -> None:
    ch = channel(f"json://127.0.0.1:{free_port()}/hook")
    try:
        result = await ch.send("m1", PAYLOAD)
    finally:
        await ch.close()
    assert not result.ok and result.retry
    assert result.error == "receiver unreachable: connection refused"


async def test_tls_to_a_plain_http_receiver_is_a_tls_failure() -> None:
    receiver = Receiver()
    await receiver.start()
    ch = channel(f"jsons://127.0.0.1:{receiver.port}/hook?verify=no")
    try:
        result = await ch.send("m1", PAYLOAD)
    finally:
        await ch.close()
        await receiver.stop()
    assert result.error == "receiver unreachable: TLS handshake failed"


async def test_a_silent_receiver_is_a_timeout() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts (the kernel does), never answers
    port = server.getsockname()[1]
    ch = channel(f"json://127.0.0.1:{port}/hook?rto=0.5&cto=0.5")
    try:
        result = await ch.send("m1", PAYLOAD)
    finally:
        await ch.close()
        server.close()
    assert result.error == "receiver unreachable: timeout"


async def test_an_error_status_is_not_accepted_with_the_status() -> None:
    receiver = Receiver()
    receiver.status = 500
    await receiver.start()
    ch = channel(receiver.url())
    try:
        result = await ch.send("m1", PAYLOAD)
        receiver.status = 200
        ok = await ch.send("m2", PAYLOAD)
    finally:
        await ch.close()
        await receiver.stop()
    assert result.error == "not accepted by the receiver: HTTP 500"
    assert ok.ok and ok.error == ""


def test_reasons_never_carry_the_url() -> None:
    said = [
        "A Connection error occurred sending JSON notification to secret-host.example.",
        "Socket Exception: HTTPSConnectionPool(host='secret-host.example', port=443): Max "
        "retries exceeded with url: /hook?token=abc (Caused by NameResolutionError(...))",
    ]
    assert failure_reason(said) == "receiver unreachable: DNS lookup failed"
    assert failure_reason([]) == "not accepted by the receiver"


async def test_the_duty_log_and_daemon_log_say_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"json://127.0.0.1:{free_port()}/hook"
    service, storage, _ = await make_service(
        tmp_path / "d.db", *configs({"hook": dead}, ["hook"], group_wait=0)
    )
    try:
        with caplog.at_level(logging.WARNING, logger="dutyd.notify"):
            await service(firing(1))
            for _ in range(200):
                retries = await storage.log.read(kinds=["notify.retry"])
                if retries:
                    break
                await asyncio.sleep(0.02)
        assert retries[0].data["error"] == "receiver unreachable: connection refused"
        failed = [r for r in caplog.records if r.getMessage() == "notification failed, will retry"]
        assert failed and failed[0].fields["error"] == "receiver unreachable: connection refused"  # type: ignore[attr-defined]
        assert all("not accepted" not in r.getMessage() for r in caplog.records)
    finally:
        await service.stop()
        await storage.close()


async def test_other_apprise_schemes_say_why_too() -> None:
    """form:// still goes through apprise (requests on a thread): its reason comes from what
    apprise logged during that send."""
    ch = channel(f"form://127.0.0.1:{free_port()}/hook")
    try:
        result = await ch.send("m1", PAYLOAD)
    finally:
        await ch.close()
    assert result.error == "receiver unreachable: connection refused"


async def test_the_json_webhook_posts_what_apprise_posts() -> None:
    """json:// is posted by the channel itself (json_webhook): the same document, headers,
    auth, `+header` and `:field` options as apprise's own json:// send."""
    from dutyd.notify.channels.apprise import _apprise

    receiver = Receiver()
    await receiver.start()
    url = f"json://ops:pw@127.0.0.1:{receiver.port}/hook?+X-Site=hq&:type=&:extra=1"
    ch = channel(url)
    try:
        assert (await ch.send("m1", PAYLOAD)).ok
        ap = _apprise().Apprise()
        ap.add(ch._url_for("m1"))
        assert await asyncio.to_thread(ap.notify, body=PAYLOAD["body"], title=PAYLOAD["title"])
    finally:
        await ch.close()
        await receiver.stop()
    ours, theirs = receiver.received
    assert ours["body"] == theirs["body"]
    assert ours["body"]["message_id"] == "m1" and "type" not in ours["body"]
    assert ours["path"] == theirs["path"] == "/hook"
    for header in ("X-Dutyd-Message-Id", "X-Site", "Authorization", "User-Agent", "Content-Type"):
        assert ours["headers"][header] == theirs["headers"][header], header


async def test_an_unknown_host_is_a_dns_failure() -> None:
    ch = channel("json://no-such-host.invalid/hook")  # .invalid never resolves (RFC 6761)
    try:
        result = await ch.send("m1", PAYLOAD)
    finally:
        await ch.close()
    assert result.error == "receiver unreachable: DNS lookup failed"
