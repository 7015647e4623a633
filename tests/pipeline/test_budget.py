"""The budget is a ceiling and the plan tells the truth, checked against the fake server's own counters:
a job whose judge costs more than its answers stops before it would spend past `max_cost_usd`, and
the plan's input tokens match what a run really sends (system prompt, dialogue turns, judge calls)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from evalpipe.pipeline.job.expand import plan_job
from evalpipe.pipeline.job.spec import BackendSpec
from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.testing import FakeServer
from evalpipe.types import ChatMessage
from tests.pipeline.test_runner import api_key, backend, job, outputs, run  # noqa: F401  (api_key is a fixture)

pytestmark = pytest.mark.anyio

ANSWER_PRICES = {"price_input_per_1m": 1.0, "price_output_per_1m": 2.0}
JUDGE_PRICES = {"price_input_per_1m": 1000.0, "price_output_per_1m": 2000.0}
RUBRIC = "Is the answer right? [[reply:Score: 8/10 because it echoes]]"  # the fake judge replies this verdict


def judged(srv: FakeServer, judge_srv: FakeServer, items: int, **fields: Any) -> Any:
    judge = backend(judge_srv, "judge", "anthropic", **JUDGE_PRICES)
    return job([{"q": f"what is item number {i}"} for i in range(items)], [backend(srv, "b", **ANSWER_PRICES)],
               prompt={"system": "Answer in a few words.", "user": "{{ q }}"},
               parameters={"sets": [{"name": "short", "max_tokens": 6}]}, judges=[judge],
               scorers=[{"type": "llm_judge", "name": "judge", "backend": "judge", "rubric": RUBRIC,
                         "scale": [0, 10], "max_tokens": 8}], **fields)


def fake_spend(srv: FakeServer, judge_srv: FakeServer) -> float:
    """What the two fake servers counted, at the job's prices (USD)."""
    answers, judges = srv.stats(), judge_srv.stats()
    return (answers.input_tokens * 1.0 + answers.output_tokens * 2.0
            + judges.input_tokens * 1000.0 + judges.output_tokens * 2000.0) / 1e6


async def test_a_budget_with_a_judge_is_never_crossed_and_the_run_says_it_stopped(
    api_key: str, tmp_path: Path  # noqa: F811
) -> None:
    with FakeServer() as srv, FakeServer() as judge_srv:
        # One task's judge call costs about $0.07 and its answer $0.00003: the judge is what spends.
        loaded = judged(srv, judge_srv, items=12, budget={"max_cost_usd": 0.25}, concurrency=4)
        outcome = await run(loaded, tmp_path)
        spent = fake_spend(srv, judge_srv)
        judge_calls = judge_srv.stats().requests
    rows = outputs(outcome, ["judge"])["store"]
    assert outcome.state == "budget_exhausted"
    assert 0 < outcome.counts["ok"] < 12 and judge_calls == outcome.counts["ok"]
    assert spent <= 0.25, spent  # what the servers counted, not only what the rows say
    assert sum(r["cost_usd"] + r["scoring_cost_usd"] for r in rows) == pytest.approx(spent)
    manifest = read_manifest(outcome.run_dir)
    assert manifest.state == "budget_exhausted" and manifest.cost_usd <= 0.25
    assert manifest.budget["max_cost_usd"] == 0.25


async def test_a_max_tokens_budget_counts_the_judges_tokens_too(api_key: str, tmp_path: Path) -> None:  # noqa: F811
    with FakeServer() as srv, FakeServer() as judge_srv:
        outcome = await run(judged(srv, judge_srv, items=12, budget={"max_tokens": 400}, concurrency=4), tmp_path)
        answers, judges = srv.stats(), judge_srv.stats()
    assert outcome.state == "budget_exhausted" and 0 < outcome.counts["ok"] < 12
    assert answers.input_tokens + answers.output_tokens + judges.input_tokens + judges.output_tokens <= 400


def fake_counter(backend: BackendSpec, messages: Sequence[ChatMessage], completion: bool) -> int:
    """Input tokens as the fake server documents its counting: the whitespace-separated words of every text."""
    return sum(len(message.content.split()) for message in messages)


@pytest.mark.parametrize("kind", ["judged", "dialogue"])
async def test_the_plan_input_tokens_are_within_15_percent_of_a_real_run(
    api_key: str, tmp_path: Path, kind: str  # noqa: F811
) -> None:
    with FakeServer() as srv, FakeServer() as judge_srv:
        if kind == "judged":
            loaded = judged(srv, judge_srv, items=6)
        else:
            transcript = [{"role": "system", "content": "be short and kind to the user"},
                          {"role": "user", "content": "first question about the weather today"},
                          {"role": "assistant", "content": "it is sunny with a light wind from the west"},
                          {"role": "user", "content": "and what about tomorrow morning"}]
            loaded = job([{"id": f"d{i}", "chat": transcript} for i in range(3)], [backend(srv, "b")],
                         prompt={"dialogue": "chat"}, parameters={"sets": [{"name": "s", "max_tokens": 8}]})
        plan = plan_job(loaded, count=fake_counter)
        outcome = await run(loaded, tmp_path)
        used = srv.stats().input_tokens + judge_srv.stats().input_tokens
    assert outcome.counts["ok"] == plan.tasks
    assert plan.calls == srv.stats().requests + judge_srv.stats().requests
    print(f"{kind}: planned {plan.input_tokens} input tokens, used {used}")
    assert abs(plan.input_tokens - used) <= 0.15 * used, (plan.input_tokens, used)
