"""Pass verdicts of whole jobs against the fake server: no threshold means no verdict (and no pass
rate in the summary), a thresholded criterion decides it, criteria read row fields (cost, latency,
finish reason), `negate` and `when` work from job files; and every shipped job validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evalpipe.analysis.runs import open_run
from evalpipe.analysis.summary import summarize
from evalpipe.cli import main
from evalpipe.testing import FakeServer
from tests.pipeline.test_runner import api_key, backend, job, outputs, run  # noqa: F401  (api_key is a fixture)

SHIPPED_JOBS = sorted((Path(__file__).parents[2] / "jobs").glob("*.yaml"))


def rows_by_item(outcome: Any, criteria: list[str]) -> dict[str, dict[str, Any]]:
    return {row["item_id"]: row for row in outputs(outcome, criteria)["parquet"]}


@pytest.mark.anyio
async def test_without_thresholds_rows_have_no_verdict_and_the_summary_no_pass_rate(
    api_key: str, tmp_path: Path  # noqa: F811
) -> None:
    # The nightly job on the local model once read "correct 0.000, pass rate 100 %": every answered
    # row "passed" because no criterion had a threshold.
    items = [{"id": "right", "q": "4"}, {"id": "wrong", "q": "5"}, {"id": "broken", "q": "x [[fault:not_found]]"}]
    scorers = [{"type": "contains", "name": "correct", "values": ["4"]}]
    with FakeServer() as srv:
        outcome = await run(job(items, [backend(srv, "b")], scorers=scorers), tmp_path)
    rows = rows_by_item(outcome, ["correct"])
    assert (rows["right"]["score_correct"], rows["wrong"]["score_correct"]) == (1.0, 0.0)
    assert [rows[i]["passed"] for i in ("right", "wrong", "broken")] == [None, None, None]
    (group,) = summarize(open_run(outcome.run_dir)).groups
    assert group.pass_rate is None and group.errors == 1


@pytest.mark.anyio
async def test_a_thresholded_criterion_decides_and_14_is_not_4(api_key: str, tmp_path: Path) -> None:  # noqa: F811
    items = [{"id": "fourteen", "q": "[[reply:14]]", "expected": "4"},
             {"id": "four", "q": "[[reply:It is 4.]]", "expected": "4"},
             {"id": "broken", "q": "x [[fault:not_found]]", "expected": "4"}]
    scorers = [{"type": "contains", "name": "says", "values": ["{{ expected }}"], "threshold": 1},
               {"type": "numeric", "name": "value", "expected": "{{ expected }}"},
               {"type": "regex", "name": "short", "pattern": "^.{1,3}$"}]  # unthresholded: no say in passed
    with FakeServer() as srv:
        outcome = await run(job(items, [backend(srv, "b")], scorers=scorers), tmp_path)
    rows = rows_by_item(outcome, ["says", "value", "short"])
    fourteen, four = rows["fourteen"], rows["four"]
    assert (fourteen["score_says"], fourteen["score_value"], fourteen["passed"]) == (0.0, 0.0, False)
    assert fourteen["explanation_value"] == "read 14 (from '14'), differs from the expected 4"
    assert (four["score_says"], four["score_value"], four["score_short"], four["passed"]) == (1.0, 1.0, 0.0, True)
    assert rows["broken"]["status"] == "error" and rows["broken"]["passed"] is None


@pytest.mark.anyio
async def test_criteria_on_cost_latency_and_finish_reason(api_key: str, tmp_path: Path) -> None:  # noqa: F811
    # $1 per output token: "Echo: a b c" is 4 tokens ($4); six words cut to 4 end with "length" ($4 too).
    items = [{"id": "long", "q": "a b c"}, {"id": "cut", "q": "[[reply:one two three four five six]]"}]
    scorers = [{"type": "field", "name": "cheap", "field": "cost_usd", "max": 3.0, "threshold": 1},
               {"type": "field", "name": "quick", "field": "latency_s", "max": 30.0},
               {"type": "field", "name": "finished", "field": "finish_reason", "equals": "stop"}]
    params = {"sets": [{"name": "short", "max_tokens": 4}]}
    with FakeServer() as srv:
        backends = [backend(srv, "b", price_output_per_1m=1_000_000.0)]
        outcome = await run(job(items, backends, scorers=scorers, parameters=params), tmp_path)
    rows = rows_by_item(outcome, ["cheap", "quick", "finished"])
    long, cut = rows["long"], rows["cut"]
    assert long["cost_usd"] == pytest.approx(4.0) and long["finish_reason"] == "stop"
    assert (long["score_cheap"], long["score_quick"], long["score_finished"], long["passed"]) == (0.0, 1.0, 1.0, False)
    assert long["explanation_cheap"] == "cost_usd 4, above the maximum of 3"
    assert cut["finish_reason"] == "length" and cut["score_finished"] == 0.0
    assert cut["cost_usd"] == pytest.approx(4.0) and cut["passed"] is False


@pytest.mark.anyio
async def test_negate_and_when_from_a_job(api_key: str, tmp_path: Path) -> None:  # noqa: F811
    refusal = "[[reply:I'm sorry, but I can't help with that.]]"
    items = [{"id": "refuses", "kind": "number", "expected": "7", "q": refusal},
             {"id": "answers", "kind": "number", "expected": "7", "q": "[[reply:The answer is 7.]]"},
             {"id": "word", "kind": "text", "expected": "Paris", "q": "[[reply:Paris]]"}]
    scorers = [{"type": "is_refusal", "name": "answered", "negate": True, "threshold": 1},
               {"type": "numeric", "name": "number", "expected": "{{ expected }}", "when": "{{ kind == 'number' }}",
                "threshold": 1},
               {"type": "contains", "name": "word", "values": ["{{ expected }}"], "when": "{{ kind == 'text' }}",
                "threshold": 1}]
    with FakeServer() as srv:
        outcome = await run(job(items, [backend(srv, "b")], scorers=scorers), tmp_path)
    rows = rows_by_item(outcome, ["answered", "number", "word"])
    refuses, answers, word = rows["refuses"], rows["answers"], rows["word"]
    assert refuses["score_answered"] == 0.0 and refuses["explanation_answered"].startswith("negated: refusal wording")
    assert refuses["passed"] is False
    assert (answers["score_answered"], answers["score_number"], answers["score_word"], answers["passed"]) == (
        1.0, 1.0, None, True)
    assert answers["explanation_word"] == "not applicable (when: {{ kind == 'text' }})"
    assert answers["score_total"] == 1.0  # a criterion that does not apply is not in the total
    assert (word["score_number"], word["score_word"], word["passed"]) == (None, 1.0, True)


@pytest.mark.parametrize("path", SHIPPED_JOBS, ids=[p.name for p in SHIPPED_JOBS])
def test_every_shipped_job_validates(path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY",
                     "EVALPIPE_FAKE_KEY"):  # validate calls nothing; nightly names five vendors, tools the fake
        monkeypatch.setenv(variable, "sk-validate-only")
    assert main(["validate", str(path)]) == 0
    assert ": valid" in capsys.readouterr().out
