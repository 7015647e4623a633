"""The per-item tables `history` computes its points from: per backend and parameter set of one run, each
item's sums and counts of every metric and its latency histogram, read part by part."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from evalpipe.analysis.clustered_medians import LOG_STEP, ItemBuckets
from evalpipe.analysis.runs import Run, collect, collect_per_part
from evalpipe.analysis.stats import FloatArray
from evalpipe.analysis.summary import (
    COST_COLUMNS,
    EXACT_UNIT,
    GROUP_KEYS,
    ITEM_KEY,
    PASSED,
    finish_item_sums,
    item_sum_query,
    merge_item_sums,
)

RATE_METRICS = ("pass_rate", "error_rate", "cost_usd")
_OK = pl.col("status") == "ok"
_ITEM_KEYS = (*GROUP_KEYS, ITEM_KEY)
_NO_ITEM = ""  # the id of the one item that rows without an item id form together (as in `summary`)

Group = tuple[str, str]  # (backend id, parameter set)


@dataclass(frozen=True, slots=True)
class ItemTable:
    """Per-item aggregates of one group of one run, items sorted by id."""

    metrics: tuple[str, ...]  # the columns of `sums` and `counts`
    # Kept as polars strings (16 bytes an id), not Python ones (about 70): a run's tables are held while the
    # next run is read.
    ids: pl.Series
    sums: FloatArray  # items × metrics
    counts: npt.NDArray[np.uint32]  # items × metrics, whole rows
    latency: ItemBuckets  # ok rows per item and latency bucket


def groups_of(run: Run) -> list[tuple[Group, int]]:
    """The run's groups in the order of the job's tasks, with their rows."""
    found = collect(run.scan([*GROUP_KEYS, "task_index"]).select(
        *(pl.col(key).cast(pl.String).fill_null("") for key in GROUP_KEYS), "task_index")
        .group_by(GROUP_KEYS).agg(pl.col("task_index").min().alias("first"), pl.len().alias("rows"))
        .sort("first"), run)
    return [((backend, param_set), count) for backend, param_set, _, count in found.iter_rows()]


def _in_groups(groups: Sequence[Group]) -> pl.Expr:
    """Rows of `groups` (a missing backend id or parameter set is the group's "")."""
    backend, param_set = (pl.col(key).cast(pl.String).fill_null("") for key in GROUP_KEYS)
    return pl.any_horizontal([(backend == b) & (param_set == p) for b, p in groups])


def item_tables(run: Run, groups: Sequence[Group] | None = None) -> dict[Group, ItemTable]:
    """Per group (of `groups`, else all), each item's sums and counts of every metric and its latency
    histogram, read part by part.

    Scores and passes as `summary` counts them (`item_sum_query`: the pass rate over judged and failed rows, an
    error a fail); per item also its errors, rows, cost (generation plus scoring) and verdicts.

    Two passes: the first finds the groups and items (a row per group and item); the second reads the
    latencies as (group, item) numbers into that table. The latency buckets are about a row's worth of
    triples, so they are kept as integers, never with the row's backend, parameter set and item strings."""
    scores = run.metrics
    costs = [column for column in COST_COLUMNS if run.has(column)]
    columns = [*_ITEM_KEYS, "task_index", "status", "passed", *costs, *scores]
    cost = pl.sum_horizontal(*(pl.col(column).fill_null(0.0) for column in costs)) if costs else pl.lit(0.0)

    def queries(part: pl.LazyFrame) -> list[pl.LazyFrame]:
        part = part if groups is None else part.filter(_in_groups(groups))
        return [item_sum_query(part, [*scores, PASSED], GROUP_KEYS),
                part.group_by(_ITEM_KEYS).agg(
                    (pl.col("status") == "error").sum().cast(pl.Int64).alias("errors"),
                    pl.len().cast(pl.Int64).alias("rows"),
                    (cost / EXACT_UNIT).round().cast(pl.Int64).sum().alias("cost"),
                    pl.when(_OK).then(pl.col("passed")).count().cast(pl.Int64).alias("verdicts"),
                    pl.col("task_index").min().alias("first_task"))]

    def merge_sums(frame: pl.DataFrame) -> pl.DataFrame:
        return merge_item_sums(frame, GROUP_KEYS)

    sums, extras = collect_per_part(run, columns, queries, [merge_sums, _stack])
    # Added up once: grouping the stack again after every part held several copies. Groups in the order of the
    # job's tasks, as in `summary`; items sorted by id within each, so that the resamples do not depend on the
    # order parts were read in. One streaming query: each step in memory would copy the table of items.
    extras_lazy = (extras.lazy().group_by(_ITEM_KEYS)
                   .agg(pl.col("first_task").min(), pl.exclude(*_ITEM_KEYS, "first_task").sum()))
    needed = [*_ITEM_KEYS, "group_no", "item_no", "errors", "cost", "rows", "with_verdicts",
              *(f"{m}:{kind}" for m in [*scores, PASSED] for kind in ("sum", "n"))]
    frame = (finish_item_sums(sums, GROUP_KEYS).lazy().with_columns(pl.col(ITEM_KEY).fill_null(_NO_ITEM))
             .join(extras_lazy.with_columns(pl.col(ITEM_KEY).fill_null(_NO_ITEM)), on=list(_ITEM_KEYS), how="left",
                   nulls_equal=True)
             .with_columns(pl.col("first_task").min().over(GROUP_KEYS).alias("group_first_task"),
                           (pl.col("verdicts").sum().over(GROUP_KEYS) > 0).alias("with_verdicts"))
             .sort("group_first_task", *_ITEM_KEYS)
             .with_columns(pl.struct(GROUP_KEYS).rle_id().alias("group_no"),  # the groups are contiguous
                           pl.int_range(pl.len(), dtype=pl.UInt32).over(GROUP_KEYS).alias("item_no"))
             .select(needed).collect(engine="streaming"))
    del sums, extras
    latency = _latency_buckets(run, frame.select(*_ITEM_KEYS, "group_no", "item_no"), groups)
    # One group's frame at a time becomes arrays, and is dropped: the run's tables are not held twice.
    by_group = frame.partition_by(GROUP_KEYS, maintain_order=True, as_dict=True)
    del frame
    tables: dict[Group, ItemTable] = {}
    for backend, param_set in list(by_group):
        group = by_group.pop((backend, param_set))
        ids = group[ITEM_KEY].rechunk()
        timed = latency.pop(int(group["group_no"][0]), None)
        buckets = (ItemBuckets.of(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)) if timed is None
                   else ItemBuckets.of(timed["item_no"].to_numpy(), timed["bucket"].to_numpy(),
                                       timed["len"].to_numpy().astype(np.float64)))
        # No criterion with a threshold, no verdicts: no pass rate rather than a rate of 0 (as in `summary`).
        passes = pl.when(pl.col("with_verdicts")).then(pl.col(f"{PASSED}:n")).otherwise(0)
        # Sums, then counts, of the scores, pass rate, error rate and cost per row.
        item_sums = group.select(*(pl.col(f"{m}:sum") * EXACT_UNIT for m in [*scores, PASSED]), "errors",
                                 pl.col("cost") * EXACT_UNIT).to_numpy().astype(np.float64)
        counts = group.select(*(pl.col(f"{m}:n") for m in scores), passes, "rows",
                              pl.col("rows").alias("cost_rows")).to_numpy().astype(np.uint32)
        tables[(str(backend or ""), str(param_set or ""))] = ItemTable((*scores, *RATE_METRICS), ids, item_sums,
                                                                    counts, buckets)
    return tables


def _stack(frame: pl.DataFrame) -> pl.DataFrame:
    """Parts' results kept stacked, to be added up once at the end."""
    return frame


def _latency_buckets(run: Run, index: pl.DataFrame, groups: Sequence[Group] | None) -> dict[int, pl.DataFrame]:
    """Per group number of `index` (group keys and item -> `group_no`, `item_no`), the ok rows of each item
    counted per latency bucket and part: `item_no`, `bucket`, `len`."""
    bucket = (pl.col("latency_s").clip(lower_bound=1e-6).log() / LOG_STEP).round().cast(pl.Int32).alias("bucket")
    numbered = index.lazy()

    def queries(part: pl.LazyFrame) -> list[pl.LazyFrame]:
        part = part if groups is None else part.filter(_in_groups(groups))
        timed = part.filter(_OK & pl.col("latency_s").is_finite()).select(
            *GROUP_KEYS, pl.col(ITEM_KEY).fill_null(_NO_ITEM), bucket)
        return [timed.join(numbered, on=list(_ITEM_KEYS), how="inner", nulls_equal=True)
                .group_by("group_no", "item_no", "bucket").len().with_columns(pl.col("len").cast(pl.UInt32))]

    # An item's rows in two parts with one bucket are two triples here: `ItemBuckets.of` adds them up.
    (stacked,) = collect_per_part(run, [*_ITEM_KEYS, "status", "latency_s"], queries, [_stack])
    return {int(key[0]): group.drop("group_no")
            for key, group in stacked.partition_by("group_no", as_dict=True).items()}
