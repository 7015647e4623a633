"""`evalpipe run --executor ray` on a real local Ray cluster: the task space split by stable id into
shards, each shard's store and parts under shards/<k>/, the merged manifest, rows.csv and best_of,
the readers (summary, compare, report) and resume over a sharded run, and the shard count kept."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from evalpipe.analysis.runs import open_run
from evalpipe.cli import main
from evalpipe.pipeline.job.spec import ExecutorSpec, JobSpec
from evalpipe.pipeline.output.best_of import BEST_OF_FILENAME
from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.sharded import shard_dir
from evalpipe.pipeline.output.store import STORE_FILENAME
from evalpipe.pipeline.running.executor import choose_executor
from evalpipe.pipeline.running.shards import shard_of
from evalpipe.testing import FakeServer
from tests.pipeline.ray_cluster import ray_cluster  # noqa: F401  (a fixture)
from tests.test_cli import restore_logging  # noqa: F401  (an autouse fixture)

KEY_VARIABLE = "EVALPIPE_TEST_RAY_KEY"
ITEMS = 24
PARAM_SETS = 2
JOB = """\
name: ray-test
dataset:
  path: items.jsonl
prompt:
  user: "{{ question }}"
backends:
  - id: fake
    backend: openai
    model: gpt-4o-mini
    base_url: URL
    api_key_env: EVALPIPE_TEST_RAY_KEY
    price_input_per_1m: 1.0
    max_concurrency: 4
parameters:
  sets:
    - {name: calm, temperature: 0.1, max_tokens: 8}
    - {name: warm, temperature: 0.9, max_tokens: 8}
scorers:
  - type: contains
    values: ["Echo"]
"""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_VARIABLE, "sk-ray-test-0123456789abcdef")
    with FakeServer() as srv:
        yield srv


def write_job(directory: Path, server: FakeServer, text: str = JOB) -> Path:
    with (directory / "items.jsonl").open("w", encoding="utf-8") as file:
        for i in range(ITEMS):
            file.write(json.dumps({"id": f"q{i:03d}", "question": f"question number {i}"}) + "\n")
    path = directory / "job.yaml"
    path.write_text(text.replace("URL", server.url_for("openai")), encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def store_ids(directory: Path) -> list[str]:
    connection = sqlite3.connect(directory / STORE_FILENAME)
    try:
        return [task_id for (task_id,) in connection.execute("SELECT task_id FROM rows")]
    finally:
        connection.close()


def only_run(out: Path) -> Path:
    (run_dir,) = [path for path in (out / "ray-test").iterdir() if path.is_dir() and path.name != "latest"]
    return run_dir


@pytest.mark.usefixtures("ray_cluster")
def test_a_sharded_run_splits_tasks_by_id_and_merges_every_output(server: FakeServer, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, server)
    code, out, err = cli(capsys, "run", job, "--executor", "ray", "--shards", "3", "--out", tmp_path / "results")
    assert code == 0, out + err
    run_dir = only_run(tmp_path / "results")
    tasks = ITEMS * PARAM_SETS

    # Each shard holds exactly the tasks whose id hashes to it, and the shards together hold every task once.
    per_shard = [store_ids(shard_dir(run_dir, k)) for k in range(3)]
    assert all(ids for ids in per_shard)  # 48 tasks over 3 shards: none is empty
    for k, ids in enumerate(per_shard):
        assert {shard_of(task_id, 3) for task_id in ids} == {k}
    every = [task_id for ids in per_shard for task_id in ids]
    assert len(every) == len(set(every)) == tasks
    assert server.stats().succeeded == tasks  # one paid call per task
    assert list((shard_dir(run_dir, 0) / "parquet").glob("part-*.parquet"))

    manifest = read_manifest(run_dir)
    assert (manifest.state, manifest.shards, manifest.counts["ok"], manifest.tasks_total) == ("completed", 3, tasks,
                                                                                             tasks)
    assert manifest.input_tokens > 0 and manifest.cost_usd > 0
    with (run_dir / "rows.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["task_id"] for row in rows) == sorted(every)
    assert [int(row["task_index"]) for row in rows] == sorted(int(row["task_index"]) for row in rows)
    assert (run_dir / BEST_OF_FILENAME).is_file()

    run = open_run(run_dir)  # what summary, compare and report read
    assert (run.rows, run.partial) == (tasks, False)
    code, out, _ = cli(capsys, "summary", run_dir)
    assert code == 0 and "fake" in out
    code, out, _ = cli(capsys, "compare", run_dir, run_dir)
    assert code == 0
    code, _, _ = cli(capsys, "report", run_dir, "-o", tmp_path / "report.html")
    assert code == 0 and (tmp_path / "report.html").stat().st_size > 0

    # Resumed without saying --executor: it goes on sharded, with its 3 shards, and pays nothing again.
    code, out, err = cli(capsys, "run", job, "--resume", run_dir)
    assert code == 0, out + err
    assert server.stats().succeeded == tasks
    assert read_manifest(run_dir).counts["ok"] == tasks
    code, _, err = cli(capsys, "run", job, "--resume", run_dir, "--shards", "2")
    assert code == 2 and "started with 3 shards" in err
    code, _, err = cli(capsys, "run", job, "--resume", run_dir, "--executor", "local")
    assert code == 2 and "sharded run" in err


def test_the_in_process_runner_stays_the_default(server: FakeServer, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, server)
    code, out, err = cli(capsys, "run", job, "--out", tmp_path / "results")
    assert code == 0, out + err
    run_dir = only_run(tmp_path / "results")
    assert not (run_dir / "shards").exists()
    assert read_manifest(run_dir).shards == 0


def test_the_job_files_executor_is_used_and_the_command_line_overrides_it(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(yaml.safe_load(JOB.replace("URL", "http://127.0.0.1:9/v1") +
                                                 "executor: {kind: ray, address: auto, shards: 4}\n"))
    assert choose_executor(spec.executor, None) == ExecutorSpec(kind="ray", address="auto", shards=4)
    assert choose_executor(spec.executor, None, kind="local").kind == "local"
    assert choose_executor(spec.executor, None, shards=2, address="ray://head:10001") == ExecutorSpec(
        kind="ray", address="ray://head:10001", shards=2)
    with pytest.raises(ValidationError, match="shards"):
        JobSpec.model_validate(yaml.safe_load(JOB.replace("URL", "http://127.0.0.1:9/v1") +
                                              "executor: {kind: ray, shards: 0}\n"))
