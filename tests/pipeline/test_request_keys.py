"""Response-cache keys: built from parts shared per backend and parameter set, equal to the key of the
whole request serialised at once, so the caches of existing run stores stay valid on resume."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from evalpipe.pipeline.job.expand import expand_job
from evalpipe.pipeline.job.load import load_job
from evalpipe.pipeline.job.task import Task, stable_hash
from evalpipe.pipeline.running.backend import Backend
from evalpipe.pipeline.running.execute import call_params, request_key
from evalpipe.pipeline.running.job_backends import open_backends
from evalpipe.pipeline.running.model_calls import message_key
from evalpipe.types import ChatMessage, Image

ENVIRON = {"OPENAI_API_KEY": "sk-request-keys-test", "MISTRAL_API_KEY": "sk-request-keys-test"}


def whole_request_key(task: Task, backend: Backend) -> str:
    """The key as it was first defined: the whole request as one value, serialised per task."""
    config = backend.provider.config
    params = config.params.merged(call_params(task, backend))
    values = ((f.name, getattr(params, f.name)) for f in fields(params))
    return stable_hash({"task": task.task_id, "backend": config.backend, "model": config.model,
                        "base_url": config.base_url, "mode": task.mode,
                        "messages": [message_key(m) for m in task.messages],
                        "params": {k: v for k, v in values if v is not None or k not in {"tools", "tool_choice"}}},
                       32)


def job_file(tmp_path: Path, prompt: dict[str, Any]) -> Path:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{n}", "question": f"Ünïcode {n}?"}) + "\n" for n in range(3)),
                    encoding="utf-8")
    document = {
        "name": "keys",
        "dataset": {"path": "q.jsonl"},
        "prompt": prompt,
        "backends": [
            {"id": "plain", "backend": "openai", "model": "gpt-4o-mini"},
            {"id": "dressed", "backend": "openai", "model": "gpt-4o", "base_url": "http://127.0.0.1:9/v1",
             "extra_body": {"z": {"b": 1, "a": [2, 1]}}, "headers": {"X-Trace": "yes"}},
            {"id": "other", "backend": "mistral", "model": "mistral-small-latest"},
        ],
        "parameters": {"sets": [{"name": "calm", "temperature": 0.0, "max_tokens": 10, "stop": ["\n"]},
                                {"name": "wide", "temperature": 0.9, "top_p": 0.5,
                                 "extra_body": {"z": {"c": True}}}]},
        "repeats": 2,
    }
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(document), encoding="utf-8")  # JSON is YAML
    return path


def test_keys_equal_the_whole_request_serialised_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    loaded = load_job(job_file(tmp_path, {"system": "Be brief.", "user": "Q: {{ question }}"}), environ=ENVIRON)
    backends, _ = open_backends(loaded, 60.0, environ=ENVIRON)
    tasks = list(expand_job(loaded))
    keys = [request_key(task, backends[task.backend_id]) for task in tasks]
    assert keys == [whole_request_key(task, backends[task.backend_id]) for task in tasks]
    assert len(set(keys)) == len(tasks) == 3 * 3 * 2 * 2
    # Asked again (the shared parts now kept), the keys are the same.
    assert keys == [request_key(task, backends[task.backend_id]) for task in tasks]


def test_keys_of_completions_images_and_changed_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    loaded = load_job(job_file(tmp_path, {"mode": "completion", "user": "Q: {{ question }}\nA:"}), environ=ENVIRON)
    backends, _ = open_backends(loaded, 60.0, environ=ENVIRON)
    task = next(expand_job(loaded))
    backend = backends[task.backend_id]
    with_image = replace(task, messages=(ChatMessage("user", "look", images=[Image(url="https://example.com/a.png")]),))
    follow_up = replace(task, messages=(*task.messages, ChatMessage("assistant", "4"), ChatMessage("user", "why?")))
    variants = [task, with_image, follow_up]
    keys = [request_key(t, backend) for t in variants]
    assert keys == [whole_request_key(t, backend) for t in variants]
    assert len(set(keys)) == 3  # a change of the messages alone changes the key
