"""The official anthropic SDK drives the fake's Message Batches end to end: create, poll, results,
cancel, list, delete, with errored, canceled and expired requests each answered like a live call."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anthropic
import pytest

from evalpipe.testing import FakeServer

MODEL = "claude-3-5-haiku-latest"


def client(server: FakeServer, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url_for("anthropic"), api_key=key or f"sk-{uuid.uuid4().hex[:12]}",
                               max_retries=0)


def request(custom_id: str, prompt: str, **params: Any) -> Any:
    return {"custom_id": custom_id,
            "params": {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": prompt}], **params}}


def wait(sdk: anthropic.Anthropic, batch_id: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = sdk.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended" or time.monotonic() > deadline:
            return batch
        time.sleep(0.01)


def results(sdk: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {row.custom_id: row.result for row in sdk.messages.batches.results(batch_id)}


def test_batch_round_trip_with_errored_requests(fake_server: FakeServer) -> None:
    key = f"sk-{uuid.uuid4().hex[:12]}"
    sdk = client(fake_server, key)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools: Any = [{"name": "get_weather", "input_schema": schema}]
    batch = sdk.messages.batches.create(requests=[
        request("plain", "hello there"),
        request("tool", "weather? [[tool:get_weather]]", tools=tools),
        request("busy", "x [[fault:overloaded]]"),
        {"custom_id": "invalid", "params": {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}},
    ])
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 4
    assert batch.results_url is None
    batch = wait(sdk, batch.id)
    assert batch.ended_at is not None and batch.results_url and batch.results_url.startswith(fake_server.url)
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (0, 2, 2, 0, 0)
    found = results(sdk, batch.id)
    assert list(found) == ["plain", "tool", "busy", "invalid"]
    plain = found["plain"]
    assert plain.type == "succeeded" and plain.message.content[0].text == "Echo: hello there"
    assert found["tool"].type == "succeeded" and found["tool"].message.stop_reason == "tool_use"
    assert found["busy"].type == "errored" and found["busy"].error.error.type == "overloaded_error"
    invalid = found["invalid"]
    assert invalid.type == "errored" and invalid.error.error.type == "invalid_request_error"
    assert "max_tokens" in invalid.error.error.message
    stats = fake_server.batch_stats(key)
    assert (stats.batches_created, stats.result_downloads, stats.requests_answered) == (1, 1, 4)
    assert stats.answers_by_id == {"plain": 1, "tool": 1, "busy": 1, "invalid": 1}


def test_duplicate_or_malformed_custom_ids_fail_the_create_call(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    with pytest.raises(anthropic.BadRequestError, match="Duplicate custom_id"):
        sdk.messages.batches.create(requests=[request("a", "x"), request("a", "y")])
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        sdk.messages.batches.create(requests=[request("has space", "x")])


def test_cancel_ends_with_canceled_requests() -> None:
    with FakeServer(batch_delay_s=2.0) as server:
        sdk = client(server)
        batch = sdk.messages.batches.create(requests=[request("a", "one"), request("b", "two")])
        with pytest.raises(anthropic.BadRequestError):
            sdk.messages.batches.delete(batch.id)  # still processing
        canceling = sdk.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
        batch = wait(sdk, batch.id)
        assert batch.request_counts.canceled == 2
        assert {result.type for result in results(sdk, batch.id).values()} == {"canceled"}
        assert sdk.messages.batches.delete(batch.id).type == "message_batch_deleted"
        with pytest.raises(anthropic.NotFoundError):
            sdk.messages.batches.retrieve(batch.id)
        assert server.batch_stats().requests_answered == 0


def test_expiry_and_fail_fraction() -> None:
    with FakeServer() as server:
        server.set_batch_options(expire_after=2, fail_fraction=1.0)
        sdk = client(server)
        batch = wait(sdk, sdk.messages.batches.create(requests=[request(f"r{i}", "x") for i in range(3)]).id)
        assert (batch.request_counts.errored, batch.request_counts.expired) == (2, 1)
        found = results(sdk, batch.id)
        assert [result.type for result in found.values()] == ["errored", "errored", "expired"]
        assert found["r0"].error.error.type == "api_error"


def test_list_pages_most_recent_first(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    ids = [sdk.messages.batches.create(requests=[request("a", "x")]).id for _ in range(3)]
    page = sdk.messages.batches.list(limit=2)
    assert [batch.id for batch in page.data] == ids[::-1][:2] and page.has_more
    assert [batch.id for batch in sdk.messages.batches.list(limit=2)] == ids[::-1]
    assert [batch.id for batch in sdk.messages.batches.list(before_id=ids[1]).data] == [ids[2]]
