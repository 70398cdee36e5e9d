"""Fixtures shared by several test files."""

from tests.api_fixtures import running  # noqa: F401 - the in-process daemon of the API tests
