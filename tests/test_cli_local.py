"""Ctrl-C in a terminal during a run on the real local backend: the signal goes to the whole foreground
process group, and the embedded llama-server must not take it (it runs in its own session), so the calls
in flight finish and the command stops within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.local

REPO = Path(__file__).resolve().parents[1]
JOB = """\
name: counting
dataset:
  items:
{items}
prompt:
  mode: completion
  user: "{{{{ n }}}}, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
backends:
  - id: local
    backend: local
    max_concurrency: 2
parameters:
  sets:
    - {{name: calm, temperature: 0, max_tokens: 24}}
"""


def test_ctrl_c_on_the_local_backend_stops_within_seconds(tmp_path: Path) -> None:
    items = "\n".join(f'    - {{id: i{n}, n: "{n}"}}' for n in range(40))
    (tmp_path / "job.yaml").write_text(JOB.format(items=items), encoding="utf-8")
    # A session of its own, as a terminal starts a command: the test can signal its whole group, as Ctrl-C does.
    process = subprocess.Popen([sys.executable, "-m", "evalpipe.cli", "run", "job.yaml"], cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip() for line in process.stderr or ()),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any(" done · " in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.1)  # the first row: the server is up and calls are in flight
        assert process.poll() is None, lines
        signalled = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
        stopped_in = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    reader.join(5)
    assert process.returncode == 130, lines
    assert stopped_in < 10, (stopped_in, lines)
    assert any("waiting for" in line and "in flight" in line for line in lines), lines
    assert any(line.startswith("interrupted: resume with") for line in lines), lines
    finals = [line for line in lines if " done · " in line]
    assert finals and " 0 errors " in finals[-1], lines  # the calls in flight answered; none timed out


def test_the_init_job_runs_on_the_local_model_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    steps = (["init", "start"], ["run", "start/job.yaml"], ["summary", "results/starter/latest", "--format", "csv"])
    for args in steps:
        done = subprocess.run([sys.executable, "-m", "evalpipe.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    header, row = done.stdout.splitlines()[:2]
    summary = dict(zip(header.split(","), row.split(","), strict=True))
    assert summary["rows"] == "3" and summary["errors"] == "0"
    assert float(summary["pass_rate"]) == 1.0, summary  # the starter's questions are ones the bundled model gets right
