"""Fixtures of the pipeline's tests."""

from __future__ import annotations

import pytest

from tests.pipeline.batch_jobs import KEY_VARIABLE


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A batch API key of the test's own (its batches are its own at the fake server), set as the batch
    jobs' key."""
    value = f"sk-batch-{request.node.name}".replace("[", "-").replace("]", "")
    monkeypatch.setenv(KEY_VARIABLE, value)
    return value
