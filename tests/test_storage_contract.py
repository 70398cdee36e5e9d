"""The repository contract: what every storage implementation must do, tested through the
`Storage` interface only. Each test runs once per implementation in `IMPLEMENTATIONS`; SQLite and
PostgreSQL (a real server, tests/postgres_fixtures.py) pass all of them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from dutyd.storage import (
    EnvironmentRange,
    EnvironmentReading,
    FencedOut,
    GroupHold,
    GroupMemberRow,
    LogEntry,
    NewLogEntry,
    NewRoomEntry,
    OutboxMessage,
    OutboxStats,
    Storage,
    StoredAlert,
    TargetStatusRow,
)
from dutyd.storage.postgres import PostgresStorage
from dutyd.storage.records import MEMBER_EPOCH_BASE
from dutyd.storage.sqlite import SqliteStorage
from tests.postgres_fixtures import PASSWORD, PostgresServer


def _sqlite(request: pytest.FixtureRequest, tmp: Path) -> Callable[[], Storage]:
    return lambda: SqliteStorage(tmp / "contract.db")


def _postgres(request: pytest.FixtureRequest, tmp: Path) -> Callable[[], Storage]:
    """A database of its own per test on the session's server (tests/postgres_fixtures.py)."""
    server: PostgresServer = request.getfixturevalue("postgres")
    url = server.create_database("t_" + "".join(c if c.isalnum() else "_" for c in tmp.name))
    return lambda: PostgresStorage(url, PASSWORD)


# name -> given the test, a factory of unopened stores on one place that outlives close()
# (for reopening).
IMPLEMENTATIONS: dict[str, Callable[[pytest.FixtureRequest, Path], Callable[[], Storage]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@dataclass
class Store:
    make: Callable[[], Storage]
    s: Storage

    async def reopen(self) -> Storage:
        """A restart: close, then a new store object on the same place."""
        await self.s.close()
        self.s = self.make()
        await self.s.open()
        return self.s


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    factory = IMPLEMENTATIONS[request.param](request, tmp_path)
    st = Store(factory, factory())
    await st.s.open()
    try:
        yield st
    finally:
        await st.s.close()


def alert(fp: str, state: str = "firing", **extra: object) -> StoredAlert:
    return StoredAlert(
        fp, "hot", {"target": "ups1", "room": "机房A"}, "critical", state, 1.0, 2.0, None, 30.5,
        "UPS ups1 on battery", dict(extra),
    )  # fmt: skip


def message(id: str, next_at: float = 100.0, created: float = 100.0, **kw: object) -> OutboxMessage:
    fields: dict[str, object] = {
        "recipient": "Li Na",
        "kind": "firing",
        "channel": "mail",
        "payload": {"title": "告警", "body": "b", "pages": [f"{id}-p1"]},
        "fallbacks": ["sms"],
        "created": created,
        "next_at": next_at,
    }
    fields.update(kw)
    return OutboxMessage(id, **fields)  # type: ignore[arg-type]


# -- alerts ---------------------------------------------------------------------------------------


async def test_alerts_round_trip_replace_delete_and_reopen(store: Store) -> None:
    s = store.s
    assert await s.alerts.load_all() == []
    a = alert("fp1", ack={"by": "li", "at": 5.0}, flapping=[1.0, 2.0])
    await s.alerts.save(a)
    await s.alerts.save(alert("fp2", "pending"))
    assert sorted(await s.alerts.load_all(), key=lambda x: x.fingerprint) == [
        a,
        alert("fp2", "pending"),
    ]
    resolved = alert("fp1", "resolved")
    await s.alerts.save(resolved)  # same fingerprint: replaced, not added
    await s.alerts.delete("fp2")
    await s.alerts.delete("never-there")  # no error
    assert await s.alerts.load_all() == [resolved]
    s = await store.reopen()
    assert await s.alerts.load_all() == [resolved]


# -- silences and maintenance windows -------------------------------------------------------------


async def test_silences_live_until_over_or_ended(store: Store) -> None:
    s = store.s
    first = await s.overlays.add_silence({"target": {"=~": "db.*"}}, 100.0, "li", "patch", 1.0)
    short = await s.overlays.add_silence({"target": "x"}, 50.0, "wang", "short", 2.0)
    assert short > first
    live = await s.overlays.live_silences(now=10.0)
    assert [(x.id, x.matchers, x.until, x.actor, x.reason, x.created) for x in live] == [
        (first, {"target": {"=~": "db.*"}}, 100.0, "li", "patch", 1.0),
        (short, {"target": "x"}, 50.0, "wang", "short", 2.0),
    ]
    assert [x.id for x in await s.overlays.live_silences(now=50.0)] == [first]  # over at 50
    assert await s.overlays.end_silence(first, 60.0, "li")
    assert not await s.overlays.end_silence(first, 61.0, "li")  # already ended
    assert not await s.overlays.end_silence(9999, 61.0, "li")  # no such silence
    assert await s.overlays.live_silences(now=10.0) == [
        x for x in live if x.id == short
    ]  # ended ones stay ended even before their end
    s = await store.reopen()
    assert [x.id for x in await s.overlays.live_silences(now=10.0)] == [short]
    assert await s.overlays.add_silence({}, 10.0, "li", "after restart", 3.0) > short


async def test_windows_ending_after_and_ended(store: Store) -> None:
    s = store.s
    w1 = await s.overlays.add_window(["core-sw1"], {}, 10.0, 20.0, "wang", "IOS upgrade", 1.0)
    w2 = await s.overlays.add_window([], {"room": "A"}, 30.0, 40.0, "li", "aircon", 2.0)
    gone = await s.overlays.add_window(["core-sw2"], {}, 10.0, 20.0, "wang", "cancelled", 3.0)
    assert await s.overlays.end_window(gone, 4.0, "wang")
    assert not await s.overlays.end_window(gone, 5.0, "wang")
    assert not await s.overlays.end_window(9999, 5.0, "wang")
    windows = await s.overlays.windows_ending_after(0.0)
    assert [(w.id, w.targets, w.matchers, w.start, w.end, w.actor, w.reason) for w in windows] == [
        (w1, ["core-sw1"], {}, 10.0, 20.0, "wang", "IOS upgrade"),
        (w2, [], {"room": "A"}, 30.0, 40.0, "li", "aircon"),
    ]
    assert [w.id for w in await s.overlays.windows_ending_after(20.0)] == [w2]  # ends at 20
    s = await store.reopen()
    assert [w.id for w in await s.overlays.windows_ending_after(0.0)] == [w1, w2]


# -- rule events ----------------------------------------------------------------------------------


async def test_rule_events_increases_since_plus_each_series_last_value(store: Store) -> None:
    s = store.s
    await s.rule_events.append([])  # nothing to write is fine
    av, fw = {"target": "av"}, {"target": "fw"}
    await s.rule_events.append(
        [("virus", av, 1.0, 0.0, 7.0), ("virus", av, 5.0, 2.0, 9.0), ("virus", fw, 2.0, 1.0, 3.0)]
    )
    await s.rule_events.append([("virus", fw, 6.0, 0.0, 3.0), ("login", av, 7.0, 4.0, 4.0)])
    # From 4.0: av's increase at 5 (also its last row), fw's last row (no increase), login's.
    assert await s.rule_events.load(since=4.0) == [
        ("virus", av, 5.0, 2.0, 9.0),
        ("virus", fw, 6.0, 0.0, 3.0),
        ("login", av, 7.0, 4.0, 4.0),
    ]
    everything = await s.rule_events.load(since=0.0)
    assert ("virus", av, 1.0, 0.0, 7.0) not in everything  # a baseline without increase
    assert ("virus", fw, 2.0, 1.0, 3.0) in everything
    s = await store.reopen()
    assert await s.rule_events.load(since=0.0) == everything


# -- duty log -------------------------------------------------------------------------------------


async def test_log_ids_order_filters_and_tail(store: Store) -> None:
    s = store.s
    assert await s.log.read() == []
    assert await s.log.first_timestamp() is None
    ids = []
    for i in range(30):
        kind = "alert.firing" if i % 2 else "notify.sent"
        ids.append(await s.log.append(1000.0 + i, kind, "dutyd", f"s{i}", {"i": i}))
    assert ids == sorted(ids) and len(set(ids)) == 30
    assert [e.data["i"] for e in await s.log.read(limit=3)] == [0, 1, 2]
    assert [e.data["i"] for e in await s.log.read(limit=3, newest_first=True)] == [29, 28, 27]
    assert len(await s.log.read(limit=None)) == 30
    # since inclusive, until exclusive; a kind ending in "." is a prefix
    window = await s.log.read(since=1011.0, until=1019.0, kinds=["alert."])
    assert [e.data["i"] for e in window] == [11, 13, 15, 17]
    assert await s.log.read(kinds=["alert"]) == []  # not a prefix without the dot
    assert len(await s.log.read(kinds=["alert.firing", "notify.sent"], limit=None)) == 30
    tail = await s.log.read(kinds=["alert.firing"], limit=2, newest_first=True)
    assert [e.subject for e in tail] == ["s29", "s27"]
    assert [e.data["i"] for e in await s.log.read(subject="s1")] == [1]
    assert [e.subject for e in await s.log.read(subject_prefix="s2")] == [
        "s2",
        *[f"s2{i}" for i in range(10)],
    ]
    assert await s.log.first_timestamp() == 1000.0


async def test_log_prefixes_are_literal(store: Store) -> None:
    """Prefixes match their text only: no wildcards, no case folding."""
    s = store.s
    await s.log.append(1.0, "notify.no_policy", "dutyd", "fp_1", {})
    await s.log.append(2.0, "notify.noXpolicy", "dutyd", "fpX1", {})
    await s.log.append(3.0, "Notify.no_policy", "dutyd", "FP_1", {})
    assert [e.kind for e in await s.log.read(kinds=["notify.no_"])] == []  # "_" is no wildcard
    assert [e.kind for e in await s.log.read(kinds=["notify."])] == [
        "notify.no_policy",
        "notify.noXpolicy",
    ]
    assert [e.subject for e in await s.log.read(subject_prefix="fp_")] == ["fp_1"]
    assert [e.subject for e in await s.log.read(subject_prefix="%")] == []


async def test_log_append_many_keeps_order_and_data_survives_reopen(store: Store) -> None:
    s = store.s
    await s.log.append_many([])
    data = {"summary": "机房 A 温度 31 °C", "nested": {"list": [1, 2.5, None, True]}}
    await s.log.append(5.0, "config.reload", "Zhang Wei", "", {})
    await s.log.append_many(
        [NewLogEntry(3.0, "escalation.firing", "dutyd", f"fp{i}", {"step": i}) for i in range(5)]
        + [NewLogEntry(4.0, "alert.firing", "dutyd", "fpx", data)]
    )
    entries = await s.log.read()
    # Writing order, not timestamp order.
    assert [e.subject for e in entries] == ["", "fp0", "fp1", "fp2", "fp3", "fp4", "fpx"]
    assert entries[-1].data == data and entries[0].actor == "Zhang Wei"
    s = await store.reopen()
    assert await s.log.read() == entries
    new_id = await s.log.append(6.0, "daemon.start", "dutyd", "", {})
    assert new_id > entries[-1].id
    assert await s.log.first_timestamp() == 3.0
    assert isinstance(entries[0], LogEntry)


# -- drills ---------------------------------------------------------------------------------------


async def test_last_answered_drill(store: Store) -> None:
    s = store.s
    assert await s.drills.last_answered_start() is None
    await s.log.append(100.0, "drill.end", "li", "drill-a", {"started": 90.0, "answered": True})
    await s.log.append(300.0, "drill.end", "li", "drill-b", {"started": 290.0, "answered": False})
    await s.log.append(200.0, "drill.start", "li", "drill-c", {"started": 500.0})
    assert await s.drills.last_answered_start() == 90.0  # unanswered and other kinds ignored
    await s.log.append(400.0, "drill.end", "wang", "drill-d", {"answered": True})  # no start
    assert await s.drills.last_answered_start() == 400.0
    s = await store.reopen()
    assert await s.drills.last_answered_start() == 400.0


# -- outbox ---------------------------------------------------------------------------------------


async def test_outbox_enqueue_is_idempotent_by_message_id(store: Store) -> None:
    s = store.s
    m = message("m1")
    assert await s.outbox.enqueue([m, message("m2")]) == ["m1", "m2"]
    # The same message id again, alone or in a batch (even twice in one), adds nothing.
    assert await s.outbox.enqueue([message("m1", channel="other")]) == []
    assert await s.outbox.enqueue([message("m3"), message("m3"), message("m2")]) == ["m3"]
    due = await s.outbox.due(now=1000.0, limit=10)
    assert [x.id for x in due] == ["m1", "m2", "m3"]
    assert due[0] == m  # every field round trips, the first version kept
    assert await s.outbox.enqueue([]) == []


async def test_outbox_due_order_limit_exclude(store: Store) -> None:
    s = store.s
    await s.outbox.enqueue(
        [
            message("late", next_at=300.0, created=1.0),
            message("b", next_at=100.0, created=20.0),
            message("a", next_at=100.0, created=10.0),
            message("first", next_at=50.0, created=30.0),
        ]
    )
    assert [x.id for x in await s.outbox.due(now=100.0, limit=10)] == ["first", "a", "b"]
    assert [x.id for x in await s.outbox.due(now=100.0, limit=2)] == ["first", "a"]
    # Being sent: left out, and the limit still fills from the rest.
    assert [x.id for x in await s.outbox.due(now=100.0, limit=2, exclude={"first"})] == ["a", "b"]
    assert await s.outbox.due(now=10.0, limit=10) == []
    assert await s.outbox.stats(now=100.0) == OutboxStats(4, 1.0, 300.0)
    assert await s.outbox.stats(now=300.0) == OutboxStats(4, 1.0, None)


async def test_outbox_mark_delivered_claims_ids_and_logs_in_one_go(store: Store) -> None:
    s = store.s
    await s.outbox.enqueue([message("m1"), message("m2")])
    entry = NewLogEntry(150.0, "notify.sent", "dutyd", "m1", {"channel": "mail", "attempts": 1})
    await s.outbox.mark_delivered("m1", 150.0, ["m1-p1", "m1-p2"], entry)
    assert [x.id for x in await s.outbox.due(now=1000.0, limit=10)] == ["m2"]
    assert await s.outbox.sent_among(["m1", "m1-p1", "m1-p2", "m2", "zzz"]) == {
        "m1",
        "m1-p1",
        "m1-p2",
    }
    assert await s.outbox.sent_among([]) == set()
    (logged,) = await s.log.read(kinds=["notify.sent"])
    assert (logged.timestamp, logged.subject, logged.data) == (150.0, "m1", entry.data)
    # A delivered id is not queued again (a page regenerated after a restart).
    assert await s.outbox.enqueue([message("m1"), message("m1-p1")]) == []
    await s.outbox.mark_delivered("m2", 160.0)  # without pages or log entry
    assert await s.outbox.stats(now=1000.0) == OutboxStats(0, None, None)
    assert len(await s.log.read()) == 1
    # Forgetting delivered ids older than a horizon lets them be queued again.
    await s.outbox.forget_sent(before=155.0)
    assert await s.outbox.sent_among(["m1", "m1-p1", "m2"]) == {"m2"}
    assert await s.outbox.enqueue([message("m1")]) == ["m1"]


async def test_outbox_many_ids_at_once(store: Store) -> None:
    s = store.s
    ids = [f"page-{i}" for i in range(2500)]
    await s.outbox.enqueue([message("m")])
    await s.outbox.mark_delivered("m", 1.0, ids)
    assert await s.outbox.sent_among([*ids, "nope"]) == set(ids)


async def test_outbox_queued_among_finds_the_pages_of_queued_messages(store: Store) -> None:
    s = store.s
    m1, m2 = message("m1"), message("m2")
    m1.payload = {**m1.payload, "pages": ["p1", "p2"]}
    m2.payload = {**m2.payload, "pages": ["p3"]}
    await s.outbox.enqueue([m1, m2, message("m3")])
    assert await s.outbox.queued_among(["p1", "p3", "p9", "m1"]) == {"p1", "p3"}
    assert await s.outbox.queued_among([]) == set()
    await s.outbox.mark_delivered("m1", 10.0, ["p1", "p2"])
    await s.outbox.drop("m2")
    assert await s.outbox.queued_among(["p1", "p2", "p3"]) == set()  # sent or dropped
    many = message("many")
    many.payload = {**many.payload, "pages": [f"page-{i}" for i in range(1200)]}
    await s.outbox.enqueue([many])
    s = await store.reopen()
    assert await s.outbox.queued_among([f"page-{i}" for i in range(0, 1300, 2)]) == {
        f"page-{i}" for i in range(0, 1200, 2)
    }


async def test_outbox_reschedule_drop_and_reopen(store: Store) -> None:
    s = store.s
    await s.outbox.enqueue([message("m1"), message("m2"), message("m3")])
    (m1,) = [x for x in await s.outbox.due(now=100.0, limit=10) if x.id == "m1"]
    m1.channel, m1.fallbacks = "sms", ["mail"]
    m1.attempts, m1.channel_failures = 3, 0
    m1.next_at, m1.last_error = 400.0, "HTTP 503: " + "x" * 2000
    await s.outbox.reschedule(m1)
    await s.outbox.drop("m2")
    await s.outbox.drop("never-there")
    assert [x.id for x in await s.outbox.due(now=100.0, limit=10)] == ["m3"]
    assert await s.outbox.sent_among(["m2"]) == set()  # dropped is not delivered
    s = await store.reopen()
    (back,) = [x for x in await s.outbox.due(now=400.0, limit=10) if x.id == "m1"]
    assert (back.channel, back.fallbacks, back.attempts, back.next_at) == (
        "sms",
        ["mail"],
        3,
        400.0,
    )
    assert back.last_error.startswith("HTTP 503: ") and 10 < len(back.last_error) <= 500
    assert back.payload == message("m1").payload
    await s.outbox.mark_delivered("m3", 500.0)
    s = await store.reopen()
    assert await s.outbox.sent_among(["m3"]) == {"m3"}
    assert await s.outbox.stats(now=0.0) == OutboxStats(1, 100.0, 400.0)


# -- ack links ------------------------------------------------------------------------------------


async def test_ack_link_nonce_is_single_use_across_restarts(store: Store) -> None:
    s = store.s
    assert await s.ack_links.use("n1", at=1000.0, expires=5000.0)
    assert not await s.ack_links.use("n1", at=1001.0, expires=5000.0)
    assert await s.ack_links.use("n2", at=1001.0, expires=5000.0)
    s = await store.reopen()
    assert not await s.ack_links.use("n1", at=1002.0, expires=5000.0)
    # Long after the link expired the nonce is forgotten (the link no longer verifies).
    assert await s.ack_links.use("n1", at=5000.0 + 86400 + 1, expires=9e9)


# -- room environment -----------------------------------------------------------------------------

H = 3600.0
T, RH = "room_temperature_celsius", "room_humidity_percent"


async def test_environment_folds_hours_and_ranges(store: Store) -> None:
    s = store.s
    env1 = {"room": "A", "target": "env1"}
    env2 = {"room": "B", "target": "env2"}
    await s.environment.record([])
    await s.environment.record(
        [
            EnvironmentReading(10 * H + 60, T, env1, 22.5),
            EnvironmentReading(10 * H + 60, RH, env1, 48.0),
            EnvironmentReading(10 * H + 120, T, env2, 19.0),
        ]
    )
    await s.environment.record([EnvironmentReading(10 * H + 1800, T, env1, 27.1)])  # same hour
    await s.environment.record([EnvironmentReading(12 * H + 5, T, env1, 21.0)])
    await s.environment.record([EnvironmentReading(15 * H, T, env1, 35.0)])
    # [10:30, 15:00): the hour of 10:30 counts, 15:00 does not; ordered by series then name.
    assert await s.environment.ranges(10 * H + 1800, 15 * H) == [
        EnvironmentRange(RH, env1, 48.0, 48.0),
        EnvironmentRange(T, env1, 21.0, 27.1),
        EnvironmentRange(T, env2, 19.0, 19.0),
    ]
    assert await s.environment.ranges(11 * H, 12 * H) == []
    s = await store.reopen()
    assert await s.environment.ranges(12 * H, 16 * H) == [EnvironmentRange(T, env1, 21.0, 35.0)]


async def test_boot_times_replace_and_survive_reopen(store: Store) -> None:
    s = store.s
    assert await s.boot_times.load_all() == {}
    await s.boot_times.save({("db1", "node_uptime_seconds"): 1000.0})
    await s.boot_times.save(
        {("db1", "node_uptime_seconds"): 5000.5, ("sw1", "device_uptime_seconds"): 42.0}
    )
    await s.boot_times.save({})
    s = await store.reopen()
    assert await s.boot_times.load_all() == {
        ("db1", "node_uptime_seconds"): 5000.5,
        ("sw1", "device_uptime_seconds"): 42.0,
    }


async def test_sys_names_replace_and_survive_reopen(store: Store) -> None:
    s = store.s
    assert await s.sys_names.load_all() == {}
    await s.sys_names.save({"127.0.1.1:1161": "core-sw", "127.0.1.2:1161": "access-1"})
    await s.sys_names.save({"127.0.1.2:1161": "access-sw-1"})  # renamed on the device
    await s.sys_names.save({})
    s = await store.reopen()
    assert await s.sys_names.load_all() == {
        "127.0.1.1:1161": "core-sw",
        "127.0.1.2:1161": "access-sw-1",
    }


# -- shared outbox: claims and the fence ----------------------------------------------------------


async def test_outbox_claim_is_exclusive_until_it_runs_out(store: Store) -> None:
    s = store.s
    await s.outbox.enqueue([message("m1"), message("m2")])
    assert await s.outbox.claim("m1", "node-a", 1, now=100.0, until=130.0)
    # Same claimer again: still its own (a retry of the claim call).
    assert await s.outbox.claim("m1", "node-a", 1, now=101.0, until=131.0)
    # Someone else, same or newer epoch, while the claim lasts: refused, and due leaves it out.
    assert not await s.outbox.claim("m1", "node-b", 1, now=110.0, until=140.0)
    assert [x.id for x in await s.outbox.due(now=110.0, limit=10)] == ["m2"]
    # node-a died mid-send: once its claim has run out, it is due again and taken over.
    assert [x.id for x in await s.outbox.due(now=131.0, limit=10)] == ["m1", "m2"]
    assert await s.outbox.claim("m1", "node-b", 1, now=131.0, until=160.0)
    assert not await s.outbox.claim("m1", "node-a", 1, now=132.0, until=160.0)
    # A message that is gone cannot be claimed.
    assert not await s.outbox.claim("nope", "node-a", 1, now=132.0, until=160.0)
    await s.outbox.mark_delivered("m1", 140.0)
    assert not await s.outbox.claim("m1", "node-b", 1, now=141.0, until=170.0)


async def test_outbox_claim_with_a_stale_epoch_is_refused(store: Store) -> None:
    s = store.s
    await s.outbox.enqueue([message("m1"), message("m2"), message("m3")])
    assert await s.outbox.claim("m1", "node-a", 3, now=100.0, until=130.0)
    # node-b took the lease (epoch 4); node-a, hung, continues and tries to claim with 3.
    assert await s.outbox.claim("m2", "node-b", 4, now=101.0, until=131.0)
    assert not await s.outbox.claim("m3", "node-a", 3, now=102.0, until=132.0)
    # raise_fence: the new active fences the old one before its first claim.
    await s.outbox.raise_fence(7)
    await s.outbox.raise_fence(5)  # never lowers
    assert not await s.outbox.claim("m3", "node-b", 4, now=103.0, until=133.0)
    assert await s.outbox.claim("m3", "node-c", 7, now=103.0, until=133.0)
    s = await store.reopen()  # the fence is durable
    await s.outbox.enqueue([message("m4")])
    assert not await s.outbox.claim("m4", "node-b", 6, now=104.0, until=134.0)
    assert await s.outbox.claim("m4", "node-c", 7, now=104.0, until=134.0)


async def test_outbox_shift_moments_moves_the_named_rows_only(store: Store) -> None:
    """After a clock step the daemon moves the rows queued at the step (not newer ones)."""
    s = store.s
    await s.outbox.enqueue(
        [message("m1", 150.0, 100.0), message("m2", 160.0, 101.0), message("m3", 170.0, 102.0)]
    )
    await s.outbox.shift_moments(-60.0, ["m1", "m2"])
    await s.outbox.shift_moments(5.0, [])  # nothing named: nothing moves
    rows = {x.id: (x.next_at, x.created) for x in await s.outbox.due(now=1e9, limit=10)}
    assert rows == {"m1": (90.0, 40.0), "m2": (100.0, 41.0), "m3": (170.0, 102.0)}


async def test_outbox_reschedule_releases_the_claim(store: Store) -> None:
    s = store.s
    await s.outbox.enqueue([message("m1")])
    (m1,) = await s.outbox.due(now=100.0, limit=10)
    assert await s.outbox.claim("m1", "node-a", 1, now=100.0, until=200.0)
    m1.attempts, m1.next_at = 1, 105.0
    await s.outbox.reschedule(m1)  # a failed send: retried later, by whoever is active then
    assert [x.id for x in await s.outbox.due(now=105.0, limit=10)] == ["m1"]
    assert await s.outbox.claim("m1", "node-b", 1, now=105.0, until=200.0)


async def test_outbox_delivered_id_is_never_sent_again_across_nodes(store: Store) -> None:
    """Two nodes race for the same message (both saw it due): one claim wins, the winner
    marks it delivered, and the same message id regenerated by the other node is not queued
    again."""
    s = store.s
    await s.outbox.enqueue([message("m1")])
    a = await s.outbox.claim("m1", "node-a", 2, now=100.0, until=130.0)
    b = await s.outbox.claim("m1", "node-b", 2, now=100.0, until=130.0)
    assert (a, b) == (True, False)
    await s.outbox.mark_delivered("m1", 101.0, ["m1-p1"])
    assert await s.outbox.enqueue([message("m1")]) == []
    assert not await s.outbox.claim("m1", "node-b", 2, now=200.0, until=230.0)
    assert await s.outbox.sent_among(["m1", "m1-p1"]) == {"m1", "m1-p1"}


async def test_outbox_queued_among_names_pages_of_queued_messages(store: Store) -> None:
    s = store.s
    await s.outbox.enqueue([message("m1"), message("m2", payload={"title": "x"})])
    assert await s.outbox.queued_among(["m1-p1", "m2-p1", "zz"]) == {"m1-p1"}
    await s.outbox.mark_delivered("m1", 1.0, ["m1-p1"])
    assert await s.outbox.queued_among(["m1-p1"]) == set()
    assert await s.outbox.queued_among([]) == set()


# -- fencing: every write of an active node carries its epoch -------------------------------------


async def _takeover(s: Storage) -> tuple[int, int]:
    """node-a takes the notifier lease, then hands it to node-b: (a's epoch, b's epoch)."""
    a = await s.cluster.acquire_lease("notifier", "node-a", 30.0)
    await s.cluster.release_lease("notifier", "node-a")
    b = await s.cluster.acquire_lease("notifier", "node-b", 30.0)
    assert b.held_by("node-b") and b.epoch == a.epoch + 1
    return a.epoch, b.epoch


async def test_writes_of_a_stale_epoch_are_refused_and_write_nothing(store: Store) -> None:
    s = store.s
    await s.alerts.save(alert("fp1"))
    await s.outbox.enqueue([message("m1"), message("m2"), message("m3")])
    old, new = await _takeover(s)
    logged = len(await s.log.read())
    m1 = (await s.outbox.due(now=100.0, limit=10))[0]
    m1.attempts, m1.next_at = 1, 500.0
    stale = [
        s.alerts.save(alert("fp1", "resolved"), epoch=old),
        s.alerts.save(alert("fp2"), epoch=old),
        s.alerts.delete("fp1", epoch=old),
        s.log.append(1.0, "alert.firing", "dutyd", "fp1", {}, epoch=old),
        s.log.append_many([NewLogEntry(1.0, "notify.sent", "dutyd", "m1", {})], epoch=old),
        s.rule_events.append([("r", {"port": "1"}, 1.0, 1.0, 1.0)], epoch=old),
        s.outbox.reschedule(m1, epoch=old),
        s.outbox.drop("m2", epoch=old),
        s.outbox.mark_delivered("m3", 150.0, ["m3-p1"], epoch=old),
    ]
    for write in stale:
        with pytest.raises(FencedOut):
            await write
    assert await s.alerts.load_all() == [alert("fp1")]
    assert len(await s.log.read()) == logged
    assert await s.rule_events.load(0.0) == []
    assert [m.id for m in await s.outbox.due(now=100.0, limit=10)] == ["m1", "m2", "m3"]
    assert await s.outbox.sent_among(["m3", "m3-p1"]) == set()
    # The holder's epoch (and unfenced writes, epoch None) go through.
    assert await s.alerts.save(alert("fp2"), epoch=new) == 2.0
    await s.log.append(1.0, "alert.firing", "dutyd", "fp2", {}, epoch=new)
    await s.rule_events.append([("r", {"port": "1"}, 1.0, 1.0, 1.0)], epoch=new)
    await s.outbox.reschedule(m1, epoch=new)
    await s.outbox.drop("m2", epoch=new)
    await s.outbox.mark_delivered("m3", 150.0, ["m3-p1"], epoch=new)
    await s.alerts.delete("fp1", epoch=new)
    assert [a.fingerprint for a in await s.alerts.load_all()] == ["fp2"]
    assert [m.id for m in await s.outbox.due(now=600.0, limit=10)] == ["m1"]
    assert await s.outbox.sent_among(["m3", "m3-p1"]) == {"m3", "m3-p1"}
    s = await store.reopen()  # the fence is the store's, not the connection's
    with pytest.raises(FencedOut):
        await s.alerts.save(alert("fp2", "resolved"), epoch=old)


async def test_a_stale_delivery_fails_alone_among_deliveries_that_end_together(
    store: Store,
) -> None:
    s = store.s
    await s.outbox.enqueue([message("m1"), message("m2")])
    old, new = await _takeover(s)
    results = await asyncio.gather(
        s.outbox.mark_delivered("m1", 150.0, epoch=old),
        s.outbox.mark_delivered("m2", 150.0, epoch=new),
        return_exceptions=True,
    )
    assert isinstance(results[0], FencedOut) and results[1] is None
    assert await s.outbox.sent_among(["m1", "m2"]) == {"m2"}


async def test_an_outages_first_firing_time_is_recorded_once(store: Store) -> None:
    """Page ids are built from `fired_at`: a later writer of the same outage (a node whose
    copy fired a moment later) never moves it; a new outage (after a resolve) has its own."""
    s = store.s
    first = alert("fp1")  # active_since 1.0, fired_at 2.0
    assert await s.alerts.save(first) == 2.0
    later = replace(first, active_since=3.0, fired_at=4.0)
    assert await s.alerts.save(later) == 2.0
    (row,) = await s.alerts.load_all()
    assert (row.active_since, row.fired_at) == (1.0, 2.0)
    resolved = replace(first, state="resolved", resolved_at=5.0)
    assert await s.alerts.save(resolved) == 2.0
    again = replace(first, active_since=6.0, fired_at=7.0)
    assert await s.alerts.save(again) == 7.0
    pending = replace(first, state="pending", fired_at=None)
    await s.alerts.delete("fp1")
    assert await s.alerts.save(pending) is None
    assert await s.alerts.save(replace(first, fired_at=9.0)) == 9.0


async def test_an_outages_page_key_is_kept_with_its_first_firing(store: Store) -> None:
    """The page key (`key_at` in `extra`) is the first writer's, to the last digit, while the
    outage lasts: a node that loads the row pages under the ids the first writer paged under,
    though a later writer (a node whose copy fired a moment later) saved its own key. What
    else `extra` holds (an ack) is the later writer's."""
    s = store.s
    key = 1765130401.1234567  # more digits than a REAL printed with 15 keeps
    first = alert("fp1", key_at=key, ack=None)
    assert await s.alerts.save(first) == 2.0
    later = replace(
        first, fired_at=4.0, extra={"key_at": 1765130404.9876543, "ack": {"by": "Li Na"}}
    )
    assert await s.alerts.save(later) == 2.0
    (row,) = await s.alerts.load_all()
    assert row.extra == {"key_at": key, "ack": {"by": "Li Na"}}
    # Recorded with its duty-log entry: the same.
    entry = NewLogEntry(5.0, "alert.firing", "dutyd", "fp1", {"rule": "hot"})
    assert await s.alerts.record("fp1", replace(later, fired_at=5.0), entry) == 2.0
    (row,) = await s.alerts.load_all()
    assert row.extra["key_at"] == key
    # A row written before keys were kept (none): still none, the loader keys on `fired_at`.
    await s.alerts.save(alert("fp2"))
    await s.alerts.save(replace(alert("fp2"), fired_at=4.0, extra={"key_at": 4.0}))
    rows = {r.fingerprint: r for r in await s.alerts.load_all()}
    assert (rows["fp2"].fired_at, rows["fp2"].extra) == (2.0, {"key_at": None})
    # A new outage (after a resolve) has its own key.
    await s.alerts.save(replace(later, state="resolved", resolved_at=6.0))
    again = replace(first, fired_at=7.0, extra={"key_at": 7.0})
    assert await s.alerts.save(again) == 7.0
    rows = {r.fingerprint: r for r in await s.alerts.load_all()}
    assert rows["fp1"].extra == {"key_at": 7.0}


async def test_alert_shift_moments_moves_the_kept_first_firing(store: Store) -> None:
    """A single node's clock re-anchored onto a stepped system clock moves its alerts' times;
    `save` alone would keep the outage's first firing where it was."""
    s = store.s
    first = alert("fp1")  # active_since 1.0, fired_at 2.0
    await s.alerts.save(first)
    await s.alerts.save(replace(first, state="pending", fired_at=None, fingerprint="fp2"))
    await s.alerts.shift_moments(3600.0)
    assert await s.alerts.save(replace(first, active_since=3601.0, fired_at=3602.0)) == 3602.0
    rows = {row.fingerprint: row for row in await s.alerts.load_all()}
    assert (rows["fp1"].active_since, rows["fp1"].fired_at) == (3601.0, 3602.0)
    assert (rows["fp2"].active_since, rows["fp2"].fired_at) == (3601.0, None)


async def test_an_alert_event_is_its_row_and_its_log_entry_in_one_transaction(
    store: Store,
) -> None:
    s = store.s
    firing = NewLogEntry(2.0, "alert.firing", "dutyd", "fp1", {"rule": "hot"})
    assert await s.alerts.record("fp1", alert("fp1"), firing) == 2.0
    assert await s.alerts.load_all() == [alert("fp1")]
    old, new = await _takeover(s)
    gone = NewLogEntry(3.0, "alert.inactive", "dutyd", "fp1", {})
    with pytest.raises(FencedOut):  # stale: neither the row nor the entry
        await s.alerts.record("fp1", None, gone, epoch=old)
    assert await s.alerts.load_all() == [alert("fp1")]
    assert [e.kind for e in await s.log.read(subject="fp1")] == ["alert.firing"]
    assert await s.alerts.record("fp1", None, gone, epoch=new) is None
    assert await s.alerts.load_all() == []
    assert [e.kind for e in await s.log.read(subject="fp1")] == ["alert.firing", "alert.inactive"]


async def test_claims_of_an_older_epoch_are_void_once_the_lease_moved(store: Store) -> None:
    """The new active sends a dead node's claimed messages at once, not when the claim ends."""
    s = store.s
    await s.outbox.enqueue([message("m1")])
    a = await s.cluster.acquire_lease("notifier", "node-a", 30.0)
    assert await s.outbox.claim("m1", "node-a", a.epoch, now=100.0, until=1000.0)
    assert await s.outbox.due(now=101.0, limit=10) == []
    assert not await s.outbox.claim("m1", "node-b", a.epoch, now=101.0, until=1000.0)
    _, new = await _takeover(s)
    assert [m.id for m in await s.outbox.due(now=101.0, limit=10)] == ["m1"]
    assert await s.outbox.claim("m1", "node-b", new, now=101.0, until=1000.0)
    assert await s.outbox.due(now=102.0, limit=10) == []
    assert not await s.outbox.claim("m1", "node-a", a.epoch, now=102.0, until=1000.0)


# -- cluster: members, the lease and its epoch, targets' status -----------------------------------


async def test_cluster_members_heartbeat_and_leave(store: Store) -> None:
    s = store.s
    assert await s.cluster.members() == ([], pytest.approx(time.time(), abs=60))
    t1 = await s.cluster.heartbeat("node-b", "http://127.0.0.1:2", None, 10.0)
    await s.cluster.heartbeat("node-a", "http://127.0.0.1:1", "branch", 11.0)
    await asyncio.sleep(0.01)
    t2 = await s.cluster.heartbeat("node-b", "http://127.0.0.1:3", None, 10.0)
    assert t2 > t1
    members, now = await s.cluster.members()
    assert [(m.node, m.address, m.shard, m.started) for m in members] == [
        ("node-a", "http://127.0.0.1:1", "branch", 11.0),
        ("node-b", "http://127.0.0.1:3", None, 10.0),
    ]
    assert members[1].last_seen == t2 and now >= t2
    await s.cluster.leave("node-a")
    s = await store.reopen()
    assert [m.node for m in (await s.cluster.members())[0]] == ["node-b"]


async def test_cluster_lease_renewed_by_holder_taken_over_when_it_runs_out(store: Store) -> None:
    s = store.s
    assert await s.cluster.lease("notifier") is None
    a = await s.cluster.acquire_lease("notifier", "node-a", ttl=0.6)
    assert a.held_by("node-a") and a.epoch == 1
    b = await s.cluster.acquire_lease("notifier", "node-b", ttl=0.6)
    assert not b.held_by("node-b") and b.holder == "node-a" and b.epoch == 1
    renewed = await s.cluster.acquire_lease("notifier", "node-a", ttl=0.6)
    assert renewed.held_by("node-a") and renewed.epoch == 1 and renewed.expires > a.expires
    await asyncio.sleep(0.8)  # node-a hangs past its lease
    b = await s.cluster.acquire_lease("notifier", "node-b", ttl=5)
    assert b.held_by("node-b") and b.epoch == 2
    # node-a continues: it does not get the lease back, and its claims are fenced.
    a = await s.cluster.acquire_lease("notifier", "node-a", ttl=5)
    assert not a.held_by("node-a") and a.holder == "node-b"
    await s.outbox.enqueue([message("m1")])
    assert not await s.outbox.claim("m1", "node-a", 1, now=100.0, until=130.0)
    assert await s.outbox.claim("m1", "node-b", 2, now=100.0, until=130.0)
    # A clean stop hands over at once, with a new epoch.
    await s.cluster.release_lease("notifier", "node-a")  # not the holder: no effect
    assert (await s.cluster.lease("notifier")).held_by("node-b")  # type: ignore[union-attr]
    await s.cluster.release_lease("notifier", "node-b")
    a = await s.cluster.acquire_lease("notifier", "node-a", ttl=5)
    assert a.held_by("node-a") and a.epoch == 3
    s = await store.reopen()
    lease = await s.cluster.lease("notifier")
    assert lease is not None and lease.held_by("node-a") and lease.epoch == 3


async def test_cluster_lease_one_winner_when_nodes_race(store: Store) -> None:
    s = store.s
    results = await asyncio.gather(
        *(s.cluster.acquire_lease("notifier", f"node-{i}", ttl=30) for i in range(5))
    )
    winners = {r.holder for r in results if r.held_by(r.holder) and r.holder}
    assert len(winners) == 1 and all(r.epoch == 1 for r in results)


async def test_cluster_target_status_published_and_read(store: Store) -> None:
    s = store.s
    await s.cluster.publish_targets([])
    await s.cluster.publish_targets(
        [
            TargetStatusRow("ups1", "node-a", False, "timeout", 5.0, 6.0),
            TargetStatusRow("sw1", "node-b", True, "", 4.0, 6.0),
        ]
    )
    await s.cluster.publish_targets([TargetStatusRow("ups1", "node-b", True, "", 9.0, 10.0)])
    assert await s.cluster.target_statuses() == [
        TargetStatusRow("sw1", "node-b", True, "", 4.0, 6.0),
        TargetStatusRow("ups1", "node-b", True, "", 9.0, 10.0),
    ]


def hold(series: str, holds: bool, rule: str = "ups_on_battery", site: str = "机房A") -> GroupHold:
    return GroupHold(rule, {"site": site}, {"target": series, "site": site}, holds)


async def test_cluster_group_members_published_replaced_by_the_new_owner_and_read(
    store: Store,
) -> None:
    s = store.s
    await s.cluster.publish_group_members("node-a", [], forget_after=60)
    assert await s.cluster.group_members(max_age=60) == []
    await s.cluster.publish_group_members(
        "node-a", [hold("ups2", True), hold("ups1", False), hold("ups9", True, rule="a")], 60
    )
    await s.cluster.publish_group_members("node-b", [hold("ups3", True, site="hq")], 60)
    # ups1 moved to node-b: its row is node-b's now, with node-b's hold.
    await s.cluster.publish_group_members("node-b", [hold("ups1", True)], 60)
    rows = await s.cluster.group_members(max_age=60)
    assert [(r.rule, r.group, r.series, r.holds, r.node) for r in rows] == [
        ("a", {"site": "机房A"}, {"site": "机房A", "target": "ups9"}, True, "node-a"),
        ("ups_on_battery", {"site": "hq"}, {"site": "hq", "target": "ups3"}, True, "node-b"),
        ("ups_on_battery", {"site": "机房A"}, {"site": "机房A", "target": "ups1"}, True, "node-b"),
        ("ups_on_battery", {"site": "机房A"}, {"site": "机房A", "target": "ups2"}, True, "node-a"),
    ]
    assert all(r.updated == pytest.approx(time.time(), abs=60) for r in rows)
    moved = next(r for r in rows if r.series["target"] == "ups1")
    assert moved.updated >= max(r.updated for r in rows if r.node == "node-a")
    s = await store.reopen()
    assert await s.cluster.group_members(max_age=60) == rows


async def test_cluster_group_members_too_old_are_left_out_then_forgotten(store: Store) -> None:
    s = store.s
    await s.cluster.publish_group_members("node-c", [hold("ups1", True)], forget_after=60)
    await asyncio.sleep(0.4)  # node-c dies; node-a goes on publishing
    await s.cluster.publish_group_members("node-a", [hold("ups2", False)], forget_after=60)
    fresh = await s.cluster.group_members(max_age=0.3)
    assert [(r.series["target"], r.node) for r in fresh] == [("ups2", "node-a")]
    assert len(await s.cluster.group_members(max_age=60)) == 2  # not yet forgotten
    await s.cluster.publish_group_members("node-a", [hold("ups2", True)], forget_after=0.3)
    rows = await s.cluster.group_members(max_age=60)
    assert rows == [
        GroupMemberRow(
            "ups_on_battery", {"site": "机房A"}, {"site": "机房A", "target": "ups2"}, True,
            "node-a", rows[0].updated,
        )
    ]  # fmt: skip


# -- the entry register ---------------------------------------------------------------------------


def entry(ts: float, room: str, person: str, direction: str = "in", **kw: object) -> NewRoomEntry:
    return NewRoomEntry(ts, room, person, direction, **kw)  # type: ignore[arg-type]


async def test_room_entries_append_read_and_who_is_inside(store: Store) -> None:
    s = store.s
    assert await s.room_entries.inside() == []
    assert await s.room_entries.append([]) == []
    first = entry(
        10.0, "机房A", "张伟", companions=("Li Na",), purpose="更换硬盘 disk swap",
        items="2 × 硬盘 SAS 1.2 TB", actor="张伟",
    )  # fmt: skip
    ids = await s.room_entries.append([first, entry(10.0, "机房A", "Li Na", actor="张伟")])
    assert ids == sorted(ids) and len(set(ids)) == 2
    (more,) = await s.room_entries.append([entry(20.0, "room-b", "Zhao Min", approved_by="Wang")])
    assert more > ids[1]
    await s.room_entries.append([entry(30.0, "机房A", "Li Na", "out", items="old disk")])
    everything = await s.room_entries.read()
    assert [(e.timestamp, e.room, e.person, e.direction) for e in everything] == [
        (10.0, "机房A", "张伟", "in"),
        (10.0, "机房A", "Li Na", "in"),
        (20.0, "room-b", "Zhao Min", "in"),
        (30.0, "机房A", "Li Na", "out"),
    ]
    one = everything[0]
    assert (one.id, one.companions, one.purpose, one.items, one.approved_by, one.actor) == (
        ids[0], ("Li Na",), "更换硬盘 disk swap", "2 × 硬盘 SAS 1.2 TB", "", "张伟",
    )  # fmt: skip
    assert [e.person for e in await s.room_entries.read(since=10.5, until=30.0)] == ["Zhao Min"]
    assert [e.direction for e in await s.room_entries.read(room="机房A")] == ["in", "in", "out"]
    assert len(await s.room_entries.read(limit=2)) == 2
    # Li Na left; Zhang Wei and Zhao Min are still in.
    assert [(e.room, e.person) for e in await s.room_entries.inside()] == [
        ("机房A", "张伟"),
        ("room-b", "Zhao Min"),
    ]
    # In again later: the latest line counts.
    await s.room_entries.append([entry(40.0, "机房A", "Li Na", purpose="cabling")])
    s = await store.reopen()
    inside = await s.room_entries.inside()
    assert [(e.person, e.purpose) for e in inside] == [
        ("张伟", "更换硬盘 disk swap"),
        ("Zhao Min", ""),
        ("Li Na", "cabling"),
    ]
    assert len(await s.room_entries.read()) == 5


async def test_room_entries_refuse_a_direction_other_than_in_or_out(store: Store) -> None:
    with pytest.raises(ValueError, match="in or out"):
        await store.s.room_entries.append([entry(1.0, "A", "x", "sideways")])
    assert await store.s.room_entries.read() == []


# -- the equipment register -----------------------------------------------------------------------


async def test_equipment_facts_latest_as_of_and_history(store: Store) -> None:
    s = store.s
    assert await s.equipment.latest() == []
    ups = {"vendor": "Acme", "model": "Smart-UPS 3000", "serial": "AS1234"}
    first = await s.equipment.record(10.0, "ups1", "nut", ups)
    await s.equipment.record(11.0, "sw1", "snmp", {"name": "核心交换机", "firmware": "16.12"})
    swapped = {**ups, "serial": "AS9999"}
    later = await s.equipment.record(20.0, "ups1", "nut", swapped)
    assert later > first
    latest = await s.equipment.latest()
    assert [(f.target, f.kind, f.facts) for f in latest] == [
        ("sw1", "snmp", {"name": "核心交换机", "firmware": "16.12"}),
        ("ups1", "nut", swapped),
    ]
    # As of a moment before the swap.
    assert [(f.target, f.facts) for f in await s.equipment.latest(until=15.0)] == [
        ("sw1", {"name": "核心交换机", "firmware": "16.12"}),
        ("ups1", ups),
    ]
    history = await s.equipment.history(10.5, 25.0)
    assert [(f.timestamp, f.target) for f in history] == [(11.0, "sw1"), (20.0, "ups1")]
    s = await store.reopen()
    assert [f.id for f in await s.equipment.latest()] == [latest[0].id, later]


# -- retention --------------------------------------------------------------------------------

DAY = 86400.0


async def test_retention_prunes_the_duty_log_before_the_cut_in_batches(store: Store) -> None:
    s = store.s
    await s.log.append_many(
        [NewLogEntry(float(t), "alert.firing", "dutyd", f"fp{t}", {}) for t in range(1, 26)]
    )
    assert await s.log.prune(11.0, 4) == 4  # a batch at most
    assert await s.log.prune(11.0, 100) == 6
    assert await s.log.prune(11.0, 100) == 0
    kept = await s.log.read(limit=None)
    assert [e.timestamp for e in kept] == [float(t) for t in range(11, 26)]
    await s.compact()  # the space back; nothing read changes
    assert len(await s.log.read(limit=None)) == 15


async def test_retention_prunes_environment_hours_before_the_cut(store: Store) -> None:
    s = store.s
    hours = [0.0, 3600.0, 7200.0, 10800.0]
    await s.environment.record(
        [
            EnvironmentReading(h + 10, "temperature_celsius", {"sensor": "a"}, 20.0 + i)
            for i, h in enumerate(hours)
        ]
    )
    # The cut falls inside an hour: that hour is kept whole.
    assert await s.environment.prune(7200.0 + 1800, 100) == 2
    (kept,) = await s.environment.ranges(0.0, 4 * 3600.0)
    assert (kept.min, kept.max) == (22.0, 23.0)


async def test_retention_keeps_each_series_last_rule_event(store: Store) -> None:
    s = store.s
    await s.rule_events.append(
        [
            ("resets", {"target": "a"}, 10.0, 1.0, 5.0),
            ("resets", {"target": "a"}, 20.0, 1.0, 6.0),
            ("resets", {"target": "b"}, 15.0, 1.0, 9.0),  # b's latest, old as it is
            ("resets", {"target": "a"}, 500.0, 1.0, 7.0),
        ]
    )
    assert await s.rule_events.prune(100.0, 100) == 2  # a's two old rows; b's only row stays
    rows = await s.rule_events.load(100.0)
    assert sorted((r[1]["target"], r[2], r[4]) for r in rows) == [
        ("a", 500.0, 7.0),
        ("b", 15.0, 9.0),
    ]


async def test_retention_prunes_overlays_over_long_ago_and_keeps_live_ones(store: Store) -> None:
    s = store.s
    now = 200 * DAY
    old = await s.overlays.add_silence({"target": "a"}, now - 100 * DAY, "li", "old", 1.0)
    ended = await s.overlays.add_silence({"target": "b"}, now + DAY, "li", "ended early", 2.0)
    await s.overlays.end_silence(ended, now - 95 * DAY, "li")
    live = await s.overlays.add_silence({"target": "c"}, now + DAY, "li", "live", 3.0)
    recent = await s.overlays.add_silence({"target": "d"}, now - DAY, "li", "recent", 4.0)
    w_old = await s.overlays.add_window(["a"], {}, 1.0, now - 100 * DAY, "li", "old", 1.0)
    w_future = await s.overlays.add_window(["b"], {}, now + DAY, now + 2 * DAY, "li", "next", 1.0)
    assert await s.overlays.prune(now - 90 * DAY, 100) == 3
    assert [x.id for x in await s.overlays.live_silences(now - 2 * DAY)] == [live, recent]
    assert [w.id for w in await s.overlays.windows_ending_after(0.0)] == [w_future]
    assert old not in {x.id for x in await s.overlays.live_silences(0.0)}
    assert w_old not in {w.id for w in await s.overlays.windows_ending_after(0.0)}


# -- fencing a shard agent's writes: member epochs ------------------------------------------------


async def _epoch_of(s: Storage, node: str) -> int:
    members, _ = await s.cluster.members()
    return next(m.epoch for m in members if m.node == node)


async def test_a_shard_agents_writes_are_fenced_by_its_member_epoch(store: Store) -> None:
    """An agent's writes carry its member epoch. Once its heartbeat is older than its member
    timeout (the others count it dead and take its targets) they are refused; its next
    heartbeat gives it a new epoch, so writes made on its old state stay refused; a restart
    or a leave does the same. Lease epochs are judged by the fence as before."""
    s = store.s
    await s.cluster.heartbeat("node-a", "a", None, 10.0, stale_after=0.5)
    await s.cluster.heartbeat("node-b", "b", None, 10.0, stale_after=30.0)
    first = await _epoch_of(s, "node-a")
    assert first >= MEMBER_EPOCH_BASE and first != await _epoch_of(s, "node-b")
    await s.cluster.heartbeat("node-a", "a", None, 10.0, stale_after=0.5)
    assert await _epoch_of(s, "node-a") == first  # a live agent keeps its epoch

    status = TargetStatusRow("ups1", "node-a", True, "", 9.0, 10.0)
    firing = NewLogEntry(2.0, "alert.firing", "dutyd", "fp1", {})
    hold = GroupHold("r", {"room": "A"}, {"target": "ups1"}, True)

    def writes(epoch: int) -> list[Any]:
        return [
            s.alerts.save(alert("fp1"), epoch=epoch),
            s.alerts.record("fp1", alert("fp1"), firing, epoch),
            s.log.append(1.0, "alert.pending", "dutyd", "fp1", {}, epoch=epoch),
            s.rule_events.append([("r", {"port": "1"}, 1.0, 1.0, 1.0)], epoch=epoch),
            s.cluster.publish_targets([status], epoch),
            s.cluster.publish_group_members("node-a", [hold], 60.0, epoch),
        ]

    for write in writes(first):
        await write
    assert [a.fingerprint for a in await s.alerts.load_all()] == ["fp1"]
    await s.alerts.delete("fp1", epoch=first)
    logged = len(await s.log.read())
    # Frozen past its member timeout: refused, and nothing written.
    await asyncio.sleep(0.7)
    for write in writes(first):
        with pytest.raises(FencedOut, match="past its member timeout"):
            await write
    # It continues: its next heartbeat gives it a new epoch; the old one stays refused.
    await s.cluster.heartbeat("node-a", "a", None, 10.0, stale_after=0.5)
    second = await _epoch_of(s, "node-a")
    assert second > first
    for write in writes(first):
        with pytest.raises(FencedOut, match="joined again"):
            await write
    assert await s.alerts.load_all() == []
    assert len(await s.log.read()) == logged
    assert await s.cluster.target_statuses() == [status]
    # The new epoch writes; a restart (another start time) and a leave end it too.
    await s.alerts.save(alert("fp2"), epoch=second)
    await s.cluster.heartbeat("node-a", "a", None, 20.0, stale_after=0.5)
    third = await _epoch_of(s, "node-a")
    assert third > second
    with pytest.raises(FencedOut):
        await s.alerts.save(alert("fp2"), epoch=second)
    await s.cluster.leave("node-a")
    with pytest.raises(FencedOut):
        await s.alerts.save(alert("fp2"), epoch=third)
    s = await store.reopen()
    await s.cluster.heartbeat("node-a", "a", None, 20.0, stale_after=0.5)
    assert await _epoch_of(s, "node-a") > third  # never given twice, across a restart
    # The lease's epochs are the fence's business, as before.
    lease = await s.cluster.acquire_lease("notifier", "node-b", 30.0)
    await s.alerts.save(alert("fp3"), epoch=lease.epoch)
