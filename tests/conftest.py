"""Fixtures shared by several test files."""

from collections.abc import AsyncIterator

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

from dutyd.collectors.base import CollectorContext
from tests.api_fixtures import running  # noqa: F401 - the in-process daemon of the API tests
from tests.postgres_fixtures import postgres  # noqa: F401 - a real PostgreSQL for the session


@pytest.fixture
async def context() -> AsyncIterator[CollectorContext]:
    """The daemon's shared collector resources (thread pool, shared sessions), closed after."""
    ctx = CollectorContext()
    yield ctx
    await ctx.close()


# Parallel runs (pytest-xdist: `-n 4 --dist loadfile` in pyproject.toml's addopts) hand each
# worker whole files, scheduled by FileScheduling below: a file's module fixtures start once and
# its tests keep their order. Files that share a machine-wide resource form one unit, so they
# never run at the same time:
SHARED_UNITS = {
    # The simulated rooms on 127.0.1.0/29 (tests/site_fixtures.py): sweeps of that network probe
    # every address in it, so another file's peers there would be swept (and counted) too.
    "tests/test_discover.py": "room-127.0.1.0",
    "tests/test_discover_site.py": "room-127.0.1.0",
    "tests/test_topology_auto.py": "room-127.0.1.0",
    "tests/test_topology_bridge.py": "room-127.0.1.0",
}
# Files of a minute or more (`--durations`), handed out first so that none of them starts last
# and keeps one worker busy alone at the end; the rest follow in collection order.
LONGEST_FIRST = [
    "tests/test_ha_failover.py",  # ~8 min: five runs of each of five failover cases
    "tests/test_chaos_fleet.py",
    "tests/test_ha.py",
    "tests/test_traps_daemon.py",
    "tests/test_storage_faults.py",
    "tests/test_shards_groups.py",
    "tests/test_shard_duty.py",
    "tests/test_dependency_hold.py",
]


class FileScheduling(LoadScopeScheduling):
    """xdist's `loadfile`, with SHARED_UNITS run as one unit and LONGEST_FIRST handed out first.
    (xdist's own `loadgroup` marks do not group on pytest 9.2, whose node ids it cannot suffix.)"""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return SHARED_UNITS.get(path, path)

    def _assign_work_unit(self, node: WorkerController) -> None:
        for unit in reversed(LONGEST_FIRST):
            if unit in self.workqueue:
                self.workqueue.move_to_end(unit, last=False)
        super()._assign_work_unit(node)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> FileScheduling | None:
    """FileScheduling for `--dist loadfile`; any other `--dist` is xdist's own."""
    return FileScheduling(config, log) if config.getvalue("dist") == "loadfile" else None
