"""`evalpipe history`: real runs of one nightly job against the fake provider server, in start order, with
item-clustered intervals and a flag only where the paired change is real."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.analysis.history import HistoryCache, build_history
from evalpipe.analysis.runs import open_run
from evalpipe.analysis.summary import summarize
from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run
from evalpipe.analysis.tables import history_text
from evalpipe.cli import EXIT_BAD_INPUT, main

NIGHTLY_ITEMS, NIGHTLY_REPEATS = 10, 5  # the `nightly` fixture's job


def history_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["history", str(path), "--format", "json"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def point(data: dict[str, Any], run: int, backend: str, metric: str) -> dict[str, Any]:
    group = next(g for g in data["runs"][run]["groups"] if g["backend_id"] == backend)
    found: dict[str, Any] = group["metrics"][metric]
    return found


def copy_job(nightly: list[Path], tmp_path: Path) -> Path:
    """A copy of the nightly job's directory that a test may damage."""
    job = tmp_path / "nightly"
    shutil.copytree(nightly[0].parent, job)
    return job


def test_runs_in_start_order_with_item_clustered_estimates(nightly: list[Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = history_json(nightly[0].parent, capsys)
    assert [run["name"] for run in data["runs"]] == [path.name for path in nightly]
    assert data["jobs"] == ["nightly"]
    assert data["metrics"] == ["score_total", "score_says_answer", "pass_rate", "error_rate", "cost_usd",
                               "latency_p50_s"]
    for backend in ("oa", "an"):
        second = point(data, 1, backend, "score_total")
        estimate = second["estimate"]
        assert estimate["mean"] == pytest.approx(0.8)
        assert (estimate["items"], estimate["n"]) == (NIGHTLY_ITEMS, NIGHTLY_ITEMS * NIGHTLY_REPEATS)
        # Items, not rows, are resampled: 2 wrong items of 10 leave every resample with 0 to 10 of them
        # wrong, so the interval is that of 10 draws (about ±0.25), not of 50 rows (about ±0.11).
        assert estimate["low"] <= 0.6 and estimate["high"] == 1.0
        assert point(data, 0, backend, "score_total")["change"] is None  # nothing before the first run
        assert point(data, 0, backend, "error_rate")["estimate"]["mean"] == 0.0
        latency = point(data, 2, backend, "latency_p50_s")["estimate"]
        assert latency["mean"] > 0 and latency["items"] == NIGHTLY_ITEMS


def test_the_planted_regression_is_flagged_on_the_third_run_not_the_second(
        nightly: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    data = history_json(nightly[0].parent, capsys)
    for backend in ("oa", "an"):
        # Run 2 loses 2 of 10 items (10 of 50 rows): a row-level bootstrap would call it significant; paired
        # on items, an interval of the difference reaches 0.
        second = point(data, 1, backend, "score_total")["change"]
        assert second["difference"]["mean"] == pytest.approx(-0.2)
        assert second["difference"]["high"] == 0.0 and second["verdict"] == "no clear change"
        third = point(data, 2, backend, "score_total")["change"]
        assert third["since"] == nightly[1].name
        assert third["difference"]["mean"] == pytest.approx(-0.6)
        assert third["difference"]["high"] < 0 and third["verdict"] == "worse"
        assert third["difference"]["items"] == NIGHTLY_ITEMS
        assert point(data, 2, backend, "pass_rate")["change"]["verdict"] == "worse"
        assert point(data, 2, backend, "error_rate")["change"]["verdict"] == "no clear change"


def test_csv_markdown_and_table_outputs(nightly: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    job = nightly[0].parent
    assert main(["history", str(job), "--format", "csv"]) == 0
    records = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(records) == 6  # 3 runs × 2 backends
    flags = [(r["run"], r["backend_id"], r["score_total_flag"]) for r in records if r["score_total_flag"]]
    assert sorted(flags) == [(nightly[2].name, "an", "worse"), (nightly[2].name, "oa", "worse")]
    assert float(records[-1]["score_total_change"]) == pytest.approx(-0.6)

    assert main(["history", str(job), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "### oa / default" in markdown and "### an / default" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| run |")).split(" | ")
    cells = {run.name: [line.split(" | ")[header.index("total")] for line in markdown.splitlines()
                        if line.startswith(f"| {run.name} ")] for run in nightly}
    # Interval ends depend on the seed, which follows the (random) run id: only their shape is fixed.
    assert all(re.fullmatch(r"0\.800 \[0\.[456]\d\d, 1\.000\]", cell) for cell in cells[nightly[1].name])  # no flag
    assert all(re.fullmatch(r"0\.200 \[0\.000, 0\.[345]\d\d\] ▼ worse -0\.600 \[-0\.[89]\d\d, -0\.[234]\d\d\]", cell)
               for cell in cells[nightly[2].name]), cells

    assert main(["history", str(job)]) == 0
    table = capsys.readouterr().out
    assert table.count("▼ worse -0.600") == 4 and nightly[0].name in table  # total and says_answer, per backend


def test_damaged_and_partial_runs_are_labelled_not_raised(nightly: list[Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    job = copy_job(nightly, tmp_path)
    for part in (job / nightly[1].name / "parquet").glob("*.parquet"):
        part.write_bytes(part.read_bytes()[:100])  # every part cut short
    (job / nightly[2].name / "manifest.json").unlink()
    data = history_json(job, capsys)
    runs = {run["name"]: run for run in data["runs"]}
    damaged = runs[nightly[1].name]
    assert damaged["state"] == "damaged" and damaged["groups"] == []
    assert damaged["label"].startswith("damaged: ") and "Parquet parts can be read" in damaged["label"]
    partial = runs[nightly[2].name]
    assert partial["partial"] is True and "no manifest.json" in partial["label"]
    # The third run is now compared with the last readable run before it, the first.
    change = point(data, 2, "oa", "score_total")["change"]
    assert change["since"] == nightly[0].name and change["difference"]["mean"] == pytest.approx(-0.8)

    assert main(["history", str(job)]) == 0
    captured = capsys.readouterr()
    assert f"DAMAGED {nightly[1].name}" in captured.out and f"PARTIAL {nightly[2].name}" in captured.out
    assert "Traceback" not in captured.err
    assert main(["history", str(job), "--format", "csv"]) == 0
    assert "no manifest.json" in capsys.readouterr().err  # CSV has no room for the label
    assert main(["history", str(job), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert f"| {nightly[1].name} | " in markdown and "| damaged | — |" in markdown
    # The change is from the first run, not the damaged line above, and says so.
    assert re.search(rf"▼ worse -0\.800 \[-1\.000, -0\.[456]\d\d\] vs {nightly[0].name} \|", markdown)


def test_items_that_differ_are_said_and_changes_use_the_shared_ones(
        nightly: list[Path], tmp_path: Path, nightly_runner: Callable[[Path, int, int], Path]) -> None:
    job = copy_job(nightly, tmp_path)
    nightly_runner(tmp_path, 8, 2)  # 2 new items, both right
    history = build_history(job)
    last = next(g for g in history.runs[-1].groups if g.backend_id == "oa")
    assert last.items == NIGHTLY_ITEMS + 2
    assert last.notes == (f"items differ from {nightly[2].name}: 0 only there, 2 only here; "
                          f"changes pair the {NIGHTLY_ITEMS} shared items",)
    change = last.metrics["score_total"].change
    assert change is not None and change.difference.mean == 0.0 and change.difference.items == NIGHTLY_ITEMS


def test_order_is_by_start_even_when_names_sort_otherwise(nightly: list[Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    job = copy_job(nightly, tmp_path)
    for path, name in zip(nightly, ("c-first", "b-second", "a-third"), strict=True):
        (job / path.name).rename(job / name)
    for part in (job / "b-second" / "parquet").glob("*.parquet"):
        part.write_bytes(part.read_bytes()[:100])  # unreadable rows, but its manifest says when it started
    (job / "a-third" / "manifest.json").unlink()  # no manifest: the run store says when it started
    data = history_json(job, capsys)
    assert [run["path"] for run in data["runs"]] == [str(job / name) for name in ("c-first", "b-second", "a-third")]


def test_a_directory_without_runs_or_a_single_run_is_a_clear_error(nightly: list[Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "holds no run directories" in capsys.readouterr().err
    assert main(["history", str(nightly[0])]) == EXIT_BAD_INPUT
    assert "is one run; history reads the job directory" in capsys.readouterr().err
    assert main(["report", str(nightly[0]), "--history", str(tmp_path / "nowhere"), "-o",
                 str(tmp_path / "report.html")]) == EXIT_BAD_INPUT
    assert "nowhere does not exist" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_levels_agree_with_summary_on_a_run_with_errors(real_run: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    shutil.copytree(real_run, job / real_run.name)
    history = build_history(job)
    summary = summarize(open_run(real_run))
    assert len(history.runs) == 1 and len(history.runs[0].groups) == len(summary.groups) == 8
    for group, expected in zip(history.runs[0].groups, summary.groups, strict=True):  # both in job order
        assert (group.backend_id, group.param_set) == (expected.backend_id, expected.param_set)
        assert (group.items, group.rows) == (expected.items, expected.rows)
        for metric in summary.metrics:
            assert group.metrics[metric].estimate.mean == pytest.approx(expected.scores[metric].mean)
            assert group.metrics[metric].estimate.n == expected.scores[metric].n
        assert group.metrics["error_rate"].estimate.mean == pytest.approx(expected.error_rate)
        assert group.metrics["error_rate"].estimate.mean == pytest.approx(1 / 6)  # one item of six fails
        assert group.metrics["cost_usd"].estimate.mean == pytest.approx(expected.cost_usd / expected.rows)
        if expected.pass_rate is None:
            assert group.metrics["pass_rate"].estimate.n == 0
        else:
            assert group.metrics["pass_rate"].estimate.mean == pytest.approx(expected.pass_rate.mean)
        assert group.metrics["latency_p50_s"].estimate.mean == pytest.approx(expected.latency_p50_s, rel=0.01)


def test_a_criterion_added_between_runs_has_no_change_the_others_do(tmp_path: Path) -> None:
    job = tmp_path / "job"
    before = SyntheticRun(items=40, criteria=("accuracy",), run_id="before")
    write_synthetic_run(job / "before", before)
    write_synthetic_run(job / "after", dataclasses.replace(before, criteria=("judge", "accuracy"), noise_seed=2,
                                                           run_id="after"))
    history = build_history(job)
    assert [run.name for run in history.runs] == ["before", "after"]
    assert history.metrics[:3] == ["score_total", "score_accuracy", "score_judge"]
    alpha = next(g for g in history.runs[1].groups if g.backend_id == "alpha")
    assert alpha.notes == ("score_judge not in before: no change for it",)
    assert alpha.metrics["score_judge"].change is None
    accuracy = alpha.metrics["score_accuracy"].change
    assert accuracy is not None and accuracy.difference.items == 40
    first = next(g for g in history.runs[0].groups if g.backend_id == "alpha")
    assert "score_judge" not in first.metrics  # shown as "—"


def history_data(job: Path, cache: HistoryCache | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(history_text(build_history(job, cache=cache), "json"))
    return data


def test_a_cached_history_is_the_history_and_reads_no_rows_again(nightly: list[Path], tmp_path: Path) -> None:
    job = copy_job(nightly, tmp_path)
    cache = HistoryCache()
    assert history_data(job, cache) == history_data(job)
    # A part's rows overwritten, its footer kept, with the same size and time (as nothing but damage would):
    # the cached points stand, so the second build did not read the rows; without the cache they are damaged.
    part = sorted((job / nightly[1].name).glob("parquet/part-*.parquet"))[0]
    stat, data = part.stat(), part.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little") + 8
    part.write_bytes(data[:4] + b"\0" * (len(data) - 4 - footer) + data[-footer:])
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cached = history_data(job, cache)
    assert [len(run["groups"]) for run in cached["runs"]] == [2, 2, 2]
    assert history_data(job)["runs"][1]["groups"] == []


def test_a_cached_history_follows_new_and_changed_runs(nightly: list[Path], tmp_path: Path,
                                                      nightly_runner: Callable[[Path, int, int], Path]) -> None:
    job = copy_job(nightly, tmp_path)
    cache = HistoryCache()
    history_data(job, cache)
    nightly_runner(tmp_path, 0, 0)  # a fourth run, better than the third: its change is measured from it
    fresh = history_data(job)
    assert history_data(job, cache) == fresh
    last = next(g for g in fresh["runs"][-1]["groups"] if g["backend_id"] == "oa")
    assert last["metrics"]["score_total"]["change"]["verdict"] == "better"
    # The third run removed: the fourth's change is now from the second run, computed again.
    shutil.rmtree(job / nightly[2].name)
    assert history_data(job, cache) == history_data(job)
    assert history_data(job, cache)["runs"][-1]["groups"][0]["metrics"]["score_total"]["change"]["since"] == \
        nightly[1].name


def zero_column(part: Path, column: str) -> None:
    """`column`'s pages in `part` overwritten with zeros, the rest of the file (its footer too) kept."""
    metadata = pq.read_metadata(part)
    data = bytearray(part.read_bytes())
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        chunk = next(row_group.column(j) for j in range(row_group.num_columns)
                     if row_group.column(j).path_in_schema == column)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start:start + chunk.total_compressed_size] = bytes(chunk.total_compressed_size)
    part.write_bytes(bytes(data))


def test_runs_read_a_group_at_a_time_give_the_same_history(nightly: list[Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    job = copy_job(nightly, tmp_path)
    whole = history_data(job)
    monkeypatch.setattr("evalpipe.analysis.history.ROWS_PER_BATCH", 1)  # each group read across the runs alone
    assert history_data(job) == whole


def test_a_run_whose_scores_break_after_its_groups_are_read_is_damaged_and_skipped(
        nightly: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("evalpipe.analysis.history.ROWS_PER_BATCH", 1)
    job = copy_job(nightly, tmp_path)
    for part in (job / nightly[1].name / "parquet").glob("*.parquet"):
        zero_column(part, "score_total")  # the groups (backend, parameter set) still read, the scores do not
    history = build_history(job)
    broken = history.runs[1]
    assert broken.groups == [] and broken.error is not None and "cannot be read" in broken.error
    assert broken.label.startswith("damaged: ")
    # Both groups of the third run are compared with the first run, the last readable one before it.
    changes = [g.metrics["score_total"].change for g in history.runs[2].groups]
    assert len(changes) == 2 and all(c is not None and c.since == nightly[0].name for c in changes)
