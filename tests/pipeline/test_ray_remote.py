"""A sharded run whose RUN_DIR is a filesystem URI (`file:///...` here: pyarrow's local filesystem
reached through the URI path, so the copying code runs for real). Each shard works in scratch on its
node and copies its store snapshot and parts to `URI/shards/<k>/`; a shard whose worker is killed
resumes from its last copy; the merged outputs land at the URI and `summary` reads them there."""

from __future__ import annotations

import csv
import glob
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from evalpipe.analysis.runs import open_run
from evalpipe.cli import main
from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.store import STORE_FILENAME
from evalpipe.testing import FakeServer
from tests.pipeline.killing import KEY_VARIABLE, rows_in_store
from tests.pipeline.ray_cluster import ray_cluster  # noqa: F401  (a fixture)
from tests.pipeline.test_ray_faults import CONCURRENCY, ITEMS, holder_pid, wait_for, write_job
from tests.test_cli import restore_logging  # noqa: F401  (an autouse fixture)

SYNC_S = 0.2  # a shard copies its store this often: what a killed worker's shard can pay again


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_VARIABLE, "sk-ray-remote-0123456789abcdef")
    with FakeServer(latency_s=0.1) as srv:  # 40 tasks two at a time: about 2 s of calls
        yield srv


def job_with_sync(directory: Path, server: FakeServer) -> Path:
    path = write_job(directory, server)
    path.write_text(path.read_text(encoding="utf-8") + f"executor: {{sync_s: {SYNC_S}}}\n", encoding="utf-8")
    return path


def remote_runs(remote: Path) -> list[Path]:
    job_dir = remote / "ray-faults"
    return [path for path in job_dir.iterdir() if path.is_dir()] if job_dir.is_dir() else []


def scratch_dirs(run_id: str, shard: int) -> list[Path]:
    """The scratch directories shard `shard` of `run_id` has on this machine (its worker's `run/`)."""
    return [Path(found) / "run" for found in glob.glob(os.path.join(tempfile.gettempdir(),
                                                                       f"evalpipe-{run_id}-shard-{shard}-*"))]


def csv_ids(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as file:
        return [row["task_id"] for row in csv.DictReader(file)]


@pytest.mark.usefixtures("ray_cluster")
def test_a_sharded_run_to_a_uri_writes_every_row_once_there_and_summary_reads_it(
        server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = job_with_sync(tmp_path, server)
    remote = tmp_path / "remote"
    code = main(["run", str(job), "--executor", "ray", "--shards", "2", "--out", remote.as_uri()])
    output = capsys.readouterr()
    assert code == 0, output.out + output.err
    (run_dir,) = remote_runs(remote)
    run_uri = run_dir.as_uri()
    assert f"next: evalpipe summary {run_uri}" in output.out  # the URI, not the scratch copy it was run in

    manifest = read_manifest(run_dir)
    assert (manifest.state, manifest.shards, manifest.counts["ok"]) == ("completed", 2, ITEMS)
    assert run_uri in manifest.resume_command
    ids = csv_ids(run_dir / "rows.csv")
    assert len(ids) == len(set(ids)) == ITEMS
    # Each shard's store (a snapshot: no WAL beside it) and its closed parts are at the URI.
    for shard in range(2):
        directory = run_dir / "shards" / str(shard)
        assert rows_in_store(directory) > 0 and not (directory / f"{STORE_FILENAME}-wal").exists()
        assert list((directory / "parquet").glob("part-*.parquet"))
    assert rows_in_store(run_dir / "shards" / "0") + rows_in_store(run_dir / "shards" / "1") == ITEMS
    assert server.stats().succeeded == ITEMS
    assert not scratch_dirs(manifest.run_id, 0) and not scratch_dirs(manifest.run_id, 1)  # scratch is cleaned up

    code = main(["summary", run_uri])
    output = capsys.readouterr()
    assert code == 0, output.err
    assert "fake" in output.out and "partial" not in output.out + output.err

    # Resumed at the URI: every task has its row there, so nothing is paid again.
    code = main(["run", str(job), "--resume", run_uri])
    output = capsys.readouterr()
    assert code == 0, output.out + output.err
    assert server.stats().succeeded == ITEMS
    assert read_manifest(run_dir).counts["ok"] == ITEMS
    code = main(["run", str(job), "--resume", run_uri, "--executor", "local"])
    assert code == 2 and "ray executor" in capsys.readouterr().err


@pytest.mark.usefixtures("ray_cluster")
def test_a_shard_killed_mid_run_resumes_from_its_last_copy_at_the_uri(
        server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = job_with_sync(tmp_path, server)
    remote = tmp_path / "remote"
    seen: dict[str, float | int | str] = {}
    killer_failed: list[BaseException] = []

    def kill_shard_0_after_a_copy() -> None:
        try:
            wait_for("the run at the URI", lambda: bool(remote_runs(remote)))
            (run_dir,) = remote_runs(remote)
            run_id = run_dir.name
            copy = run_dir / "shards" / "0"
            wait_for("shard 0 to copy rows", lambda: rows_in_store(copy) >= 4 and bool(scratch_dirs(run_id, 0)))
            (scratch,) = scratch_dirs(run_id, 0)
            pid = holder_pid(scratch)  # the worker running shard 0 holds the lock of its scratch run dir
            assert pid is not None and pid != os.getpid()
            os.kill(pid, signal.SIGKILL)
            seen.update(at=time.time(), local=rows_in_store(scratch), copied=rows_in_store(copy), run_id=run_id)
        except BaseException as error:  # said by the test, not lost in a thread
            killer_failed.append(error)

    killer = threading.Thread(target=kill_shard_0_after_a_copy)
    killer.start()
    try:
        code = main(["run", str(job), "--executor", "ray", "--shards", "2", "--out", remote.as_uri()])
    finally:
        killer.join(timeout=90)
        for leftover in glob.glob(os.path.join(tempfile.gettempdir(), f"evalpipe-{seen.get('run_id', '?')}-*")):
            shutil.rmtree(leftover, ignore_errors=True)  # the killed worker's scratch: nobody else removes it
    output = capsys.readouterr()
    assert not killer_failed, killer_failed
    assert code == 0, output.out + output.err
    (run_dir,) = remote_runs(remote)
    manifest = read_manifest(run_dir)
    assert (manifest.state, manifest.counts["ok"]) == ("completed", ITEMS)
    ids = csv_ids(run_dir / "rows.csv")
    assert len(ids) == len(set(ids)) == ITEMS
    # Shard 0 ran again after the kill, on top of its last copy: paid again at most the rows it had
    # committed since that copy and the calls in flight, not the rows the copy held.
    assert datetime.fromisoformat(read_manifest(run_dir / "shards" / "0").started_at).timestamp() > float(seen["at"])
    repaid = server.stats().succeeded - ITEMS
    assert int(seen["copied"]) >= 4
    assert 0 <= repaid <= int(seen["local"]) - int(seen["copied"]) + CONCURRENCY, seen
    # The restarted shard rewrote its parts from its store: the parts at the URI hold each row once (the
    # ones its dead run had copied and the rebuild renumbered are gone).
    run = open_run(run_dir)
    assert (run.rows, run.partial) == (ITEMS, False), run.warnings


def test_a_uri_run_dir_with_the_in_process_runner_or_without_a_run_is_refused_clearly(
        server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, server)
    remote = (tmp_path / "remote").as_uri()
    code = main(["run", str(job), "--executor", "local", "--out", remote])
    assert code == 2 and "--executor ray" in capsys.readouterr().err
    assert not (tmp_path / "remote").exists() and server.stats().succeeded == 0
    code = main(["summary", remote])
    assert code == 2 and f"{remote} holds no evalpipe run" in capsys.readouterr().err
