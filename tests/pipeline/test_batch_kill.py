"""SIGKILL at each step of a batch (after the upload, after the create, while polling, while downloading),
then resume: the vendor saw one upload and one batch, each request was answered once, and every task
has exactly one row. The child process is killed right after the vendor's answer to that step arrived
and before the run store could record it: the worst moment for exactly-once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from evalpipe.pipeline.job.load import load_job
from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.store import RunStore
from evalpipe.testing import FakeServer
from tests.pipeline.batch_jobs import KEY_VARIABLE, batch_backend, items, run, stored_rows
from tests.pipeline.killing import run_until_killed

pytestmark = pytest.mark.anyio
KEY = "sk-batch-kill"
TASKS = 5

# In the child: the adapter method of the step to kill at prints KILL once the vendor has answered it,
# then blocks until the parent's SIGKILL. Nothing else of the run is changed.
CHILD = """
import sys, time
from evalpipe.backends.batch import adapter_class
from evalpipe.cli import main

job, run_dir, kind, method = sys.argv[1:5]
cls = adapter_class(kind)
original = getattr(cls, method)

async def then_die(self, *args, **kwargs):
    result = await original(self, *args, **kwargs)
    print("KILL", flush=True)
    time.sleep(60)
    return result

setattr(cls, method, then_die)
sys.exit(main(["run", job, "--resume", run_dir]))
"""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_VARIABLE, KEY)  # the child inherits it
    with FakeServer(batch_delay_s=0.3) as srv:
        yield srv


@pytest.mark.parametrize(("kind", "method", "step"), [
    ("openai", "upload", "uploading"),  # uploaded, not recorded: found again by its file name
    ("openai", "create", "creating"),  # created, not recorded: found again by its metadata
    ("openai", "poll", "submitted"),
    ("openai", "results", "ended"),  # downloaded, not committed: downloaded again, never submitted again
    ("anthropic", "create", "creating"),  # no label at the vendor: found by creation time and size
    ("google", "create", "creating"),  # found again by its display name
])
async def test_sigkill_then_resume_submits_nothing_twice_and_writes_one_row_per_task(
        server: FakeServer, tmp_path: Path, kind: str, method: str, step: str) -> None:
    job = tmp_path / "job.yaml"
    spec = {"name": "batch-kill", "dataset": {"items": items(TASKS)}, "prompt": {"user": "{{ q }}"},
            "backends": [batch_backend(server, kind)],
            "scorers": [{"type": "exact_match", "expected": "{{ expected }}", "threshold": 1.0}]}
    job.write_text(yaml.safe_dump(spec), encoding="utf-8")
    run_dir = tmp_path / "run"
    run_until_killed(CHILD, str(job), str(run_dir), kind, method, stop=lambda line: line == "KILL")
    (chunk,) = RunStore.read_batch_chunks(run_dir)
    assert chunk.step == step  # killed between the vendor's answer and its record
    assert stored_rows(run_dir) == []

    outcome = await run(load_job(job), tmp_path, run_dir=run_dir)
    assert outcome.state == "completed" and outcome.counts["ok"] == TASKS
    stats = server.batch_stats(KEY)
    assert stats.batches_created == 1
    assert stats.files_uploaded == (1 if kind == "openai" else 0)
    assert len(stats.answers_by_id) == TASKS and set(stats.answers_by_id.values()) == {1}
    rows = stored_rows(run_dir)
    assert Counter(row["task_id"] for row in rows) == Counter(set(stats.answers_by_id))
    assert read_manifest(run_dir).counts["ok"] == TASKS
