"""Batch mode end to end on OpenAI's Batch API (the fake server's `/files` + `/batches`): submitted in
chunks, polled, collected, scored and priced at the batch discount, and exactly once across a resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalpipe.pipeline.output.store import RunStore
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


async def test_tasks_go_as_batches_and_come_back_scored_at_half_price(
        fake_server: FakeServer, key: str, tmp_path: Path) -> None:
    loaded = batch_job(items(5), [batch_backend(fake_server, max_requests=2)])
    outcome = await run(loaded, tmp_path)
    assert outcome.state == "completed"
    assert outcome.counts == {"ok": 5, "error": 0, "skipped": 0}
    stats = fake_server.batch_stats(key)
    assert (stats.files_uploaded, stats.batches_created) == (3, 3)  # 2 + 2 + 1 requests
    assert fake_server.stats(key).requests == 0  # not one live call
    rows = stored_rows(outcome.run_dir)
    assert sorted(stats.answers_by_id) == sorted(row["task_id"] for row in rows)
    assert set(stats.answers_by_id.values()) == {1}
    for row in rows:
        assert row["response"] == f"Echo: {row['prompt']}"
        assert row["passed"] is True and row["cached"] is False
        live = (row["input_tokens"] * PRICE_IN + row["output_tokens"] * PRICE_OUT) / 1e6
        assert row["cost_usd"] == pytest.approx(live * 0.5)
    assert outcome.cost_usd == pytest.approx(sum(row["cost_usd"] for row in rows))


async def test_a_price_factor_overrides_the_vendor_discount(fake_server: FakeServer, key: str, tmp_path: Path) -> None:
    outcome = await run(batch_job(items(2), [batch_backend(fake_server, price_factor=0.25)]), tmp_path)
    for row in stored_rows(outcome.run_dir):
        live = (row["input_tokens"] * PRICE_IN + row["output_tokens"] * PRICE_OUT) / 1e6
        assert row["cost_usd"] == pytest.approx(live * 0.25)


async def test_a_resumed_run_submits_nothing_again(fake_server: FakeServer, key: str, tmp_path: Path) -> None:
    loaded = batch_job(items(4), [batch_backend(fake_server)])
    first = await run(loaded, tmp_path)
    again = await run(loaded, tmp_path, run_dir=first.run_dir)
    assert again.state == "completed" and again.counts["ok"] == 4
    stats = fake_server.batch_stats(key)
    assert (stats.files_uploaded, stats.batches_created) == (1, 1)
    assert set(stats.answers_by_id.values()) == {1}


async def test_each_step_is_recorded_with_the_vendor_ids(fake_server: FakeServer, key: str, tmp_path: Path) -> None:
    outcome = await run(batch_job(items(3), [batch_backend(fake_server)]), tmp_path)
    (chunk,) = RunStore.read_batch_chunks(outcome.run_dir)
    assert chunk.step == "collected" and chunk.vendor_status == "completed"
    assert chunk.file_id is not None and chunk.batch_id is not None
    assert len(chunk.entries) == 3
