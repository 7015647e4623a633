"""Rows carry what was asked: the item's fields and the prompt as sent, in the store, Parquet and CSV,
and still after a resume; over HTTP against the fake provider server (which echoes the last user
message and fails on `[[fault:...]]` markers)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.pipeline.job.load import LoadedJob, prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.rows import row_schema
from evalpipe.pipeline.output.sinks import CSV_FILENAME, PARQUET_DIRNAME, unescape_csv_cell
from evalpipe.pipeline.output.store import RunStore
from evalpipe.pipeline.running.outcome import RunOutcome
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer

pytestmark = pytest.mark.anyio

SYSTEM = "You answer in one word."


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    key = f"sk-rows-{request.node.name}"
    monkeypatch.setenv("EVALPIPE_TEST_ROWS_KEY", key)
    return key


def job(srv: FakeServer, items: list[dict[str, Any]], prompt: dict[str, Any], **fields: Any) -> LoadedJob:
    backend = {"id": "a", "backend": "openai", "model": "gpt-test", "base_url": srv.url_for("openai"),
               "api_key_env": "EVALPIPE_TEST_ROWS_KEY", "max_retries": 0}
    spec = {"name": "row-inputs", "dataset": {"items": items}, "prompt": prompt, "backends": [backend], **fields}
    return prepare_job(JobSpec.model_validate(spec))


async def run(loaded: LoadedJob, tmp_path: Path, **options: Any) -> RunOutcome:
    return await run_job(loaded, RunOptions(out_root=tmp_path / "results", handle_signals=False, **options))


def every_copy(outcome: RunOutcome, criteria: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The rows of the run store, the Parquet parts and the CSV file, each sorted by item id."""
    with RunStore.open(outcome.run_dir, outcome.run_id, row_schema(criteria)) as store:
        stored = list(store.iter_rows())
    parquet = pads.dataset(outcome.run_dir / PARQUET_DIRNAME, format="parquet").to_table().to_pylist()
    with (outcome.run_dir / CSV_FILENAME).open(encoding="utf-8", newline="") as file:
        lines = [{k: unescape_csv_cell(v) for k, v in row.items()} for row in csv.DictReader(file)]
    return {name: sorted(rows, key=lambda r: r["item_id"])
            for name, rows in {"store": stored, "parquet": parquet, "csv": lines}.items()}


async def test_rows_carry_the_item_and_the_messages_as_sent_and_a_resume_keeps_them(
    api_key: str, tmp_path: Path
) -> None:
    items = [{"id": "q1", "question": "Capital of Italy?", "expected": "Rome", "tags": ["geo", "eu"]},
             {"id": "q2", "question": "Capital of Japan? [[fault:server_error:1]]", "expected": "Tokyo", "tags": []}]
    with FakeServer() as srv:
        loaded = job(srv, items, {"system": SYSTEM + " Topic: {{ tags | join(',') }}.", "user": "{{ question }}"},
                     scorers=[{"type": "contains", "name": "right", "values": ["{{ expected }}"]}])
        first = await run(loaded, tmp_path)
        assert first.counts == {"ok": 1, "error": 1, "skipped": 0}
        # Resumed: the store's rows are written again, the error row is replaced by a fresh one.
        again = await run(loaded, tmp_path, run_dir=first.run_dir, retry_errors=True)
    assert again.counts == {"ok": 2, "error": 0, "skipped": 0}

    for name, rows in every_copy(again, ["right"]).items():
        assert [json.loads(row["item"]) for row in rows] == items, name
        # Canonical text: sorted keys, so the same item gives the same cell in every run.
        assert rows[0]["item"] == ('{"expected":"Rome","id":"q1","question":"Capital of Italy?",'
                                   '"tags":["geo","eu"]}'), name
        assert [json.loads(row["messages"]) for row in rows] == [
            [{"role": "system", "content": f"{SYSTEM} Topic: geo,eu."},
             {"role": "user", "content": "Capital of Italy?"}],
            [{"role": "system", "content": f"{SYSTEM} Topic: ."},
             {"role": "user", "content": "Capital of Japan? [[fault:server_error:1]]"}]], name
        assert rows[0]["prompt"] == "Capital of Italy?", name


async def test_an_error_row_and_a_completion_carry_what_was_asked(api_key: str, tmp_path: Path) -> None:
    items = [{"id": "gone", "q": "Where? [[fault:not_found]]"}]
    with FakeServer() as srv:
        failed = await run(job(srv, items, {"user": "{{ q }}"}), tmp_path)
        completion = await run(job(srv, [{"id": "c", "q": "Once upon"}], {"user": "{{ q }} a time",
                                                                          "mode": "completion"}), tmp_path)
    [error_row] = every_copy(failed, [])["parquet"]
    assert error_row["status"] == "error" and json.loads(error_row["item"]) == items[0]
    assert json.loads(error_row["messages"]) == [{"role": "user", "content": "Where? [[fault:not_found]]"}]
    [completed] = every_copy(completion, [])["parquet"]
    assert completed["status"] == "ok", completed["error_message"]
    assert json.loads(completed["messages"]) == "Once upon a time"  # a completion sends a text, not messages


async def test_every_dialogue_turn_carries_its_own_history(api_key: str, tmp_path: Path) -> None:
    dialogue = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    with FakeServer() as srv:
        outcome = await run(job(srv, [{"id": "d", "turns": dialogue}], {"dialogue": "turns"}), tmp_path)
    rows = sorted(every_copy(outcome, [])["parquet"], key=lambda r: r["turn"])
    assert [json.loads(row["messages"]) for row in rows] == [dialogue[:2], dialogue]
    assert [json.loads(row["item"])["reference_answer"] for row in rows] == ["Hello", None]
    assert all(json.loads(row["item"])["turns"] == dialogue for row in rows)
