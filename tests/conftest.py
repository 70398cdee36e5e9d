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
