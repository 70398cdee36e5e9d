"""Config sections for the end-to-end tests that count pages: a target that does not answer
fires a rule (`target_down_rule`; the HA and shard tests' `svc_down_rule`), and one person is
paged about every alert at once (`li_na_paged`, or as the on-duty engineer: `li_na_on_duty`)."""

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


def svc_down_rule(**changes: Any) -> dict[str, Any]:
    """The HA and shard tests' custom rule `svc_down`: `target_up` equals 0, critical, at once,
    "{target} is down"; `changes` replace or add keys."""
    return {
        "name": "svc_down",
        "metric": "target_up",
        "condition": {"equals": 0},
        "for": "0s",
        "severity": "critical",
        "summary": "{target} is down",
        **changes,
    }


def li_na_paged(receiver: Receiver) -> dict[str, Any]:
    """The `oncall`, `notify` and `escalation` sections: Li Na, on the receiver's path `li`,
    paged at once about every alert, each in a message of its own."""
    return {
        "oncall": {"people": [{"name": "Li Na", "contacts": ["phone"]}]},
        "notify": {"channels": {"phone": {"url": receiver.url("li")}}, "group_wait": "0s"},
        "escalation": {"policies": [{"name": "all", "steps": [{"people": ["Li Na"]}]}]},
    }


def li_na_on_duty(receiver: Receiver) -> dict[str, Any]:
    """The `oncall`, `notify` and `escalation` sections: Li Na on duty (the only pair), on the
    receiver's path `li`, paged at once about every alert by the on-duty step."""
    return {
        "oncall": {
            "pairs": [["Li Na"]],
            "people": [{"name": "Li Na", "contacts": ["phone"]}],
        },
        "notify": {
            "channels": {"phone": {"url": receiver.url("li")}},
            "group_wait": "0s",
        },
        "escalation": {"policies": [{"name": "all", "steps": [{"oncall": True}]}]},
    }
