"""A simulated device of the demo site: a real protocol server on loopback plus a scenario.

The demo site starts each device, asks it for the target entries that point at it, and calls
`advance(elapsed)` (wall seconds) about once a second so the device can act out its part of
the story (the room warms up, the UPS loses mains, a disk fills).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class DemoDevice(ABC):
    """One simulated device. `speed` > 1 plays the scenario faster (tests use it)."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed

    @abstractmethod
    async def start(self) -> None:
        """Start serving on a free loopback port."""

    @abstractmethod
    def targets(self) -> list[dict[str, Any]]:
        """Config entries (as in the `targets:` list of dutyd.yaml) that monitor this device."""

    @abstractmethod
    def advance(self, elapsed: float) -> None:
        """Set the device's state for `elapsed` wall seconds since the demo started; the
        scenario runs at `elapsed * self.speed`."""

    def story(self) -> list[str]:
        """One line per scenario event, printed when the demo starts."""
        return []

    @abstractmethod
    async def stop(self) -> None:
        """Stop serving and free the port."""
