"""Analysis benchmark: `summary` and `compare` on 100k- and 1M-row runs, polars (evalpipe) against the
same computation in pandas, time and peak memory, in one run.

    python scripts/bench_analysis.py [--sizes 100000,1000000] [--rounds 3] [--keep DIR]

from the repository after `make install` and `pip install -e '.[bench]'` (pandas). Runs are synthetic
(`evalpipe.analysis.synthetic`: the real row schema, Parquet parts of 100,000 rows, two criteria with
discrete scores as real scorers give, 2% error rows), generated into a temporary directory: four
backends × five parameter sets × N/100 items × five repeats, and for `compare` a second run of the same
items with fresh noise and one backend made worse.

Each measurement runs in its own subprocess, so peak RSS (`ru_maxrss`) belongs to that computation
alone; the table shows the peak and how far it rose above the RSS after the imports (the peak is reset
there through /proc/self/clear_refs). Time is the fastest of `--rounds`.
pandas does the same work: it reads only the needed columns, groups, computes the same quantiles,
sums and per-item (summary) or value (compare) counts, and hands them to the same bootstrap
(`evalpipe.analysis.stats`), so the difference is the data engine, not the statistics. Each child checks
its result against evalpipe's numbers at 100k rows, so the two computations are known to agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ENGINES = ("polars", "pandas")
OPERATIONS = ("summary", "compare")


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Reset the peak RSS to the current RSS, so that it measures the work, not the imports before it."""
    Path("/proc/self/clear_refs").write_text("5")  # Linux ≥ 4.0: "5" resets VmHWM


# -- pandas: the same computations ---------------------------------------------------------------------


def _pandas_summary(run_dir: Path) -> dict[tuple[str, str], float]:
    import pandas as pd

    from evalpipe.analysis.runs import open_run
    from evalpipe.analysis.stats import clustered_means

    run = open_run(run_dir)
    metrics = run.metrics
    columns = ["backend_id", "param_set", "item_id", "task_index", "model", "temperature", "top_p", "status",
               "error_type", "passed", "latency_s", "ttft_s", "input_tokens", "output_tokens", "cost_usd", *metrics]
    frame = pd.concat([pd.read_parquet(part, columns=columns) for part in run.parts], ignore_index=True)
    keys = ["backend_id", "param_set"]
    ok = frame[frame["status"] == "ok"]
    groups = frame.groupby(keys, sort=False)
    totals = pd.DataFrame({
        "first_task": groups["task_index"].min(), "rows": groups.size(),
        "ok": groups["status"].agg(lambda s: (s == "ok").sum()),
        "errors": groups["status"].agg(lambda s: (s == "error").sum()),
        "input_tokens": groups["input_tokens"].sum(), "output_tokens": groups["output_tokens"].sum(),
        "cost_usd": groups["cost_usd"].sum()})
    ok_groups = ok.groupby(keys, sort=False)
    totals["pass_rate"] = ok_groups["passed"].mean()
    totals["latency_p50"] = ok_groups["latency_s"].quantile(0.5)
    totals["latency_p95"] = ok_groups["latency_s"].quantile(0.95)
    totals["ttft_p50"] = ok_groups["ttft_s"].quantile(0.5)
    totals = totals.sort_values("first_task")
    frame[frame["status"] == "error"].groupby([*keys, "error_type"]).size()
    means: dict[tuple[str, str], float] = {}
    # Per item the sum and count of each score, then one cluster bootstrap per group, as the summary does.
    scored = frame[[*keys, "item_id", *metrics]].copy()
    for metric in metrics:
        scored[f"{metric}:n"] = scored[metric].notna()
    items = scored.groupby([*keys, "item_id"], sort=True).sum(numeric_only=True)
    for (backend, param_set), group in items.groupby(level=[0, 1], sort=True):
        estimates = clustered_means(group[metrics].to_numpy(), group[[f"{m}:n" for m in metrics]].to_numpy(),
                                    metrics, key=f"{backend}|{param_set}")
        means[(backend, param_set)] = estimates["score_total"].mean
    return means


def _pandas_compare(run_a_dir: Path, run_b_dir: Path) -> dict[str, float]:
    import pandas as pd

    from evalpipe.analysis.runs import open_run
    from evalpipe.analysis.stats import mean_ci

    keys = ["backend_id", "item_id", "param_set", "repeat", "turn"]
    sides = []
    for run_dir in (run_a_dir, run_b_dir):
        run = open_run(run_dir)
        metrics = run.metrics
        side = pd.concat([pd.read_parquet(part, columns=[*keys, *metrics, "status", "cost_usd", "latency_s"])
                          for part in run.parts], ignore_index=True)
        side.loc[side["status"] != "ok", "latency_s"] = float("nan")
        sides.append(side.drop(columns="status"))
    joined = sides[0].merge(sides[1], on=keys, how="outer", suffixes=("", "_b"), indicator=True)
    paired = joined[joined["_merge"] == "both"]
    by_backend = joined.groupby("backend_id")["_merge"].value_counts().unstack(fill_value=0)
    paired.groupby("backend_id").agg(cost_a=("cost_usd", "sum"), cost_b=("cost_usd_b", "sum"),
                                     latency_a=("latency_s", "median"), latency_b=("latency_s_b", "median"))
    del by_backend
    differences: dict[str, float] = {}
    for metric in metrics:
        diff = (paired[f"{metric}_b"] - paired[metric]).round(9)
        frame = pd.DataFrame({"backend_id": paired["backend_id"], "d": diff}).dropna()
        counts = frame.groupby(["backend_id", "d"]).size().reset_index(name="n")
        for backend, group in counts.groupby("backend_id", sort=True):
            estimate = mean_ci(group["d"].to_numpy(), group["n"].to_numpy(), key=f"{backend}|{metric}")
            if metric == "score_total":
                differences[backend] = estimate.mean
        frame.assign(win=frame["d"] > 1e-9, loss=frame["d"] < -1e-9).groupby("backend_id")[["win", "loss"]].sum()
    worst = paired.assign(d=paired["score_total_b"] - paired["score_total"]).query("d < 0")
    worst.sort_values("d").groupby("backend_id").head(10)
    return differences


# -- polars (evalpipe) ---------------------------------------------------------------------------------


def _polars_summary(run_dir: Path) -> dict[tuple[str, str], float]:
    from evalpipe.analysis.runs import open_run
    from evalpipe.analysis.summary import summarize

    summary = summarize(open_run(run_dir))
    return {(g.backend_id, g.param_set): g.scores["score_total"].mean for g in summary.groups}


def _polars_compare(run_a_dir: Path, run_b_dir: Path) -> dict[str, float]:
    from evalpipe.analysis.compare import compare_runs
    from evalpipe.analysis.runs import open_run

    comparison = compare_runs(open_run(run_a_dir), open_run(run_b_dir))
    return {d.backend_id: d.difference.mean for d in comparison.differences if d.metric == "score_total"}


def _child(engine: str, operation: str, run_a: Path, run_b: Path, rounds: int, check: bool) -> None:
    """Measure one computation in this process and print its figures as JSON."""
    import evalpipe.analysis.compare  # noqa: F401 - imports (polars, numpy, pandas) are not the work measured
    import evalpipe.analysis.summary  # noqa: F401

    if engine == "pandas":
        import pandas  # noqa: F401
    baseline = _status_mb("VmRSS")
    _reset_peak()
    work = {("polars", "summary"): lambda: _polars_summary(run_a),
            ("pandas", "summary"): lambda: _pandas_summary(run_a),
            ("polars", "compare"): lambda: _polars_compare(run_a, run_b),
            ("pandas", "compare"): lambda: _pandas_compare(run_a, run_b)}[(engine, operation)]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        result: dict[Any, float] = work()  # type: ignore[no-untyped-call]
        times.append(time.perf_counter() - started)
    if check and engine == "pandas":
        reference = _polars_summary(run_a) if operation == "summary" else _polars_compare(run_a, run_b)
        assert result.keys() == reference.keys(), (result.keys(), reference.keys())
        for key, value in reference.items():
            assert abs(result[key] - value) < 1e-9, (key, result[key], value)
    print(json.dumps({"seconds": min(times), "peak_mb": _status_mb("VmHWM"), "baseline_mb": baseline}))


def _generate(root: Path, rows: int) -> tuple[Path, Path]:
    from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run

    spec = SyntheticRun(items=rows // 100, repeats=5, backends={"b1": 0.7, "b2": 0.6, "b3": 0.55, "b4": 0.5},
                        param_sets={f"t{t}": (t, 0.9) for t in (0.0, 0.3, 0.6, 0.9, 1.2)}, run_id="a")
    run_a = write_synthetic_run(root / f"a-{rows}", spec)
    run_b = write_synthetic_run(root / f"b-{rows}", dataclasses.replace(spec, noise_seed=2, shift={"b4": -0.05},
                                                                        run_id="b"))
    return run_a, run_b


def _measure(engine: str, operation: str, run_a: Path, run_b: Path, rounds: int, check: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", engine, operation, str(run_a), str(run_b), "--rounds",
               str(rounds)] + (["--check"] if check else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{engine} {operation} failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100000,1000000", help="rows per run, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="timed repetitions per measurement (fastest shown)")
    parser.add_argument("--keep", type=Path, help="generate the runs here and keep them")
    parser.add_argument("--child", nargs=4, metavar=("ENGINE", "OPERATION", "RUN_A", "RUN_B"), help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, operation, run_a, run_b = args.child
        _child(engine, operation, Path(run_a), Path(run_b), args.rounds, args.check)
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as temp:
        root = args.keep or Path(temp)
        print(f"{'rows':>10} {'operation':<8} {'engine':<7} {'time s':>8} {'peak RSS MB':>12} {'above imports MB':>17}")
        ratios = []
        for rows in sizes:
            started = time.perf_counter()
            run_a, run_b = _generate(root, rows)
            print(f"{rows:>10,} generated two runs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            for operation in OPERATIONS:
                found = {}
                for engine in ENGINES:
                    figures = _measure(engine, operation, run_a, run_b, args.rounds, check=rows <= 100_000)
                    found[engine] = figures
                    print(f"{rows:>10,} {operation:<8} {engine:<7} {figures['seconds']:>8.2f} "
                          f"{figures['peak_mb']:>12.0f} {figures['peak_mb'] - figures['baseline_mb']:>17.0f}",
                          flush=True)
                polars, pandas = found["polars"], found["pandas"]
                ratios.append((rows, operation, pandas["seconds"] / polars["seconds"],
                               (pandas["peak_mb"] - pandas["baseline_mb"])
                               / max(polars["peak_mb"] - polars["baseline_mb"], 1.0)))
        print("\npandas / polars (above 1: evalpipe's polars path is faster or smaller)")
        for rows, operation, time_ratio, memory_ratio in ratios:
            print(f"{rows:>10,} {operation:<8} time ×{time_ratio:.2f}   memory above imports ×{memory_ratio:.2f}")


if __name__ == "__main__":
    main()
