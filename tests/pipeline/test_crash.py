"""Crash safety of `evalpipe run` in a real subprocess: SIGKILLed at five moments and resumed, the
output has exactly one row per task and no answer that reached the response cache is paid for again;
SIGTERM stops it with exit code 130 and a resume line that works."""

from __future__ import annotations

import csv
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.sinks import CSV_FILENAME, PARQUET_DIRNAME
from evalpipe.pipeline.output.store import STORE_FILENAME
from evalpipe.testing import FakeServer, Stats
from tests.pipeline.killing import child_env, child_job, start_run, write_items

TASKS = 300
CONCURRENCY = 8
KEY = "sk-crash-test"
KILL_AT = (0.05, 0.20, 0.45, 0.70, 0.90)  # fractions of the tasks committed to the store

JOB = child_job("crash-test", 8, 'scorers:\n  - type: contains\n    values: ["Echo"]\n')


@pytest.fixture
def job(tmp_path: Path) -> Path:
    write_items(tmp_path, TASKS)
    return tmp_path / "job.yaml"


def start(job: Path, run_dir: Path) -> subprocess.Popen[str]:
    return start_run(job, run_dir, KEY)


def store_state(run_dir: Path) -> tuple[int, int, int]:
    """(rows, ok rows, response cache entries) committed to the run store so far."""
    path = run_dir / STORE_FILENAME
    if not path.exists():
        return 0, 0, 0
    connection = sqlite3.connect(path, timeout=10)
    try:
        rows, ok = connection.execute("SELECT COUNT(*), TOTAL(status = 'ok') FROM rows").fetchone()
        (cached,) = connection.execute("SELECT COUNT(*) FROM response_cache").fetchone()
        return int(rows), int(ok), int(cached)
    except sqlite3.OperationalError:  # the tables are being created
        return 0, 0, 0
    finally:
        connection.close()


def wait_for_rows(process: subprocess.Popen[str], run_dir: Path, rows: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while store_state(run_dir)[0] < rows:
        assert process.poll() is None, f"the run ended early: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {rows} rows after {timeout_s}s"
        time.sleep(0.01)


def settled(srv: FakeServer) -> Stats:
    """The server's counters once no call is finishing any more (0.2 s without a change)."""
    deadline, last = time.monotonic() + 5, srv.stats(KEY)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = srv.stats(KEY)
        if (now.requests, now.succeeded) == (last.requests, last.succeeded):
            return now
        last = now
    return last


def assert_one_row_per_task(run_dir: Path) -> list[dict[str, object]]:
    parquet = pads.dataset(run_dir / PARQUET_DIRNAME, format="parquet").to_table().to_pylist()
    with (run_dir / CSV_FILENAME).open(encoding="utf-8", newline="") as file:
        csv_rows = list(csv.DictReader(file))
    for name, rows in (("parquet", parquet), ("csv", csv_rows)):
        items = Counter(row["item_id"] for row in rows)
        assert len(items) == TASKS and set(items.values()) == {1}, f"{name}: {len(rows)} rows for {len(items)} tasks"
        assert {row["status"] for row in rows} == {"ok"}, name
    assert store_state(run_dir)[:2] == (TASKS, TASKS)
    return parquet


def test_sigkill_at_five_moments_then_resume_gives_one_row_per_task_and_pays_no_answer_twice(
    job: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    with FakeServer(latency_s=0.05) as srv:
        job.write_text(JOB.replace("URL", srv.url_for("openai")), encoding="utf-8")
        waiting_answers = []  # at each resume: answers paid for and cached whose task has no row yet
        for fraction in KILL_AT:
            rows_before, ok_before, cached_before = store_state(run_dir)
            waiting_answers.append(cached_before - ok_before)
            paid_before = srv.stats(KEY).succeeded
            process = start(job, run_dir)
            wait_for_rows(process, run_dir, max(round(fraction * TASKS), rows_before + 1))
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=10)
            _, _, cached_after = store_state(run_dir)
            # Each paid call of this segment either reached the cache or was in flight at the kill. Calls in
            # flight still finish on the server after the kill: wait for them, so that they count in this
            # segment and not the next. The final session below checks that no cached answer is paid again.
            paid_lost = (settled(srv).succeeded - paid_before) - (cached_after - cached_before)
            print(f"kill at {fraction:.0%}: rows {store_state(run_dir)}, paid but lost {paid_lost}")
            assert paid_lost <= CONCURRENCY, f"kill at {fraction:.0%}: {paid_lost} paid answers not cached"

        rows_before, ok_before, cached_before = store_state(run_dir)
        waiting_answers.append(cached_before - ok_before)
        paid_before = srv.stats(KEY).succeeded
        process = start(job, run_dir)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        stats = srv.stats(KEY)

    # The last session was not killed: it paid for exactly the tasks that had no cached answer.
    assert stats.succeeded - paid_before == TASKS - cached_before
    assert stats.succeeded <= TASKS + len(KILL_AT) * CONCURRENCY
    rows = assert_one_row_per_task(run_dir)
    # A cached answer waiting at a resume becomes a row marked cached in a later session (the same answer
    # may wait through several resumes if a session is killed before reaching it).
    reused = sum(bool(row["cached"]) for row in rows)
    print(f"answers waiting at each resume: {waiting_answers}; rows from the cache: {reused}")
    assert max(waiting_answers) <= reused <= sum(waiting_answers)
    assert read_manifest(run_dir).state == "completed"


def test_sigterm_exits_130_with_a_resume_line_that_completes_the_run(job: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with FakeServer(latency_s=0.05) as srv:
        job.write_text(JOB.replace("URL", srv.url_for("openai")), encoding="utf-8")
        process = start(job, run_dir)
        wait_for_rows(process, run_dir, TASKS // 3)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 130, err
        assert read_manifest(run_dir).state == "interrupted"
        rows, ok, cached = store_state(run_dir)
        assert TASKS // 3 <= rows < TASKS and ok == cached == rows  # calls in flight finished and were written
        paid = srv.stats(KEY).succeeded
        assert paid == rows  # nothing paid was left behind

        resume = next(line for line in err.splitlines() if line.startswith("interrupted: resume with  "))
        command = resume.split("  ", 1)[1].split()
        assert command[:2] == ["evalpipe", "run"] and Path(command[-1]) == run_dir
        done = subprocess.run([sys.executable, "-m", "evalpipe.cli", *command[1:]], capture_output=True, text=True,
                              env=child_env(KEY), timeout=60)
        assert done.returncode == 0, done.stderr
        assert srv.stats(KEY).succeeded == TASKS
    assert_one_row_per_task(run_dir)
    assert read_manifest(run_dir).state == "completed"
