"""Runner benchmarks: concurrency efficiency, CPU overhead per task, memory, rate-limit precision.

    python scripts/bench_runner.py [--quick] [--memory-sizes 10000,100000] [--rounds 3] [--event-loops uvloop]

from the repository after `make install` (LiteLLM's row needs the `bench` extra; without it the row is
skipped with a note). The fake provider server always runs in a separate process on loopback, so its
CPU is not counted. Datasets are generated into a temporary directory. Four measurements, one table:

1. Concurrency efficiency: 2,000 tasks, 100 ms server latency, concurrency 100; wall time against the
   ideal N·L/C, for the pipeline streamed and not, and for a raw aiohttp loop under the same
   conditions (what the machine itself allows). Rounds rotate; the median round is shown.
2. Overhead: CPU per task and tasks per second of the whole pipeline (generate, two cheap scorers,
   Parquet + CSV, run store), streamed and not, against the floor: a raw aiohttp loop (one pooled
   session, POST, parse) at the same concurrency (16, and 100 as in benchmark 1), streamed and not;
   with evalpipe's client alone and LiteLLM's `acompletion` (generation only) for reference. Rounds
   take turns in a rotated order and the median round is shown, so machine noise hits all alike:
   compare the ratios, which are steadier than the absolute figures.
3. Memory: peak RSS (`ru_maxrss`) of `evalpipe run` in a subprocess at each size, against a
   zero-latency server, with its RSS sampled at a quarter, half and three quarters of the run.
4. Rate-limit precision: a server enforcing R requests per window and a backend configured with
   `rpm: R`: achieved / configured from the answers' timestamps, and the number of 429s.

Benchmarks 1-3 run on each event loop of `--event-loops` in turn (default: asyncio's, then uvloop's
when it is installed), the floor measured again on each.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
import structlog

from evalpipe import ChatMessage, LLMBuilder
from evalpipe.pipeline.job.load import prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.running.event_loop import UVLOOP_VARIABLE, uvloop_available
from evalpipe.pipeline.running.outcome import RunOutcome
from evalpipe.pipeline.running.runner import RunOptions, run_job

MODEL = "gpt-4o-mini"
API_KEY = "sk-bench-runner-not-a-real-key"
KEY_VARIABLE = "EVALPIPE_BENCH_KEY"
SCORERS = [{"type": "contains", "values": ["Echo"]}, {"type": "regex", "pattern": r"number \d+"}]
TARGET_WALL = 1.5  # wall / ideal N·L/C of benchmark 1
TARGET_RATE_TASKS = 1500  # tasks/s of the whole pipeline at concurrency 100 (benchmark 2)
TARGET_RSS_MB = 300
TARGET_RATE = 0.97


def prompt(index: int) -> str:
    return f"question number {index}: summarise what a pipeline costs per task, in one short sentence."


# -- the fake server and the job ------------------------------------------------------------------------


class Server:
    """`python -m evalpipe.testing` in its own process."""

    def __init__(self, *options: str) -> None:
        # stderr discarded: at the end the server is terminated with keep-alive connections still open.
        self.process = subprocess.Popen([sys.executable, "-m", "evalpipe.testing", "--port", "0", *options],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = self.process.stdout.readline().strip() if self.process.stdout else ""
        if not first.startswith("http://"):
            self.process.kill()
            raise SystemExit(f"the fake server did not start (first line: {first!r})")
        self.url = first.rstrip("/")
        self.openai = f"{self.url}/openai/v1"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_fake/stats?key={API_KEY}") as response:
            return dict(json.load(response))

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_fake/reset", method="POST")).close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def write_dataset(directory: Path, tasks: int) -> Path:
    path = directory / f"items-{tasks}.jsonl"
    if not path.exists():
        with path.open("w", encoding="utf-8") as file:
            for index in range(tasks):
                file.write(json.dumps({"id": f"q{index}", "question": prompt(index)}) + "\n")
    return path


def job_data(name: str, dataset: Path, base_url: str, concurrency: int, **backend: Any) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"path": str(dataset)},
        "prompt": {"user": "{{ question }}"},
        "backends": [{"id": "fake", "backend": "openai", "model": MODEL, "base_url": base_url,
                      "api_key_env": KEY_VARIABLE, "max_concurrency": concurrency, **backend}],
        "scorers": SCORERS,
        "concurrency": concurrency,
    }


async def run_pipeline(data: dict[str, Any], out: Path, period_s: float = 60.0) -> RunOutcome:
    loaded = prepare_job(JobSpec.model_validate(data))
    outcome = await run_job(loaded, RunOptions(out_root=out, handle_signals=False, period_s=period_s))
    if outcome.counts["ok"] != outcome.total_tasks:
        raise RuntimeError(f"{data['name']}: {outcome.counts} of {outcome.total_tasks} tasks")
    return outcome


# -- clients for the overhead comparison ---------------------------------------------------------------


@dataclass
class Contender:
    """One way of doing the work for `tasks` prompts, and its measurements (one per round)."""

    name: str
    run: Callable[[int], Awaitable[None]]  # number of tasks -> does them all
    cpu_us: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)


async def gathered(tasks: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    """`one(index)` for every task, `concurrency` at a time (a task group and a capacity limiter)."""
    limiter = anyio.CapacityLimiter(concurrency)

    async def limited(index: int) -> None:
        async with limiter:
            await one(index)

    async with anyio.create_task_group() as group:
        for index in range(tasks):
            group.start_soon(limited, index)


def raw_aiohttp(base: str, concurrency: int, stream: bool = False,
                ) -> tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """The floor: one pooled aiohttp session, POST the JSON, parse the answer (or its SSE lines)."""
    state: dict[str, aiohttp.ClientSession] = {}

    def session() -> aiohttp.ClientSession:  # made on first use: a session belongs to the running loop
        if "session" not in state:
            state["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                                     headers={"Authorization": f"Bearer {API_KEY}"})
        return state["session"]

    async def one(index: int) -> None:
        body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": prompt(index)}]}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        async with session().post(f"{base}/chat/completions", json=body) as response:
            response.raise_for_status()
            if not stream:
                text = json.loads(await response.read())["choices"][0]["message"]["content"]
            else:
                pieces: list[str] = []
                async for raw in response.content:  # lines
                    line = raw.decode().strip()
                    if line.startswith("data:") and line != "data: [DONE]":
                        pieces.extend(c["delta"].get("content") or "" for c in json.loads(line[5:])["choices"])
                text = "".join(pieces)
        if not text.startswith("Echo: "):
            raise RuntimeError("not the fake's answer")

    async def run(tasks: int) -> None:
        await gathered(tasks, concurrency, one)

    async def close() -> None:
        if "session" in state:
            await state.pop("session").close()

    return run, close


def evalpipe_client(base: str, concurrency: int) -> tuple[Callable[[int], Awaitable[None]],
                                                           Callable[[], Awaitable[None]]]:
    llm = LLMBuilder().backend("openai").api_key(API_KEY).base_url(base).model(MODEL).max_retries(0).build()

    async def one(index: int) -> None:
        if not (await llm.achat([ChatMessage.user(prompt(index))])).text.startswith("Echo: "):
            raise RuntimeError("not the fake's answer")

    async def run(tasks: int) -> None:
        await gathered(tasks, concurrency, one)

    return run, llm.aclose


def litellm_client(base: str, concurrency: int) -> tuple[Callable[[int], Awaitable[None]],
                                                         Callable[[], Awaitable[None]]] | None:
    # The cost map bundled with LiteLLM rather than one fetched at import: offline, and not timed.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        return None
    litellm.telemetry, litellm.suppress_debug_info = False, True
    litellm.callbacks, litellm.success_callback, litellm.failure_callback = [], [], []

    async def one(index: int) -> None:
        messages = [{"role": "user", "content": prompt(index)}]
        response = await litellm.acompletion(model=f"openai/{MODEL}", messages=messages, api_base=base,
                                             api_key=API_KEY, max_retries=0)
        if not (response.choices[0].message.content or "").startswith("Echo: "):
            raise RuntimeError("not the fake's answer")

    async def run(tasks: int) -> None:
        await gathered(tasks, concurrency, one)

    return run, litellm.close_litellm_async_clients


def pipeline(base: str, concurrency: int, dataset_dir: Path, out: Path, *, stream: bool = False,
             ) -> Callable[[int], Awaitable[None]]:
    async def run(tasks: int) -> None:
        data = job_data("overhead", write_dataset(dataset_dir, tasks), base, concurrency, stream=stream)
        await run_pipeline(data, out)

    return run


async def measure(contender: Contender, tasks: int) -> tuple[float, float]:
    """(CPU µs per task, wall seconds) for `tasks` tasks."""
    gc.collect()  # the previous contender's garbage is not this one's cost
    cpu, wall = time.process_time(), time.perf_counter()
    await contender.run(tasks)
    wall = time.perf_counter() - wall
    await anyio.sleep(0.2)  # LiteLLM logs in background tasks: let deferred work finish, charged to its cause
    return (time.process_time() - cpu) / tasks * 1e6, wall


# -- the four benchmarks -------------------------------------------------------------------------------


@dataclass
class Line:
    """One line of the result table."""

    name: str
    measured: str
    target: str
    verdict: str


async def bench_concurrency(args: argparse.Namespace, work: Path, loop: str) -> list[Line]:
    tasks, latency, concurrency = args.concurrency_tasks, 0.1, args.concurrency
    ideal = tasks * latency / concurrency
    dataset = write_dataset(work, tasks)
    with Server("--latency", str(latency)) as server:
        floor, close = raw_aiohttp(server.openai, concurrency)

        def piped(stream: bool) -> Callable[[int], Awaitable[None]]:
            async def run(count: int) -> None:
                await run_pipeline(job_data("concurrency", dataset, server.openai, concurrency, stream=stream),
                                   work / "results")
            return run

        contenders = [Contender("raw aiohttp", floor), Contender("pipeline", piped(False)),
                      Contender("pipeline, streamed", piped(True))]
        try:
            for round_index in range(args.concurrency_rounds):
                start = round_index % len(contenders)
                for contender in contenders[start:] + contenders[:start]:
                    _, wall = await measure(contender, tasks)
                    contender.wall_s.append(wall)
        finally:
            await close()
    wall = {c.name: statistics.median(c.wall_s) for c in contenders}
    lines = [Line(f"1 concurrency on {loop}: {tasks} tasks, {latency * 1000:.0f} ms, concurrency {concurrency}, "
                  f"ideal N·L/C {ideal:.1f} s (median of {args.concurrency_rounds})", "", "", "")]
    for name, label in (("pipeline", "not streamed"), ("pipeline, streamed", "streamed")):
        ratio = wall[name] / ideal
        lines.append(Line(f"  pipeline {label}: wall / ideal", f"{ratio:.2f}x ({wall[name]:.2f} s)",
                          f"≤ {TARGET_WALL}x", "ok" if ratio <= TARGET_WALL else "over"))
    lines += [
        Line("  raw aiohttp loop: wall / ideal (what this machine allows)",
             f"{wall['raw aiohttp'] / ideal:.2f}x ({wall['raw aiohttp']:.2f} s)", "", ""),
        Line("  pipeline wall / raw aiohttp wall (not streamed; streamed)",
             f"{wall['pipeline'] / wall['raw aiohttp']:.2f}x; {wall['pipeline, streamed'] / wall['raw aiohttp']:.2f}x",
             "", ""),
    ]
    return lines


async def bench_overhead(args: argparse.Namespace, work: Path, concurrency: int, loop: str) -> list[Line]:
    with Server() as server:
        closers: list[Callable[[], Awaitable[None]]] = []
        contenders: list[Contender] = []
        for name, make in (("raw aiohttp", lambda: raw_aiohttp(server.openai, concurrency)),
                           ("raw aiohttp, streamed", lambda: raw_aiohttp(server.openai, concurrency, stream=True)),
                           ("evalpipe client only", lambda: evalpipe_client(server.openai, concurrency))):
            run, close = make()
            contenders.append(Contender(name, run))
            closers.append(close)
        contenders.append(Contender("pipeline", pipeline(server.openai, concurrency, work, work / "results")))
        # Streaming (the default, for time to first token) against the same pipeline not streaming.
        contenders.append(Contender("pipeline, streamed", pipeline(server.openai, concurrency, work, work / "results",
                                                                   stream=True)))
        litellm = litellm_client(server.openai, concurrency)
        if litellm is not None:
            contenders.append(Contender("LiteLLM acompletion", litellm[0]))
            closers.append(litellm[1])
        try:
            for contender in contenders:  # warm-up: imports, pools, caches
                await measure(contender, max(args.overhead_tasks // 10, concurrency))
            for round_index in range(args.rounds):
                start = round_index % len(contenders)
                for contender in contenders[start:] + contenders[:start]:
                    cpu_us, wall = await measure(contender, args.overhead_tasks)
                    contender.cpu_us.append(cpu_us)
                    contender.wall_s.append(wall)
        finally:
            for close in closers:
                await close()
    cpu = {c.name: statistics.median(c.cpu_us) for c in contenders}
    rate = {c.name: args.overhead_tasks / statistics.median(c.wall_s) for c in contenders}

    def floor(name: str) -> str:
        return "raw aiohttp, streamed" if "streamed" in name else "raw aiohttp"

    print(f"\nOn {loop}: CPU per task, {args.overhead_tasks} tasks, concurrency {concurrency}, median of {args.rounds} "
          f"rounds (zero-latency server in another process); ratios to raw aiohttp, streamed to streamed")
    print(f"{'':<24}{'CPU µs/task':>12}{'spread':>8}{'tasks/s wall':>14}{'CPU ratio':>11}{'wall ratio':>12}")
    for c in contenders:
        spread = (max(c.cpu_us) - min(c.cpu_us)) / cpu[c.name] * 100
        base = floor(c.name)
        print(f"{c.name:<24}{cpu[c.name]:>12.0f}{spread:>7.0f}%{rate[c.name]:>14.0f}"
              f"{cpu[c.name] / cpu[base]:>10.2f}x{rate[base] / rate[c.name]:>11.2f}x")
    lines = []
    for name, label in (("pipeline", "not streamed"), ("pipeline, streamed", "streamed")):
        target = concurrency == 100 and name == "pipeline"  # the target: the full pipeline, at 100
        lines.append(Line(f"2 on {loop}: pipeline {label}, concurrency {concurrency}: tasks/s (CPU / raw aiohttp)",
                          f"{rate[name]:.0f} ({cpu[name] / cpu[floor(name)]:.2f}x: {cpu[name]:.0f} / "
                          f"{cpu[floor(name)]:.0f} µs)",
                          f"≥ {TARGET_RATE_TASKS:,}" if target else "",
                          ("ok" if rate[name] >= TARGET_RATE_TASKS else "under") if target else ""))
    lines += [
        Line("  evalpipe client alone / raw aiohttp (CPU)",
             f"{cpu['evalpipe client only'] / cpu['raw aiohttp']:.2f}x", "", ""),
        Line("  pipeline streamed / not streamed (CPU)", f"{cpu['pipeline, streamed'] / cpu['pipeline']:.2f}x", "", ""),
        Line("  raw aiohttp tasks/s (the floor: not streamed; streamed)",
             f"{rate['raw aiohttp']:.0f}; {rate['raw aiohttp, streamed']:.0f}", "", ""),
    ]
    if "LiteLLM acompletion" in cpu:
        lines.append(Line("  pipeline / LiteLLM acompletion (CPU; generation only)",
                          f"{cpu['pipeline'] / cpu['LiteLLM acompletion']:.2f}x", "", ""))
    else:
        lines.append(Line("  LiteLLM: not installed (`make bench` installs it)", "", "", ""))
    return lines


# Linux keeps a process's peak RSS across exec, so a child forked straight from this (large) process
# would report at least this process's size. A small launcher process starts `evalpipe run` instead and
# reports the pid, then the exit code and `ru_maxrss` that `wait4` gives for it.
_LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss,
                  "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)
"""


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), None)


def memory_run(tasks: int, server: Server, work: Path, loop: str) -> tuple[float, list[float], float, float]:
    """`evalpipe run` of `tasks` tasks in a subprocess on `loop`: (peak RSS MB, RSS MB at 25/50/75% of the
    wall time, wall seconds, CPU µs per task of the run's process)."""
    data = job_data(f"memory-{tasks}", write_dataset(work, tasks), server.openai, 32)
    job = work / f"memory-{tasks}.json"  # JSON is YAML
    job.write_text(json.dumps(data), encoding="utf-8")
    # --yes: a million tasks is past the default confirm_above, which would stop the run before any call.
    command = [sys.executable, "-m", "evalpipe.cli", "run", str(job), "--out", str(work / "mem"), "--yes"]
    started = time.perf_counter()
    environ = {**os.environ, KEY_VARIABLE: API_KEY, UVLOOP_VARIABLE: "1" if loop == "uvloop" else "0"}
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, *command], stdout=subprocess.PIPE, text=True,
                                env=environ)
    assert launcher.stdout is not None
    pid = int(launcher.stdout.readline())
    samples: list[tuple[float, float]] = []
    while launcher.poll() is None and (rss := rss_mb(pid)) is not None:
        samples.append((time.perf_counter() - started, rss))
        time.sleep(0.5)
    report = json.loads(launcher.stdout.read().strip().splitlines()[-1])
    launcher.wait()
    wall = time.perf_counter() - started
    if report["code"] != 0:
        raise RuntimeError(f"evalpipe run of {tasks} tasks exited with {report['code']}")
    at = [next((rss for t, rss in samples if t >= wall * q), samples[-1][1] if samples else 0.0)
          for q in (0.25, 0.5, 0.75)]
    return report["maxrss_kib"] / 1024, at, wall, report["cpu_s"] / tasks * 1e6


def bench_memory(args: argparse.Namespace, work: Path, loop: str) -> list[Line]:
    lines = []
    peaks = []
    with Server() as server:
        for tasks in args.memory_sizes:
            peak, at, wall, cpu_us = memory_run(tasks, server, work, loop)
            peaks.append(peak)
            print(f"memory on {loop}: {tasks:,} tasks in {wall:.0f} s ({tasks / wall:.0f} tasks/s, CPU {cpu_us:.0f} µs "
                  f"per task, load average {os.getloadavg()[0]:.1f}): peak RSS {peak:.0f} MB; RSS at 25/50/75% of "
                  f"the run: {' / '.join(f'{m:.0f}' for m in at)} MB", flush=True)
            lines.append(Line(f"3 memory on {loop}: peak RSS of `evalpipe run`, {tasks:,} tasks",
                              f"{peak:.0f} MB ({tasks / wall:.0f} tasks/s, {cpu_us:.0f} µs CPU/task)",
                              f"< {TARGET_RSS_MB} MB", "ok" if peak < TARGET_RSS_MB else "over"))
    growth = peaks[-1] / peaks[0] if peaks else 1.0
    lines.append(Line(f"  growth from {args.memory_sizes[0]:,} to {args.memory_sizes[-1]:,} tasks",
                      f"{growth:.2f}x", "flat", "ok" if growth < 1.25 else "grows"))
    return lines


async def bench_rate(args: argparse.Namespace, work: Path) -> list[Line]:
    rpm, window_s, windows = args.rpm, args.window, 2.5
    tasks = round(rpm * windows)
    with Server("--rpm", str(rpm), "--window", str(window_s)) as server:
        data = job_data("rate", write_dataset(work, tasks), server.openai, 16, rpm=rpm)
        outcome = await run_pipeline(data, work / "results", period_s=window_s)
        stats = server.stats()
    stamps = sorted(row["finished_at"].timestamp()
                    for row in pads.dataset(outcome.outputs["parquet"], format="parquet").to_table().to_pylist())
    achieved = (len(stamps) - 1) * window_s / (stamps[-1] - stamps[0])
    too_many = stats["by_status"].get("429", 0)
    ratio = achieved / rpm
    return [Line(f"4 rate limit: rpm {rpm} per {window_s:g} s window, {tasks} tasks: achieved / configured",
                 f"{ratio:.3f}, {too_many} × 429", f"≥ {TARGET_RATE}, 0 × 429",
                 "ok" if ratio >= TARGET_RATE and too_many == 0 else "under")]


def print_table(lines: list[Line]) -> None:
    width = max(len(line.name) for line in lines)
    measured = max(len(line.measured) for line in lines)
    print(f"\n{'benchmark':<{width}}  {'measured':<{measured}}  {'target':<22}  result")
    for line in lines:
        print(f"{line.name:<{width}}  {line.measured:<{measured}}  {line.target:<22}  {line.verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and one round: a few minutes")
    parser.add_argument("--concurrency", type=int, default=100, help="tasks in flight in benchmark 1")
    parser.add_argument("--overhead-concurrency", help="comma-separated concurrencies of benchmark 2 "
                                                       "(default 16,100; quick 16)")
    parser.add_argument("--rounds", type=int, help="measured rounds of benchmark 2 (default 5, quick 1)")
    parser.add_argument("--memory-sizes", help="comma-separated task counts for benchmark 3 (default 10000,100000)")
    parser.add_argument("--event-loops", help="comma-separated loops benchmarks 1-3 run on: asyncio, uvloop "
                                              "(default both; asyncio alone when uvloop is not installed)")
    parser.add_argument("--only", choices=["concurrency", "overhead", "memory", "rate"], action="append",
                        help="run only these benchmarks (repeatable)")
    args = parser.parse_args()
    args.concurrency_tasks = 1000 if args.quick else 2000
    args.concurrency_rounds = 1 if args.quick else 3
    args.overhead_tasks = 500 if args.quick else 2000
    args.rounds = args.rounds or (1 if args.quick else 5)
    default_sizes = "2000,10000" if args.quick else "10000,100000"
    args.memory_sizes = [int(n) for n in (args.memory_sizes or default_sizes).split(",")]
    overhead_at = [int(n) for n in (args.overhead_concurrency or ("16" if args.quick else "16,100")).split(",")]
    # The limiter keeps 2% of the window as headroom; a run's first call also builds its HTTP client
    # after admission (tens of milliseconds), which a window of several seconds absorbs.
    args.rpm, args.window = (100, 5.0) if args.quick else (300, 10.0)
    os.environ[KEY_VARIABLE] = API_KEY
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    only = set(args.only or ["concurrency", "overhead", "memory", "rate"])
    loops = (args.event_loops or ("asyncio,uvloop" if uvloop_available() else "asyncio")).split(",")
    if "uvloop" in loops and not uvloop_available():
        parser.error("uvloop is not installed (pip install 'evalpipe[fast]')")
    if set(loops) - {"asyncio", "uvloop"}:
        parser.error("--event-loops takes asyncio and uvloop")

    lines: list[Line] = []
    with tempfile.TemporaryDirectory(prefix="evalpipe-bench-") as temp:
        work = Path(temp)
        for loop in loops:
            options = {"use_uvloop": loop == "uvloop"}
            if "concurrency" in only:
                lines += anyio.run(bench_concurrency, args, work, loop, backend_options=options)
            if "overhead" in only:
                for concurrency in overhead_at:
                    lines += anyio.run(bench_overhead, args, work, concurrency, loop, backend_options=options)
        for loop in loops if "memory" in only else []:
            lines += bench_memory(args, work, loop)
        if "rate" in only:
            lines += anyio.run(bench_rate, args, work)
    print_table(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
