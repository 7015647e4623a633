"""Evaluation features of job files, end to end against the fake server: dialogue items (a row per
turn, fixed and rollout histories), judges called through the job's limits and cache with their
spend on the row, and the best-of table."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.pipeline.job.expand import count_tasks, plan_job
from evalpipe.pipeline.output.best_of import BEST_OF_FILENAME, best_of
from evalpipe.pipeline.output.store import STORE_FILENAME
from evalpipe.testing import FakeServer
from tests.pipeline.test_runner import api_key, backend, job, outputs, run  # noqa: F401  (api_key is a fixture)

pytestmark = pytest.mark.anyio

TRANSCRIPT = [
    {"role": "system", "content": "be short"},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "the transcript's own long answer"},
    {"role": "user", "content": "second question"},
]


def dialogue_job(srv: FakeServer, mode: str, transcript: list[dict[str, str]] = TRANSCRIPT, **fields: Any) -> Any:
    return job([{"id": "d1", "chat": transcript}], [backend(srv, "b")],
               prompt={"dialogue": "chat", "dialogue_mode": mode}, **fields)


@pytest.mark.parametrize("mode", ["fixed", "rollout"])
async def test_a_dialogue_gives_one_row_per_user_turn_with_its_history(
    api_key: str, tmp_path: Path, mode: str  # noqa: F811
) -> None:
    with FakeServer() as srv:
        loaded = dialogue_job(srv, mode)
        outcome = await run(loaded, tmp_path)
        again = await run(loaded, tmp_path, run_dir=outcome.run_dir)  # resumed: every turn is done
        calls = srv.stats(api_key).requests
    rows = sorted(outputs(outcome)["store"], key=lambda r: r["turn"])
    assert count_tasks(loaded) == 2 and outcome.counts["ok"] == 2 and again.counts["ok"] == 2
    assert calls == 2  # the resumed run paid for nothing
    assert [(r["turn"], r["prompt"], r["response"]) for r in rows] == [
        (0, "first question", "Echo: first question"), (1, "second question", "Echo: second question")]
    assert rows[0]["task_id"].endswith("-000") and rows[1]["task_id"].endswith("-001")
    # The fake counts every word sent: turn 1's history is the transcript's answer (5 words) when
    # fixed, the model's own "Echo: first question" (3 words) in a rollout.
    history = 5 if mode == "fixed" else 3
    assert rows[0]["input_tokens"] == 2 + 2
    assert rows[1]["input_tokens"] == 2 + 2 + history + 2


async def test_a_rollout_turn_after_a_failed_turn_is_an_error_row_not_a_call(
    api_key: str, tmp_path: Path  # noqa: F811
) -> None:
    transcript = [{"role": "user", "content": "one [[fault:not_found]]"}, {"role": "user", "content": "two"},
                  {"role": "user", "content": "three"}]
    with FakeServer() as srv:
        outcome = await run(dialogue_job(srv, "rollout", transcript), tmp_path)
        calls = srv.stats(api_key).requests
    rows = sorted(outputs(outcome)["store"], key=lambda r: r["turn"])
    assert [(r["turn"], r["status"], r["error_type"]) for r in rows] == [
        (0, "error", "NotFoundError"), (1, "error", "PreviousTurnFailed"), (2, "error", "PreviousTurnFailed")]
    assert calls == 1


async def test_a_dialogue_field_that_is_not_a_transcript_is_refused_before_any_call(tmp_path: Path) -> None:
    with FakeServer() as srv, pytest.raises(Exception, match="chat"):
        dialogue_job(srv, "fixed", [{"role": "robot", "content": "hi"}])  # type: ignore[list-item]


async def run_crash_before_commit_and_resume(loaded: Any, tmp_path: Path) -> Any:
    """Run the job, forget its committed rows (as if it crashed after every call was paid and cached
    but before a row was committed), then resume it."""
    outcome = await run(loaded, tmp_path)
    with sqlite3.connect(outcome.run_dir / STORE_FILENAME) as connection:
        connection.execute("DELETE FROM rows")
    return await run(loaded, tmp_path, run_dir=outcome.run_dir)


def judged_job(srv: FakeServer, judge_srv: FakeServer, items: int = 3) -> Any:
    judge = backend(judge_srv, "judge", "anthropic", price_input_per_1m=1000.0, price_output_per_1m=2000.0)
    rubric = "Is it right? [[reply:Score: 8/10 because it echoes]]"  # the fake judge answers this verdict
    return job([{"q": f"question {i}"} for i in range(items)], [backend(srv, "b")], judges=[judge],
               scorers=[{"type": "llm_judge", "name": "judge", "backend": "judge", "rubric": rubric,
                         "scale": [0, 10]}])


async def test_judge_calls_go_through_the_job_cost_money_on_the_row_and_are_not_paid_twice(
    api_key: str, tmp_path: Path  # noqa: F811
) -> None:
    with FakeServer() as srv, FakeServer() as judge_srv:
        resumed = await run_crash_before_commit_and_resume(judged_job(srv, judge_srv), tmp_path)
        judge_calls = judge_srv.stats(api_key).requests
        answer_calls = srv.stats(api_key).requests
    rows = outputs(resumed, ["judge"])["store"]
    assert resumed.counts["ok"] == 3 and judge_calls == 3 and answer_calls == 3
    assert {r["backend_id"] for r in rows} == {"b"}  # a judge is called, never evaluated
    for row in rows:
        assert row["score_judge"] == pytest.approx(0.8)
        assert "because it echoes" in row["explanation_judge"]
        assert row["scoring_input_tokens"] > 0 and row["scoring_output_tokens"] == 5
        expected = (row["scoring_input_tokens"] * 1000.0 + 5 * 2000.0) / 1e6
        assert row["scoring_cost_usd"] == pytest.approx(expected)
    manifest = json.loads((resumed.run_dir / "manifest.json").read_text())
    assert manifest["cost_usd"] == pytest.approx(sum(r["scoring_cost_usd"] for r in rows))


async def test_a_scorer_naming_an_unknown_backend_fails_at_load(tmp_path: Path) -> None:
    with FakeServer() as srv, pytest.raises(Exception, match="nowhere"):
        job([{"q": "x"}], [backend(srv, "b")],
            scorers=[{"type": "llm_judge", "backend": "nowhere", "rubric": "Is it right?"}])


async def test_best_of_table_names_the_best_scored_answer_and_never_an_error(
    api_key: str, tmp_path: Path  # noqa: F811
) -> None:
    # `broken` comes first and fails every call; `a` and `b` give the same answers, so they tie (a tie,
    # not a win for `a`); item i1's answers miss the wanted word, so nobody scores above 0 there but the
    # scored rows still compete.
    items = [{"id": "i0", "q": "plain", "want": "Echo"}, {"id": "i1", "q": "other", "want": "absent"}]
    with FakeServer() as broken, FakeServer() as srv:
        broken.set_fault("not_found")
        loaded = job(items, [backend(broken, "broken"), backend(srv, "a"), backend(srv, "b", "anthropic")],
                     scorers=[{"type": "contains", "values": ["{{ want }}"]}])
        outcome = await run(loaded, tmp_path)
    table = {r["item_id"]: r for r in pq.read_table(outcome.run_dir / BEST_OF_FILENAME).to_pylist()}
    assert set(table) == {"i0", "i1"}
    for item_id, score in (("i0", 1.0), ("i1", 0.0)):
        record = table[item_id]
        assert (record["candidates"], record["scored"]) == (3, 2)
        assert (record["winner_backend_id"], record["winner_score"], record["runner_up_score"]) == (None, score, score)
        assert record["tie"] and record["tied_backend_ids"] == ["a", "b"]


def test_best_of_without_any_scored_candidate_has_no_winner() -> None:
    rows = [{"item_id": "x", "task_id": "t1", "task_index": 0, "status": "error", "score_total": None},
            {"item_id": "x", "task_id": "t2", "task_index": 1, "status": "ok", "score_total": None}]
    (record,) = best_of(rows)
    assert record["winner_task_id"] is None and record["candidates"] == 2 and record["scored"] == 0


def test_best_of_shared_top_total_is_a_tie_listed_in_expansion_order() -> None:
    rows = [{"item_id": "x", "task_id": f"t{i}", "task_index": i, "status": "ok", "score_total": s,
             "backend_id": f"b{i}", "param_set": "p"} for i, s in enumerate([0.5, 0.9, 0.9, 0.1])]
    (record,) = best_of(reversed(rows))  # arrival order does not decide
    assert (record["winner_backend_id"], record["winner_score"], record["runner_up_score"]) == (None, 0.9, 0.9)
    assert record["tie"] and record["tied_backend_ids"] == ["b1", "b2"] and record["tied_task_ids"] == ["t1", "t2"]


def test_best_of_single_top_total_wins_with_the_runner_up_below() -> None:
    rows = [{"item_id": "x", "task_id": f"t{i}", "task_index": i, "status": "ok", "score_total": s,
             "backend_id": f"b{i}"} for i, s in enumerate([0.5, 0.7, 0.9, 0.7])]
    (record,) = best_of(rows)
    assert (record["winner_backend_id"], record["winner_score"], record["runner_up_score"]) == ("b2", 0.9, 0.7)
    assert not record["tie"] and record["tied_backend_ids"] == []


def chain_job(srv: FakeServer, helper_srv: FakeServer, second: str = "Title for: {{ summary }}") -> Any:
    helper = backend(helper_srv, "helper", "anthropic", price_input_per_1m=1000.0)
    steps = [{"name": "summary", "user": "Summarize: {{ text }}", "max_tokens": 20},
             {"name": "title", "user": second, "backend": "helper", "transform": ["trim"]}]
    return job([{"id": "a", "text": "alpha beta"}, {"id": "b", "text": "gamma"}],
               [backend(srv, "b", price_input_per_1m=100.0)], judges=[helper], prompt={"chain": steps},
               scorers=[{"type": "contains", "values": ["Summarize"]}])


async def test_a_chain_is_the_unit_a_job_scores_with_every_step_counted_and_paid_once(
    api_key: str, tmp_path: Path  # noqa: F811
) -> None:
    with FakeServer() as srv, FakeServer() as helper_srv:
        resumed = await run_crash_before_commit_and_resume(chain_job(srv, helper_srv), tmp_path)
        first_steps, second_steps = srv.stats(api_key), helper_srv.stats(api_key)
    rows = {r["item_id"]: r for r in outputs(resumed, ["contains"])["store"]}
    assert first_steps.requests == 2 and second_steps.requests == 2  # one per item and step, resume included
    # Step 1 on `b` echoes its prompt; step 2 on `helper` echoes the title prompt built from step 1's output.
    assert rows["a"]["response"] == "Echo: Title for: Echo: Summarize: alpha beta"
    assert rows["a"]["prompt"] == "Summarize: alpha beta" and rows["a"]["score_contains"] == 1.0
    # Tokens and cost of both steps: (3 in + 4 out) on `b`, (6 in + 7 out) on `helper`.
    assert (rows["a"]["input_tokens"], rows["a"]["output_tokens"]) == (3 + 6, 4 + 7)
    assert rows["a"]["cost_usd"] == pytest.approx((3 * 100.0 + 6 * 1000.0) / 1e6)
    assert {r["backend_id"] for r in rows.values()} == {"b"}


async def test_a_chain_step_reading_an_undefined_name_fails_at_load_naming_the_step(tmp_path: Path) -> None:
    with FakeServer() as srv, pytest.raises(Exception, match=r"prompt\.chain\[1\].*tittle"):
        chain_job(srv, srv, second="Title for: {{ tittle }}")


async def test_a_chain_failing_at_a_later_step_is_an_error_row_that_still_counts_the_steps_paid(
    api_key: str, tmp_path: Path  # noqa: F811
) -> None:
    with FakeServer() as srv, FakeServer() as helper_srv:
        helper_srv.set_fault("not_found")  # the second step's backend refuses every call
        outcome = await run(chain_job(srv, helper_srv), tmp_path)
    rows = {r["item_id"]: r for r in outputs(outcome, ["contains"])["store"]}
    row = rows["a"]
    assert (row["status"], row["error_type"]) == ("error", "NotFoundError")
    assert "chain step 'title'" in row["error_message"]
    assert (row["input_tokens"], row["output_tokens"]) == (3, 4)  # the first step, paid on `b`
    assert row["cost_usd"] == pytest.approx(3 * 100.0 / 1e6)


def test_the_plan_counts_judge_and_chain_step_calls_on_the_backend_that_answers_them() -> None:
    with FakeServer() as srv, FakeServer() as helper_srv:
        loaded = chain_job(srv, helper_srv)  # 2 items; step 1 on `b`, step 2 on the judge `helper`
        judged = judged_job(srv, helper_srv, items=3)  # 3 items; one llm_judge scorer on `judge`
    plan = {b.backend_id: b for b in plan_job(loaded).backends}
    assert (plan["b"].calls, plan["helper"].calls) == (2, 2)
    assert plan["helper"].cost_usd > 0  # priced at the judge's own input price
    judged_plan = plan_job(judged)
    assert {b.backend_id: b.calls for b in judged_plan.backends} == {"b": 3, "judge": 3}
    assert judged_plan.tasks == 3 and judged_plan.calls == 6
    assert {b.backend_id: b.output_tokens for b in judged_plan.backends}["judge"] == 3 * 512
