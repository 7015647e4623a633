"""Batch mode on every vendor family with a batch API (Anthropic Message Batches, Gemini batch mode, Groq's
OpenAI-compatible files and batches): the same answers as live, at the batch price, exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalpipe.testing import FakeServer
from tests.pipeline.batch_jobs import (
    PRICE_IN,
    PRICE_OUT,
    batch_backend,
    batch_job,
    items,
    run,
    stored_rows,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["anthropic", "google", "groq", "azure_openai"])
async def test_a_vendor_batch_answers_like_the_live_call(fake_server: FakeServer, key: str, tmp_path: Path,
                                                         kind: str) -> None:
    outcome = await run(batch_job(items(5), [batch_backend(fake_server, kind, max_requests=3)]), tmp_path)
    assert outcome.state == "completed" and outcome.counts["ok"] == 5
    stats = fake_server.batch_stats(key)
    assert stats.batches_created == 2 and set(stats.answers_by_id.values()) == {1}
    assert fake_server.stats(key).requests == 0
    for row in stored_rows(outcome.run_dir):
        assert row["response"] == f"Echo: {row['prompt']}" and row["passed"] is True
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        live = (row["input_tokens"] * PRICE_IN + row["output_tokens"] * PRICE_OUT) / 1e6
        assert row["cost_usd"] == pytest.approx(live * 0.5)
    again = await run(batch_job(items(5), [batch_backend(fake_server, kind, max_requests=3)]), tmp_path,
                      run_dir=outcome.run_dir)
    assert again.counts["ok"] == 5 and fake_server.batch_stats(key).batches_created == 2


@pytest.mark.parametrize("kind", ["openai", "anthropic", "google"])
async def test_batch_rows_match_live_rows_but_for_the_price(fake_server: FakeServer, key: str, tmp_path: Path,
                                                            kind: str) -> None:
    questions = items(3, "question {i} [[shape:tool_call]]" if kind != "openai" else "question {i}")
    batch = batch_backend(fake_server, kind)
    live = {k: v for k, v in batch.items() if k not in ("mode", "batch")} | {"stream": False}
    batch_rows = stored_rows((await run(batch_job(questions, [batch]), tmp_path / "b")).run_dir)
    live_rows = stored_rows((await run(batch_job(questions, [live]), tmp_path / "l")).run_dir)
    compared = ("response", "reasoning", "finish_reason", "refusal", "tool_calls", "input_tokens", "output_tokens",
                "status", "passed")
    assert [{c: r[c] for c in compared} for r in batch_rows] == [{c: r[c] for c in compared} for r in live_rows]
    assert [r["cost_usd"] * 2 for r in batch_rows] == pytest.approx([r["cost_usd"] for r in live_rows])
    assert any(r["tool_calls"] for r in batch_rows) == (kind != "openai")  # a richer answer than text came through
