"""Batch mode against live: the same job through OpenAI's Batch API and through live calls, on the fake
provider server: rows, cost, wall time and the client's CPU time, and what the vendor saw.

    PYTHONPATH=. python scripts/bench_batch.py                  # 2,000 tasks
    PYTHONPATH=. python scripts/bench_batch.py --tasks 10000 --max-requests 2500

The fake answers a batch as soon as it is polled (no processing delay), so the wall time is the
client's own work: building and uploading the JSONL, downloading and parsing the results, scoring and
writing the rows. A real vendor adds its queue (minutes to 24 hours); that wait costs no CPU here.
CPU time is this process's, the fake server's thread included, in both modes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from evalpipe.pipeline.job.load import prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer

KEY = "sk-bench-batch"


def job(url: str, tasks: int, batch: dict[str, Any] | None) -> JobSpec:
    backend: dict[str, Any] = {"id": "model", "backend": "openai", "model": "gpt-4o-mini", "base_url": url,
                               "api_key_env": "EVALPIPE_BENCH_KEY", "price_input_per_1m": 0.15,
                               "price_output_per_1m": 0.60, "max_concurrency": 64, "stream": False}
    if batch is not None:
        backend |= {"mode": "batch", "batch": batch}
    items = [{"id": f"q{i:06d}", "q": f"question number {i} about batches", "expected": f"Echo: question number {i}"}
             for i in range(tasks)]
    return JobSpec.model_validate({
        "name": "bench-batch", "dataset": {"items": items}, "prompt": {"user": "{{ q }}"}, "backends": [backend],
        "parameters": {"defaults": {"max_tokens": 16}}, "concurrency": 64,
        "scorers": [{"type": "contains", "values": ["{{ q }}"], "threshold": 1}]})


def measure(spec: JobSpec, out: Path) -> tuple[float, float, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    outcome = anyio.run(run_job, prepare_job(spec), RunOptions(out_root=out, handle_signals=False, quiet=True))
    return time.perf_counter() - started, time.process_time() - cpu, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--max-requests", type=int, default=1000, help="requests per batch")
    args = parser.parse_args()
    os.environ["EVALPIPE_BENCH_KEY"] = KEY
    with FakeServer() as srv, tempfile.TemporaryDirectory() as scratch:
        url = srv.url_for("openai")
        print(f"{args.tasks:,} tasks, batches of {args.max_requests:,}")
        print(f"{'mode':6} {'ok':>7} {'cost USD':>10} {'wall s':>8} {'CPU s':>7} {'CPU ms/task':>12}  vendor saw")
        for mode, batch in (("live", None), ("batch", {"poll_interval_s": 0.05, "max_requests": args.max_requests})):
            srv.reset()
            wall, cpu, outcome = measure(job(url, args.tasks, batch), Path(scratch) / mode)
            stats, live = srv.batch_stats(KEY), srv.stats(KEY)
            saw = (f"{stats.files_uploaded} files, {stats.batches_created} batches, {stats.requests_answered:,} "
                   f"batch requests" if batch else f"{live.requests:,} live calls")
            print(f"{mode:6} {outcome.counts['ok']:>7,} {outcome.cost_usd:>10.4f} {wall:>8.2f} {cpu:>7.2f} "
                  f"{1000 * cpu / args.tasks:>12.2f}  {saw}")


if __name__ == "__main__":
    main()
