"""SIGINT at any moment of `evalpipe run`: exit 130, no traceback, one line, the resume command once the run
directory exists, and a final table and manifest that agree with the run store."""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from evalpipe.pipeline.output.manifest import MANIFEST_FILENAME, read_manifest
from evalpipe.pipeline.output.runlock import LOCK_FILENAME
from evalpipe.pipeline.output.sinks import CSV_FILENAME
from evalpipe.testing import FakeServer
from tests.pipeline.killing import child_job, rows_in_store, start_run, write_items

TASKS = 40
KEY = "sk-signal-test"

JOB = child_job("signal-test", 4)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    write_items(tmp_path, TASKS)
    return tmp_path / "job.yaml"


@pytest.fixture
def server(job: Path) -> FakeServer:
    with FakeServer(latency_s=0.1) as srv:
        job.write_text(JOB.replace("URL", srv.url_for("openai")), encoding="utf-8")
        yield srv


def start(job: Path, run_dir: Path) -> subprocess.Popen[str]:
    return start_run(job, run_dir, KEY)


def wait_until(process: subprocess.Popen[str], ready: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert process.poll() is None, f"the run ended early: {process.communicate()}"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.002)


def interrupted(process: subprocess.Popen[str], *, times: int = 1) -> tuple[str, str]:
    for _ in range(times):
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    return out, err


def resume_line(err: str, job: Path, run_dir: Path) -> str:
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert lines == [f"interrupted: resume with  evalpipe run {job} --resume {run_dir}"], err
    return lines[0]


def assert_consistent(out: str, run_dir: Path) -> None:
    """The final table printed, and the manifest saying what the run store holds."""
    manifest = read_manifest(run_dir)
    assert manifest.state == "interrupted"
    rows = rows_in_store(run_dir)
    assert manifest.counts["ok"] + manifest.counts["error"] == rows < TASKS
    assert f"run {manifest.run_id}: interrupted" in out, out
    ids: Counter[str] = Counter()
    if (run_dir / CSV_FILENAME).exists():  # created with the first row
        with (run_dir / CSV_FILENAME).open(encoding="utf-8", newline="") as file:
            ids = Counter(row["item_id"] for row in csv.DictReader(file))
    assert sum(ids.values()) == len(ids) == rows


def finish(job: Path, run_dir: Path) -> None:
    process = start(job, run_dir)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert read_manifest(run_dir).state == "completed" and rows_in_store(run_dir) == TASKS


def test_sigint_while_the_command_starts_exits_130_with_one_line(job: Path, server: FakeServer, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = start(job, run_dir)
    time.sleep(0.1)  # importing the package (Python's own start, ~30 ms, is before any code of ours)
    _, err = interrupted(process)
    assert err == "interrupted\n"
    assert not run_dir.exists() and server.stats(KEY).succeeded == 0


def test_sigint_while_the_run_directory_is_set_up_prints_the_resume_command(
    job: Path, server: FakeServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    process = start(job, run_dir)
    wait_until(process, lambda: (run_dir / LOCK_FILENAME).exists())
    _, err = interrupted(process)
    resume_line(err, job, run_dir)
    assert read_manifest(run_dir).state == "interrupted"
    assert rows_in_store(run_dir) <= 4 and server.stats(KEY).succeeded == rows_in_store(run_dir)
    finish(job, run_dir)


def test_sigint_before_the_first_row_prints_the_resume_command(job: Path, server: FakeServer, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = start(job, run_dir)
    wait_until(process, lambda: (run_dir / MANIFEST_FILENAME).exists())
    out, err = interrupted(process)
    resume_line(err, job, run_dir)
    assert_consistent(out, run_dir)


def test_sigint_mid_run_lets_the_calls_in_flight_finish(job: Path, server: FakeServer, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = start(job, run_dir)
    wait_until(process, lambda: rows_in_store(run_dir) >= 8)
    out, err = interrupted(process)
    resume_line(err, job, run_dir)
    assert_consistent(out, run_dir)
    assert server.stats(KEY).succeeded == rows_in_store(run_dir)  # in flight at the signal: finished and written


def test_a_double_sigint_keeps_the_final_table_and_the_resume_command(
    job: Path, server: FakeServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    process = start(job, run_dir)
    wait_until(process, lambda: rows_in_store(run_dir) >= 8)
    out, err = interrupted(process, times=2)
    resume_line(err, job, run_dir)
    assert_consistent(out, run_dir)
    finish(job, run_dir)
    assert server.stats(KEY).succeeded <= TASKS + 4  # at most the cancelled calls in flight are paid again
