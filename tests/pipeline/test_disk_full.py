"""A full disk stops `evalpipe run` with one line naming the file, the manifest marked interrupted and the
resume command; no traceback (none with local variables either); the resume after making room completes
with one row per task. Needs root to mount a small tmpfs (skipped otherwise)."""

from __future__ import annotations

import csv
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.sinks import CSV_FILENAME
from evalpipe.testing import FakeServer
from tests.pipeline.killing import child_env, child_job, run_command, write_items

TASKS = 120
KEY = "sk-disk-full-test"
EXIT_WRITE_FAILED = 6
FILLER = "lorem ipsum dolor sit amet " * 80  # ~2 kB a prompt, echoed back: rows fill 256 kB within the run

JOB = child_job("disk-full-test", 8, 'scorers:\n  - type: contains\n    values: ["Echo"]\n')


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 kB tmpfs; `remount(size)` makes room."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def run(job: Path, run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(run_command(job, run_dir), capture_output=True, text=True, env=child_env(KEY), timeout=60)


def test_a_full_disk_stops_the_run_with_one_line_and_the_resume_completes(tmp_path: Path, small_disk: Path) -> None:
    write_items(tmp_path, TASKS, "question {i}: " + FILLER)
    job = tmp_path / "job.yaml"
    run_dir = small_disk / "run"
    with FakeServer() as srv:
        job.write_text(JOB.replace("URL", srv.url_for("openai")), encoding="utf-8")
        stopped = run(job, run_dir)

        assert stopped.returncode == EXIT_WRITE_FAILED, stopped.stderr
        assert "Traceback" not in stopped.stderr and FILLER[:40] not in stopped.stderr  # no locals, no rows
        lines = [line for line in stopped.stderr.splitlines() if "disk full" in line]
        assert len(lines) == 1, stopped.stderr
        assert lines[0].startswith(f"stopped: disk full writing {run_dir}/")
        assert lines[0].endswith(f"resume with  evalpipe run {job} --resume {run_dir}")
        assert len(stopped.stderr.strip().splitlines()) <= 3, stopped.stderr  # a progress line or two, and that
        manifest = read_manifest(run_dir)
        assert manifest.state == "interrupted" and manifest.counts["ok"] < TASKS

        subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
        resumed = run(job, run_dir)

    assert resumed.returncode == 0, resumed.stderr
    assert read_manifest(run_dir).state == "completed"
    with (run_dir / CSV_FILENAME).open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    ids = Counter(row["item_id"] for row in rows)
    assert len(ids) == TASKS and set(ids.values()) == {1}
    assert {row["status"] for row in rows} == {"ok"}
