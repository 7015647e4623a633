"""Best-of: for each item (and turn and repeat), the candidate with the highest total score.

Candidates are the rows of every backend and parameter set. A row that failed or has no total
never wins: a crash cannot beat a poor answer. When several candidates share the top total the
contest is a tie, not a win for whichever came first: the record has no winner, `tie` is true and
the tied candidates are listed in expansion order (backend order, then parameter set, then repeat, as
in the job file), so a caller that needs one answer can still take the first. A group without any
scored row is still reported, with no winner and no tie.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]


class RowColumns(Protocol):
    """Where best-of reads its candidates: a run store, or the stores of a sharded run together."""

    def iter_columns(self, names: Sequence[str], *, order_by: Sequence[str] = ...) -> Iterator[dict[str, Any]]: ...

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
    ("winner_score", pa.float64()),  # the top total, also when it is shared
    ("runner_up_score", pa.float64()),  # the second-highest total (equal to the top in a tie)
    ("tie", pa.bool_()),
    ("tied_task_ids", pa.list_(pa.string())),  # the candidates sharing the top total, when tied
    ("tied_backend_ids", pa.list_(pa.string())),
    ("tied_param_sets", pa.list_(pa.string())),
])
TIE_TOLERANCE = 1e-9  # totals this close are equal: the same scores weighted the same way, up to rounding


GROUP_KEY = ("item_id", "turn", "repeat")
CANDIDATE_COLUMNS = ("task_id", "task_index", "item_id", "turn", "repeat", "backend_id", "model", "param_set",
                     "status", "score_total")


def _key(row: Mapping[str, Any], per_repeat: bool) -> tuple[Any, ...]:
    return row["item_id"], row.get("turn") or 0, (row.get("repeat") or 0) if per_repeat else None


def _same(score: float, other: float) -> bool:
    return math.isclose(score, other, rel_tol=0.0, abs_tol=TIE_TOLERANCE)


def _expansion_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return row.get("task_index") or 0, row.get("task_id") or ""


def best_of(rows: Iterable[Mapping[str, Any]], *, per_repeat: bool = True, grouped: bool = False) -> Iterator[
        dict[str, Any]]:
    """One record per (item, turn, repeat), shaped like `BEST_OF_SCHEMA`, in key order.

    `grouped=True` says the rows already come sorted by item, turn and repeat (a run store sorts them
    on disk): then only one group is in memory at a time. With `per_repeat=False` the repeats of an
    item compete with each other too (repeat is then None)."""
    ordered = rows if grouped else sorted(rows, key=lambda row: _key(row, per_repeat))
    for key, group in itertools.groupby(ordered, key=lambda row: _key(row, per_repeat)):
        candidates = scored = 0
        top: list[Mapping[str, Any]] = []  # the candidates sharing the highest total so far
        runner_up: float | None = None
        for row in group:
            candidates += 1
            if row.get("status") != "ok" or row.get("score_total") is None:
                continue
            scored += 1
            score = row["score_total"]
            if top and _same(score, top[0]["score_total"]):
                top.append(row)
                runner_up = top[0]["score_total"]
            elif not top or score > top[0]["score_total"]:
                runner_up = top[0]["score_total"] if top else runner_up
                top = [row]
            else:
                runner_up = score if runner_up is None else max(runner_up, score)
        top.sort(key=_expansion_order)
        tie = len(top) > 1
        best = top[0] if len(top) == 1 else {}
        item_id, turn, repeat = key
        yield {
            "item_id": item_id, "turn": turn, "repeat": repeat, "candidates": candidates, "scored": scored,
            "winner_task_id": best.get("task_id"), "winner_backend_id": best.get("backend_id"),
            "winner_model": best.get("model"), "winner_param_set": best.get("param_set"),
            "winner_score": top[0]["score_total"] if top else None, "runner_up_score": runner_up, "tie": tie,
            "tied_task_ids": [row.get("task_id") for row in top] if tie else [],
            "tied_backend_ids": [row.get("backend_id") for row in top] if tie else [],
            "tied_param_sets": [row.get("param_set") for row in top] if tie else [],
        }


def write_best_of(run_dir: Path, store: RowColumns, batch_rows: int = 10_000) -> Path:
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
