"""The runs list: what each run's manifest (or, while it runs, its store) says, and names that are refused."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from evalpipe.analysis.catalog import list_runs, run_path
from evalpipe.analysis.runs import RunDirError
from evalpipe.cli import main
from evalpipe.pipeline.output.manifest import read_manifest, write_manifest
from tests.view.conftest import Results


def test_runs_are_listed_newest_first_with_their_counts(results: Results) -> None:
    entries = [e for e in list_runs(results.root) if e.job == "viewer-test"]
    assert [e.run_id for e in entries] == [results.second.name, results.first.name]
    assert [e.latest for e in entries] == [True, False]
    rows = pl.read_parquet(sorted((results.first / "parquet").glob("*.parquet")))
    first = entries[1]
    assert (first.state, first.rows, first.errors) == ("completed", rows.height,
                                                       rows.filter(pl.col("status") == "error").height)
    assert first.cost_usd == pytest.approx(rows["cost_usd"].sum()) and first.cost_usd > 0


def test_a_running_run_shows_the_rows_its_store_has_so_far(results: Results, tmp_path: Path) -> None:
    copy = tmp_path / "live-job" / results.first.name
    shutil.copytree(results.first, copy)
    # As a run in progress leaves it: the manifest of its start (no counts yet), the rows in the store.
    manifest = read_manifest(copy)
    write_manifest(copy, dataclasses.replace(manifest, state="running", counts={}, cost_usd=0.0, finished_at=None))
    (entry,) = list_runs(tmp_path)
    assert (entry.state, entry.rows) == ("running", 0)  # no writer holds the store: the manifest's word
    with contextlib.closing(sqlite3.connect(copy / "run.sqlite", isolation_level=None)) as writer:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("DELETE FROM rows WHERE task_index = 0")  # the writer's view changes while listed
        files = sorted(p.name for p in copy.iterdir())
        (entry,) = list_runs(tmp_path)
        assert (entry.state, entry.live) == ("running", True)
        assert (entry.rows, entry.errors) == (sum(manifest.counts.values()) - 1, manifest.counts["error"])
        assert 0 < entry.cost_usd <= manifest.cost_usd
        assert sorted(p.name for p in copy.iterdir()) == files  # read-only: nothing new in the run directory


def test_names_outside_the_results_directory_are_refused(results: Results) -> None:
    assert run_path(results.root, "viewer-test", results.first.name) == results.first
    for job, run_id in (("..", results.first.name), ("viewer-test", ".."), ("viewer-test", "nope"),
                        (".", "viewer-test")):
        with pytest.raises(RunDirError):
            run_path(results.root, job, run_id)


def test_view_of_a_missing_directory_says_what_to_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "missing does not exist; pass the results directory" in capsys.readouterr().err
