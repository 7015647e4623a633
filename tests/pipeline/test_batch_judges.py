"""Judges in batch mode, as a second phase: the answers' batch is collected, the judge requests go as a
batch of the judge's own, and each row is written once its verdict is collected; scored as live judging
scores, at the judge's batch price, and exactly once across a kill and a resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from evalpipe.pipeline.job.load import load_job
from evalpipe.pipeline.output.store import RunStore
from evalpipe.testing import FakeServer
from tests.pipeline.batch_jobs import KEY_VARIABLE, batch_backend, batch_job, items, run, stored_rows
from tests.pipeline.killing import run_until_killed
from tests.pipeline.test_batch_kill import CHILD

pytestmark = pytest.mark.anyio
RUBRIC = "Is it right? [[reply:Score: 8/10 because it echoes]]"  # the fake judge answers this verdict
JUDGE_PRICE_IN, JUDGE_PRICE_OUT = 1000.0, 2000.0
JUDGED = ("judge",)


def judged(server: FakeServer, judge_mode: str = "batch") -> dict[str, Any]:
    judge = {**batch_backend(server, "anthropic"), "id": "judge", "price_input_per_1m": JUDGE_PRICE_IN,
             "price_output_per_1m": JUDGE_PRICE_OUT}
    if judge_mode == "live":
        judge = {k: v for k, v in judge.items() if k not in ("mode", "batch")}
    return {"judges": [judge], "scorers": [{"type": "llm_judge", "name": "judge", "backend": "judge",
                                            "rubric": RUBRIC, "scale": [0, 10]}]}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(KEY_VARIABLE, "sk-batch-judges")
    with FakeServer() as srv:
        yield srv


async def test_a_judge_in_batch_mode_scores_as_live_judging_at_half_price(server: FakeServer,
                                                                          tmp_path: Path) -> None:
    batch = await run(batch_job(items(4), [batch_backend(server)], **judged(server)), tmp_path / "b")
    assert batch.state == "completed" and batch.counts["ok"] == 4
    stats = server.batch_stats()
    assert stats.batches_created == 2 and server.stats().requests == 0  # answers, then verdicts; nothing live
    (answers, verdicts) = RunStore.read_batch_chunks(batch.run_dir)
    assert answers.backend_id == "openai-batch" and verdicts.backend_id == "judge judging openai-batch"
    live = await run(batch_job(items(4), [batch_backend(server)], **judged(server, "live")), tmp_path / "l")
    for batch_row, live_row in zip(stored_rows(batch.run_dir, JUDGED), stored_rows(live.run_dir, JUDGED), strict=True):
        assert batch_row["score_judge"] == live_row["score_judge"] == pytest.approx(0.8)
        assert batch_row["explanation_judge"] == live_row["explanation_judge"]
        assert batch_row["scoring_input_tokens"] == live_row["scoring_input_tokens"] > 0
        assert batch_row["scoring_cost_usd"] == pytest.approx(live_row["scoring_cost_usd"] / 2)


async def test_detach_leaves_the_answers_then_collect_sends_and_collects_the_verdicts(server: FakeServer,
                                                                                     tmp_path: Path) -> None:
    loaded = batch_job(items(3), [batch_backend(server)], **judged(server))
    submitted = await run(loaded, tmp_path, detach=True)
    assert submitted.state == "submitted"
    collected = await run(loaded, tmp_path, run_dir=submitted.run_dir)
    assert collected.state == "completed" and collected.counts["ok"] == 3
    assert [row["score_judge"] for row in stored_rows(collected.run_dir, JUDGED)] == pytest.approx([0.8] * 3)


async def test_a_judge_in_batch_mode_needs_its_backends_in_batch_mode(server: FakeServer) -> None:
    live = {k: v for k, v in batch_backend(server).items() if k not in ("mode", "batch")}
    with pytest.raises(Exception, match="judges backends in batch mode only; openai-batch is live"):
        batch_job(items(1), [live], **judged(server))


async def test_sigkill_after_the_judge_batch_is_created_then_resume_judges_once(server: FakeServer,
                                                                                tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    spec = {"name": "batch-judge-kill", "dataset": {"items": items(3)}, "prompt": {"user": "{{ q }}"},
            "backends": [batch_backend(server)], **judged(server)}
    job.write_text(yaml.safe_dump(spec), encoding="utf-8")
    run_dir = tmp_path / "run"
    # The answers' batch is OpenAI's, the verdicts' Anthropic's: kill right after the verdicts' batch is made.
    run_until_killed(CHILD, str(job), str(run_dir), "anthropic", "create", stop=lambda line: line == "KILL")
    outcome = await run(load_job(job), tmp_path, run_dir=run_dir)
    assert outcome.state == "completed" and outcome.counts["ok"] == 3
    stats = server.batch_stats()
    assert stats.batches_created == 2 and set(stats.answers_by_id.values()) == {1}
    assert len(stored_rows(run_dir, JUDGED)) == 3
