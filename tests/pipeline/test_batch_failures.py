"""What goes wrong with a batch ends as classified error rows, never a hang or a missing row: requests the
vendor failed, a batch that expired, a batch rejected at validation (the error names the line and task);
`retry_errors` submits those tasks again, and only those."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalpipe.testing import FakeServer
from tests.pipeline.batch_jobs import KEY_VARIABLE, batch_backend, batch_job, items, run, stored_rows

pytestmark = pytest.mark.anyio


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_VARIABLE, "sk-batch-failures")
    with FakeServer() as srv:
        yield srv


@pytest.mark.parametrize("kind", ["openai", "anthropic", "google"])
async def test_failed_requests_are_error_rows_and_retry_errors_resubmits_only_them(
        server: FakeServer, tmp_path: Path, kind: str) -> None:
    server.set_batch_options(fail_fraction=0.5)
    loaded = batch_job(items(10), [batch_backend(server, kind)])
    first = await run(loaded, tmp_path)
    rows = stored_rows(first.run_dir)
    failed = {row["task_id"] for row in rows if row["status"] == "error"}
    assert len(rows) == 10 and 0 < len(failed) < 10
    assert {row["error_type"] for row in rows if row["status"] == "error"} == {"ServerError"}
    server.set_batch_options(fail_fraction=0.0)
    again = await run(loaded, tmp_path, run_dir=first.run_dir, retry_errors=True)
    assert again.counts == {"ok": 10, "error": 0, "skipped": 0}
    stats = server.batch_stats()
    assert stats.batches_created == 2
    answered_twice = {task_id for task_id, n in stats.answers_by_id.items() if n == 2}
    assert answered_twice == failed  # the failed ones went again, the answered ones did not
    assert len(stored_rows(first.run_dir)) == 10


# OpenAI and Anthropic keep what an expired batch answered; Gemini gives an expired batch no output.
@pytest.mark.parametrize(("kind", "kept"), [("openai", 2), ("anthropic", 2), ("google", 0)])
async def test_an_expired_batch_gives_its_unanswered_tasks_error_rows(server: FakeServer, tmp_path: Path,
                                                                     kind: str, kept: int) -> None:
    server.set_batch_options(delay_s=0.2, expire_after=2)
    outcome = await run(batch_job(items(5), [batch_backend(server, kind)]), tmp_path)
    assert outcome.state == "completed"  # every task has its row: nothing is left waiting
    rows = stored_rows(outcome.run_dir)
    assert Counter(row["status"] for row in rows) == Counter(ok=kept, error=5 - kept)
    assert {row["error_type"] for row in rows if row["status"] == "error"} == {"BatchExpiredError"}


async def test_a_batch_over_max_wait_is_cancelled_and_its_tasks_are_error_rows(server: FakeServer,
                                                                               tmp_path: Path) -> None:
    server.set_batch_options(delay_s=30.0)
    outcome = await run(batch_job(items(3), [batch_backend(server, max_wait_h=0.1 / 3600)]), tmp_path)
    rows = stored_rows(outcome.run_dir)
    assert len(rows) == 3 and {row["error_type"] for row in rows} == {"BatchCancelledError"}
    assert "max_wait_h" in rows[0]["error_message"]


async def test_a_batch_rejected_at_validation_names_the_line_and_the_task(server: FakeServer,
                                                                          tmp_path: Path) -> None:
    parameters = {"sets": [{"name": "plain"}, {"name": "other-model", "extra_body": {"model": "another-model"}}]}
    outcome = await run(batch_job(items(2), [batch_backend(server)], parameters=parameters), tmp_path)
    rows = stored_rows(outcome.run_dir)
    assert len(rows) == 4 and {row["error_type"] for row in rows} == {"BatchRejectedError"}
    # The vendor named the lines of the other model: their rows name their own task and the cause; the
    # rows of valid lines, refused with them, name the first line the vendor refused.
    named = {row["task_id"] for row in rows if f"(task {row['task_id']})" in row["error_message"]}
    assert named == {row["task_id"] for row in rows if row["param_set"] == "other-model"}
    assert all("mismatched_model" in row["error_message"] for row in rows if row["task_id"] in named)
    others = [row["error_message"] for row in rows if row["task_id"] not in named]
    assert others and all("rejected at validation at line 2" in message for message in others)


async def test_a_batch_the_vendor_no_longer_knows_stops_the_wait_instead_of_hanging(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "sk-batch-forgotten")
    with FakeServer(batch_delay_s=30.0) as first:
        port = first.port
        loaded = batch_job(items(2), [batch_backend(first)])
        submitted = await run(loaded, tmp_path, detach=True)
    assert submitted.state == "submitted"
    with FakeServer(port=port):  # the same address, none of the batches: every poll answers 404
        resumed = await run(loaded, tmp_path, run_dir=submitted.run_dir)
    assert resumed.state == "interrupted" and resumed.counts["ok"] == 0  # resumable, nothing lost or doubled
