"""A sharded run directory: every shard keeps its own store and Parquet parts, the driver writes what
spans them.

    RUN_DIR/
      run.sqlite        the run's identity (run id, job fingerprint, shard count); no rows
      manifest.json     counts, tokens and cost summed over the shards; outputs
      rows.csv          every shard's rows merged in task order (rows.jsonl likewise)
      best_of.parquet   over every shard's rows: an item's candidates may sit in different shards
      shards/<k>/       run.sqlite, parquet/part-*.parquet, manifest.json of shard k

Readers find the rows through `shard_parquet_parts`; each shard's store stays the truth for its tasks,
so a shard resumes from its own store and the merged files are rewritten from the stores at the end.
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

from evalpipe.pipeline.output.best_of import write_best_of
from evalpipe.pipeline.output.rows import STATUSES, Row
from evalpipe.pipeline.output.sinks import CSV_FILENAME, JSONL_FILENAME, CsvSink, JsonlSink, Sink
from evalpipe.pipeline.output.store import STORE_FILENAME, RunStore, RunTotals

SHARDS_DIRNAME = "shards"
SHARD_COUNT_META = "shards"  # in the run's store: fixed for the run's life (another count moves tasks)
_BATCH_ROWS = 5_000


def shard_dir(run_dir: Path, index: int) -> Path:
    """Where shard `index` of the run in `run_dir` keeps its store and parts."""
    return run_dir / SHARDS_DIRNAME / str(index)


def shard_dirs(run_dir: Path) -> list[Path]:
    """The shard directories of `run_dir`, in shard order (empty for a run that is not sharded)."""
    root = run_dir / SHARDS_DIRNAME
    if not root.is_dir():
        return []
    return sorted((entry for entry in root.iterdir() if entry.is_dir() and entry.name.isdigit()),
                  key=lambda entry: int(entry.name))


def shard_parquet_parts(run_dir: Path, parquet_dirname: str) -> list[Path]:
    """Every shard's closed Parquet parts, shard by shard."""
    return [part for directory in shard_dirs(run_dir)
            for part in sorted((directory / parquet_dirname).glob("part-*.parquet"))]


def committed_counts(run_dir: Path) -> dict[str, int]:
    """Rows per status committed so far by every shard, read without taking a write lock (progress)."""
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for directory in shard_dirs(run_dir):
        path = directory / STORE_FILENAME
        if not path.is_file():
            continue
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            for status, n in connection.execute("SELECT status, COUNT(*) FROM rows GROUP BY status"):
                counts[status] = counts.get(status, 0) + int(n)
        except sqlite3.OperationalError:  # the shard has not created its tables yet
            pass
        finally:
            connection.close()
    return counts


def _sort_key(values: Sequence[Any]) -> tuple[Any, ...]:
    # SQLite's order: NULL before any value.
    return tuple((value is not None, value if value is not None else 0) for value in values)


class ShardedRows:
    """The rows of every shard's store read as one run's: merged in the order each store sorts them."""

    def __init__(self, stores: Sequence[RunStore]) -> None:
        self.stores = list(stores)

    @classmethod
    def open(cls, run_dir: Path, run_id: str, schema: pa.Schema) -> ShardedRows:
        """The stores of the shards of `run_dir` that have one."""
        return cls([RunStore.open(directory, run_id, schema) for directory in shard_dirs(run_dir)
                    if (directory / STORE_FILENAME).is_file()])

    def iter_rows(self) -> Iterator[Row]:
        """Every row, in task order."""
        return heapq.merge(*(store.iter_rows() for store in self.stores),
                           key=lambda row: _sort_key((row.get("task_index"), row.get("task_id"))))

    def iter_columns(self, names: Sequence[str], *, order_by: Sequence[str] = ("task_index",)) -> Iterator[Row]:
        """These columns of every row, sorted by `order_by` across the shards."""
        return heapq.merge(*(store.iter_columns(names, order_by=order_by) for store in self.stores),
                           key=lambda row: _sort_key([row.get(name) for name in order_by]))

    def counts(self) -> dict[str, int]:
        """Rows per status over every shard."""
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for store in self.stores:
            for status, n in store.counts().items():
                counts[status] = counts.get(status, 0) + n
        return counts

    def totals(self) -> RunTotals:
        """Rows, tokens and cost over every shard."""
        parts = [store.totals() for store in self.stores]
        return RunTotals(sum(p.rows for p in parts), sum(p.input_tokens for p in parts),
                         sum(p.output_tokens for p in parts), sum(p.cost_usd for p in parts))

    def close(self) -> None:
        """Close every shard's store."""
        for store in self.stores:
            store.close()


def write_merged_outputs(run_dir: Path, rows: ShardedRows, schema: pa.Schema, formats: Sequence[str],
                         best_of: bool) -> dict[str, Path]:
    """`rows.csv` / `rows.jsonl` (as `formats` asks) and `best_of.parquet` in `run_dir` from every shard's
    rows, each written under a temporary name and renamed into place; returns the outputs by format."""
    sinks: list[Sink] = []
    outputs: dict[str, Path] = {}
    for output_format in dict.fromkeys(formats):
        if output_format == "csv":
            sinks.append(CsvSink(run_dir / CSV_FILENAME, schema))
        elif output_format == "jsonl":
            sinks.append(JsonlSink(run_dir / JSONL_FILENAME, schema))
        elif output_format == "parquet":
            outputs["parquet"] = run_dir / SHARDS_DIRNAME
    rebuilds = [sink.start_rebuild() for sink in sinks]
    merged = rows.iter_rows()
    while batch := list(itertools.islice(merged, _BATCH_ROWS)):
        for rebuild in rebuilds:
            rebuild.write(batch)
    for sink, rebuild in zip(sinks, rebuilds, strict=True):
        rebuild.finish()
        outputs["csv" if isinstance(sink, CsvSink) else "jsonl"] = sink.path
    if best_of:
        write_best_of(run_dir, rows)
    return outputs


__all__ = ["SHARDS_DIRNAME", "SHARD_COUNT_META", "ShardedRows", "committed_counts", "shard_dir", "shard_dirs",
           "shard_parquet_parts", "write_merged_outputs"]
