"""The official openai SDK drives the fake's Files and Batch APIs end to end: upload, create, poll,
download, cancel, list, on OpenAI, Groq and Azure paths, with partial failures, expiry, cancellation
and validation failures, each request answered like a live call."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import openai
import pytest

from evalpipe.testing import FakeServer

MODEL = "gpt-4o-mini"
ENDED = ("completed", "failed", "expired", "cancelled")


def client(server: FakeServer, vendor: str = "openai", key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url_for(vendor), api_key=key or f"sk-{uuid.uuid4().hex[:12]}",
                         max_retries=0)


def line(custom_id: str, prompt: str, model: str = MODEL, url: str = "/v1/chat/completions") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": prompt}]}}


def upload(sdk: openai.OpenAI, lines: list[Any], name: str = "input.jsonl") -> str:
    text = "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in lines)
    return sdk.files.create(file=(name, io.BytesIO(text.encode())), purpose="batch").id


def submit(sdk: openai.OpenAI, lines: list[Any], endpoint: Any = "/v1/chat/completions") -> Any:
    return sdk.batches.create(input_file_id=upload(sdk, lines), endpoint=endpoint, completion_window="24h")


def wait(sdk: openai.OpenAI, batch_id: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in ENDED or time.monotonic() > deadline:
            return batch
        time.sleep(0.01)


def jsonl(sdk: openai.OpenAI, file_id: str | None) -> dict[str, Any]:
    """A result file's lines by custom_id ({} for no file)."""
    if file_id is None:
        return {}
    rows = [json.loads(text) for text in sdk.files.content(file_id).text.splitlines() if text]
    return {row["custom_id"]: row for row in rows}


def test_batch_round_trip_with_per_request_markers(fake_server: FakeServer) -> None:
    key = f"sk-{uuid.uuid4().hex[:12]}"
    sdk = client(fake_server, key=key)
    lines = [line("plain", "hello there"), line("scripted", "judge this [[reply:YES]]"),
             line("broken", "fail me [[fault:server_error]]"), line("quota", "x [[fault:insufficient_quota]]")]
    batch = submit(sdk, lines)
    assert batch.status == "validating" and batch.input_file_id and batch.endpoint == "/v1/chat/completions"
    batch = wait(sdk, batch.id)
    assert batch.status == "completed" and batch.completed_at is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (4, 2, 2)
    output, errors = jsonl(sdk, batch.output_file_id), jsonl(sdk, batch.error_file_id)
    assert set(output) == {"plain", "scripted"} and set(errors) == {"broken", "quota"}
    plain = output["plain"]["response"]
    assert plain["status_code"] == 200 and output["plain"]["error"] is None
    assert plain["body"]["choices"][0]["message"]["content"] == "Echo: hello there"
    assert output["scripted"]["response"]["body"]["choices"][0]["message"]["content"] == "YES"
    assert errors["broken"]["response"]["status_code"] == 500
    assert errors["quota"]["response"]["status_code"] == 429
    assert errors["quota"]["response"]["body"]["error"]["code"] == "insufficient_quota"
    # Words sent by the two answered requests, markers included: "hello there" + "judge this [[reply:YES]]".
    assert batch.usage is not None and batch.usage.input_tokens == 5
    stats = fake_server.batch_stats(key)
    assert (stats.files_uploaded, stats.batches_created, stats.result_downloads) == (1, 1, 2)
    assert stats.answers_by_id == {"plain": 1, "scripted": 1, "broken": 1, "quota": 1}
    assert (stats.succeeded, stats.errored) == (2, 2)
    assert fake_server.stats(key).requests == 0  # batch work is not counted as live calls


def test_a_fault_for_the_first_attempt_fails_the_first_batch_only(fake_server: FakeServer) -> None:
    key = f"sk-{uuid.uuid4().hex[:12]}"
    sdk = client(fake_server, key=key)
    first = wait(sdk, submit(sdk, [line("a", "retry me [[fault:server_error:1]]")]).id)
    assert (first.request_counts.completed, first.request_counts.failed) == (0, 1)
    second = wait(sdk, submit(sdk, [line("a", "retry me [[fault:server_error:1]]")]).id)
    assert (second.request_counts.completed, second.request_counts.failed) == (1, 0)
    assert fake_server.batch_stats(key).answers_by_id == {"a": 2}


def test_status_moves_through_the_lifecycle_while_counts_grow() -> None:
    with FakeServer(batch_delay_s=1.0) as server:
        sdk = client(server)
        batch = submit(sdk, [line(f"r{i}", f"n {i}") for i in range(4)])
        seen, completed = [batch.status], []
        while batch.status not in ENDED:
            time.sleep(0.01)
            batch = sdk.batches.retrieve(batch.id)
            seen.append(batch.status)
            completed.append(batch.request_counts.completed if batch.request_counts else 0)
    order = [status for i, status in enumerate(seen) if i == 0 or seen[i - 1] != status]
    assert order == ["validating", "in_progress", "finalizing", "completed"]
    assert completed == sorted(completed) and {1, 2, 3} & set(completed)  # answered one by one
    assert batch.in_progress_at is not None and batch.finalizing_at is not None


def test_invalid_lines_fail_the_batch_naming_each_line(fake_server: FakeServer) -> None:
    key = f"sk-{uuid.uuid4().hex[:12]}"
    sdk = client(fake_server, key=key)
    lines: list[Any] = [line("a", "one"), line("a", "two"), "{not json", line("b", "x", model="gpt-4o"),
                        {"custom_id": "c", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL}}]
    batch = wait(sdk, submit(sdk, lines).id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None and batch.errors.data is not None
    found = {(error.line, error.code) for error in batch.errors.data}
    assert found == {(2, "duplicate_custom_id"), (3, "invalid_json_line"), (4, "mismatched_model"),
                     (5, "invalid_url")}
    assert batch.output_file_id is None and batch.error_file_id is None
    assert fake_server.batch_stats(key).requests_answered == 0


def test_requests_beyond_expire_after_expire_into_the_error_file() -> None:
    with FakeServer() as server:
        server.set_batch_options(expire_after=1)
        sdk = client(server)
        batch = wait(sdk, submit(sdk, [line("a", "one"), line("b", "two"), line("c", "three")]).id)
        assert batch.status == "expired" and batch.expired_at is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 2)
        assert set(jsonl(sdk, batch.output_file_id)) == {"a"}
        errors = jsonl(sdk, batch.error_file_id)
        assert {row["error"]["code"] for row in errors.values()} == {"batch_expired"}
        assert all(row["response"] is None for row in errors.values()) and set(errors) == {"b", "c"}


def test_expire_batches_ends_a_running_batch_now() -> None:
    with FakeServer(batch_delay_s=30) as server:
        sdk = client(server)
        batch = submit(sdk, [line("a", "one"), line("b", "two")])
        assert server.expire_batches() == 1
        batch = sdk.batches.retrieve(batch.id)
        assert batch.status == "expired" and set(jsonl(sdk, batch.error_file_id)) == {"a", "b"}


def test_cancel_keeps_nothing_unanswered_and_ends_cancelled() -> None:
    with FakeServer(batch_delay_s=2.0) as server:
        sdk = client(server)
        batch = submit(sdk, [line("a", "one"), line("b", "two")])
        cancelled = sdk.batches.cancel(batch.id)
        assert cancelled.status == "cancelling" and cancelled.cancelling_at is not None
        batch = wait(sdk, batch.id)
        assert batch.status == "cancelled" and batch.cancelled_at is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 0)
        assert batch.output_file_id is None and batch.error_file_id is None
        with pytest.raises(openai.ConflictError):
            sdk.batches.cancel(batch.id)
        assert server.batch_stats().requests_answered == 0


def test_fail_fraction_fails_the_same_ids_every_time() -> None:
    with FakeServer() as server:
        server.set_batch_options(fail_fraction=0.5)
        sdk = client(server)
        lines = [line(f"r{i}", f"n {i}") for i in range(20)]
        first = jsonl(sdk, wait(sdk, submit(sdk, lines).id).error_file_id)
        second = jsonl(sdk, wait(sdk, submit(sdk, lines).id).error_file_id)
    assert 0 < len(first) < 20 and set(first) == set(second)
    assert {row["response"]["status_code"] for row in first.values()} == {500}


def test_list_pages_most_recent_first(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    ids = [submit(sdk, [line("a", "x")]).id for _ in range(3)]
    page = sdk.batches.list(limit=2)
    assert [batch.id for batch in page.data] == ids[::-1][:2] and page.has_more
    assert [batch.id for batch in sdk.batches.list(limit=2, after=ids[1]).data] == [ids[0]]
    assert [batch.id for batch in sdk.batches.list(limit=2)] == ids[::-1]  # the SDK follows `after`


def test_embeddings_batch(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    lines = [{"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "text-embedding-3-small", "input": "red apple"}}]
    batch = wait(sdk, submit(sdk, lines, endpoint="/v1/embeddings").id)
    body = jsonl(sdk, batch.output_file_id)["e"]["response"]["body"]
    live = sdk.embeddings.create(model="text-embedding-3-small", input="red apple")
    # The SDK asks for base64 float32 live, so the two agree to float32 precision.
    assert body["data"][0]["embedding"] == pytest.approx(live.data[0].embedding, abs=1e-6)


def test_files_retrieve_delete_and_errors(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    file_id = upload(sdk, [line("a", "x")])
    assert sdk.files.retrieve(file_id).purpose == "batch"
    assert json.loads(sdk.files.content(file_id).text)["custom_id"] == "a"
    assert sdk.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(file_id)
    with pytest.raises(openai.BadRequestError, match="jsonl"):
        upload(sdk, [line("a", "x")], name="input.csv")
    with pytest.raises(openai.BadRequestError, match="input_file_id"):
        sdk.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        sdk.batches.retrieve("batch_missing")
    with pytest.raises(openai.AuthenticationError):
        upload(client(fake_server, key="invalid-key"), [line("a", "x")])
    # Batches belong to the key that made them.
    batch = submit(sdk, [line("a", "x")])
    with pytest.raises(openai.NotFoundError):
        client(fake_server).batches.retrieve(batch.id)


@pytest.mark.parametrize("vendor", ["groq", "azure"])
def test_openai_compatible_batch_paths(fake_server: FakeServer, vendor: str) -> None:
    if vendor == "azure":
        sdk: openai.OpenAI = openai.AzureOpenAI(azure_endpoint=fake_server.url_for("azure"), api_version="2024-10-21",
                                                api_key=f"sk-{uuid.uuid4().hex[:12]}", max_retries=0)
        lines, endpoint = [line("a", "hi", url="/chat/completions")], "/chat/completions"
    else:
        sdk, lines, endpoint = client(fake_server, vendor), [line("a", "hi", model="llama-3.1-8b-instant")], None
    batch = wait(sdk, submit(sdk, lines, **({"endpoint": endpoint} if endpoint else {})).id)
    assert batch.status == "completed"
    body = jsonl(sdk, batch.output_file_id)["a"]["response"]["body"]
    assert body["choices"][0]["message"]["content"] == "Echo: hi"


def test_wire_faults_become_error_lines_instead_of_hanging(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    lines = [line("hang", "x [[fault:hang]]"), line("reset", "x [[fault:reset_midstream]]"),
             line("limited", "x [[fault:rate_limit_retry_after]]"), line("ok", "fine")]
    batch = wait(sdk, submit(sdk, lines).id)
    errors = jsonl(sdk, batch.error_file_id)
    assert {custom_id: row["response"]["status_code"] for custom_id, row in errors.items()} == {
        "hang": 500, "reset": 500, "limited": 429}
    assert set(jsonl(sdk, batch.output_file_id)) == {"ok"}
