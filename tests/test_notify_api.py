"""The duty API on a real in-process daemon: bearer token, 4xx reasons, ack from the signed
link in a delivered notification (once), silence, maintenance, and a drill that walks the
escalation, records who answered, and clears the duty pack's "no drill in 31 days" alert."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest

from dutyd.agent.cli import main
from dutyd.agent.config import load_from_dict
from dutyd.agent.daemon import Daemon
from dutyd.core.records import Sample
from dutyd.duty.drill import DRILL_LABELS, DRILL_SAMPLE
from tests.test_notify_delivery import Receiver

TOKEN = "s3cret-token"
SECOND = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"  # a time printed to the second


def settings(tmp: Path, receiver: Receiver, **http: Any) -> Any:
    return load_from_dict(
        {
            "http": {"port": 0, **http},
            "storage": {"path": str(tmp / "d.db")},
            "api": {"token": TOKEN},
            "oncall": {
                "pairs": [["Zhang Wei", "Li Na"]],
                "people": [
                    {"name": "Zhang Wei", "contacts": ["zhang"]},
                    {"name": "Li Na", "language": "zh", "contacts": ["li"]},
                    {"name": "Chen Jie", "contacts": ["chen"]},
                ],
                "roles": {"director": ["Chen Jie"]},
            },
            "escalation": {
                "policies": [
                    {
                        "name": "all",
                        "steps": [
                            {"after": 0, "oncall": True},
                            {"after": "30s", "roles": ["director"]},
                        ],
                    }
                ]
            },
            "notify": {
                "channels": {n: {"url": receiver.url(n)} for n in ("zhang", "li", "chen")},
                "group_wait": 0,
                "ack_secret": "link-secret",
                "ack_base_url": "http://dutyd.example",
            },
        }
    )


async def test_api_ack_link_drill(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    daemon = Daemon(settings(tmp_path, receiver))
    await daemon.start()
    base = daemon.http.url
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as http:

            async def post(path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
                async with http.post(
                    base + path, json=body, headers=auth if headers is None else headers
                ) as r:
                    return r.status, await r.json()

            # Refusals carry their reason.
            assert (await post("/api/v1/ack", {"alert": "x"}, {}))[0] == 401
            bad = {"Authorization": "Bearer wrong"}
            assert (await post("/api/v1/ack", {"alert": "x"}, bad))[0] == 401
            async with http.post(base + "/api/v1/ack", data=b"{not json", headers=auth) as r:
                assert r.status == 400 and "JSON" in (await r.json())["error"]
            status, out = await post("/api/v1/ack", {"alert": "nothing", "actor": "me"})
            assert status == 404 and "no pending or firing alert" in out["error"]
            status, out = await post("/api/v1/silences", {"matchers": {}, "actor": "me"})
            assert status == 400 and "matchers" in out["error"]
            status, out = await post(
                "/api/v1/silences",
                {"matchers": {"target": "db1"}, "duration": "1h", "actor": "me", "reason": "x"},
            )
            assert status == 201 and out["silence"] >= 1
            status, out = await post(
                "/api/v1/maintenance",
                {"targets": ["nope"], "duration": "bad", "actor": "me", "reason": "x"},
            )
            assert status == 400 and "duration" in out["error"]
            status, out = await post(
                "/api/v1/maintenance",
                {"matchers": {"site": "hq"}, "duration": "2h", "actor": "me", "reason": "UPS"},
            )
            assert status == 201

            # A real alert: no drill for 40 days (the duty pack's rule), paged to the pair.
            old = time.time() - 40 * 86400
            daemon.operations.ingest_samples(
                [Sample.of(DRILL_SAMPLE, old, time.time(), DRILL_LABELS)]
            )
            await receiver.wait_for(2, 10)
            by_path = {r["path"]: r["body"] for r in receiver.received}
            assert set(by_path) == {"/zhang", "/li"}
            assert by_path["/li"]["title"].startswith("告警")
            link = re.search(r"http://dutyd\.example(/ack/\S+)", by_path["/zhang"]["message"])
            assert link is not None
            async with http.get(base + link.group(1)) as r:
                page = await r.text()
                assert r.status == 200 and "Acknowledge as Zhang Wei" in page
            # Li Na reads Chinese: her link opens in Chinese, summary included, as her page.
            li_link = re.search(r"http://dutyd\.example(/ack/\S+)", by_path["/li"]["message"])
            assert li_link is not None
            async with http.get(base + li_link.group(1)) as r:
                page = await r.text()
            assert r.status == 200 and '<html lang="zh-CN">' in page, page
            assert "应急演练逾期" in page and "确认（Li Na）" in page, page
            assert "No emergency drill" not in page and "Acknowledge" not in page, page
            async with http.get(base + li_link.group(1) + "?lang=en") as r:
                assert "No emergency drill" in await r.text()
            # A link that names nobody: the browser's language.
            async with http.get(base + "/ack/x.y", headers={"Accept-Language": "zh-CN"}) as r:
                assert r.status == 403 and "链接格式错误" in await r.text()
            async with http.post(base + link.group(1), data={"note": "on my way"}) as r:
                assert r.status == 200 and "Acknowledged by Zhang Wei" in await r.text()
            async with http.post(base + link.group(1), data={}) as r:
                assert r.status == 403 and "already been used" in await r.text()
            view = next(
                v for v in daemon.operations.list_alerts() if v["rule"] == "emergency_drill_overdue"
            )
            assert view["acknowledged"]["by"] == "Zhang Wei"
            assert view["acknowledged"]["note"] == "on my way"
            await receiver.wait_for(4, 5)  # the ack notice to both paged people
            # Acked: the director's step (30 s) must not come.

            # The drill: speed 30 makes the director's 30 s step come after 1 s.
            receiver.received.clear()
            status, run = await post("/api/v1/drills", {"actor": "Wang", "wait": "3s", "speed": 30})
            assert status == 201
            await receiver.wait_for(3, 5)
            paths = sorted(r["path"] for r in receiver.received)
            assert paths == ["/chen", "/li", "/zhang"]
            assert all(
                "DRILL" in r["body"]["title"] or "演练" in r["body"]["title"]
                for r in receiver.received
            )
            status, answer = await post(
                "/api/v1/ack", {"alert": run["fingerprint"], "actor": "Chen Jie"}
            )
            assert status == 200 and answer["seconds"] >= 1.0
            for _ in range(100):
                async with http.get(f"{base}/api/v1/drills/{run['id']}", headers=auth) as r:
                    if (await r.json())["finished"]:
                        break
                await asyncio.sleep(0.1)
            end = await daemon.storage.log.read(kinds=["drill.end"])
            assert end[-1].data["answers"][0]["actor"] == "Chen Jie"
            assert sorted(end[-1].data["paged"]) == ["Chen Jie", "Li Na", "Zhang Wei"]
            # The drill reset the sample the duty pack reads: the overdue alert resolves.
            for _ in range(50):
                view = next(
                    v
                    for v in daemon.operations.list_alerts()
                    if v["rule"] == "emergency_drill_overdue"
                )
                if view["state"] == "resolved":
                    break
                await asyncio.sleep(0.1)
            assert view["state"] == "resolved"
            async with http.get(base + "/api/v1/oncall", headers=auth) as r:
                assert (await r.json())["on_duty"] == ["Zhang Wei", "Li Na"]
    finally:
        await daemon.stop()
        await receiver.stop()


async def test_cli_commands_against_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = Receiver()
    await receiver.start()
    daemon = Daemon(settings(tmp_path, receiver))
    await daemon.start()
    base = daemon.http.url
    monkeypatch.setenv("DUTYD_API_TOKEN", TOKEN)
    monkeypatch.setenv("DUTYD_ACTOR", "Li Na")
    try:

        def cli(*argv: str) -> int:
            return main([argv[0], "--url", base, *argv[1:]])

        async def get_json(path: str) -> Any:
            async with (
                aiohttp.ClientSession() as http,
                http.get(base + path, headers={"Authorization": f"Bearer {TOKEN}"}) as r,
            ):
                assert r.status == 200
                return await r.json()

        def second(ts: float) -> str:
            return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

        assert (
            await asyncio.to_thread(
                cli, "silence", "--match", "target=db1", "--duration", "1h", "--reason", "reboot"
            )
            == 0
        )
        assert "silence 1 until" in capsys.readouterr().out
        assert (
            await asyncio.to_thread(
                cli, "maintenance", "--target", "x", "--duration", "2h", "--reason", "UPS swap"
            )
            == 0
        )
        assert "maintenance window 1" in capsys.readouterr().out

        # Defect 10b of issue 13: a 20 s window's end is printed to the second, and it is the
        # end the daemon recorded (the CLI has no config here: times in UTC).
        t0 = time.time()
        assert (
            await asyncio.to_thread(
                cli, "silence", "--match", "target=web1", "--duration", "20s", "--reason", "x"
            )
            == 0
        )
        out = capsys.readouterr().out
        printed = re.fullmatch(rf"silence (\d+) until ({SECOND}) UTC\n", out)
        assert printed, out
        silences = {str(v["id"]): v for v in (await get_json("/api/v1/silences"))["silences"]}
        until = silences[printed.group(1)]["until"]
        assert t0 + 20 <= until <= time.time() + 20
        assert printed.group(2) == second(until)
        assert (
            await asyncio.to_thread(
                cli, "maintenance", "--target", "web1", "--duration", "20s", "--reason", "fan"
            )
            == 0
        )
        out = capsys.readouterr().out
        printed = re.fullmatch(
            rf"maintenance window (\d+) from ({SECOND}) UTC until ({SECOND}) UTC\n", out
        )
        assert printed, out
        windows = {str(w["id"]): w for w in (await get_json("/api/v1/maintenance"))["maintenance"]}
        window = windows[printed.group(1)]
        assert window["end"] - window["start"] == pytest.approx(20)
        assert (printed.group(2), printed.group(3)) == (
            second(window["start"]),
            second(window["end"]),
        )
        daemon.operations.ingest_samples([Sample.of(DRILL_SAMPLE, 0.0, time.time(), DRILL_LABELS)])
        await receiver.wait_for(2, 10)
        assert (
            await asyncio.to_thread(
                cli, "ack", "emergency_drill_overdue", "--note", "scheduling one"
            )
            == 0
        )
        assert "as Li Na" in capsys.readouterr().out
        await receiver.wait_for(4, 5)  # the acknowledgement told to the pair
        with pytest.raises(SystemExit, match=r"404.*no pending or firing alert"):
            await asyncio.to_thread(cli, "ack", "nothing")
        monkeypatch.setenv("DUTYD_API_TOKEN", "wrong")
        with pytest.raises(SystemExit, match="401"):
            await asyncio.to_thread(cli, "ack", "emergency_drill_overdue")
        monkeypatch.setenv("DUTYD_API_TOKEN", TOKEN)

        # `dutyd drill` waits for answers; Zhang Wei answers from his link meanwhile.
        receiver.received.clear()
        drill = asyncio.create_task(
            asyncio.to_thread(cli, "drill", "--wait", "2s", "--speed", "30")
        )
        await receiver.wait_for(2, 5)  # the on-duty pair
        zhang = next(r for r in receiver.received if r["path"] == "/zhang")
        link = re.search(r"http://dutyd\.example(/ack/\S+)", zhang["body"]["message"])
        assert link is not None
        async with (
            aiohttp.ClientSession() as http,
            http.post(base + link.group(1), data={"note": "here"}) as r,
        ):
            assert r.status == 200 and "Drill answered" in await r.text()
        assert await drill == 0
        out = capsys.readouterr().out
        assert "answered: Zhang Wei after" in out and "1 answer(s)" in out
    finally:
        await daemon.stop()
        await receiver.stop()


async def test_cli_logs_in_with_basic_auth_beside_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With basic_auth_users every API call needs a login as well as the token: the CLI sends
    both (the password from the environment or a file, never from the command line), and the
    login is the recorded actor."""
    web_config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pa55 word", bcrypt.gensalt(4)).decode()
    web_config.write_text(f"basic_auth_users:\n  li.na: '{hashed}'\n")
    receiver = Receiver()
    await receiver.start()
    daemon = Daemon(settings(tmp_path, receiver, web_config_file=str(web_config)))
    await daemon.start()
    base = daemon.http.url
    monkeypatch.setenv("DUTYD_API_TOKEN", TOKEN)
    monkeypatch.setenv("DUTYD_ACTOR", "someone.else")
    monkeypatch.delenv("DUTYD_API_USER", raising=False)
    monkeypatch.delenv("DUTYD_API_PASSWORD", raising=False)

    def cli(*argv: str) -> int:
        return main([argv[0], "--url", base, *argv[1:]])

    silence = ("silence", "--match", "target=db1", "--duration", "1h", "--reason", "reboot")
    try:
        # Without a login: refused, and told how to give one.
        with pytest.raises(SystemExit, match=r"401.*--user"):
            await asyncio.to_thread(cli, *silence)

        monkeypatch.setenv("DUTYD_API_USER", "li.na")
        monkeypatch.setenv("DUTYD_API_PASSWORD", "pa55 word")
        assert await asyncio.to_thread(cli, *silence) == 0
        assert "silence 1 until" in capsys.readouterr().out
        assert daemon.operations.list_silences()[0]["actor"] == "li.na"

        # The password from a file, the user from --user.
        monkeypatch.delenv("DUTYD_API_USER")
        monkeypatch.delenv("DUTYD_API_PASSWORD")
        secret = tmp_path / "dutyd.password"
        secret.write_text("pa55 word\n")
        login = ("--user", "li.na", "--password-file", str(secret))
        assert (
            await asyncio.to_thread(
                cli, "maintenance", "--target", "x", "--duration", "2h", "--reason", "UPS", *login
            )
            == 0
        )
        assert "maintenance window 1" in capsys.readouterr().out
        daemon.operations.ingest_samples([Sample.of(DRILL_SAMPLE, 0.0, time.time(), DRILL_LABELS)])
        await receiver.wait_for(2, 10)
        assert await asyncio.to_thread(cli, "ack", "emergency_drill_overdue", *login) == 0
        assert "as li.na" in capsys.readouterr().out  # the login, whatever $DUTYD_ACTOR says
        view = next(
            v for v in daemon.operations.list_alerts() if v["rule"] == "emergency_drill_overdue"
        )
        assert view["acknowledged"]["by"] == "li.na"

        # A wrong password is a 401; a password on the command line is refused unread.
        secret.write_text("wrong\n")
        with pytest.raises(SystemExit, match="401"):
            await asyncio.to_thread(cli, *silence, *login)
        with pytest.raises(SystemExit, match="never on the command line") as refused:
            await asyncio.to_thread(cli, *silence, "--user", "li.na", "--password", "hunter2")
        assert "hunter2" not in str(refused.value)
    finally:
        await daemon.stop()
        await receiver.stop()
