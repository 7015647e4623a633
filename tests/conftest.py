"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evalpipe import logs
from evalpipe.testing import FakeServer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """evalpipe runs on asyncio (aiolimiter is asyncio-only): no trio variants even when trio is installed."""
    return "asyncio"


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeServer]:
    """One fake provider server for the session, in a background thread on a free loopback port.

    It is shared: give each test its own API key and read `fake_server.stats(key)`, or start a
    `FakeServer(...)` of your own when a test needs limits, latency or a server-wide fault.
    """
    with FakeServer() as server:
        yield server


@pytest.fixture(autouse=True)
def plain_foreign_lines() -> Iterator[None]:
    """A test running the command with `--log-format json` routes Python warnings and standard logging to
    JSON lines for the process: give the next test the defaults back."""
    yield
    logs.reset()
