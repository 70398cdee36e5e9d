"""Config sections for the end-to-end tests that count pages: a target that does not answer
fires a rule (`target_down_rule`), and one person is paged about every alert at once
(`li_na_paged`)."""

from __future__ import annotations

from typing import Any

from tests.test_notify_delivery import Receiver


def target_down_rule(name: str, for_: str = "0s", severity: str = "critical") -> dict[str, Any]:
    """A custom rule `name`: `target_up` below 1 for `for_`, "{target} is down"."""
    return {
        "name": name,
        "metric": "target_up",
        "condition": {"below": 1},
        "for": for_,
        "severity": severity,
        "summary": "{target} is down",
    }


def li_na_paged(receiver: Receiver) -> dict[str, Any]:
    """The `oncall`, `notify` and `escalation` sections: Li Na, on the receiver's path `li`,
    paged at once about every alert, each in a message of its own."""
    return {
        "oncall": {"people": [{"name": "Li Na", "contacts": ["phone"]}]},
        "notify": {"channels": {"phone": {"url": receiver.url("li")}}, "group_wait": "0s"},
        "escalation": {"policies": [{"name": "all", "steps": [{"people": ["Li Na"]}]}]},
    }
