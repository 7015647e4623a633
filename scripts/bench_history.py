"""History benchmark: `evalpipe history` over many large runs of one job, time and peak memory.

    python scripts/bench_history.py [--runs 10] [--rows 200000] [--keep DIR]

from the repository after `make install`. Runs are synthetic (`evalpipe.analysis.synthetic`: the real row
schema, Parquet parts of 100,000 rows, two criteria, 2% error rows): two backends × one parameter set ×
rows/10 items × five repeats each, the same items in every run with fresh noise, and the last run with one
backend made worse. The history is built in a subprocess, so its peak RSS (`ru_maxrss`) is that of the
history alone; the peak is reset after the imports (/proc/self/clear_refs), and the table shows how far
it rose above the RSS there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
from evalpipe.analysis.history import build_history

def status_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

Path("/proc/self/clear_refs").write_text("5")
base = status_mb("VmRSS")
start = time.perf_counter()
history = build_history(sys.argv[1])
seconds = time.perf_counter() - start
flags = sum(1 for run in history.runs for group in run.groups for point in group.metrics.values()
            if point.change is not None and point.change.significant)
last = {g.backend_id: g.metrics["score_total"].change for g in history.runs[-1].groups}
print(json.dumps({"seconds": seconds, "peak_mb": status_mb("VmHWM"), "rise_mb": status_mb("VmHWM") - base,
                  "flags": flags, "last_beta": last["beta"].verdict}))
"""


def main() -> None:
    """Write the runs, time the history, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=200_000, help="rows per run")
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them")
    args = parser.parse_args()
    from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run

    with tempfile.TemporaryDirectory(prefix="evalpipe-history-") as temp:
        job = (args.keep or Path(temp)) / "nightly"
        spec = SyntheticRun(items=args.rows // 10, repeats=5, error_rate=0.02)
        started = time.perf_counter()
        for number in range(args.runs):
            shift = {"beta": -0.05} if number == args.runs - 1 else {}
            write_synthetic_run(job / f"run-{number:03d}", dataclasses.replace(
                spec, noise_seed=number + 1, shift=shift, run_id=f"run-{number:03d}"))
        print(f"wrote {args.runs} runs of {args.rows:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        found = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(job)], check=True, capture_output=True,
                                          text=True).stdout)
    print("| runs | rows per run | time s | peak RSS MiB | rise MiB | flags | last run, beta total |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.runs} | {args.rows:,} | {found['seconds']:.1f} | {found['peak_mb']:.0f} | {found['rise_mb']:.0f} | "
          f"{found['flags']} | {found['last_beta']} |")


if __name__ == "__main__":
    main()
