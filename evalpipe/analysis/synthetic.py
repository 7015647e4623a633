"""Synthetic run directories with known truth, for statistics tests, report tests and the benchmark.

The rows have the real row schema, Parquet parts and manifest of a run, written column by column
(a million rows take seconds). Each item has a difficulty shared by every backend and by both runs of a
comparison made with the same `seed`, so paired differences behave like those of real reruns; `quality`
sets each backend's success probability and `shift` moves it, which plants a regression or an improvement
of known size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from evalpipe.pipeline.output.manifest import BackendEntry, Manifest, write_manifest
from evalpipe.pipeline.output.rows import row_schema
from evalpipe.pipeline.output.sinks import PARQUET_DIRNAME


@dataclass(frozen=True)
class SyntheticRun:
    """What to generate: items × backends × parameter sets × repeats rows."""

    items: int = 50
    backends: Mapping[str, float] = field(default_factory=lambda: {"alpha": 0.7, "beta": 0.5})  # id -> quality
    param_sets: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: {"default": (0.7, 1.0)})  # name -> (temperature, top_p)
    repeats: int = 1
    criteria: Sequence[str] = ("accuracy", "judge")
    shift: Mapping[str, float] = field(default_factory=dict)  # backend id -> change of quality
    error_rate: float = 0.02
    seed: int = 0
    noise_seed: int = 1  # differs between two runs of the "same" job
    rows_per_part: int = 100_000
    run_id: str = "synthetic"


def write_synthetic_run(path: str | Path, spec: SyntheticRun = SyntheticRun()) -> Path:  # noqa: B008 - frozen
    """Write the run `spec` describes into `path` (parts, manifest) and return the path."""
    path = Path(path)
    parts_dir = path / PARQUET_DIRNAME
    parts_dir.mkdir(parents=True, exist_ok=True)
    schema = row_schema(list(spec.criteria))
    table = synthetic_rows(spec)
    for number, start in enumerate(range(0, table.num_rows, spec.rows_per_part)):
        part = table.slice(start, spec.rows_per_part)
        pq.write_table(part, parts_dir / f"part-{number:05d}.parquet", compression="zstd", row_group_size=50_000)
    status = table.column("status").to_numpy(zero_copy_only=False)
    counts = {name: int((status == name).sum()) for name in ("ok", "error") if (status == name).any()}
    now = datetime.now(UTC).isoformat()
    write_manifest(path, Manifest(
        job_name="synthetic", run_id=spec.run_id, state="completed", started_at=now, finished_at=now, created_at=now,
        evalpipe_version="synthetic", job_file=None, job_sha256=None, job_hash=None,
        backends=[BackendEntry(b, "openai", f"{b}-model") for b in spec.backends], tasks_total=table.num_rows,
        counts=counts, input_tokens=int(pa.compute.sum(table.column("input_tokens")).as_py() or 0),
        output_tokens=int(pa.compute.sum(table.column("output_tokens")).as_py() or 0),
        cost_usd=float(pa.compute.sum(table.column("cost_usd")).as_py() or 0.0),
        outputs={"parquet": PARQUET_DIRNAME}, resume_command=""))
    assert table.schema.equals(schema)
    return path


def synthetic_rows(spec: SyntheticRun) -> pa.Table:
    """The rows of `spec` as one Arrow table with the row schema."""
    backends, param_sets = list(spec.backends), list(spec.param_sets)
    shape = (len(backends), len(param_sets), spec.items, spec.repeats)
    n = int(np.prod(shape))
    backend_index, param_index, item_index, repeat_index = (a.ravel() for a in np.indices(shape))
    difficulty = np.random.default_rng(spec.seed).normal(0.0, 1.0, spec.items)  # shared by both runs
    noise = np.random.default_rng(spec.noise_seed)
    quality = np.array([spec.backends[b] + spec.shift.get(b, 0.0) for b in backends])
    temperature = np.array([spec.param_sets[p][0] for p in param_sets])[param_index]
    top_p = np.array([spec.param_sets[p][1] for p in param_sets])[param_index]
    # Success probability: the backend's quality, lowered for hard items and for hot sampling.
    logit = np.log(quality / (1 - quality))[backend_index] - difficulty[item_index] - 0.5 * (temperature - 0.7) ** 2
    probability = 1 / (1 + np.exp(-logit))
    errors = noise.random(n) < spec.error_rate
    scores: dict[str, np.ndarray] = {}
    for number, name in enumerate(spec.criteria):
        if number == 0:  # pass/fail
            scores[name] = (noise.random(n) < probability).astype(np.float64)
        else:  # a judge's 0-10 grade, as a fraction
            scores[name] = np.clip(np.round(10 * probability + noise.normal(0, 1.5, n)), 0, 10) / 10
    total = np.mean(np.stack(list(scores.values())), axis=0) if scores else np.zeros(n)
    latency = noise.lognormal(np.log(0.8) + 0.2 * backend_index, 0.4)
    output_tokens = noise.integers(20, 400, n)
    columns: dict[str, pa.Array] = {
        "run_id": pa.array(np.full(n, spec.run_id)),
        "task_id": pa.array([f"t{i:08d}" for i in range(n)]),
        "task_index": pa.array(np.arange(n)),
        "item_id": pa.array(np.char.add("item-", item_index.astype(str))),
        "backend_id": pa.array(np.array(backends)[backend_index]),
        "provider": pa.array(np.full(n, "openai")),
        "model": pa.array(np.char.add(np.array(backends)[backend_index], "-model")),
        "param_set": pa.array(np.array(param_sets)[param_index]),
        "temperature": pa.array(temperature),
        "top_p": pa.array(top_p),
        "repeat": pa.array(repeat_index),
        "turn": pa.array(np.zeros(n, dtype=np.int64)),
        "prompt": pa.array(np.char.add("What is question ", item_index.astype(str))),
        "response": pa.array(np.char.add("An answer of quality ", np.round(probability, 2).astype(str))),
        "finish_reason": pa.array(np.full(n, "stop")),
        "input_tokens": pa.array(noise.integers(10, 200, n)),
        "output_tokens": pa.array(output_tokens),
        "cost_usd": pa.array(output_tokens * (1e-6 * (1 + backend_index))),
        "latency_s": pa.array(latency),
        "ttft_s": pa.array(latency * 0.3),
        "attempts": pa.array(np.ones(n, dtype=np.int64)),
        "cached": pa.array(np.zeros(n, dtype=bool)),
        "status": pa.array(np.where(errors, "error", "ok")),
        "error_type": pa.array(np.full(n, "RateLimitError"), mask=~errors),
        "error_message": pa.array(np.full(n, "429 Too Many Requests"), mask=~errors),
        "score_total": pa.array(total, mask=errors),
        "passed": pa.array(total >= 0.5, mask=errors),
    }
    for name, values in scores.items():
        columns[f"score_{name}"] = pa.array(values, mask=errors)
        columns[f"explanation_{name}"] = pa.array(np.full(n, f"{name} graded synthetically"))
    schema = row_schema(list(spec.criteria))
    arrays = [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def clustered_outcomes(rng: np.random.Generator, items: int, repeats: int, mean: float = 0.7,
                       concentration: float = 2.0) -> np.ndarray:
    """Pass/fail outcomes of shape (items, repeats) whose population mean is `mean`: each item's success
    probability is drawn from Beta(mean·c, (1 − mean)·c), so a low concentration `c` makes items differ a
    lot (hard and easy questions) and the repeats of one item agree."""
    probability = rng.beta(mean * concentration, (1 - mean) * concentration, items)
    return (rng.random((items, repeats)) < probability[:, None]).astype(np.float64)


@dataclass(frozen=True)
class Coverage:
    """How often the 95% intervals of simulated experiments contained the true mean."""

    experiments: int
    clustered: float  # items resampled (`clustered_means`)
    rows: float  # rows resampled as if independent (`mean_ci`)
    method: str  # how `clustered_means` computed its intervals ("bootstrap", "clustered-normal")


def coverage_experiment(experiments: int, items: int = 100, repeats: int = 4, mean: float = 0.7,
                        seed: int = 0) -> Coverage:
    """Simulate `experiments` evaluations of `items` × `repeats` pass/fail rows with item effects and count
    how often each interval covers the true mean."""
    from evalpipe.analysis.stats import clustered_means, mean_ci  # synthetic data must not need stats to load

    rng = np.random.default_rng(seed)
    clustered = rows = 0
    method = "none"
    for number in range(experiments):
        outcomes = clustered_outcomes(rng, items, repeats, mean)
        sums, counts = outcomes.sum(axis=1, keepdims=True), np.full((items, 1), float(repeats))
        estimate = clustered_means(sums, counts, ["score"], key=f"coverage-{number}")["score"]
        clustered += estimate.low <= mean <= estimate.high
        method = estimate.method
        passes = int(outcomes.sum())
        estimate = mean_ci([0.0, 1.0], [outcomes.size - passes, passes], key=f"coverage-{number}")
        rows += estimate.low <= mean <= estimate.high
    return Coverage(experiments, clustered / experiments, rows / experiments, method)
