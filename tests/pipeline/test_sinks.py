"""Sinks: a fixed schema from the first row, Parquet parts readable after a SIGKILL, rebuilds with one
row per task, and CSV cells that cannot run as spreadsheet formulas."""

from __future__ import annotations

import csv
import json
import random
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.pipeline.output.rows import normalize_row, row_schema
from evalpipe.pipeline.output.sinks import ParquetSink, Sinks, escape_csv_cell, unescape_csv_cell
from evalpipe.pipeline.output.store import RunStore
from tests.pipeline.killing import run_until_killed

SCHEMA = row_schema(["c"])
ALL_FORMATS: list[Any] = ["parquet", "csv", "jsonl"]


def ok_row(n: int, **columns: Any) -> dict[str, Any]:
    return {"task_id": f"t{n:04d}", "task_index": n, "status": "ok", "response": f"answer {n}", "score_c": 1.0,
            "passed": True, "started_at": datetime(2024, 1, 1, tzinfo=UTC), **columns}


def error_row(n: int) -> dict[str, Any]:
    return {"task_id": f"t{n:04d}", "task_index": n, "status": "error", "error_type": "RateLimitError",
            "error_message": "429"}


def read_parquet(directory: Path) -> pa.Table:
    return pq.read_table(directory)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore.open(tmp_path, "run-1", SCHEMA) as opened:
        yield opened


def test_schema_is_fixed_even_when_the_first_rows_are_errors_full_of_nulls(tmp_path: Path) -> None:
    sinks = Sinks.for_run(tmp_path, SCHEMA, ALL_FORMATS, rows_per_part=3)
    sinks.write([error_row(0), error_row(1), error_row(2)])  # a whole part of nulls in most columns
    sinks.write([ok_row(3, temperature=0.7, input_tokens=12)])
    sinks.close()

    parts = sorted((tmp_path / "parquet").glob("*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    for part in parts:
        assert pq.read_schema(part).equals(SCHEMA)
    frame = pl.read_parquet(tmp_path / "parquet" / "*.parquet")
    assert frame.schema["score_c"] == pl.Float64 and frame.schema["response"] == pl.String
    assert frame["status"].to_list() == ["error", "error", "error", "ok"]
    with (tmp_path / "rows.csv").open(encoding="utf-8", newline="") as file:
        assert next(csv.reader(file)) == SCHEMA.names
    assert list(read_jsonl(tmp_path / "rows.jsonl")[0]) == SCHEMA.names


def test_parts_close_after_n_rows_and_after_t_seconds(tmp_path: Path) -> None:
    now = [0.0]
    sink = ParquetSink(tmp_path, SCHEMA, rows_per_part=10, seconds_per_part=30, row_group_rows=4,
                       clock=lambda: now[0])

    sink.write([_normal(ok_row(n)) for n in range(25)])
    assert [p.name for p in sink.parts()] == ["part-00000.parquet", "part-00001.parquet"]
    now[0] = 29.0
    sink.write([_normal(ok_row(25))])
    assert len(sink.parts()) == 2  # 6 rows open for 29 s: not yet due
    now[0] = 31.0
    sink.write([_normal(ok_row(26))])
    assert len(sink.parts()) == 3
    assert read_parquet(tmp_path).num_rows == 27
    assert pq.ParquetFile(sink.parts()[0]).metadata.num_row_groups == 3  # row groups of 4, 4 and 2 rows


def _normal(row: dict[str, Any]) -> dict[str, Any]:
    return normalize_row(row, SCHEMA)


def test_rebuild_leaves_exactly_one_row_per_task(tmp_path: Path, store: RunStore) -> None:
    sinks = Sinks.for_run(tmp_path, SCHEMA, ALL_FORMATS, rows_per_part=2)
    sinks.write(store.record([ok_row(0), error_row(1), ok_row(2)]))
    sinks.write(store.record([ok_row(1, response="retried")]))  # --retry-errors: task 1 again
    sinks.write(store.record([ok_row(3)]))
    sinks.flush()
    assert read_parquet(tmp_path / "parquet").num_rows == 5  # appended: task 1 twice

    sinks.rebuild_from(store)
    sinks.write(store.record([ok_row(4)]))  # a resumed run carries on after the rebuild
    sinks.close()

    expected = [f"t{n:04d}" for n in range(5)]
    table = read_parquet(tmp_path / "parquet")
    assert table.column("task_id").to_pylist() == expected
    assert table.column("response").to_pylist()[1] == "retried"
    assert [r["task_id"] for r in read_csv(tmp_path / "rows.csv")] == expected
    assert [r["task_id"] for r in read_jsonl(tmp_path / "rows.jsonl")] == expected
    assert not list(tmp_path.glob(".*")) and not list((tmp_path / "parquet").glob(".*"))


def test_csv_formula_cells_are_escaped_and_round_trip(tmp_path: Path) -> None:
    dangerous = ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "'quoted", "plain", ""]
    sinks = Sinks.for_run(tmp_path, SCHEMA, ["csv"])
    sinks.write([ok_row(n, response=text, score_c=-0.5, explanation_c="multi\nline, \"quoted\"")
                 for n, text in enumerate(dangerous)])
    sinks.close()

    rows = read_csv(tmp_path / "rows.csv")
    cells = [r["response"] for r in rows]
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells)
    assert [unescape_csv_cell(cell) for cell in cells] == dangerous
    assert rows[0]["score_c"] == "-0.5"  # numbers are numbers, not text
    assert rows[0]["explanation_c"] == "multi\nline, \"quoted\""
    assert rows[0]["passed"] == "true" and rows[0]["cached"] == ""
    frame = pl.read_csv(tmp_path / "rows.csv")
    assert frame.schema["score_c"] == pl.Float64


@pytest.mark.parametrize("text", ["=1+1", "'", "''x", "-", "a=b", "\r\n"])
def test_escape_and_unescape_are_inverse(text: str) -> None:
    assert unescape_csv_cell(escape_csv_cell(text)) == text


def test_jsonl_is_strict_json(tmp_path: Path) -> None:
    sinks = Sinks.for_run(tmp_path, SCHEMA, ["jsonl"])
    sinks.write([ok_row(0, score_c=float("nan"))])
    sinks.close()

    line = (tmp_path / "rows.jsonl").read_text(encoding="utf-8")
    assert "NaN" not in line
    row = json.loads(line)
    assert row["score_c"] is None and row["started_at"] == "2024-01-01T00:00:00+00:00"


def test_a_row_with_an_unknown_column_fails_before_any_file_is_touched(tmp_path: Path) -> None:
    sinks = Sinks.for_run(tmp_path, SCHEMA, ["csv"])
    with pytest.raises(ValueError, match="score_other"):
        sinks.write([ok_row(0), ok_row(1, score_other=1.0)])
    assert not (tmp_path / "rows.csv").exists()


# The runner's writer in its own process: each batch is committed to the store, then written to the
# sinks. With "pause" it stops after PAUSE_AFTER batches, when a Parquet part is half written.
WRITER = textwrap.dedent("""
    import itertools, sys, time
    from evalpipe.pipeline.output.rows import normalize_row, row_schema
    from evalpipe.pipeline.output.sinks import Sinks
    from evalpipe.pipeline.output.store import RunStore

    BATCH, PAUSE_AFTER = 10, 6
    schema = row_schema(["c"])
    store = RunStore.open(sys.argv[1], "run-1", schema)
    sinks = Sinks.for_run(sys.argv[1], schema, ["parquet", "csv", "jsonl"], rows_per_part=40, row_group_rows=10)
    for batch in itertools.count():
        rows = [{"task_id": f"t{n:06d}", "task_index": n, "status": "ok", "response": f"=cmd {n}\\nline",
                 "score_c": 0.5} for n in range(batch * BATCH, (batch + 1) * BATCH)]
        sinks.write(store.record(rows))
        print(f"written {batch + 1}", flush=True)
        if sys.argv[2] == "pause" and batch + 1 == PAUSE_AFTER:
            time.sleep(60)
""")
ROWS_PER_PART = 40


def _kill_writer(run_dir: Path, mode: str, after_batches: int) -> int:
    """Run the writer, SIGKILL it once it reported `after_batches` batches; return the batches it reported."""
    lines = run_until_killed(WRITER, str(run_dir), mode, stop=lambda line: int(line.split()[1]) >= after_batches)
    return int(lines[-1].split()[1]) if lines else 0


def _check_resume(run_dir: Path) -> None:
    """Rebuild from the store as a resumed run does: every output then holds each stored task once."""
    with RunStore.open(run_dir, "run-1", SCHEMA) as store:
        expected = [r["task_id"] for r in store.iter_rows()]
        sinks = Sinks.for_run(run_dir, SCHEMA, ALL_FORMATS, rows_per_part=ROWS_PER_PART)
        sinks.rebuild_from(store)
        sinks.close()
    assert read_parquet(run_dir / "parquet").column("task_id").to_pylist() == expected
    csv_rows = read_csv(run_dir / "rows.csv")
    assert [r["task_id"] for r in csv_rows] == expected
    assert unescape_csv_cell(csv_rows[0]["response"]) == "=cmd 0\nline"
    assert [r["task_id"] for r in read_jsonl(run_dir / "rows.jsonl")] == expected


def test_parquet_parts_are_readable_after_sigkill_mid_part(tmp_path: Path) -> None:
    _kill_writer(tmp_path, "pause", after_batches=6)  # 60 rows: part 0 closed, 20 rows in the open part

    parquet_dir = tmp_path / "parquet"
    parts = sorted(parquet_dir.glob("*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet"]
    assert pq.read_table(parts[0]).column("task_id").to_pylist() == [f"t{n:06d}" for n in range(40)]
    assert pl.scan_parquet(parquet_dir / "*.parquet").select(pl.len()).collect().item() == 40
    assert read_parquet(parquet_dir).num_rows == 40  # directory readers skip the unfinished part
    unfinished = list(parquet_dir.glob(".part-*"))
    assert len(unfinished) == 1
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(unfinished[0])  # what a file written in place would have been: no footer
    assert len(read_csv(tmp_path / "rows.csv")) == 60  # flushed per batch
    _check_resume(tmp_path)


@pytest.mark.parametrize("seed", [7, 8])
def test_outputs_are_readable_and_resumable_after_sigkill_at_a_random_moment(tmp_path: Path, seed: int) -> None:
    written = _kill_writer(tmp_path, "run", after_batches=random.Random(seed).randint(5, 40))

    table = read_parquet(tmp_path / "parquet")
    assert table.num_rows % ROWS_PER_PART == 0
    assert table.num_rows >= (written * 10 // ROWS_PER_PART) * ROWS_PER_PART
    assert table.column("task_id").to_pylist() == [f"t{n:06d}" for n in range(table.num_rows)]
    _check_resume(tmp_path)
