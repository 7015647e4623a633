"""Viewer benchmark: `evalpipe view` over a run of a million rows, the time of its pages and the server's RSS.

    python scripts/bench_view.py [--rows 1000000] [--runs 2] [--keep DIR]

from the repository after `make install` (with the `view` extra). Each run is synthetic
(`evalpipe.analysis.synthetic`: the real row schema, Parquet parts of 100,000 rows, two criteria, 2% error
rows): two backends × two parameter sets × rows/20 items × five repeats; `--runs` runs of one job, the same
items with fresh noise, for the history and a comparison of two runs. The viewer runs as the command does
(`python -m evalpipe.cli view DIR`) in a subprocess; a thread samples its RSS and the anonymous part of it
(/proc/PID/status) every 20 ms while each page loads, and the server is stopped with SIGINT as Ctrl-C stops
it. Per page: the time to the response's first byte, to its last, and the peaks while it loaded. Pages
marked "again" repeat the one before (what the viewer keeps between requests).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run

RUN = "synthetic/bench"
EARLIER = "bench-earlier"  # the other runs of the job: bench-earlier, bench-earlier-2, ...


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The resident set of process `pid` in MB: all of it (`VmRSS`), or its own memory (`RssAnon`), without
    the file-backed pages (shared libraries, memory-mapped Parquet) the system can reclaim."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """Samples a process's RSS and anonymous RSS until stopped; keeps the peaks."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.peak_anon, self.stopped = pid, 0.0, 0.0, threading.Event()

    def reset(self) -> None:
        """Start the peaks afresh."""
        self.peak, self.peak_anon = rss_mb(self.pid), rss_mb(self.pid, "RssAnon")

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
                self.peak_anon = max(self.peak_anon, rss_mb(self.pid, "RssAnon"))
            except OSError:
                return
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2, help="runs of the job (the history's points)")
    parser.add_argument("--keep", type=Path, help="write (or reuse) the results directory here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-view-") as temp:
        results = args.keep or Path(temp)
        # The earlier runs first: the history orders runs by their manifests' start.
        names = [EARLIER + ("" if n == 1 else f"-{n}") for n in range(args.runs - 1, 0, -1)] + ["bench"]
        for number, run_id in enumerate(names):
            run_dir = results / "synthetic" / run_id
            if (run_dir / "manifest.json").is_file():
                continue
            started = time.perf_counter()
            write_synthetic_run(run_dir, SyntheticRun(items=args.rows // 20, repeats=5, run_id=run_id,
                                                      noise_seed=number + 1,
                                                      param_sets={"cold": (0.2, 0.9), "hot": (1.2, 1.0)}))
            print(f"wrote {run_id}: {args.rows:,} rows in {time.perf_counter() - started:.1f} s")
        bench(results, earlier=f"synthetic/{EARLIER}" if args.runs > 1 else None)


def timed_get(client: httpx.Client, url: str) -> tuple[float, float]:
    """Seconds to the first byte of the response's body and to its last."""
    started = time.perf_counter()
    first = None
    with client.stream("GET", url) as response:
        for _ in response.iter_raw():
            first = first if first is not None else time.perf_counter() - started
        response.raise_for_status()
    whole = time.perf_counter() - started
    return (first if first is not None else whole), whole


def bench(results: Path, earlier: str | None) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "evalpipe.cli", "view", str(results), "--port", str(port)],
                              stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.getcwd()})
    sampler = Sampler(server.pid)
    sampler.start()
    overall = overall_anon = 0.0
    try:
        with httpx.Client(timeout=120) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get(base + "/api/runs")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            print(f"server up: RSS {rss_mb(server.pid):.0f} MB (anonymous {rss_mb(server.pid, 'RssAnon'):.0f} MB)")
            pages = [("runs list", "/"), ("first page of rows (cold)", f"/runs/{RUN}"),
                     ("first page of rows (again)", f"/runs/{RUN}"),
                     ("failures, sorted by a column", f"/runs/{RUN}?failures=1&sort=c1&desc=1"),
                     ("cells that differ, page 100", f"/runs/{RUN}?differ=1&page=100"),
                     ("text search", f"/runs/{RUN}?q=quality+0.9"),
                     ("a row's detail", f"/runs/{RUN}/rows/777777"),
                     ("summary", f"/runs/{RUN}/summary"),
                     ("summary (again)", f"/runs/{RUN}/summary"),
                     ("compare two backends", f"/compare?a={RUN}&ca=backend_id=alpha&cb=backend_id=beta")]
            if earlier is not None:
                pages += [("compare two runs", f"/compare?a={earlier}&b={RUN}"),
                          ("history (first time)", "/jobs/synthetic/history"),
                          ("history (again)", "/jobs/synthetic/history")]
            print(f"{'page':32} {'first byte s':>12} {'whole s':>8} {'RSS MB':>8} {'peak MB':>8} {'peak anon MB':>13}")
            for name, path in pages:
                sampler.reset()
                first, whole = timed_get(client, base + path)
                time.sleep(0.05)  # the sampler's last look
                print(f"{name:32} {first:12.2f} {whole:8.2f} {rss_mb(server.pid):8.0f} {sampler.peak:8.0f} "
                      f"{sampler.peak_anon:13.0f}")
                overall, overall_anon = max(overall, sampler.peak), max(overall_anon, sampler.peak_anon)
    finally:
        sampler.stopped.set()
        server.send_signal(signal.SIGINT)  # as Ctrl-C
        code = server.wait(timeout=30)
    print(f"peak RSS {overall:.0f} MB (anonymous {overall_anon:.0f} MB); stopped by SIGINT with exit code {code}")


if __name__ == "__main__":
    main()
