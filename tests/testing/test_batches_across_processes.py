"""Batch jobs live in the fake server, not in the connections that made them: a client process
killed after submitting leaves a batch that a new process polls to the end, and a test drives the
batch controls and reads the counters of a server in another process over `/_fake/...`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

SUBMIT = textwrap.dedent("""
    import io, json, sys, time
    import openai
    sdk = openai.OpenAI(base_url=sys.argv[1], api_key="sk-crossprocess", max_retries=0)
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"n {i}"}]}}
             for i in range(3)]
    data = "".join(json.dumps(line) + "\\n" for line in lines).encode()
    file = sdk.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    batch = sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    print(batch.id, flush=True)
    time.sleep(60)  # killed before it could poll
""")


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """A fake server in its own process, jobs taking 0.3 s (shared: each test uses its own key)."""
    with subprocess.Popen([sys.executable, "-m", "evalpipe.testing", "--port", "0", "--batch-delay", "0.3"],
                          stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            yield process.stdout.readline().strip()
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_a_new_client_process_polls_the_batch_a_killed_one_submitted(server_url: str) -> None:
    base = server_url + "/openai/v1"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen([sys.executable, "-c", SUBMIT, base], stdout=subprocess.PIPE, text=True,
                          env=env) as child:
        assert child.stdout is not None
        batch_id = child.stdout.readline().strip()
        child.kill()
    assert batch_id.startswith("batch_")
    sdk = openai.OpenAI(base_url=base, api_key="sk-crossprocess", max_retries=0)
    deadline = time.monotonic() + 10
    batch = sdk.batches.retrieve(batch_id)
    while batch.status != "completed" and time.monotonic() < deadline:
        time.sleep(0.02)
        batch = sdk.batches.retrieve(batch_id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert batch.request_counts.completed == 3
    stats = httpx.get(server_url + "/_fake/batch_stats", params={"key": "sk-crossprocess"}, timeout=5).json()
    assert stats["answers_by_id"] == {"r0": 1, "r1": 1, "r2": 1}
    assert (stats["files_uploaded"], stats["batches_created"], stats["requests_answered"]) == (1, 1, 3)


def test_controls_over_http(server_url: str) -> None:
    options = httpx.post(server_url + "/_fake/batch_options", json={"delay_s": 30, "fail_fraction": 0.25},
                         timeout=5).json()
    assert options == {"delay_s": 30.0, "fail_fraction": 0.25, "expire_after": None}
    bad = httpx.post(server_url + "/_fake/batch_options", json={"fail_fraction": 2}, timeout=5)
    assert bad.status_code == 400 and "fail_fraction" in bad.json()["error"]["message"]
    anthropic_url = server_url + "/anthropic/v1/messages/batches"
    headers = {"x-api-key": "sk-http", "anthropic-version": "2023-06-01"}
    params = {"model": "claude-3-5-haiku-latest", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    batch = httpx.post(anthropic_url, headers=headers, json={"requests": [{"custom_id": "a", "params": params}]},
                       timeout=5).json()
    assert batch["processing_status"] == "in_progress"
    assert httpx.post(server_url + "/_fake/batch_expire", json={"key": "sk-http"}, timeout=5).json() == {"expired": 1}
    ended = httpx.get(f"{anthropic_url}/{batch['id']}", headers=headers, timeout=5).json()
    assert ended["processing_status"] == "ended" and ended["request_counts"]["expired"] == 1
    results = httpx.get(ended["results_url"], headers=headers, timeout=5).text.splitlines()
    assert results == ['{"custom_id":"a","result":{"type":"expired"}}']
    httpx.post(server_url + "/_fake/reset", timeout=5)
    assert httpx.get(server_url + "/_fake/batch_options", timeout=5).json()["delay_s"] == 0.3
    assert httpx.get(server_url + "/_fake/batch_stats", timeout=5).json()["batches_created"] == 0
