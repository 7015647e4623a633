"""`mode: batch` in a job file: refused where no batch API is mapped or where a task is more than one
call, with the file, line and field named; the vendor's defaults fill in the `batch` settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalpipe.pipeline.job.batch_mode import batch_settings, price_factor
from evalpipe.pipeline.job.load import JobFileError, load_job
from evalpipe.pipeline.job.spec import BackendSpec

JOB = """\
name: batch-load
dataset:
  items: [{{id: a, question: "What is 2 + 2?"}}]
prompt:
{prompt}
backends:
  - id: first
    backend: {backend}
    model: some-model
    mode: batch
{judges}"""
USER = '  user: "{{ question }}"'


def problems(tmp_path: Path, backend: str = "openai", prompt: str = USER, judges: str = "") -> str:
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(backend=backend, prompt=prompt, judges=judges), encoding="utf-8")
    with pytest.raises(JobFileError) as caught:
        load_job(path, environ={})
    return str(caught.value)


@pytest.mark.parametrize(("backend", "why"), [
    ("mistral", "Mistral's batch API is not OpenAI's"), ("deepseek", "DeepSeek offers no batch API"),
    ("ollama", "no batch discount"),
])
def test_a_backend_without_a_mapped_batch_api_is_refused_by_name(tmp_path: Path, backend: str, why: str) -> None:
    message = problems(tmp_path, backend)
    assert "job.yaml:10: backends[0].mode:" in message and why in message


@pytest.mark.parametrize(("prompt", "why"), [
    ("  chain:\n    - {name: one, user: '{{ question }}'}\n    - {name: two, user: '{{ one }}'}", "a chain's steps"),
    ("  dialogue: turns", "a dialogue's turns"),
])
def test_a_task_of_several_calls_cannot_be_a_batch_request(tmp_path: Path, prompt: str, why: str) -> None:
    assert why in problems(tmp_path, prompt=prompt)


def test_a_judge_in_batch_mode_needs_a_batch_api_too(tmp_path: Path) -> None:
    judges = "judges:\n  - {id: judge, backend: mistral, model: m, mode: batch}\n"
    message = problems(tmp_path, judges=judges)
    assert "judges[0].mode" in message and "Mistral's batch API" in message


def test_unset_batch_settings_are_the_vendors_and_set_ones_win() -> None:
    anthropic = BackendSpec.model_validate({"id": "a", "backend": "anthropic", "mode": "batch"})
    assert batch_settings(anthropic).max_requests == 100_000 and price_factor(anthropic) == 0.5
    capped = BackendSpec.model_validate({"id": "o", "backend": "openai", "mode": "batch",
                                         "batch": {"max_requests": 10_000_000, "price_factor": 0.6}})
    assert batch_settings(capped).max_requests == 50_000  # never past the vendor's cap
    assert price_factor(capped) == 0.6
    assert price_factor(BackendSpec.model_validate({"id": "l", "backend": "openai"})) == 1.0
