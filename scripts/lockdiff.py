"""Print the installed packages whose version differs from a lock file's pin.

`scripts/test --latest` runs it in its scratch virtualenv, so the run's output says what drift
it tried: `name: locked -> installed`, or `(new)` for a package the lock does not name.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def main(lock_path: str) -> int:
    pins = locked_versions(Path(lock_path))
    changed = 0
    for dist in sorted(distributions(), key=lambda d: canonical(d.metadata["Name"])):
        name = canonical(dist.metadata["Name"])
        if name in {"pip", "setuptools", "wheel", "dutyd"}:
            continue
        locked = pins.get(name)
        if locked != dist.version:
            changed += 1
            print(f"  {name}: {locked or '(new)'} -> {dist.version}")
    if not changed:
        print("  none: the lock is today's newest")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
