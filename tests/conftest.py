"""Fixtures shared by several test files."""

from collections.abc import AsyncIterator

import pytest

from dutyd.collectors.base import CollectorContext
from tests.api_fixtures import running  # noqa: F401 - the in-process daemon of the API tests
from tests.postgres_fixtures import postgres  # noqa: F401 - a real PostgreSQL for the session


@pytest.fixture
async def context() -> AsyncIterator[CollectorContext]:
    """The daemon's shared collector resources (thread pool, shared sessions), closed after."""
    ctx = CollectorContext()
    yield ctx
    await ctx.close()


# Parallel runs (pytest-xdist, `-n` in pyproject.toml's addopts, `--dist loadgroup`): each test
# file runs whole on one worker, so its module fixtures start once and its tests keep their order.
# Files that share a machine-wide resource share a group, so they never run at the same time:
SHARED_GROUPS = {
    # The simulated rooms on 127.0.1.0/29 (tests/site_fixtures.py): sweeps of that network probe
    # every address in it, so another file's peers there would be swept (and counted) too.
    "tests/test_discover.py": "room-127.0.1.0",
    "tests/test_discover_site.py": "room-127.0.1.0",
    "tests/test_topology_auto.py": "room-127.0.1.0",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test without an explicit `xdist_group` gets its file's group (see above); xdist's
    own hook (after this one) turns the group into the unit a worker is handed."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            path = item.nodeid.split("::", 1)[0]
            item.add_marker(pytest.mark.xdist_group(SHARED_GROUPS.get(path, path)))
