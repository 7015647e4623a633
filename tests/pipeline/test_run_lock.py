"""One process at a time in a run directory: a second `evalpipe run --resume DIR` is refused with one line
naming the holder, and pays for nothing; a lock left by a SIGKILLed process does not block a resume."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.runlock import LOCK_FILENAME, RunDirLockedError, RunLock
from evalpipe.pipeline.output.sinks import CSV_FILENAME
from evalpipe.testing import FakeServer
from tests.pipeline.killing import child_job, rows_in_store, start_run, write_items

TASKS = 40
KEY = "sk-lock-test"
EXIT_RUN_DIR_BUSY = 5

JOB = child_job("lock-test", 2)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    write_items(tmp_path, TASKS)
    return tmp_path / "job.yaml"


def start(job: Path, run_dir: Path) -> subprocess.Popen[str]:
    return start_run(job, run_dir, KEY)


def wait_for_rows(process: subprocess.Popen[str], run_dir: Path, rows: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while rows_in_store(run_dir) < rows:
        assert process.poll() is None, f"the run ended early: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {rows} rows after {timeout_s}s"
        time.sleep(0.01)


def csv_ids(run_dir: Path) -> Counter[str]:
    with (run_dir / CSV_FILENAME).open(encoding="utf-8", newline="") as file:
        return Counter(row["item_id"] for row in csv.DictReader(file))


def test_a_second_resume_of_a_running_run_is_refused_naming_the_holder_and_pays_nothing(
    job: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    with FakeServer(latency_s=0.05) as srv:
        job.write_text(JOB.replace("URL", srv.url_for("openai")), encoding="utf-8")
        first = start(job, run_dir)
        wait_for_rows(first, run_dir, 2)
        # Paused while the second one starts (over a second on a busy machine): still running, not finished.
        first.send_signal(signal.SIGSTOP)
        try:
            second = start(job, run_dir)
            _, second_err = second.communicate(timeout=30)
        finally:
            first.send_signal(signal.SIGCONT)
        first_out, first_err = first.communicate(timeout=30)
        paid = srv.stats(KEY).succeeded

    assert first.returncode == 0, first_err
    assert second.returncode == EXIT_RUN_DIR_BUSY, second_err
    lines = second_err.strip().splitlines()
    assert len(lines) == 1, second_err
    assert f"{run_dir} is in use by another run (pid {first.pid} on {socket.gethostname()}, started " in lines[0]
    assert "Traceback" not in second_err
    assert paid == TASKS  # no task paid twice
    ids = csv_ids(run_dir)
    assert len(ids) == TASKS and set(ids.values()) == {1}
    assert read_manifest(run_dir).state == "completed"


def test_a_lock_left_by_a_killed_run_does_not_block_the_resume(job: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with FakeServer(latency_s=0.02) as srv:
        job.write_text(JOB.replace("URL", srv.url_for("openai")), encoding="utf-8")
        killed = start(job, run_dir)
        wait_for_rows(killed, run_dir, 5)
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=10)
        assert f'"pid": {killed.pid}' in (run_dir / LOCK_FILENAME).read_text(encoding="utf-8")  # left behind

        resumed = start(job, run_dir)
        _, err = resumed.communicate(timeout=30)

    assert resumed.returncode == 0, err
    ids = csv_ids(run_dir)
    assert len(ids) == TASKS and set(ids.values()) == {1}
    assert read_manifest(run_dir).state == "completed"


def test_the_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    held = RunLock(tmp_path).acquire()
    with pytest.raises(RunDirLockedError, match=rf"pid {os.getpid()} on "):
        RunLock(tmp_path).acquire()  # another open of the file: refused even in the same process
    held.release()
    with RunLock(tmp_path):
        pass
