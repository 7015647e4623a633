"""Damaged and partial run directories: a clear error or a clearly labelled partial summary, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.analysis.runs import open_run
from evalpipe.analysis.summary import summarize
from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run
from evalpipe.cli import EXIT_BAD_INPUT, main


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Three parts of 100 rows each."""
    return write_synthetic_run(tmp_path / "run", SyntheticRun(items=75, rows_per_part=100))


def summary_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["summary", str(path), "--format", "json"]) == 0
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def error_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_a_complete_run_is_not_partial(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = summary_json(run_dir, capsys)
    assert data["partial"] is False and data["warnings"] == []
    assert sum(g["rows"] for g in data["groups"]) == 150  # type: ignore[attr-defined, union-attr]


def test_missing_manifest_gives_a_labelled_partial_summary(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "manifest.json").unlink()
    data = summary_json(run_dir, capsys)
    assert data["partial"] is True and data["state"] == "unknown"
    assert "no manifest.json" in str(data["warnings"])
    assert main(["summary", str(run_dir)]) == 0
    assert "PARTIAL: no manifest.json" in capsys.readouterr().out


def test_truncated_part_is_left_out_and_named(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    part = run_dir / "parquet" / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    data = summary_json(run_dir, capsys)
    warnings = " ".join(data["warnings"])  # type: ignore[arg-type]
    assert "part-00001.parquet cannot be read and was left out" in warnings
    assert "the Parquet parts hold 100 rows but the run recorded 150" in warnings
    assert sum(g["rows"] for g in data["groups"]) == 100  # type: ignore[attr-defined, union-attr]


def test_every_part_truncated_is_a_clear_error(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for part in (run_dir / "parquet").glob("*.parquet"):
        part.write_bytes(part.read_bytes()[:100])
    message = error_of(["summary", str(run_dir)], capsys)
    assert "none of its 2 Parquet parts can be read" in message


def test_interrupted_run_is_labelled_with_its_progress(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest.update(state="interrupted", tasks_total=400)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    data = summary_json(run_dir, capsys)
    assert data["state"] == "interrupted"
    assert data["warnings"] == ["the run was interrupted: 150 of 400 tasks have rows"]
    assert main(["summary", str(run_dir), "--format", "markdown"]) == 0
    assert "> **Partial:** the run was interrupted" in capsys.readouterr().out


def test_unfinished_part_of_a_killed_writer_is_ignored(run_dir: Path) -> None:
    # The runner writes a part under a dot name and renames it when closed; a kill leaves the dot file.
    (run_dir / "parquet" / ".part-00002.parquet.tmp").write_bytes(b"PAR1 half a part")
    assert not open_run(run_dir).partial


def test_corrupt_manifest_is_a_warning_not_a_crash(run_dir: Path) -> None:
    (run_dir / "manifest.json").write_text("{ not json")
    run = open_run(run_dir)
    assert run.partial and "manifest.json cannot be read" in run.warnings[0]
    assert summarize(run).groups


@pytest.mark.parametrize(("damage", "expected"), [
    ("missing", "does not exist"),
    ("empty", "is not an evalpipe run directory"),
    ("csv only", "has rows.csv but no Parquet parts"),
    ("no parts yet", "has no finished Parquet parts yet"),
    ("foreign parquet", "does not hold evalpipe rows: no column run_id"),
])
def test_directories_that_cannot_be_analysed(tmp_path: Path, run_dir: Path, damage: str, expected: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target"
    if damage != "missing":
        target.mkdir()
    if damage == "csv only":
        (target / "rows.csv").write_text("task_id\n")
    if damage == "no parts yet":
        shutil.copy(run_dir / "manifest.json", target)
    if damage == "foreign parquet":
        (target / "parquet").mkdir()
        pq.write_table(pa.table({"x": [1, 2]}), target / "parquet" / "part-00000.parquet")
    for command in (["summary", str(target)], ["compare", str(run_dir), str(target)],
                    ["report", str(target), "-o", str(tmp_path / "r.html")]):
        assert expected in error_of(command, capsys)
