"""What a job sends and records beyond text: time to first token from streamed answers, pass-through
body fields and headers per backend and parameter set (grid keys included), reasoning controls, and
sampling options a backend ignores recorded as not sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.analysis.runs import open_run
from evalpipe.analysis.summary import summarize
from evalpipe.analysis.tables import summary_text
from evalpipe.pipeline.job.load import ignored_sweeps, prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.sinks import PARQUET_DIRNAME
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer

pytestmark = pytest.mark.anyio
KEY_VARIABLE = "EVALPIPE_TEST_ANSWERS_KEY"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    key = f"sk-answers-{request.node.name}"
    monkeypatch.setenv(KEY_VARIABLE, key)
    return key


def spec(srv: FakeServer, *, backend: dict[str, Any] | None = None, **fields: Any) -> JobSpec:
    return JobSpec.model_validate({
        "name": "answers", "dataset": {"items": [{"id": "a", "q": "one two three four five"}]},
        "prompt": {"user": "{{ q }}"},
        "backends": [{"id": "gpt", "backend": "openai", "model": "gpt-test", "base_url": srv.url_for("openai"),
                      "api_key_env": KEY_VARIABLE, **(backend or {})}],
        **fields})


async def rows_of(job: JobSpec, tmp_path: Path) -> list[dict[str, Any]]:
    outcome = await run_job(prepare_job(job), RunOptions(out_root=tmp_path, handle_signals=False))
    rows: list[dict[str, Any]] = pads.dataset(outcome.run_dir / PARQUET_DIRNAME).to_table().to_pylist()
    return sorted(rows, key=lambda row: row["task_index"])


async def test_rows_carry_time_to_first_token_when_the_backend_streams(fake_server: FakeServer,
                                                                       tmp_path: Path) -> None:
    streamed = await rows_of(spec(fake_server), tmp_path / "streamed")
    plain = await rows_of(spec(fake_server, backend={"stream": False}), tmp_path / "plain")

    assert streamed[0]["status"] == "ok" and streamed[0]["response"] == "Echo: one two three four five"
    assert streamed[0]["ttft_s"] is not None and 0 < streamed[0]["ttft_s"] <= streamed[0]["latency_s"]
    assert streamed[0]["output_tokens"] == plain[0]["output_tokens"] > 0  # the same answer, the same price
    assert plain[0]["ttft_s"] is None


async def test_a_grid_sweeps_a_body_field_evalpipe_has_no_name_for(fake_server: FakeServer, tmp_path: Path) -> None:
    # `max_completion_tokens` reaches the wire only through the pass-through: the fake server cuts the
    # answer to that many words, so each grid point's answer shows what was sent.
    job = spec(fake_server, parameters={"grid": {"extra_body.max_completion_tokens": [2, 4]}})
    rows = await rows_of(job, tmp_path)

    assert [row["param_set"] for row in rows] == ["extra_body.max_completion_tokens=2",
                                                  "extra_body.max_completion_tokens=4"]
    assert [len(row["response"].split()) for row in rows] == [2, 4]
    assert [row["finish_reason"] for row in rows] == ["length", "length"]


async def test_backend_body_fields_sit_beneath_the_parameter_sets(fake_server: FakeServer, tmp_path: Path) -> None:
    job = spec(fake_server, backend={"extra_body": {"max_completion_tokens": 1}},
               parameters={"sets": [{"name": "inherits"}, {"name": "own", "extra_body": {"max_completion_tokens": 3}}]})
    rows = await rows_of(job, tmp_path)

    assert [len(row["response"].split()) for row in rows] == [1, 3]


async def test_backend_headers_reach_the_wire_and_never_the_rows(fake_server: FakeServer, tmp_path: Path) -> None:
    # The fake server reads the key from Authorization: a header given by the job replaces it there.
    secret = "Bearer invalid-header-secret-1234567890"
    rows = await rows_of(spec(fake_server, backend={"headers": {"Authorization": secret}}), tmp_path)

    assert rows[0]["status"] == "error" and rows[0]["error_type"] == "AuthenticationError"
    assert "header-secret" not in repr(rows)


async def test_reasoning_controls_are_parameters_with_columns(fake_server: FakeServer, tmp_path: Path) -> None:
    job = spec(fake_server, parameters={"grid": {"reasoning_effort": ["low", "high"]},
                                        "defaults": {"reasoning_budget_tokens": 2048}})
    rows = await rows_of(job, tmp_path)

    assert [row["param_set"] for row in rows] == ["reasoning_effort=low", "reasoning_effort=high"]
    assert [row["reasoning_effort"] for row in rows] == ["low", "high"]


async def test_an_option_the_backend_ignores_is_recorded_as_not_sent(fake_server: FakeServer, tmp_path: Path) -> None:
    job = JobSpec.model_validate({
        "name": "ignored", "dataset": {"items": [{"id": "a", "q": "hello"}]}, "prompt": {"user": "{{ q }}"},
        "backends": [{"id": "phind", "backend": "phind", "base_url": fake_server.url_for("phind")}],
        "parameters": {"grid": {"temperature": [0.1, 0.9]}}})
    rows = await rows_of(job, tmp_path)

    assert [row["temperature"] for row in rows] == [None, None]  # Phind sends no sampling option
    warnings = ignored_sweeps(job)
    assert len(warnings) == 1 and "phind" in warnings[0] and "temperature" in warnings[0]


def test_grid_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="grid key 'temprature'"):
        JobSpec.model_validate({"name": "x", "dataset": {"items": [{"q": "a"}]}, "prompt": {"user": "{{ q }}"},
                                "backends": [{"id": "l", "backend": "local"}],
                                "parameters": {"grid": {"temprature": [0.1]}}})


@pytest.mark.parametrize("kind, vendor", [("ollama", "ollama"), ("openai", "openai")])
async def test_completions_stream_too(fake_server: FakeServer, tmp_path: Path, kind: str, vendor: str) -> None:
    job = JobSpec.model_validate({
        "name": "completions", "dataset": {"items": [{"id": "a", "q": "one two three"}]},
        "prompt": {"user": "{{ q }}", "mode": "completion"},
        "backends": [{"id": kind, "backend": kind, "model": "m", "base_url": fake_server.url_for(vendor),
                      "api_key_env": KEY_VARIABLE}]})
    [row] = await rows_of(job, tmp_path)

    assert row["status"] == "ok" and row["response"] == "Echo: one two three"
    assert row["ttft_s"] is not None and row["output_tokens"] > 0


async def test_usage_by_kind_reaches_rows_cost_and_summary(fake_server: FakeServer, tmp_path: Path) -> None:
    # A reasoning model whose prompt cache held 4 of the input tokens.
    job = JobSpec.model_validate({
        "name": "kinds", "dataset": {"items": [{"id": "a", "q": "one two three four five six [[cached:4]]"}]},
        "prompt": {"user": "{{ q }}"},
        "backends": [{"id": "r1", "backend": "deepseek", "model": "deepseek-reasoner",
                      "base_url": fake_server.url_for("deepseek"), "api_key_env": KEY_VARIABLE,
                      "price_input_per_1m": 1.0, "price_cached_input_per_1m": 0.1, "price_output_per_1m": 2.0}]})
    outcome = await run_job(prepare_job(job), RunOptions(out_root=tmp_path, handle_signals=False))
    [row] = pads.dataset(outcome.run_dir / PARQUET_DIRNAME).to_table().to_pylist()

    assert row["status"] == "ok" and row["reasoning"] and row["reasoning_tokens"] > 0
    assert row["cached_input_tokens"] == 4 and row["output_tokens"] > row["reasoning_tokens"]
    expected = ((row["input_tokens"] - 4) * 1.0 + 4 * 0.1 + row["output_tokens"] * 2.0) / 1e6
    assert row["cost_usd"] == pytest.approx(expected)
    (group,) = summarize(open_run(outcome.run_dir)).groups
    assert group.token_kinds["cached_input_tokens"] == 4
    assert group.token_kinds["reasoning_tokens"] == row["reasoning_tokens"]
    assert "(4 cached)" in summary_text(summarize(open_run(outcome.run_dir)), "markdown")
