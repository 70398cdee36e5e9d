"""A switch and the application behind it (`depends_on`), for the end-to-end tests of the
dependency hold: who is paged about the application, and when."""

from __future__ import annotations

from typing import Any

from tests.test_notify_delivery import Receiver


def application_target(url: str) -> dict[str, Any]:
    """The application `portal` at `url` behind `core-switch`: polled every second
    (`role: application`)."""
    return {
        "name": "portal",
        "kind": "http",
        "address": url,
        "interval": "1s",
        "timeout": "0.8s",
        "depends_on": ["core-switch"],
        "labels": {"role": "application"},
    }


def application_paging(receiver: Receiver, manager_after: str) -> dict[str, Any]:
    """The `oncall`, `notify` and `escalation` sections: Li Na (the receiver's path `li`)
    paged at once about everything; the manager Wang Fang (path `manager`) paged about an
    application (`role: application`) `manager_after` it fires and at its red line."""
    return {
        "oncall": {
            "people": [
                {"name": "Li Na", "contacts": ["phone"]},
                {"name": "Wang Fang", "contacts": ["manager_phone"]},
            ],
            "roles": {"manager": ["Wang Fang"]},
        },
        "notify": {
            "channels": {
                "phone": {"url": receiver.url("li")},
                "manager_phone": {"url": receiver.url("manager")},
            },
            "group_wait": "0s",
        },
        "escalation": {
            "policies": [
                {
                    "name": "application",
                    "match": {"role": "application"},
                    "steps": [
                        {"after": "0s", "people": ["Li Na"]},
                        {"after": manager_after, "roles": ["manager"]},
                    ],
                    "red_line": {"roles": ["manager"]},
                },
                {"name": "network", "steps": [{"after": "0s", "people": ["Li Na"]}]},
            ]
        },
    }
