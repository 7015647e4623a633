"""The budget in batch mode: a submitted batch counts as spent, at the batch price, so the same budget
buys about twice the tasks it buys live, and what does not fit is never submitted."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalpipe.pipeline.output.store import RunStore
from evalpipe.testing import FakeServer
from tests.pipeline.batch_jobs import KEY_VARIABLE, batch_backend, batch_job, items, run, stored_rows

pytestmark = pytest.mark.anyio


async def test_a_budget_buys_about_twice_the_tasks_in_batch_mode(fake_server: FakeServer, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-batch-budget"
    monkeypatch.setenv(KEY_VARIABLE, key)
    batch = batch_backend(fake_server)
    live = {k: v for k, v in batch.items() if k not in ("mode", "batch")}
    fields = {"budget": {"max_cost_usd": 0.0006}, "parameters": {"defaults": {"max_tokens": 20}}}
    live_outcome = await run(batch_job(items(20), [live], **fields), tmp_path / "live")
    batch_outcome = await run(batch_job(items(20), [batch], **fields), tmp_path / "batch")
    assert live_outcome.state == batch_outcome.state == "budget_exhausted"
    live_rows, batch_rows = live_outcome.counts["ok"], batch_outcome.counts["ok"]
    assert live_rows > 0 and 2 * live_rows - 1 <= batch_rows <= 2 * live_rows + 1
    # What did not fit was never sent: the batch holds exactly the tasks that have rows.
    (chunk,) = RunStore.read_batch_chunks(batch_outcome.run_dir)
    assert len(chunk.entries) == batch_rows == fake_server.batch_stats(key).requests_answered
    assert sum(row["cost_usd"] for row in stored_rows(batch_outcome.run_dir)) <= 0.0006
