"""Best-of: for each item (and turn and repeat), the candidate with the highest total score.

Candidates are the rows of every backend and parameter set. A row that failed or has no total
never wins: a crash cannot beat a poor answer. Ties go to the candidate first in expansion order
(backend order, then parameter set, then repeat, as in the job file), so the same rows always
give the same winner. A group without any scored row is still reported, with no winner.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

if TYPE_CHECKING:
    from evalpipe.pipeline.store import RunStore

BEST_OF_FILENAME = "best_of.parquet"

BEST_OF_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("turn", pa.int64()),
    ("repeat", pa.int64()),
    ("candidates", pa.int64()),
    ("scored", pa.int64()),
    ("winner_task_id", pa.string()),
    ("winner_backend_id", pa.string()),
    ("winner_model", pa.string()),
    ("winner_param_set", pa.string()),
    ("winner_score", pa.float64()),
    ("runner_up_score", pa.float64()),
])


GROUP_KEY = ("item_id", "turn", "repeat")
CANDIDATE_COLUMNS = ("task_id", "task_index", "item_id", "turn", "repeat", "backend_id", "model", "param_set",
                     "status", "score_total")


def _key(row: Mapping[str, Any], per_repeat: bool) -> tuple[Any, ...]:
    return row["item_id"], row.get("turn") or 0, (row.get("repeat") or 0) if per_repeat else None


def _beats(row: Mapping[str, Any], best: Mapping[str, Any] | None) -> bool:
    if best is None:
        return True
    if row["score_total"] != best["score_total"]:
        return bool(row["score_total"] > best["score_total"])
    return (row["task_index"], row["task_id"]) < (best["task_index"], best["task_id"])


def best_of(rows: Iterable[Mapping[str, Any]], *, per_repeat: bool = True, grouped: bool = False) -> Iterator[
        dict[str, Any]]:
    """One record per (item, turn, repeat), shaped like `BEST_OF_SCHEMA`, in key order.

    `grouped=True` says the rows already come sorted by item, turn and repeat (a run store sorts them
    on disk): then only one group is in memory at a time. With `per_repeat=False` the repeats of an
    item compete with each other too (repeat is then None)."""
    ordered = rows if grouped else sorted(rows, key=lambda row: _key(row, per_repeat))
    for key, group in itertools.groupby(ordered, key=lambda row: _key(row, per_repeat)):
        candidates = scored = 0
        winner: Mapping[str, Any] | None = None
        runner_up: float | None = None
        for row in group:
            candidates += 1
            if row.get("status") != "ok" or row.get("score_total") is None:
                continue
            scored += 1
            beaten: Mapping[str, Any] | None = row
            if _beats(row, winner):
                beaten, winner = winner, row
            if beaten is not None:
                runner_up = beaten["score_total"] if runner_up is None else max(runner_up, beaten["score_total"])
        item_id, turn, repeat = key
        best = winner or {}
        yield {
            "item_id": item_id, "turn": turn, "repeat": repeat, "candidates": candidates, "scored": scored,
            "winner_task_id": best.get("task_id"), "winner_backend_id": best.get("backend_id"),
            "winner_model": best.get("model"), "winner_param_set": best.get("param_set"),
            "winner_score": best.get("score_total"), "runner_up_score": runner_up,
        }


def write_best_of(run_dir: Path, store: RunStore, batch_rows: int = 10_000) -> Path:
    """`best_of.parquet` in `run_dir` from the store's rows, in flat memory: the store sorts the
    candidates, groups are reduced one at a time, records are written in row groups; the file is
    written under a temporary name and renamed into place."""
    path = run_dir / BEST_OF_FILENAME
    temporary = path.with_suffix(".parquet.tmp")
    records = best_of(store.iter_columns(CANDIDATE_COLUMNS, order_by=(*GROUP_KEY, "task_index")), grouped=True)
    with pq.ParquetWriter(temporary, BEST_OF_SCHEMA, compression="zstd") as writer:
        while batch := list(itertools.islice(records, batch_rows)):
            writer.write_table(pa.Table.from_pylist(batch, schema=BEST_OF_SCHEMA))
    temporary.replace(path)
    return path
