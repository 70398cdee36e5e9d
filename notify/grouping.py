"""Grouping: pages of one kind for one recipient and one site that come due within the
grouping window go out as one message (a switch and the fifty hosts behind it fail together).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from dutyd.notify.escalation import Page, Recipient

GroupKey = tuple[Recipient, str, str]  # recipient, page kind, site


def page_id(page: Page, recipient: Recipient) -> str:
    """Stable id of one page to one recipient (dedup across restarts and regrouping)."""
    return hashlib.sha256(f"{page.key}|{recipient}".encode()).hexdigest()[:24]


def message_id(pages: list[Page], recipient: Recipient) -> str:
    """Stable id of a grouped message: the same pages to the same recipient, the same id."""
    keys = "\n".join(sorted(p.key for p in pages))
    return hashlib.sha256(f"{keys}|{recipient}".encode()).hexdigest()[:24]


@dataclass
class Grouper:
    """Collects pages; `add` tells the caller when a new group opens so it can schedule the
    flush `window` seconds later (the first page of a group is never held longer)."""

    window: float
    groups: dict[GroupKey, list[Page]] = field(default_factory=dict)

    def add(self, page: Page, on_new: Callable[[GroupKey], None]) -> None:
        for r in page.recipients:
            key = (r, str(page.kind), page.site)
            group = self.groups.get(key)
            if group is None:
                self.groups[key] = [page]
                on_new(key)
            else:
                group.append(page)

    def take(self, key: GroupKey) -> list[Page]:
        return self.groups.pop(key, [])
