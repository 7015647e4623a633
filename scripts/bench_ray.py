"""Ray executor benchmarks: scaling an IO-bound job over workers, rate-limit precision across workers, and
what the lease actor costs.

    python scripts/bench_ray.py [--tasks 160] [--latency 0.2] [--per-worker 4] [--rpm 300 --window 20]

from the repository after `pip install -e '.[ray]'`. A local Ray is started with 4 logical CPUs (the
shards wait on the network, so several share a core); the fake provider server runs in its own process.

1. Scaling: `--tasks` calls to a server answering after `--latency` seconds, each worker capped at
   `--per-worker` calls in flight (the job's `concurrency`, which is per process); 1, 2 and 4 workers
   (one shard each). Wall time of the whole run (workers starting, the job loaded in each, the merge)
   of all its calls (first call sent to last answer) and of the longest shard's calls, against the ideal
   tasks·latency/(per-worker·workers): shards start calling once their worker has loaded the job.
2. Rate limits across workers: 4 workers against a server enforcing `--rpm` requests per `--window`
   seconds, the backend configured with the same `rpm` (the job's window shortened to `--window`):
   achieved / configured from the answers' send times (finished_at - latency_s), the busiest window seen
   by the server's rule, and the 429s.
3. The lease actor: leases per call in runs 1 and 2 (a worker leases once per batch of waiting calls), the
   round trip of one lease call from a process to the actor, and the granter's own time per lease.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import polars as pl
import ray
from bench_runner import Server  # the fake server in its own process: its CPU is not the workers'

from evalpipe.analysis.runs import open_run
from evalpipe.pipeline.job.load import load_job
from evalpipe.pipeline.job.spec import ExecutorSpec
from evalpipe.pipeline.output.sharded import shard_dirs
from evalpipe.pipeline.running import ray_cluster
from evalpipe.pipeline.running.lease_granter import RateGranter
from evalpipe.pipeline.running.ray_actors import LimitsActor
from evalpipe.pipeline.running.ray_executor import run_sharded
from evalpipe.pipeline.running.runner import RunOptions

KEY_VARIABLE = "EVALPIPE_BENCH_RAY_KEY"
JOB = """\
name: bench-ray
dataset:
  path: items.jsonl
prompt:
  user: "{{{{ question }}}}"
backends:
  - id: fake
    backend: openai
    model: gpt-4o-mini
    base_url: {url}
    api_key_env: {key}
    max_concurrency: 64
    max_retries: 0
{extra}
concurrency: {per_worker}
best_of: false
"""


def write_job(directory: Path, url: str, tasks: int, per_worker: int, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "items.jsonl").open("w", encoding="utf-8") as file:
        for i in range(tasks):
            file.write(json.dumps({"id": f"q{i:05d}", "question": f"question number {i}"}) + "\n")
    path = directory / "job.yaml"
    path.write_text(JOB.format(url=url, key=KEY_VARIABLE, per_worker=per_worker, extra=extra), encoding="utf-8")
    return path


def run(job: Path, out: Path, workers: int, period_s: float = 60.0) -> tuple[float, Path, dict[str, Any]]:
    """(wall seconds, run directory, the lease actor's counters) of one sharded run."""
    limits: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    outcome = anyio.run(lambda: run_sharded(load_job(job), RunOptions(out_root=out, period_s=period_s),
                                            ExecutorSpec(kind="ray", shards=workers), on_limits=limits.update))
    wall = time.perf_counter() - started
    assert outcome.state == "completed", outcome.counts
    return wall, outcome.run_dir, limits["fake"]


def send_times(run_dir: Path) -> list[float]:
    """When each call was sent (its answer's time less its latency), sorted, in seconds."""
    run = open_run(run_dir)
    frame = run.scan(["finished_at", "latency_s", "status"]).filter(pl.col("status") == "ok").collect()
    finished = frame["finished_at"].dt.epoch("us").to_numpy() / 1e6
    return sorted((finished - frame["latency_s"].to_numpy()).tolist())


def calls_span(run_dir: Path) -> float:
    """First call sent to last answer, in seconds."""
    frame = open_run(run_dir).scan(["started_at", "finished_at"]).collect()
    return float((frame["finished_at"].max() - frame["started_at"].min()).total_seconds())  # type: ignore[operator, union-attr]


def shard_span(run_dir: Path) -> float:
    """The longest span of calls of one shard (shards start when their worker has loaded the job)."""
    return max(calls_span(directory) for directory in shard_dirs(run_dir))


def busiest_window(times: list[float], window_s: float) -> int:
    """The most calls any sliding window of `window_s` holds."""
    best, start = 0, 0
    for end, moment in enumerate(times):
        while times[start] <= moment - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def rate_limited(url: str) -> int:
    """The 429s the fake server sent."""
    with urllib.request.urlopen(f"{url}/_fake/stats") as response:
        return int(json.load(response)["by_status"].get("429", 0))


def lease_round_trip(calls: int = 500) -> float:
    """Seconds per lease call from this process to a LimitsActor (sequential, so round trips)."""
    actor = ray_cluster.start_actor(LimitsActor, 1e9, None, 60.0, 64)
    try:
        actor.call_blocking("lease", [10], 0.0)  # warm
        started = time.perf_counter()
        for _ in range(calls):
            actor.call_blocking("lease", [10], 0.0)
        return (time.perf_counter() - started) / calls
    finally:
        actor.kill()


def granter_time(calls: int = 100_000) -> float:
    granter = RateGranter(rpm=1e9)
    started = time.perf_counter()
    for _ in range(calls):
        granter.lease([10])
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=160)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--per-worker", type=int, default=4)
    parser.add_argument("--rpm", type=int, default=300)
    # 2% headroom of a 20 s window is 400 ms: what late wake-ups on a loaded machine may eat into.
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--windows", type=int, default=2, help="how many windows of calls the rpm run lasts")
    args = parser.parse_args()
    os.environ[KEY_VARIABLE] = "sk-bench-ray-0123456789abcdef"
    started = time.perf_counter()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"ray.init: {time.perf_counter() - started:.1f} s; machine: {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        print(f"\n1. scaling: {args.tasks} calls, {args.latency * 1000:.0f} ms latency, {args.per_worker} in flight "
              "per worker")
        print(f"{'workers':>7} {'ideal s':>8} {'shard s':>8} {'shard/ideal':>11} {'calls s':>8} {'run s':>7} "
              f"{'leases/call':>11}")
        with Server("--latency", str(args.latency)) as server:
            job = write_job(root / "scaling", server.openai, args.tasks, args.per_worker)
            for workers in (1, 2, 4):
                wall, run_dir, stats = run(job, root / f"scaling-{workers}", workers)
                ideal = args.tasks * args.latency / (args.per_worker * workers)
                span, longest = calls_span(run_dir), shard_span(run_dir)
                print(f"{workers:>7} {ideal:>8.2f} {longest:>8.2f} {longest / ideal:>11.2f} {span:>8.2f} {wall:>7.2f} "
                      f"{stats['leases'] / max(stats['granted'], 1):>11.2f}")
        tasks = args.rpm * args.windows
        print(f"\n2. rate limits: 4 workers, server and backend at {args.rpm} per {args.window:g} s, {tasks} calls")
        with Server("--rpm", str(args.rpm), "--window", str(args.window), "--latency", "0.05") as server:
            job = write_job(root / "rpm", server.openai, tasks, 8, extra=f"    rpm: {args.rpm}")
            wall, run_dir, stats = run(job, root / "rpm-run", 4, period_s=args.window)
            times = send_times(run_dir)
            achieved = (len(times) - 1) / (times[-1] - times[0]) * args.window
            print(f"achieved {achieved:.1f} per window of {args.rpm} configured: {achieved / args.rpm:.3f}; "
                  f"busiest window {busiest_window(times, args.window)}; 429s {rate_limited(server.url)}; "
                  f"leases/call {stats['leases'] / max(stats['granted'], 1):.2f}; run {wall:.1f} s")
        print("\n3. lease actor")
        print(f"round trip of one lease call: {lease_round_trip() * 1e3:.2f} ms; "
              f"the granter's own work: {granter_time() * 1e6:.1f} µs per lease")
    ray.shutdown()


if __name__ == "__main__":
    main()
