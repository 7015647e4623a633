"""The official google-genai SDK drives the fake's Gemini batch mode end to end: inline and file
requests, polling, per-request errors, a failed file, cancellation, expiry and listing."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
from google import genai
from google.genai import errors

from evalpipe.testing import FakeServer

MODEL = "gemini-2.5-flash"
ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")


def client(server: FakeServer, key: str | None = None) -> genai.Client:
    options: Any = {"base_url": server.url_for("gemini")}
    return genai.Client(api_key=key or f"sk-{uuid.uuid4().hex[:12]}", http_options=options)


def inline(key: str, prompt: str) -> Any:
    return {"contents": [{"parts": [{"text": prompt}], "role": "user"}], "metadata": {"key": key}}


def wait(sdk: genai.Client, name: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        job = sdk.batches.get(name=name)
        if (job.state is not None and job.state.value in ENDED) or time.monotonic() > deadline:
            return job
        time.sleep(0.01)


def upload(sdk: genai.Client, lines: list[Any]) -> str:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    uploaded = sdk.files.upload(file=io.BytesIO(text.encode()), config={"mime_type": "application/jsonl"})
    assert uploaded.name is not None
    return uploaded.name


def test_inline_batch_with_a_failing_request(fake_server: FakeServer) -> None:
    key = f"sk-{uuid.uuid4().hex[:12]}"
    sdk = client(fake_server, key)
    requests = [inline("a", "hello there"), inline("b", "x [[fault:server_error]]"), inline("c", "[[reply:NO]] y")]
    job = sdk.batches.create(model=MODEL, src=requests, config={"display_name": "eval"})
    assert job.name is not None and job.name.startswith("batches/")
    assert job.state is not None and job.state.value == "JOB_STATE_PENDING" and job.display_name == "eval"
    job = wait(sdk, job.name)
    assert job.state.value == "JOB_STATE_SUCCEEDED" and job.end_time is not None
    responses = job.dest.inlined_responses
    assert [r.metadata for r in responses] == [{"key": "a"}, {"key": "b"}, {"key": "c"}]
    assert responses[0].response.text == "Echo: hello there" and responses[0].error is None
    assert responses[1].response is None and responses[1].error.code == 13
    assert responses[2].response.text == "NO"
    stats = fake_server.batch_stats(key)
    assert stats.answers_by_id == {"a": 1, "b": 1, "c": 1} and stats.batches_created == 1
    assert stats.result_downloads == 1


def test_file_batch_round_trip_and_download(fake_server: FakeServer) -> None:
    key = f"sk-{uuid.uuid4().hex[:12]}"
    sdk = client(fake_server, key)
    request = {"contents": [{"parts": [{"text": "from a file"}], "role": "user"}]}
    name = upload(sdk, [{"key": "k1", "request": request}, {"key": "k2", "request": request}])
    job = wait(sdk, sdk.batches.create(model=MODEL, src=name).name or "")
    assert job.state.value == "JOB_STATE_SUCCEEDED" and job.dest.file_name
    lines = [json.loads(line) for line in sdk.files.download(file=job.dest.file_name).decode().splitlines()]
    assert [line["key"] for line in lines] == ["k1", "k2"]
    assert lines[0]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "Echo: from a file"
    stats = fake_server.batch_stats(key)
    assert (stats.files_uploaded, stats.result_downloads, stats.requests_answered) == (1, 1, 2)


def test_an_invalid_file_line_fails_the_batch(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    name = upload(sdk, [{"key": "k1", "request": {"contents": []}}, "{broken"])
    job = wait(sdk, sdk.batches.create(model=MODEL, src=name).name or "")
    assert job.state.value == "JOB_STATE_FAILED" and job.dest is None


def test_cancel_and_expiry_end_without_output() -> None:
    with FakeServer(batch_delay_s=2.0) as server:
        sdk = client(server)
        job = sdk.batches.create(model=MODEL, src=[inline("a", "x"), inline("b", "y")])
        assert job.name is not None
        sdk.batches.cancel(name=job.name)
        cancelled = wait(sdk, job.name)
        assert cancelled.state.value == "JOB_STATE_CANCELLED" and cancelled.dest is None
        with pytest.raises(errors.ClientError):
            sdk.batches.cancel(name=job.name)
        running = sdk.batches.create(model=MODEL, src=[inline("c", "z")])
        assert running.name is not None and server.expire_batches() == 1
        expired = sdk.batches.get(name=running.name)
        assert expired.state.value == "JOB_STATE_EXPIRED" and expired.dest is None
        assert server.batch_stats().requests_answered == 0


def test_list_and_delete(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    names = [sdk.batches.create(model=MODEL, src=[inline("a", "x")]).name for _ in range(3)]
    assert [job.name for job in sdk.batches.list(config={"page_size": 2})] == names[::-1]
    sdk.batches.delete(name=names[0] or "")
    with pytest.raises(errors.ClientError):
        sdk.batches.get(name=names[0] or "")
