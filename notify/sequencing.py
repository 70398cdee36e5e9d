"""Delivery order: what a person hears about one alert arrives in the order it was said.

Each outbox row backs off on its own (with jitter), so without an order a retried page could
arrive after its own resolve. The rule kept here: a queued message waits while an earlier
queued message to the same recipient is about one of the same alerts (its page before its
acknowledgement before its resolve), however long that one takes, through retries and
failover. Messages about other alerts do not wait: a burst of a thousand alerts to one person
goes out in parallel, and one undeliverable page does not hold up every later one.

The queue order is the order the service wrote the rows (`created`, strictly increasing per
service, then id after a restart).
"""

from __future__ import annotations

from collections.abc import Iterable

from dutyd.storage import OutboxMessage

ChainKey = tuple[str, str]  # (recipient, alert fingerprint)


def recipient_key(message: OutboxMessage) -> str:
    """Who the order is kept for: the person or group channel; each Alertmanager forwarder
    (they share the recipient name "alertmanager") on its own."""
    if message.recipient == "alertmanager":
        return f"alertmanager/{message.channel}"
    return message.recipient


class DeliveryOrder:
    """The queued messages in order, per recipient and alert; `waiting` are those that must
    not be attempted yet."""

    def __init__(self) -> None:
        # Insertion-ordered dicts as ordered sets: the head is the first key.
        self._chains: dict[ChainKey, dict[str, None]] = {}
        self._member: dict[str, tuple[ChainKey, ...]] = {}
        self.waiting: set[str] = set()

    def __len__(self) -> int:
        return len(self._member)

    def ids(self) -> list[str]:
        """The queued messages' ids."""
        return list(self._member)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._member

    def add(self, message: OutboxMessage) -> None:
        """A message just queued (after every message queued before it)."""
        if message.id in self._member:
            return
        who = recipient_key(message)
        keys = tuple((who, str(fp)) for fp in message.payload.get("fingerprints") or ())
        self._member[message.id] = keys
        for key in keys:
            chain = self._chains.setdefault(key, {})
            if chain:
                self.waiting.add(message.id)
            chain[message.id] = None

    def remove(self, message_id: str) -> None:
        """A message delivered or dropped: the next ones about its alerts may go."""
        keys = self._member.pop(message_id, ())
        self.waiting.discard(message_id)
        for key in keys:
            chain = self._chains.get(key)
            if chain is None:
                continue
            chain.pop(message_id, None)
            if not chain:
                del self._chains[key]
                continue
            head = next(iter(chain))
            if head in self.waiting and self._is_head(head):
                self.waiting.discard(head)

    def _is_head(self, message_id: str) -> bool:
        return all(next(iter(self._chains[k])) == message_id for k in self._member[message_id])

    def load(self, messages: Iterable[OutboxMessage]) -> None:
        """Rebuild from the stored queue (at start, or when it changed behind our back)."""
        self._chains.clear()
        self._member.clear()
        self.waiting.clear()
        for m in sorted(messages, key=lambda m: (m.created, m.id)):
            self.add(m)
