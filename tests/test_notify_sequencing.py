"""Delivery order (pure logic): per recipient and alert, a message waits for the earlier ones."""

from __future__ import annotations

from dutyd.notify.sequencing import DeliveryOrder
from dutyd.storage import OutboxMessage


def row(
    id: str, recipient: str, *fps: str, created: float = 0.0, channel: str = "sms"
) -> OutboxMessage:
    return OutboxMessage(
        id, recipient, "firing", channel, {"fingerprints": list(fps)}, created=created
    )


def test_a_later_message_about_the_same_alert_waits_for_the_earlier() -> None:
    order = DeliveryOrder()
    order.add(row("page-a", "Li Na", "a"))
    order.add(row("page-b", "Li Na", "b"))  # another alert: goes in parallel
    order.add(row("resolve-a", "Li Na", "a"))
    order.add(row("page-a-zhou", "Zhou Min", "a"))  # another person: its own order
    order.add(row("resolve-ab", "Li Na", "a", "b"))  # grouped: waits for both alerts
    assert order.waiting == {"resolve-a", "resolve-ab"}
    order.remove("page-a")
    assert order.waiting == {"resolve-ab"}  # resolve-a is next for "a"
    order.remove("page-b")
    assert order.waiting == {"resolve-ab"}  # still behind resolve-a for "a"
    order.remove("resolve-a")
    assert order.waiting == set()
    assert len(order) == 2 and "resolve-ab" in order


def test_dropping_a_message_lets_the_next_go_and_forwarders_are_apart() -> None:
    order = DeliveryOrder()
    order.add(row("am0-firing", "alertmanager", "a", channel="alertmanager-0"))
    order.add(row("am1-firing", "alertmanager", "a", channel="alertmanager-1"))
    order.add(row("am0-resolved", "alertmanager", "a", channel="alertmanager-0"))
    assert order.waiting == {"am0-resolved"}
    order.remove("am0-firing")
    assert order.waiting == set()
    order.add(row("no-alert", "Li Na"))  # names no alert: never waits
    order.remove("never-queued")
    assert order.waiting == set()


def test_load_rebuilds_the_order_by_creation_time() -> None:
    order = DeliveryOrder()
    order.load(
        [
            row("resolve", "Li Na", "a", created=2.0),
            row("page", "Li Na", "a", created=1.0),
            row("ack", "Li Na", "a", created=1.5),
        ]
    )
    assert order.waiting == {"ack", "resolve"}
    order.remove("page")
    assert order.waiting == {"resolve"}
