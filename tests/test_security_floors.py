"""The dependency floors that close known holes (issue 24, finding 5): the declared floor and
the installed version are at least the release with the fix."""

from __future__ import annotations

from importlib.metadata import version

from tests.test_packaging import declared_floor

# package -> (the release that fixed it, what)
FLOORS = {
    "aiohttp": ((3, 13, 3), "CVE-2025-69223: unbounded decompression of a response body"),
}


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def test_each_security_floor_is_declared_and_installed() -> None:
    for package, (fixed, what) in FLOORS.items():
        assert declared_floor(package) >= fixed, f"{package} floor below the fix of {what}"
        assert _release(version(package)) >= fixed, f"installed {package} lacks the fix of {what}"
