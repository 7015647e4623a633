"""`evalpipe summary`: the numbers agree with a direct computation over the rows, in every format."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.analysis.runs import open_run
from evalpipe.analysis.summary import summarize
from evalpipe.cli import main


def rows_of(run_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pads.dataset(run_dir / "parquet", format="parquet").to_table().to_pylist()
    return rows


def test_summary_of_a_real_run_matches_its_rows(real_run: Path) -> None:
    rows = rows_of(real_run)
    summary = summarize(open_run(real_run))
    assert not summary.partial and summary.state == "completed"
    assert summary.metrics == ["score_total", "score_says_answer"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row["task_index"]):
        groups[(row["backend_id"], row["param_set"])].append(row)
    assert len(groups) == 8
    assert [(g.backend_id, g.param_set) for g in summary.groups] == list(groups)  # in the order of the job's tasks
    for group in summary.groups:
        expected = groups[(group.backend_id, group.param_set)]
        ok = [r for r in expected if r["status"] == "ok"]
        assert (group.rows, group.ok, group.errors) == (6, 5, 1)
        assert group.errors_by_type == {"ContextLengthError": 1}
        assert group.scores["score_total"].mean == pytest.approx(statistics.fmean(r["score_total"] for r in ok))
        assert group.scores["score_total"].n == 5 and group.scores["score_total"].items == 5
        assert group.items == 6  # the failed item is an item too
        # Over every attempted row: the error row is not a pass.
        assert group.pass_rate is not None
        assert group.pass_rate.mean == pytest.approx(sum(bool(r["passed"]) for r in expected) / len(expected))
        assert (group.pass_rate.n, group.pass_rate.items) == (6, 6)
        assert group.latency_p50_s == pytest.approx(statistics.median(r["latency_s"] for r in ok))
        assert group.input_tokens == sum(r["input_tokens"] or 0 for r in expected)
        assert group.generation_cost_usd == pytest.approx(sum(r["cost_usd"] or 0 for r in expected))
        assert group.cost_usd == pytest.approx(sum((r["cost_usd"] or 0) + (r["scoring_cost_usd"] or 0)
                                                   for r in expected))
        assert (group.temperature, group.top_p) == (expected[0]["temperature"], expected[0]["top_p"])


def test_summary_formats_carry_the_same_numbers(baseline_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(baseline_run), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(["summary", str(baseline_run), "--format", "csv"]) == 0
    records = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(records) == len(data["groups"]) == 6
    for record, group in zip(records, data["groups"], strict=True):
        assert float(record["score_total_mean"]) == pytest.approx(group["score_total_mean"])
        assert float(record["score_total_ci_low"]) < group["score_total_mean"] < float(record["score_total_ci_high"])
        assert int(record["errors_RateLimitError"]) == group["errors_RateLimitError"]
    assert main(["summary", str(baseline_run), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.count("\n| alpha |") == 3
    assert "| backend | param set | rows | errors | skipped | total | accuracy | judge | pass rate |" in markdown
    for group in data["groups"]:
        assert group["score_total_items"] == 80 and group["score_total_method"] == "bootstrap"
        assert group["items"] == 80 and group["repeats"] == 2 and group["rows"] == 160
    assert main(["summary", str(baseline_run)]) == 0
    assert "95% bootstrap CI" in capsys.readouterr().out


def test_summary_is_reproducible(baseline_run: Path) -> None:
    assert summarize(open_run(baseline_run)) == summarize(open_run(baseline_run))


def test_sweep_finds_the_planted_temperature_effect(baseline_run: Path) -> None:
    # The synthetic success probability falls with (temperature − 0.7)²: "warm" beats "hot" for both backends.
    summary = summarize(open_run(baseline_run))
    groups = {(g.backend_id, g.param_set): g.scores["score_total"].mean for g in summary.groups}
    assert groups[("alpha", "warm")] > groups[("alpha", "hot")]
    assert groups[("alpha", "warm")] > groups[("beta", "warm")]  # alpha's quality is 0.7, beta's 0.5


@pytest.mark.parametrize("with_param_set", [True, False])
def test_best_of_wins_are_counted(tmp_path: Path, baseline_run: Path, with_param_set: bool,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(baseline_run, run_dir)
    table = {"item_id": ["item-1", "item-2", "item-3"], "repeat": [0, 0, 0], "turn": [0, 0, 0],
             "winner_backend_id": ["alpha", "alpha", "beta"], "winner_score": [1.0, 0.9, 0.8]}
    if with_param_set:
        table["winner_param_set"] = ["warm", "warm", "cold"]
    pq.write_table(pa.table(table), run_dir / "best_of.parquet")
    summary = summarize(open_run(run_dir))
    assert summary.best_of_contests == 3
    if with_param_set:
        wins = {(g.backend_id, g.param_set): g.best_of_wins for g in summary.groups}
        assert wins[("alpha", "warm")] == 2 and wins[("beta", "cold")] == 1 and wins[("alpha", "hot")] == 0
    else:
        assert summary.best_of_wins_by_backend == {"alpha": 2, "beta": 1}
    assert main(["summary", str(run_dir)]) == 0
    assert "best-of" in capsys.readouterr().out


def test_unreadable_best_of_is_a_warning(tmp_path: Path, baseline_run: Path) -> None:
    shutil.copytree(baseline_run, tmp_path / "run")
    (tmp_path / "run" / "best_of.parquet").write_bytes(b"not parquet")
    summary = summarize(open_run(tmp_path / "run"))
    assert summary.partial and "best_of.parquet cannot be read" in summary.warnings[0]
