"""Best-of wins and ties per backend and parameter set, from the best-of table beside a run's rows.

A contest (one item, turn and repeat) whose top total several candidates share is a tie, not a win for
whichever came first: the table (`evalpipe.pipeline.output.best_of`) leaves its winner empty and lists the tied
candidates, and each of them is credited with a tie. Tables written before ties were recorded have no
`tie` column: their winners count as wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from evalpipe.analysis.runs import Run, collect

PARAM_SET_COLUMN = "winner_param_set"  # the best-of table's columns (evalpipe.pipeline.output.best_of)
TIE_COLUMN = "tie"
TIED_BACKENDS, TIED_PARAM_SETS = "tied_backend_ids", "tied_param_sets"


@dataclass(frozen=True, slots=True)
class BestOfCounts:
    """Wins and ties per (backend, parameter set) when the table names parameter sets (else None), per
    backend otherwise; and how many contests there were and how many of them were ties."""

    wins: dict[tuple[str, str], int] | None = None
    ties: dict[tuple[str, str], int] | None = None
    wins_by_backend: dict[str, int] = field(default_factory=dict)
    ties_by_backend: dict[str, int] = field(default_factory=dict)
    contests: int = 0
    tied_contests: int = 0


def count_best_of(run: Run) -> BestOfCounts:
    """The best-of wins and ties of `run` (all empty when it has no best-of table)."""
    table = run.scan_best_of()
    if table is None:
        return BestOfCounts()
    names = table.collect_schema().names()
    with_sets = PARAM_SET_COLUMN in names
    keys = ["winner_backend_id", PARAM_SET_COLUMN] if with_sets else ["winner_backend_id"]
    tie = pl.col(TIE_COLUMN).fill_null(False) if TIE_COLUMN in names else pl.lit(False)
    winners = table.filter(~tie & pl.col("winner_backend_id").is_not_null()).group_by(keys).len()
    totals = table.select(pl.len().alias("contests"), tie.sum().alias("tied"))
    tied_keys = [TIED_BACKENDS, TIED_PARAM_SETS] if with_sets else [TIED_BACKENDS]
    if TIE_COLUMN in names and all(name in names for name in tied_keys):
        # A group is credited once per contest, even if it had several tied candidates in it.
        tied = (table.with_row_index("contest").filter(tie).select("contest", *tied_keys).explode(tied_keys)
                .unique().group_by(tied_keys).len())
    else:
        tied = pl.LazyFrame(schema={name: pl.String for name in tied_keys} | {"len": pl.UInt32})
    wins, tied_frame, counted = (collect(frame, run) for frame in (winners, tied, totals))
    contests, tied_contests = int(counted["contests"][0]), int(counted["tied"][0])
    if with_sets:
        return BestOfCounts(
            wins={(r["winner_backend_id"], r[PARAM_SET_COLUMN]): r["len"] for r in wins.iter_rows(named=True)},
            ties={(r[TIED_BACKENDS], r[TIED_PARAM_SETS]): r["len"] for r in tied_frame.iter_rows(named=True)},
            contests=contests, tied_contests=tied_contests)
    return BestOfCounts(wins_by_backend={r["winner_backend_id"]: r["len"] for r in wins.iter_rows(named=True)},
                        ties_by_backend={r[TIED_BACKENDS]: r["len"] for r in tied_frame.iter_rows(named=True)},
                        contests=contests, tied_contests=tied_contests)
