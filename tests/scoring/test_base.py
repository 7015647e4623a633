"""A plain function as a scorer: its number mapped from its scale, never clamped without saying so."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.pipeline.job.load import prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.sinks import PARQUET_DIRNAME
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.scoring.base import FunctionScorer, ScoreRangeWarning, to_score
from evalpipe.testing import FakeServer
from evalpipe.types import ChatResponse


@pytest.mark.parametrize(("result", "scale", "value", "explanation"), [
    (0.25, None, 0.25, None),
    (True, None, 1.0, None),
    (3, (0, 4), 0.75, None),
    (2.0, None, 1.0, "clamped to 1 from 2: outside [0, 1], and no scale was declared"),
    (-0.5, None, 0.0, "clamped to 0 from -0.5: outside [0, 1], and no scale was declared"),
    (12, (1, 10), 1.0, "clamped to 1 from 12: outside the declared scale [1, 10]"),
])
def test_a_number_is_mapped_from_its_scale_and_a_clamped_one_says_from_what(
    result: object, scale: tuple[float, float] | None, value: float, explanation: str | None
) -> None:
    score = to_score(result, "f", scale)
    assert (score.value, score.explanation) == (value, explanation)
    if not isinstance(result, bool):
        assert score.metadata["raw_score"] == result


def test_something_not_a_number_is_a_missing_score_with_the_reason() -> None:
    assert to_score("high", "f").error == "f returned 'high', not a finite number"
    assert to_score(float("inf"), "f").value is None


@pytest.mark.anyio
async def test_the_warning_names_the_criterion_once() -> None:
    scorer = FunctionScorer(lambda text: len(text), "length")
    with pytest.warns(ScoreRangeWarning) as caught:
        scores = [await scorer({}, [], ChatResponse(text)) for text in ("a", "abc", "abcdef")]
    assert [s.value for s in scores] == [1.0, 1.0, 1.0]
    assert [s.metadata["raw_score"] for s in scores] == [1, 3, 6]
    assert [str(w.message) for w in caught] == [
        "criterion 'length': clamped to 1 from 3: outside [0, 1], and no scale was declared (declare its scale, "
        "or return a number in [0, 1]); later clamped scores say so in their explanation only"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        in_range = FunctionScorer(lambda text: 0.5, "half")
        assert (await in_range({}, [], ChatResponse("x"))).value == 0.5


@pytest.mark.anyio
async def test_a_job_files_function_scorer_says_it_was_clamped_in_its_explanation_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALPIPE_TEST_BASE_KEY", "sk-base-clamped")
    with FakeServer() as srv:
        spec = JobSpec.model_validate({
            "name": "clamped", "dataset": {"items": [{"q": "hi"}]}, "prompt": {"user": "{{ q }}"},
            "backends": [{"id": "a", "backend": "openai", "model": "m", "base_url": srv.url_for("openai"),
                          "api_key_env": "EVALPIPE_TEST_BASE_KEY"}],
            "scorers": [{"type": "builtins:len", "name": "length"}],  # the answer's length: "Echo: hi" is 8
        })
        with pytest.warns(ScoreRangeWarning, match="'length'"):
            outcome = await run_job(prepare_job(spec), RunOptions(out_root=tmp_path, handle_signals=False))
    [row] = pads.dataset(outcome.run_dir / PARQUET_DIRNAME, format="parquet").to_table().to_pylist()
    assert row["score_length"] == 1.0
    assert row["explanation_length"] == "clamped to 1 from 8: outside [0, 1], and no scale was declared"
