"""Jobs with a backend in `mode: batch` against the fake server's batch APIs, for the batch-mode tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalpipe.pipeline.job.load import LoadedJob, prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.rows import row_schema
from evalpipe.pipeline.output.store import RunStore
from evalpipe.pipeline.running.outcome import RunOutcome
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer

KEY_VARIABLE = "EVALPIPE_TEST_BATCH_KEY"
VENDORS = {"openai": "openai", "anthropic": "anthropic", "google": "gemini", "groq": "groq",
           "azure_openai": "azure"}
PRICE_IN, PRICE_OUT = 2.0, 8.0  # per million tokens, live


def batch_backend(srv: FakeServer, kind: str = "openai", **batch: Any) -> dict[str, Any]:
    """A backend of `kind` in batch mode at the fake server, polling fast."""
    return {"id": f"{kind}-batch", "backend": kind, "model": f"{kind}-test-model",
            "base_url": srv.url_for(VENDORS[kind]), "api_key_env": KEY_VARIABLE, "mode": "batch",
            "price_input_per_1m": PRICE_IN, "price_output_per_1m": PRICE_OUT,
            "batch": {"poll_interval_s": 0.05, **batch}}


def items(count: int, question: str = "question {i}") -> list[dict[str, Any]]:
    return [{"id": f"q{i:03d}", "q": question.format(i=i), "expected": f"Echo: {question.format(i=i)}"}
            for i in range(count)]


def batch_job(rows: Sequence[dict[str, Any]], backends: Sequence[dict[str, Any]], **fields: Any) -> LoadedJob:
    spec = {"name": "batch-test", "dataset": {"items": list(rows)}, "prompt": {"user": "{{ q }}"},
            "backends": list(backends),
            "scorers": [{"type": "exact_match", "expected": "{{ expected }}", "threshold": 1.0}], **fields}
    return prepare_job(JobSpec.model_validate(spec))


async def run(loaded: LoadedJob, tmp_path: Path, **options: Any) -> RunOutcome:
    options.setdefault("out_root", tmp_path / "results")
    return await run_job(loaded, RunOptions(handle_signals=False, **options))


def stored_rows(run_dir: Path, scorers: Sequence[str] = ("exact_match",)) -> list[dict[str, Any]]:
    """The rows of a run's store (with the score columns of `scorers`)."""
    store = RunStore.open(run_dir, RunStore.read_meta(run_dir)["run_id"], row_schema(list(scorers)))
    try:
        return list(store.iter_rows())
    finally:
        store.close()
