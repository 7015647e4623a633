"""manifest.json: what a run holds, written atomically, read back as it was written."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

import evalpipe
from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.manifest import MANIFEST_FILENAME, build_manifest, read_manifest, write_manifest
from evalpipe.pipeline.output.rows import row_schema
from evalpipe.pipeline.output.store import RunStore

JOB_YAML = """\
name: demo
dataset: {items: [{id: q1, question: "2+2?"}]}
prompt: {user: "{{ question }}"}
backends:
  - {id: small, backend: local, model: gemma-3-270m}
  - {id: cloud, backend: openai, model: gpt-4o-mini}
"""


def test_manifest_records_the_run_and_reads_back(tmp_path: Path) -> None:
    job_file = tmp_path / "demo.yaml"
    job_file.write_text(JOB_YAML)
    job = JobSpec.model_validate(yaml.safe_load(JOB_YAML))
    run_dir = tmp_path / "results" / "demo" / "r1"
    with RunStore.open(run_dir, "r1", row_schema([])) as store:
        store.set_meta("job_hash", "h123")
        created_at = store.get_meta("created_at")
        store.record([
            {"task_id": "a", "task_index": 0, "status": "ok", "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.1},
            {"task_id": "b", "task_index": 1, "status": "error", "error_type": "RateLimitError"},
        ])
        manifest = build_manifest(
            job, store, run_dir=run_dir, state="interrupted", job_file=job_file, tasks_total=4,
            started_at=datetime(2025, 1, 1, 12, tzinfo=UTC), outputs={"csv": run_dir / "rows.csv"},
        )
    path = write_manifest(run_dir, manifest)

    assert path == run_dir / MANIFEST_FILENAME
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    data = json.loads(path.read_text())
    assert data["job_sha256"] == hashlib.sha256(JOB_YAML.encode()).hexdigest()
    assert data["evalpipe_version"] == evalpipe.__version__
    assert data["counts"] == {"ok": 1, "error": 1, "skipped": 0}
    assert (data["input_tokens"], data["output_tokens"], data["cost_usd"]) == (10, 5, 0.1)
    assert data["backends"][1] == {"id": "cloud", "backend": "openai", "model": "gpt-4o-mini"}
    assert data["outputs"] == {"csv": "rows.csv"}
    assert data["started_at"] == "2025-01-01T12:00:00+00:00" and data["finished_at"] is None
    assert data["created_at"] is not None and data["created_at"] == created_at
    assert data["resume_command"] == f"evalpipe run {job_file} --resume {run_dir}"
    assert data["job_hash"] == "h123"

    again = read_manifest(run_dir)
    assert again == manifest
    assert not again.completed


def test_reading_a_missing_or_foreign_manifest_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILENAME).write_text('{"hello": "world"}')
    with pytest.raises(ConfigError, match="not an evalpipe manifest"):
        read_manifest(tmp_path)
