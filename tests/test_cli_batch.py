"""`evalpipe run --detach`, `evalpipe status` and `evalpipe collect` on a job in batch mode, and what
`evalpipe plan` says batch mode saves: a nightly job submits in the evening and collects in the morning."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.store import BatchChunk, RunStore
from evalpipe.pipeline.running.outcome import RunProgress
from evalpipe.progress import progress_text
from evalpipe.testing import FakeServer
from tests.test_cli import CANARY, KEY_VARIABLE, cli, restore_logging  # noqa: F401  (an autouse fixture)

BATCH_JOB = """\
name: nightly-test
dataset:
  items:
    - {id: a, question: "What is 2 + 2?"}
    - {id: b, question: "What is 3 + 3?"}
    - {id: c, question: "What is 4 + 4?"}
prompt:
  user: "{{ question }}"
backends:
  - id: nightly
    backend: openai
    model: gpt-4o-mini
    base_url: URL
    api_key_env: EVALPIPE_TEST_CLI_KEY
    price_input_per_1m: 2.5
    price_output_per_1m: 10
    mode: batch
    batch: {poll_interval_s: 0.05}
scorers:
  - {type: length, max: 50}
"""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_VARIABLE, CANARY)
    with FakeServer(batch_delay_s=0.3) as srv:
        yield srv


def batch_job(tmp_path: Path, server: FakeServer) -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text(BATCH_JOB.replace("URL", server.url_for("openai")), encoding="utf-8")
    return path


def test_detach_submits_and_exits_then_collect_finishes_the_run(
        server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = batch_job(tmp_path, server)
    code, _, err = cli(capsys, "run", job, "--out", tmp_path / "results", "--detach")
    assert code == 0, err
    assert "evalpipe collect" in err
    (run_dir,) = (tmp_path / "results" / "nightly-test").glob("2*")
    assert read_manifest(run_dir).state == "submitted"
    assert read_manifest(run_dir).counts["ok"] == 0
    stats = server.batch_stats(CANARY)
    assert (stats.batches_created, stats.requests_answered) == (1, 0)  # left at the vendor, unanswered yet

    code, out, _ = cli(capsys, "status", run_dir)
    assert code == 0
    (chunk,) = RunStore.read_batch_chunks(run_dir)
    assert chunk.batch_id is not None and chunk.batch_id in out
    assert "submitted" in out and "evalpipe collect" in out

    code, out, err = cli(capsys, "collect", run_dir)
    assert code == 0, err
    manifest = read_manifest(run_dir)
    assert manifest.state == "completed" and manifest.counts["ok"] == 3
    assert server.batch_stats(CANARY).batches_created == 1  # collected, not submitted again
    code, out, _ = cli(capsys, "status", run_dir)
    assert "collected" in out and "evalpipe collect" not in out


def test_plan_says_what_batch_mode_saves(server: FakeServer, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    job = batch_job(tmp_path, server)
    code, out, err = cli(capsys, "plan", job)
    assert code == 0
    batch_cost, live_column = total_row(out)[-2:]
    live_job = tmp_path / "live.yaml"
    live_job.write_text(job.read_text().replace("    mode: batch\n", ""), encoding="utf-8")
    _, live_out, _ = cli(capsys, "plan", live_job)
    (live_cost,) = total_row(live_out)[-1:]
    assert live_column == live_cost and batch_cost == pytest.approx(live_cost / 2, abs=1e-4)
    assert f"batch saves ${live_cost - batch_cost:.4f} (50%) against the same calls live" in " ".join(err.split())


def total_row(table: str) -> list[float]:
    """The numbers at the end of a plan table's total row."""
    line = next(line for line in table.splitlines() if line.replace("│", " ").split()[:1] == ["total"])
    return [float(cell) for cell in line.replace("│", " ").split()[-2:] if cell.replace(".", "").isdigit()]


def test_status_of_a_directory_without_a_run_is_a_bad_input(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "status", tmp_path)
    assert code == 2 and "not a run directory" in err


def test_the_progress_line_shows_the_batches_of_each_batch_backend() -> None:
    progress = RunProgress(total=3, batches={"nightly": "nightly batches: 1 in_progress"})
    assert progress_text(progress, progress.started + 1).endswith("· nightly batches: 1 in_progress")
    assert "batches" not in progress_text(RunProgress(total=3), 1.0)


def test_sigint_while_waiting_exits_at_once_and_collect_finishes(tmp_path: Path) -> None:
    with FakeServer(batch_delay_s=3.0) as srv:
        job = tmp_path / "nightly.yaml"
        job.write_text(BATCH_JOB.replace("URL", srv.url_for("openai")).replace("poll_interval_s: 0.05",
                                                                             "poll_interval_s: 300"), encoding="utf-8")
        run_dir = tmp_path / "run"
        env = {**os.environ, KEY_VARIABLE: CANARY}
        process = subprocess.Popen([sys.executable, "-m", "evalpipe.cli", "run", str(job), "--resume", str(run_dir)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 30
        while not any(chunk.step == "submitted" for chunk in chunks_of(run_dir)):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 130 and time.monotonic() - signalled < 5  # not after the 300 s poll interval
        assert "evalpipe run" in err and "--resume" in err
        time.sleep(max(signalled + 3.5 - time.monotonic(), 0))  # the batch has ended: one poll collects it
        done = subprocess.run([sys.executable, "-m", "evalpipe.cli", "collect", str(run_dir)], capture_output=True,
                              text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert read_manifest(run_dir).counts["ok"] == 3 and srv.batch_stats(CANARY).batches_created == 1


def chunks_of(run_dir: Path) -> list[BatchChunk]:
    try:
        return RunStore.read_batch_chunks(run_dir)
    except (ConfigError, sqlite3.Error):  # not created yet
        return []


def test_a_job_in_batch_mode_is_not_sharded(server: FakeServer, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "run", batch_job(tmp_path, server), "--executor", "ray", "--out", tmp_path / "out")
    assert code == 2
    assert "batch mode (nightly) run in one process" in " ".join(err.split())
    assert server.batch_stats(CANARY).files_uploaded == 0
