"""The OpenAI-family answer shapes end to end: evalpipe against the fake server over loopback HTTP."""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path

import pytest

from evalpipe import ChatMessage, GenerationParams, LLMBuilder, Provider, errors
from evalpipe.testing import FakeServer
from evalpipe.types import ChatResponse

_keys = count()


def build(srv: FakeServer, backend: str, vendor: str, model: str, *, retries: int = 0, key: str = "") -> Provider:
    key = key or f"sk-shape-{backend}-{next(_keys):06d}"
    return (LLMBuilder().backend(backend).api_key(key).model(model).base_url(srv.url_for(vendor))
            .max_retries(retries).timeout(5).build())


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage.user(text)]


def both(llm: Provider, text: str, params: GenerationParams | None = None) -> tuple[ChatResponse, ChatResponse]:
    """The plain answer and the streamed one."""
    stream = llm.stream(ask(text), params)
    return llm.chat(ask(text), params), stream.collect()


REASONING = [
    ("deepseek", "deepseek", "deepseek-reasoner"),
    ("xai", "xai", "grok-3-mini"),
    ("groq", "groq", "openai/gpt-oss-20b"),
    ("mistral", "mistral", "magistral-medium-latest"),
    ("openrouter", "openrouter", "deepseek/deepseek-r1"),
]


@pytest.mark.parametrize(("backend", "vendor", "model"), REASONING, ids=[r[0] for r in REASONING])
def test_reasoning_from_every_vendor_shape(fake_server: FakeServer, backend: str, vendor: str, model: str) -> None:
    for response in both(build(fake_server, backend, vendor, model), "two words"):
        assert response.text == "Echo: two words" and isinstance(response.text, str)
        assert response.reasoning == "Thinking: two words"
        assert response.usage.reasoning_tokens == 3
        assert response.usage.output_tokens == 3 + 3  # the answer and the reasoning, all billed output


def test_hidden_reasoning_is_counted_not_shown(fake_server: FakeServer) -> None:
    for response in both(build(fake_server, "openai", "openai", "o3-mini"), "count me"):
        assert response.reasoning is None
        assert (response.usage.reasoning_tokens, response.usage.output_tokens) == (3, 3 + 3)
    llm = build(fake_server, "openrouter", "openrouter", "openai/gpt-4o-mini")
    for response in both(llm, "secret [[shape:encrypted_reasoning]]"):
        assert response.reasoning is None and response.text == "Echo: secret"


def test_cached_input_tokens(fake_server: FakeServer) -> None:
    for backend in ("openai", "deepseek"):
        response = build(fake_server, backend, backend, "m").chat(ask("a b c d [[cached:3]]"))
        # The fake counts every word sent as an input token, the marker included.
        assert (response.usage.input_tokens, response.usage.cached_input_tokens) == (5, 3), backend


def test_a_bad_cached_marker_is_a_clear_bad_request(fake_server: FakeServer) -> None:
    with pytest.raises(errors.BadRequestError, match="cached:many"):
        build(fake_server, "openai", "openai", "m").chat(ask("a [[cached:many]]"))


@pytest.mark.parametrize("backend", ["openai", "azure_openai"])
def test_refusal(fake_server: FakeServer, backend: str) -> None:
    vendor = "azure" if backend == "azure_openai" else backend
    for response in both(build(fake_server, backend, vendor, "gpt-4o-mini"), "do harm [[shape:refusal]]"):
        assert (response.text, response.finish_reason) == ("", "refusal")
        assert response.refusal == "I'm sorry, but I can't help with that."


@pytest.mark.parametrize("backend", ["openai", "groq", "mistral", "openrouter"])
def test_tool_calls_are_neither_text_nor_a_crash(fake_server: FakeServer, backend: str) -> None:
    for response in both(build(fake_server, backend, backend, "m"), "weather? [[shape:tool_call]]"):
        assert (response.text, response.finish_reason) == ("", "tool_calls")


def test_azure_content_filter(fake_server: FakeServer) -> None:
    llm = build(fake_server, "azure_openai", "azure", "gpt-4o-mini")
    for response in both(llm, "fight scene [[shape:content_filter]]"):
        assert response.finish_reason == "content_filter"
        assert response.safety is not None
        assert response.safety["content_filter_results"]["violence"]["filtered"] is True
        assert "prompt_filter_results" in response.safety
    with pytest.raises(errors.BadRequestError) as info:
        llm.chat(ask("jailbreak [[shape:content_filter_error]]"))
    assert info.value.safety is not None and info.value.safety["violence"]["filtered"] is True
    assert "violence=medium" in info.value.message


@pytest.mark.parametrize("backend", ["openai", "openrouter", "groq"])
def test_a_request_error_inside_a_stream_is_not_retried(fake_server: FakeServer, backend: str) -> None:
    key = f"sk-invalid-event-{backend}-{next(_keys)}"
    llm = build(fake_server, backend, backend, "m", retries=3, key=key)
    with pytest.raises(errors.BadRequestError):
        llm.stream(ask("a b c [[fault:error_event]] [[shape:invalid_request]]")).collect()
    assert fake_server.stats(key).requests == 1


def test_a_stream_that_delivered_reasoning_is_not_retried(fake_server: FakeServer) -> None:
    key = f"sk-reasoning-event-{next(_keys)}"
    llm = build(fake_server, "groq", "groq", "openai/gpt-oss-20b", retries=3, key=key)
    stream = llm.stream(ask("think first [[fault:error_event]]"))
    with pytest.raises(errors.ServerError):
        for chunk in stream:
            assert chunk.reasoning  # only the first reasoning delta arrives before the error
    assert fake_server.stats(key).requests == 1


def test_extra_body_and_headers_reach_the_vendor(fake_server: FakeServer) -> None:
    llm = build(fake_server, "openai", "openai", "gpt-4o-mini")
    json_mode = GenerationParams(extra_body={"response_format": {"type": "json_object"}})
    for response in both(llm, "raw", json_mode):
        assert json.loads(response.text) == {"echo": "raw"}
    token = "invalid-gateway-token-0123456789"
    with pytest.raises(errors.AuthenticationError) as info:
        llm.chat(ask("hi"), GenerationParams(headers={"Authorization": f"Bearer {token}"}))
    assert token not in str(info.value)
    assert errors.redact(f"sent Authorization: Bearer {token}") == "sent Authorization: ***"


@pytest.mark.anyio
async def test_rows_of_a_run_carry_refusal_safety_and_usage_kinds(
    fake_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalpipe.pipeline.job.load import prepare_job
    from evalpipe.pipeline.job.spec import JobSpec
    from evalpipe.pipeline.output.rows import row_schema
    from evalpipe.pipeline.output.store import RunStore
    from evalpipe.pipeline.running.runner import RunOptions, run_job

    monkeypatch.setenv("EVALPIPE_TEST_SHAPES_KEY", f"sk-rows-{next(_keys)}")
    items = [{"id": "refusal", "q": "no [[shape:refusal]]"}, {"id": "filtered", "q": "x [[shape:content_filter]]"},
             {"id": "blocked", "q": "x [[shape:content_filter_error]]"}, {"id": "cached", "q": "a b [[cached:2]]"}]
    backends = [{"id": "azure", "backend": "azure_openai", "model": "o3-mini", "base_url": fake_server.url_for("azure"),
                 "api_key_env": "EVALPIPE_TEST_SHAPES_KEY", "max_retries": 0}]
    spec = {"name": "shapes", "dataset": {"items": items}, "prompt": {"user": "{{ q }}"}, "backends": backends}
    outcome = await run_job(prepare_job(JobSpec.model_validate(spec)),
                            RunOptions(handle_signals=False, out_root=tmp_path / "results"))
    with RunStore.open(outcome.run_dir, outcome.run_id, row_schema([])) as store:
        rows = {row["item_id"]: row for row in store.iter_rows()}
    refusal = rows["refusal"]
    assert (refusal["finish_reason"], refusal["refusal"]) == ("refusal", "I'm sorry, but I can't help with that.")
    assert json.loads(rows["filtered"]["safety"])["content_filter_results"]["violence"]["filtered"] is True
    blocked = rows["blocked"]
    assert (blocked["status"], blocked["error_type"]) == ("error", "BadRequestError")
    assert json.loads(blocked["safety"])["violence"]["severity"] == "medium"
    cached = rows["cached"]
    assert (cached["cached_input_tokens"], cached["reasoning_tokens"]) == (2, 3)  # o3-mini thinks "Thinking: a b"
