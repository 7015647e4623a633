"""Best-of: for each item (and turn and repeat), the candidate with the highest total score.

Candidates are the rows of every backend and parameter set. A row that failed or has no total
never wins: a crash cannot beat a poor answer. Ties go to the candidate first in expansion order
(backend order, then parameter set, then repeat, as in the job file), so the same rows always
give the same winner. A group without any scored row is still reported, with no winner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

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


_KEPT = ("task_id", "task_index", "backend_id", "model", "param_set", "score_total")


@dataclass(slots=True)
class _Group:
    candidates: int = 0
    scored: int = 0
    winner: Mapping[str, Any] | None = None
    runner_up_score: float | None = None


def _beats(row: Mapping[str, Any], best: Mapping[str, Any] | None) -> bool:
    if best is None:
        return True
    if row["score_total"] != best["score_total"]:
        return bool(row["score_total"] > best["score_total"])
    return (row["task_index"], row["task_id"]) < (best["task_index"], best["task_id"])


def best_of(rows: Iterable[Mapping[str, Any]], *, per_repeat: bool = True) -> list[dict[str, Any]]:
    """One record per (item, turn, repeat) in first-seen order, shaped like `BEST_OF_SCHEMA`.

    With `per_repeat=False` the repeats of an item compete with each other too (repeat is then None)."""
    groups: dict[tuple[Any, ...], _Group] = {}
    for row in rows:
        key = (row["item_id"], row.get("turn") or 0, (row.get("repeat") or 0) if per_repeat else None)
        group = groups.setdefault(key, _Group())
        group.candidates += 1
        score = row.get("score_total")
        if row.get("status") != "ok" or score is None:
            continue
        group.scored += 1
        if _beats(row, group.winner):
            if group.winner is not None:
                beaten = group.winner["score_total"]
                group.runner_up_score = beaten if group.runner_up_score is None else max(group.runner_up_score, beaten)
            group.winner = {name: row.get(name) for name in _KEPT}  # not the row: its texts may be large
        elif group.runner_up_score is None or score > group.runner_up_score:
            group.runner_up_score = score
    return [_record(key, group) for key, group in groups.items()]


def _record(key: tuple[Any, ...], group: _Group) -> dict[str, Any]:
    item_id, turn, repeat = key
    winner = group.winner or {}
    return {
        "item_id": item_id, "turn": turn, "repeat": repeat, "candidates": group.candidates, "scored": group.scored,
        "winner_task_id": winner.get("task_id"), "winner_backend_id": winner.get("backend_id"),
        "winner_model": winner.get("model"), "winner_param_set": winner.get("param_set"),
        "winner_score": winner.get("score_total"), "runner_up_score": group.runner_up_score,
    }


def write_best_of(run_dir: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """`best_of.parquet` in `run_dir`, written whole to a temporary name and renamed into place."""
    path = run_dir / BEST_OF_FILENAME
    temporary = path.with_suffix(".parquet.tmp")
    table = pa.Table.from_pylist(best_of(rows), schema=BEST_OF_SCHEMA)
    pq.write_table(table, temporary, compression="zstd")
    temporary.replace(path)
    return path
