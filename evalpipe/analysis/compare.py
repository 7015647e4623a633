"""`evalpipe compare RUN_A RUN_B`: is B better than A, by how much, and how sure are we?

Rows pair on (backend, item, parameter set, repeat, turn): the same task in both runs. With
`pair_on="item"` each side is first averaged per (backend, item), for runs whose repeats or parameter
sets differ. Differences are B − A, so a negative difference is a regression. Each interval is a paired
bootstrap (the bootstrap of the mean per-pair difference) with a seed fixed by backend and metric.

Rows without a partner, and pairs where either side has no score (an error row), are counted per
backend and reported; they are never dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from evalpipe.analysis.runs import Run, RunDirError, collect
from evalpipe.analysis.stats import Estimate, FloatArray, IntArray
from evalpipe.analysis.summary import exact_sum, score_estimates, value_counts

PairOn = Literal["task", "item"]
PAIR_KEYS: dict[PairOn, tuple[str, ...]] = {"task": ("item_id", "param_set", "repeat", "turn"), "item": ("item_id",)}
DEFAULT_GATE_METRIC = "score_total"
TOP_REGRESSIONS = 10
_TIE = 1e-9  # differences this small are float noise from averaging, not a win or a loss


@dataclass(frozen=True, slots=True)
class MetricDifference:
    """How one backend's metric moved from A to B over its scored pairs."""

    backend_id: str
    metric: str
    pairs: int  # pairs where both sides have the metric
    unscored: int  # pairs where either side lacks it (an error row, say)
    mean_a: float
    mean_b: float
    difference: Estimate  # of B − A
    wins: int  # B better
    ties: int
    losses: int


@dataclass(frozen=True, slots=True)
class BackendChange:
    """Pairing counts, cost and latency of one backend from A to B (cost and latency over the pairs)."""

    backend_id: str
    pairs: int
    only_in_a: int
    only_in_b: int
    cost_a_usd: float
    cost_b_usd: float
    latency_p50_a_s: float | None
    latency_p50_b_s: float | None


@dataclass(frozen=True, slots=True)
class Regression:
    """One of the pairs that lost most on the gate metric, with both answers."""

    backend_id: str
    key: dict[str, object]
    score_a: float
    score_b: float
    difference: float
    prompt: str | None
    response_a: str | None
    response_b: str | None


@dataclass(frozen=True, slots=True)
class Comparison:
    """Everything `compare` found, and whether the release gate holds."""

    run_a: str
    run_b: str
    warnings_a: tuple[str, ...]
    warnings_b: tuple[str, ...]
    pair_on: PairOn
    backend_map: dict[str, str]  # B's backend id -> A's, when they differ
    metrics: list[str]
    notes: list[str]
    differences: list[MetricDifference]
    changes: list[BackendChange]
    regressions: dict[str, list[Regression]]
    gate_metric: str
    threshold: float | None
    failed_backends: list[str] = field(default_factory=list)

    @property
    def gate_failed(self) -> bool:
        """Whether `--fail-on-regression` should fail the pipeline."""
        return self.threshold is not None and (bool(self.failed_backends) or not self.changes_with_pairs)

    @property
    def changes_with_pairs(self) -> list[BackendChange]:
        """The backends that have at least one pair."""
        return [change for change in self.changes if change.pairs]


def metric_column(name: str) -> str:
    """The score column a user means: `total` and `score_total` both name `score_total`."""
    return name if name.startswith("score_") else f"score_{name}"


def compare_runs(run_a: Run, run_b: Run, *, pair_on: PairOn = "task", gate_metric: str = DEFAULT_GATE_METRIC,
                 threshold: float | None = None, backend_map: Mapping[str, str] | None = None,
                 top: int = TOP_REGRESSIONS) -> Comparison:
    """Compare `run_b` against `run_a`; `backend_map` pairs B's backend ids with A's where they differ."""
    notes: list[str] = []
    metrics = [m for m in run_a.metrics if m in run_b.metrics]
    for run, other in ((run_a, run_b), (run_b, run_a)):
        lonely = [m for m in run.metrics if m not in other.metrics]
        if lonely:
            notes.append(f"only {run.name} has {', '.join(lonely)}; not compared")
    if gate_metric not in metrics:
        raise RunDirError(f"cannot compare on {gate_metric!r}: the runs share {', '.join(metrics)}")
    mapping = dict(backend_map or _single_backend_map(run_a, run_b, notes))
    keys = ["backend_id", *PAIR_KEYS[pair_on]]
    side_a = _side(run_a, keys, metrics, pair_on, {})
    side_b = _side(run_b, keys, metrics, pair_on, mapping)
    # Joined once and held: five queries below read it, and a lazy join would be redone for each. It holds
    # only keys, scores, cost and latency (about 100 bytes a pair), never prompts or answers.
    joined = collect(side_a.join(side_b, on=keys, how="full", nulls_equal=True, suffix="_b", coalesce=True),
                     run_a).lazy()
    both = pl.col("_in_a").is_not_null() & pl.col("_in_a_b").is_not_null()
    paired = joined.filter(both)
    changes = _changes(joined, both, run_a)
    differences = _differences(paired, metrics, run_a)
    regressions = _top_regressions(paired, keys, gate_metric, run_a, run_b, mapping, pair_on, top)
    failed = [d.backend_id for d in differences if d.metric == gate_metric and threshold is not None
              and d.difference.below(-threshold)]
    return Comparison(run_a.name, run_b.name, run_a.warnings, run_b.warnings, pair_on, mapping, metrics, notes,
                      differences, changes, regressions, gate_metric, threshold, failed)


def _single_backend_map(run_a: Run, run_b: Run, notes: list[str]) -> dict[str, str]:
    """B's only backend paired with A's only backend when their ids differ (a model renamed between releases)."""
    ids_a, ids_b = _backend_ids(run_a), _backend_ids(run_b)
    if len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b:
        notes.append(f"each run has one backend: {ids_b[0]} (B) is compared with {ids_a[0]} (A)")
        return {ids_b[0]: ids_a[0]}
    return {}


def _backend_ids(run: Run) -> list[str]:
    return sorted(collect(run.scan(["backend_id"]).unique(), run)["backend_id"].drop_nulls().to_list())


def _side(run: Run, keys: list[str], metrics: list[str], pair_on: PairOn, mapping: Mapping[str, str],
          ) -> pl.LazyFrame:
    """One run's side of the join: the pairing keys, metrics, cost and latency (ok rows only for latency)."""
    frame = run.scan([*keys, *metrics, "status", "cost_usd", "latency_s"])
    if mapping:
        frame = frame.with_columns(pl.col("backend_id").replace(dict(mapping)))
    frame = frame.with_columns(
        [pl.when(pl.col(m).is_finite()).then(pl.col(m)).alias(m) for m in metrics]
        + [pl.when(pl.col("status") == "ok").then(pl.col("latency_s")).alias("latency_s")])
    if pair_on == "item":
        # Rounded: the order of a group's rows varies between runs, and with it a float mean's last digits.
        frame = frame.group_by(keys).agg([pl.col(m).mean().round(12) for m in metrics]
                                         + [exact_sum("cost_usd"), pl.col("latency_s").mean()])
    return frame.select([*keys, *metrics, "cost_usd", "latency_s", pl.lit(True).alias("_in_a")])


def _changes(joined: pl.LazyFrame, both: pl.Expr, run: Run) -> list[BackendChange]:
    in_a, in_b = pl.col("_in_a").is_not_null(), pl.col("_in_a_b").is_not_null()
    frame = collect(joined.group_by("backend_id").agg(
        both.sum().alias("pairs"),
        (in_a & ~in_b).sum().alias("only_in_a"),
        (in_b & ~in_a).sum().alias("only_in_b"),
        exact_sum("cost_usd", both).alias("cost_a"),
        exact_sum("cost_usd_b", both).alias("cost_b"),
        pl.col("latency_s").filter(both).median().alias("latency_a"),
        pl.col("latency_s_b").filter(both).median().alias("latency_b"),
    ).sort("backend_id"), run)
    return [BackendChange(r["backend_id"], r["pairs"], r["only_in_a"], r["only_in_b"], r["cost_a"] or 0.0,
                          r["cost_b"] or 0.0, r["latency_a"], r["latency_b"]) for r in frame.iter_rows(named=True)]


def _differences(paired: pl.LazyFrame, metrics: list[str], run: Run) -> list[MetricDifference]:
    # Rounded so that 0.7 − 0.6 and 0.8 − 0.7 count as one distinct value (the bootstrap works on counts).
    diffs = paired.select("backend_id", *[(pl.col(f"{m}_b") - pl.col(m)).round(9).alias(m) for m in metrics])
    estimates = score_estimates(diffs, metrics, ("backend_id",), run)
    # Each side's mean over the scored pairs, from value counts: exact, so the report is the same every run.
    scored_sides = paired.select("backend_id", *[
        pl.when(pl.col(m).is_not_null() & pl.col(f"{m}_b").is_not_null()).then(pl.col(name)).alias(name)
        for m in metrics for name in (m, f"{m}_b")])
    counts = value_counts(scored_sides, [name for m in metrics for name in (m, f"{m}_b")], ("backend_id",), run)
    aggregates = []
    for m in metrics:
        scored = pl.col(m).is_not_null() & pl.col(f"{m}_b").is_not_null()
        diff = pl.col(f"{m}_b") - pl.col(m)
        aggregates += [scored.sum().alias(f"{m}:pairs"), (~scored).sum().alias(f"{m}:unscored"),
                       (diff > _TIE).sum().alias(f"{m}:wins"), (diff < -_TIE).sum().alias(f"{m}:losses")]
    frame = collect(paired.group_by("backend_id").agg(aggregates).sort("backend_id"), run)
    found = []
    for r in frame.iter_rows(named=True):
        backend = r["backend_id"]
        for m in metrics:
            pairs, wins, losses = r[f"{m}:pairs"], r[f"{m}:wins"], r[f"{m}:losses"]
            estimate = estimates.get((backend, m)) or Estimate(math.nan, math.nan, math.nan, 0, "none")
            found.append(MetricDifference(backend, m, pairs, r[f"{m}:unscored"], _mean(counts.get((backend, m))),
                                          _mean(counts.get((backend, f"{m}_b"))), estimate, wins,
                                          pairs - wins - losses, losses))
    return found


def _top_regressions(paired: pl.LazyFrame, keys: list[str], metric: str, run_a: Run, run_b: Run,
                     mapping: Mapping[str, str], pair_on: PairOn, top: int) -> dict[str, list[Regression]]:
    """The `top` pairs per backend with the largest loss on `metric`, with the prompt and both answers."""
    diff = (pl.col(f"{metric}_b") - pl.col(metric)).alias("difference")
    worst = collect(paired.select(*keys, pl.col(metric).alias("score_a"), pl.col(f"{metric}_b").alias("score_b"),
                                  diff).filter(pl.col("difference") < -_TIE)
                    .sort(["backend_id", "difference", *keys[1:]])
                    .group_by("backend_id", maintain_order=True).head(top), run_a)
    if worst.is_empty():
        return {}
    texts_a = _texts(run_a, worst.select(keys), keys, {}, pair_on)
    texts_b = _texts(run_b, worst.select(keys), keys, mapping, pair_on)
    table = (worst.join(texts_a, on=keys, how="left", nulls_equal=True)
             .join(texts_b.rename({"response": "response_b"}).drop("prompt"), on=keys, how="left", nulls_equal=True))
    found: dict[str, list[Regression]] = {}
    for r in table.iter_rows(named=True):
        found.setdefault(r["backend_id"], []).append(Regression(
            r["backend_id"], {k: r[k] for k in keys[1:]}, r["score_a"], r["score_b"], r["difference"], r["prompt"],
            r["response"], r["response_b"]))
    return found


def _texts(run: Run, wanted: pl.DataFrame, keys: list[str], mapping: Mapping[str, str],
           pair_on: PairOn) -> pl.DataFrame:
    frame = run.scan([*keys, "prompt", "response", "repeat", "task_index"])
    if mapping:
        frame = frame.with_columns(pl.col("backend_id").replace(dict(mapping)))
    frame = frame.join(wanted.lazy(), on=keys, how="semi", nulls_equal=True)
    if pair_on == "item":  # one representative answer per item: its first task
        frame = frame.sort("task_index").group_by(keys, maintain_order=True).first()
    return collect(frame.select(*keys, "prompt", "response"), run)


def _mean(counts: tuple[FloatArray, IntArray] | None) -> float:
    if counts is None or not counts[1].sum():
        return math.nan
    values, weights = counts
    return float(np.dot(values, weights) / weights.sum())
