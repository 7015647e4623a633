"""OpenAI protocol transforms and its compatible vendors' differences (pure, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evalpipe import ChatMessage, GenerationParams, LLMBuilder, Provider, errors
from evalpipe.backends.base import HttpRequest, StreamState, with_passthrough
from evalpipe.backends.framing import SSEEvent

FIXTURES = Path(__file__).parent / "fixtures"


def provider(backend: str, **options: Any) -> Provider:
    builder = LLMBuilder().backend(backend).api_key("sk-test-key-0123456789").base_url("http://h/v1")
    for name, value in options.items():
        builder.option(name, value)
    return builder.build()


def body_of(llm: Provider, params: GenerationParams, *, stream: bool = False) -> dict[str, Any]:
    request = llm.chat_request([ChatMessage.system("be brief"), ChatMessage.user("hi")], params, stream=stream)
    assert request.body is not None
    return request.body


def test_openai_request_uses_current_field_names() -> None:
    params = GenerationParams(temperature=0.2, top_p=0.9, top_k=5, max_tokens=50, seed=1, stop=("\n",),
                              json_schema={"type": "object"})
    body = body_of(provider("openai"), params, stream=True)
    assert body["max_completion_tokens"] == 50
    assert "top_k" not in body  # OpenAI has no top_k: documented in ignored_options
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert body["stream_options"] == {"include_usage": True}


def test_vendor_differences_in_the_request() -> None:
    params = GenerationParams(max_tokens=10, seed=3, top_k=4, json_schema={"type": "object"})
    mistral = body_of(provider("mistral"), params)
    assert mistral["random_seed"] == 3 and "seed" not in mistral and mistral["max_tokens"] == 10
    assert body_of(provider("openrouter"), params)["top_k"] == 4
    assert body_of(provider("deepseek"), params)["response_format"] == {"type": "json_object"}


def test_azure_routes() -> None:
    classic = provider("azure_openai", deployment="prod-4o").chat_request([], GenerationParams(), stream=False)
    assert classic.path == "openai/deployments/prod-4o/chat/completions"
    assert classic.query == {"api-version": "2024-10-21"}
    v1 = provider("azure_openai", api_version="v1").chat_request([], GenerationParams(), stream=False)
    assert v1.path == "openai/v1/chat/completions" and not v1.query
    assert provider("azure_openai").auth_headers() == {"api-key": "sk-test-key-0123456789"}


def test_parse_documented_chat_completion() -> None:
    response = provider("openai").parse_chat(json.loads((FIXTURES / "openai_chat.json").read_text()))
    assert response.text == "Hello there, how may I assist you today?"
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (9, 12)
    assert response.model == "gpt-4o-mini-2024-07-18"


def test_deepseek_reasoning_is_kept_apart_from_the_answer() -> None:
    response = provider("deepseek").parse_chat(json.loads((FIXTURES / "deepseek_reasoner.json").read_text()))
    assert response.text == "9.8 is larger."
    assert response.reasoning == "9.11 < 9.8 because..."


def fold(llm: Provider, events: list[str]) -> StreamState:
    state = StreamState()
    for data in events:
        llm.read_stream_event(SSEEvent("message", data), state)
    return state


def test_stream_with_include_usage_and_reasoning() -> None:
    state = fold(provider("deepseek"), [
        '{"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"reasoning_content":"think"},"finish_reason":null}]}',
        '{"choices":[{"index":0,"delta":{"content":null,"reasoning_content":"ing"},"finish_reason":null}]}',
        '{"choices":[{"index":0,"delta":{"content":"Answer"},"finish_reason":null}]}',
        '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        '{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}',
        "[DONE]",
    ])
    assert ("".join(state.text), "".join(state.reasoning)) == ("Answer", "thinking")
    assert (state.finish_reason, state.input_tokens, state.output_tokens, state.done) == ("stop", 4, 3, True)


def test_xai_usage_on_the_finish_chunk() -> None:
    state = fold(provider("xai"), [
        '{"choices":[{"index":0,"delta":{"content":"Hi"}}]}',
        '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1}}',
        "[DONE]",
    ])
    assert (state.input_tokens, state.output_tokens) == (2, 1)


def test_error_event_inside_a_200_stream_is_classified() -> None:
    with pytest.raises(errors.ServerError):
        fold(provider("openrouter"), ['{"error":{"code":502,"message":"Provider returned error"}}'])
    with pytest.raises(errors.ProtocolError):
        fold(provider("openai"), ['{"choices": [}'])


def test_embeddings_request_and_out_of_order_answer() -> None:
    llm = provider("mistral")
    request = llm.embed_request(["a", "b"])
    assert request.body == {"model": "mistral-embed", "input": ["a", "b"], "encoding_format": "float"}
    vectors = llm.parse_embed({"data": [{"index": 1, "embedding": [0, 1]}, {"index": 0, "embedding": [1, 0]}]})
    assert vectors == [[1.0, 0.0], [0.0, 1.0]]


def test_unsupported_embeddings_raise_a_clear_error() -> None:
    with pytest.raises(errors.UnsupportedFeatureError, match="groq does not support embeddings"):
        provider("groq").embed(["x"])


def test_reasoning_controls_per_vendor() -> None:
    effort = GenerationParams(reasoning_effort="high", reasoning_budget_tokens=2048)
    for backend in ("openai", "azure_openai", "xai", "groq", "mistral"):
        body = body_of(provider(backend), effort)
        assert body["reasoning_effort"] == "high", backend
        assert "reasoning_budget_tokens" in provider(backend).ignored_options
    assert body_of(provider("openrouter"), effort)["reasoning"] == {"max_tokens": 2048}  # the budget wins
    assert body_of(provider("openrouter"), GenerationParams(reasoning_effort="low"))["reasoning"] == {"effort": "low"}
    deepseek = body_of(provider("deepseek"), effort)
    assert "reasoning_effort" not in deepseek and "reasoning" not in deepseek
    assert {"reasoning_effort", "reasoning_budget_tokens"} <= provider("deepseek").ignored_options


def test_ignored_options_are_never_sent() -> None:
    params = GenerationParams(temperature=0.5, top_p=0.5, top_k=3, max_tokens=9, seed=4, stop=("x",),
                              reasoning_effort="low", reasoning_budget_tokens=100)
    names = {"top_k": "top_k", "seed": "seed", "reasoning_effort": "reasoning_effort",
             "reasoning_budget_tokens": "reasoning"}
    for backend in ("openai", "azure_openai", "deepseek", "xai", "groq", "mistral", "openrouter", "local"):
        llm = provider(backend)
        body = body_of(llm, params)
        for option in llm.ignored_options:
            assert names[option] not in body, (backend, option)
    assert "seed" not in body_of(provider("deepseek"), params)  # DeepSeek's API has no seed


def test_extra_body_is_deep_merged_and_headers_added() -> None:
    request = HttpRequest("chat/completions", {"model": "m", "stream_options": {"include_usage": True}})
    params = GenerationParams(extra_body={"stream_options": {"continuous_usage_stats": True}, "top_logprobs": 2},
                              headers={"X-Title": "evalpipe-test"})
    sent = with_passthrough(request, params)
    assert sent.body == {"model": "m", "top_logprobs": 2,
                         "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    assert sent.headers == {"X-Title": "evalpipe-test"}
    assert request.body == {"model": "m", "stream_options": {"include_usage": True}}  # not modified in place
    assert with_passthrough(request, GenerationParams()) is request


def test_builder_reasoning_controls_and_extra_body() -> None:
    llm = (LLMBuilder().backend("openai").api_key("sk-test-key-0123456789").reasoning_effort("medium")
           .reasoning_budget_tokens(512).extra_body({"service_tier": "flex"}).build())
    params = llm.config.params
    assert (params.reasoning_effort, params.reasoning_budget_tokens) == ("medium", 512)
    assert params.extra_body == {"service_tier": "flex"}
    with pytest.raises(errors.ConfigError, match="reasoning_effort"):
        LLMBuilder().backend("openai").api_key("k" * 20).reasoning_effort("extreme").build()  # type: ignore[arg-type]
