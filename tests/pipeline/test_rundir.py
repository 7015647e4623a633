"""Run directories: new ones under results/<job>/<run_id>/, and resumes refused when the job changed."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.rows import row_schema
from evalpipe.pipeline.output.rundir import RunDir, new_run_id, prepare_run_dir
from evalpipe.pipeline.output.store import RunStore


def make_job(**changes: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "demo",
        "dataset": {"items": [{"id": "q1", "question": "2+2?"}]},
        "prompt": {"user": "{{ question }}"},
        "backends": [{"id": "small", "backend": "local", "model": "gemma-3-270m"}],
        "parameters": {"grid": {"temperature": [0.2, 0.8]}},
    }
    data.update(changes)
    return JobSpec.model_validate(data)


def start(run: RunDir) -> None:
    """What the runner does with a new run directory: open its store, record the job, release the lock."""
    with RunStore.open(run.path, run.run_id, row_schema([])) as store:
        run.remember(store)
    run.release()


def test_run_id_sorts_by_time_and_is_unique() -> None:
    moment = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    first, second = new_run_id(moment), new_run_id(moment)

    assert re.fullmatch(r"20250102T030405Z-[0-9a-f]{6}", first)
    assert first != second
    assert new_run_id(datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC)) > first


def test_new_run_goes_under_root_job_name_and_run_id(tmp_path: Path) -> None:
    run = prepare_run_dir(make_job(), root=tmp_path)

    assert run.path == tmp_path / "demo" / run.run_id
    assert run.path.is_dir() and not run.resumed


def test_resume_keeps_the_run_id_and_accepts_operational_changes(tmp_path: Path) -> None:
    first = prepare_run_dir(make_job(), root=tmp_path)
    start(first)

    faster = make_job(concurrency=200, budget={"max_cost_usd": 5},
                      backends=[{"id": "small", "backend": "local", "model": "gemma-3-270m", "rpm": 30}])
    again = prepare_run_dir(faster, run_dir=first.path)

    assert again.resumed and again.run_id == first.run_id and again.job_hash == first.job_hash


def test_resume_with_a_changed_job_says_what_changed(tmp_path: Path) -> None:
    first = prepare_run_dir(make_job(), root=tmp_path)
    start(first)
    changed = make_job(repeats=3, backends=[{"id": "small", "backend": "local", "model": "gemma-3-1b"}])

    with pytest.raises(ConfigError) as raised:
        prepare_run_dir(changed, run_dir=first.path)

    message = str(raised.value)
    assert "backends[0].model: \"gemma-3-270m\" -> \"gemma-3-1b\"" in message
    assert "repeats: 1 -> 3" in message
    assert "--force" in message
    forced = prepare_run_dir(changed, run_dir=first.path, force=True)
    assert forced.resumed and forced.run_id == first.run_id


def test_an_edited_dataset_file_counts_as_a_change(tmp_path: Path) -> None:
    first = prepare_run_dir(make_job(), root=tmp_path, inputs={"dataset": "aaa"})
    start(first)

    with pytest.raises(ConfigError, match="inputs.dataset"):
        prepare_run_dir(make_job(), run_dir=first.path, inputs={"dataset": "bbb"})


def test_a_given_directory_starts_a_new_run_only_when_empty(tmp_path: Path) -> None:
    fresh = prepare_run_dir(make_job(), run_dir=tmp_path / "mine")
    assert fresh.path == tmp_path / "mine" and not fresh.resumed

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a run directory"):
        prepare_run_dir(make_job(), run_dir=tmp_path / "busy")
