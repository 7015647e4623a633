"""Faults of a sharded run on a two-node Ray cluster (on this machine): a worker SIGKILLed mid-shard is
replaced by Ray and its shard resumes from its own store; a driver SIGKILLed mid-run leaves every shard
resumable with `--resume RUN_DIR`. Either way every task has exactly one row and no answer that reached
a shard's store is paid for again."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from evalpipe.cli import main
from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.runlock import LOCK_FILENAME
from evalpipe.pipeline.output.sharded import shard_dir
from evalpipe.testing import FakeServer
from tests.pipeline.killing import KEY_VARIABLE, child_job, rows_in_store, write_items
from tests.test_cli import restore_logging  # noqa: F401  (an autouse fixture)

ITEMS = 40
CONCURRENCY = 2  # calls in flight for the whole cluster: what a kill can cost at most


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[str]:
    """A head and a worker node of one CPU each, joined by this process; yields the cluster's address."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        yield str(cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_VARIABLE, "sk-ray-faults-0123456789abcdef")
    with FakeServer(latency_s=0.1) as srv:  # 40 tasks two at a time: about 2 s of calls
        yield srv


def write_job(directory: Path, server: FakeServer) -> Path:
    write_items(directory, ITEMS)
    path = directory / "job.yaml"
    path.write_text(child_job("ray-faults", CONCURRENCY).replace("URL", server.url_for("openai")), encoding="utf-8")
    return path


def wait_for(condition: str, check: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.05)


def holder_pid(directory: Path) -> int | None:
    """The pid that holds the run directory's lock, as it wrote it (None before it did)."""
    try:
        return int(json.loads((directory / LOCK_FILENAME).read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError):
        return None


def unlocked(directory: Path) -> bool:
    with open(directory / LOCK_FILENAME, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(file, fcntl.LOCK_UN)
        return True


def the_run(out: Path) -> Path:
    (run_dir,) = [path for path in (out / "ray-faults").iterdir() if path.is_dir() and path.name != "latest"]
    return run_dir


def assert_each_task_once(run_dir: Path, server: FakeServer) -> None:
    manifest = read_manifest(run_dir)
    assert manifest.state == "completed" and manifest.counts["ok"] == ITEMS, manifest.counts
    with (run_dir / "rows.csv").open(encoding="utf-8", newline="") as file:
        ids = [row["task_id"] for row in csv.DictReader(file)]
    assert len(ids) == len(set(ids)) == ITEMS
    # Paid again at most: the calls that were in flight when the process died (their answers never
    # reached a store); a call whose answer was stored is never repeated.
    assert ITEMS <= server.stats().succeeded <= ITEMS + CONCURRENCY


def test_a_worker_killed_mid_shard_is_rerun_and_resumes_from_its_store(
        two_nodes: str, server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, server)
    out = tmp_path / "results"
    killed: list[int] = []
    killed_at: list[float] = []

    def kill_when_shard_0_is_underway() -> None:
        wait_for("a run directory", lambda: (out / "ray-faults").is_dir() and any(
            path.name != "latest" for path in (out / "ray-faults").iterdir()))
        first = shard_dir(the_run(out), 0)
        wait_for("shard 0 to commit rows", lambda: rows_in_store(first) >= 4)
        pid = holder_pid(first)  # the Ray worker process running shard 0 (it holds the shard's lock)
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        killed_at.append(time.time())

    killer = threading.Thread(target=kill_when_shard_0_is_underway)
    killer.start()
    try:
        code = main(["run", str(job), "--executor", "ray", "--address", two_nodes, "--shards", "2",
                     "--out", str(out)])
    finally:
        killer.join(timeout=90)
    output = capsys.readouterr()
    assert killed, "the worker was not killed"
    assert code == 0, output.out + output.err
    run_dir = the_run(out)
    assert rows_in_store(shard_dir(run_dir, 0)) + rows_in_store(shard_dir(run_dir, 1)) == ITEMS
    # Shard 0 ran again after the kill (its last session started then), on top of what its store held.
    assert datetime.fromisoformat(read_manifest(shard_dir(run_dir, 0)).started_at).timestamp() > killed_at[0]
    assert_each_task_once(run_dir, server)


def test_a_driver_killed_mid_run_resumes_every_shard(two_nodes: str, server: FakeServer, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, server)
    out = tmp_path / "results"
    driver = subprocess.Popen(
        [sys.executable, "-m", "evalpipe.cli", "run", str(job), "--executor", "ray", "--address", two_nodes,
         "--shards", "2", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        wait_for("the shards to commit rows", lambda: (out / "ray-faults").is_dir() and any(
            rows_in_store(shard_dir(path, 0)) + rows_in_store(shard_dir(path, 1)) >= 6
            for path in (out / "ray-faults").iterdir() if path.name != "latest"))
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            driver.kill()
        driver.wait(timeout=30)
    run_dir = the_run(out)
    done_before = rows_in_store(shard_dir(run_dir, 0)) + rows_in_store(shard_dir(run_dir, 1))
    assert done_before < ITEMS
    # Ray ends the dead driver's shards; their locks go with their processes.
    wait_for("the shards' workers to end", lambda: all(unlocked(shard_dir(run_dir, k)) for k in range(2)))
    assert read_manifest(run_dir).state == "running"

    code = main(["run", str(job), "--resume", str(run_dir), "--address", two_nodes])
    output = capsys.readouterr()
    assert code == 0, output.out + output.err
    assert_each_task_once(run_dir, server)
