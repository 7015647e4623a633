"""`evalpipe summary`: the numbers agree with a direct computation over the rows, in every format."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.analysis.runs import collect_all, open_run
from evalpipe.analysis.summary import (
    GROUP_KEYS,
    estimates_from,
    merge_value_counts,
    summarize,
    value_count_queries,
    value_counts_from,
)
from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run
from evalpipe.analysis.tables import pass_rate_cell, summary_text
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
    assert "95% CI over items" in capsys.readouterr().out


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


# -- numbers that used to flatter a run -----------------------------------------------------------------


def rewrite_rows(run_dir: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite every Parquet part of `run_dir` through `change` (same schema)."""
    for part in sorted((run_dir / "parquet").glob("part-*.parquet")):
        table = pq.read_table(part)
        pq.write_table(change(table).cast(table.schema), part)


def replace_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def test_errors_count_against_the_pass_rate_and_every_mean_names_its_denominator(tmp_path: Path) -> None:
    # Every answered row is perfect, 15 % of rows failed: the run is not "1.000 and 100 %".
    run_dir = write_synthetic_run(tmp_path / "run", SyntheticRun(items=200, backends={"alpha": 0.7}, error_rate=0.15))

    def perfect(table: pa.Table) -> pa.Table:
        answered = pc.equal(table["status"], "ok")
        for name in ("score_total", "score_accuracy", "score_judge"):
            table = replace_column(table, name, pc.if_else(answered, 1.0, None))
        return replace_column(table, "passed", pc.if_else(answered, True, None))

    rewrite_rows(run_dir, perfect)
    (group,) = summarize(open_run(run_dir)).groups
    assert 20 < group.errors < 40 and group.rows == 200
    assert group.scores["score_total"].mean == 1.0 and group.scores["score_total"].n == group.ok
    assert group.pass_rate is not None
    assert group.pass_rate.mean == pytest.approx(group.ok / group.rows) and group.pass_rate.n == group.rows
    assert group.pass_rate.high < 0.95  # the interval knows the errors too
    markdown = summary_text(summarize(open_run(run_dir)), "markdown")
    # Perfect on every answered item: the interval is Wilson's over the items, not the bootstrap's [1, 1].
    low = group.scores["score_total"].low
    assert group.scores["score_total"].method == "wilson" and 0.97 < low < 1.0
    assert f"1.000 [{low:.3f}, 1.000] · {group.ok}/200 scored · {group.ok} items × 1" in markdown
    assert f"{group.ok / 200:.1%}" in markdown and f"{group.ok}/200 passed" in markdown
    assert f"| {group.errors} ({group.errors / 200:.1%}: RateLimitError {group.errors}) |" in markdown


def test_a_run_without_verdicts_has_no_pass_rate_and_a_group_of_errors_passes_nothing(
        tmp_path: Path, baseline_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_verdicts = tmp_path / "no-verdicts"
    shutil.copytree(baseline_run, no_verdicts)
    rewrite_rows(no_verdicts, lambda table: replace_column(table, "passed", pa.nulls(table.num_rows, pa.bool_())))
    summary = summarize(open_run(no_verdicts))
    assert all(group.pass_rate is None for group in summary.groups)
    assert main(["summary", str(no_verdicts), "--format", "json"]) == 0
    assert all(group["pass_rate"] is None for group in json.loads(capsys.readouterr().out)["groups"])
    assert all(cell == "—" for cell in (pass_rate_cell(group.pass_rate) for group in summary.groups))
    # One parameter set fails on every row while the others have verdicts: it passed 0 %, not "—".
    failing = tmp_path / "failing"
    shutil.copytree(baseline_run, failing)

    def fail_hot(table: pa.Table) -> pa.Table:
        hot = pc.equal(table["param_set"], "hot")
        table = replace_column(table, "status", pc.if_else(hot, "error", table["status"]))
        return replace_column(table, "passed", pc.if_else(hot, pa.scalar(None, pa.bool_()), table["passed"]))

    rewrite_rows(failing, fail_hot)
    groups = {(g.backend_id, g.param_set): g for g in summarize(open_run(failing)).groups}
    hot = groups[("alpha", "hot")].pass_rate
    assert hot is not None and hot.mean == 0.0 and hot.n == 160


def test_intervals_resample_items_so_repeats_widen_them_and_equal_columns_get_equal_intervals(tmp_path: Path) -> None:
    # 100 items × 5 repeats: each item's difficulty is shared by its five rows.
    spec = SyntheticRun(items=100, repeats=5, backends={"alpha": 0.7, "beta": 0.5}, error_rate=0.01)
    run_dir = write_synthetic_run(tmp_path / "run", spec)
    rewrite_rows(run_dir, lambda table: replace_column(table, "score_judge", table["score_accuracy"]))
    run = open_run(run_dir)
    summary = summarize(run)
    rows = estimates_from(value_counts_from(  # the old interval: rows resampled as if independent
        [merge_value_counts(frame, GROUP_KEYS) for frame in
         collect_all(value_count_queries(run.scan(), ["score_accuracy"], GROUP_KEYS), run)], GROUP_KEYS))
    for group in summary.groups:
        accuracy, judge = group.scores["score_accuracy"], group.scores["score_judge"]
        assert (accuracy.low, accuracy.high) == (judge.low, judge.high)
        assert accuracy.items == 100 and accuracy.n > 480
        independent = rows[(group.backend_id, group.param_set, "score_accuracy")]
        assert accuracy.mean == pytest.approx(independent.mean)
        # Within-item correlation about 0.2 over 5 repeats: the honest interval is about 1.3 times as wide.
        assert accuracy.high - accuracy.low > 1.15 * (independent.high - independent.low), group.backend_id


def test_cost_includes_scoring_spend(tmp_path: Path, baseline_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(baseline_run, run_dir)
    rewrite_rows(run_dir, lambda table: replace_column(table, "scoring_cost_usd", pa.array([0.0005] * table.num_rows)))
    rows = rows_of(run_dir)
    for group in summarize(open_run(run_dir)).groups:
        mine = [r for r in rows if (r["backend_id"], r["param_set"]) == (group.backend_id, group.param_set)]
        assert group.scoring_cost_usd == pytest.approx(0.0005 * len(mine))
        assert group.cost_usd == pytest.approx(sum(r["cost_usd"] + r["scoring_cost_usd"] for r in mine))
    assert main(["summary", str(run_dir), "--format", "csv"]) == 0
    record = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert float(record["cost_usd"]) == pytest.approx(float(record["generation_cost_usd"]) + 0.08)


def test_best_of_ties_are_ties_not_wins_for_the_first_candidate(real_run: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Every candidate answers with the wanted word: each item's contest is an eight-way tie (the broken
    # item has no scored candidate, so neither a winner nor a tie).
    table = pq.read_table(real_run / "best_of.parquet").to_pylist()
    assert sum(record["tie"] for record in table) == 5
    summary = summarize(open_run(real_run))
    assert (summary.best_of_contests, summary.best_of_tied_contests) == (6, 5)
    assert all((g.best_of_wins, g.best_of_ties) == (0, 5) for g in summary.groups)
    assert main(["summary", str(real_run), "--format", "markdown"]) == 0
    assert "| 0/5 |" in capsys.readouterr().out


def test_answers_without_a_verdict_stay_out_of_the_pass_rate(tmp_path: Path) -> None:
    # A criterion with `when:` may leave an answer without a verdict: neither a pass nor a fail.
    run_dir = write_synthetic_run(tmp_path / "run", SyntheticRun(items=100, backends={"alpha": 0.7}, error_rate=0.1))

    def half_judged(table: pa.Table) -> pa.Table:
        judged = pc.less(pc.cast(table["task_index"], pa.int64()), 50)
        answered = pc.equal(table["status"], "ok")
        return replace_column(table, "passed", pc.if_else(pc.and_(judged, answered), True, None))

    rewrite_rows(run_dir, half_judged)
    (group,) = summarize(open_run(run_dir)).groups
    rows = pq.read_table(run_dir / "parquet").to_pylist()
    verdicts = sum(1 for r in rows if r["status"] == "ok" and r["task_index"] < 50)
    assert group.pass_rate is not None and group.pass_rate.n == verdicts + group.errors
    assert group.pass_rate.mean == pytest.approx(verdicts / (verdicts + group.errors))
