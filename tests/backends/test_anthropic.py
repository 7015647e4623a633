"""Anthropic Messages transforms (pure, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalpipe import ChatMessage, GenerationParams, LLMBuilder, errors
from evalpipe.backends.anthropic import AnthropicProvider
from evalpipe.backends.base import StreamState
from evalpipe.backends.framing import SSEEvent
from evalpipe.testing import FakeServer

FIXTURES = Path(__file__).parent / "fixtures"


def anthropic() -> AnthropicProvider:
    llm = LLMBuilder().backend("anthropic").api_key("sk-ant-test-0123456789").build()
    assert isinstance(llm, AnthropicProvider)
    return llm


def test_system_goes_to_the_top_and_max_tokens_is_always_sent() -> None:
    messages = [ChatMessage.system("Be terse."), ChatMessage.user("Hi"), ChatMessage.assistant("Yo"),
                ChatMessage.user("Again")]
    request = anthropic().chat_request(messages, GenerationParams(top_k=5, stop=("END",)), stream=True)
    body = request.body or {}
    assert request.path == "v1/messages"
    assert body["system"] == "Be terse."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == AnthropicProvider.default_max_tokens
    assert (body["top_k"], body["stop_sequences"], body["stream"]) == (5, ["END"], True)
    assert "temperature" not in body


def test_json_schema_becomes_a_forced_tool_and_its_input_is_the_answer() -> None:
    body = anthropic().chat_request([ChatMessage.user("x")], GenerationParams(json_schema={"type": "object"}),
                                    stream=False).body or {}
    assert body["tool_choice"] == {"type": "tool", "name": "respond"}
    answer = anthropic().parse_chat({"content": [{"type": "tool_use", "name": "respond", "input": {"a": 1}}],
                                     "stop_reason": "tool_use", "usage": {}})
    assert json.loads(answer.text) == {"a": 1}


def test_parse_documented_message() -> None:
    response = anthropic().parse_chat(json.loads((FIXTURES / "anthropic_message.json").read_text()))
    assert (response.text, response.finish_reason) == ("Hi! My name is Claude.", "stop")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 9)


def test_stream_event_sequence() -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {"model": "claude", "usage": {"input_tokens": 25,
                                                                                             "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "!"}}),
        ("some_future_event", {"type": "some_future_event"}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                           "usage": {"output_tokens": 15}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    state = StreamState()
    chunks = [anthropic().read_stream_event(SSEEvent(name, json.dumps(data)), state) for name, data in events]
    assert [c.text for c in chunks if c] == ["Hello", "!"]
    assert (state.input_tokens, state.output_tokens, state.finish_reason, state.done) == (25, 15, "length", True)


def test_error_event_in_stream() -> None:
    event = SSEEvent("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    with pytest.raises(errors.OverloadedError):
        anthropic().read_stream_event(event, StreamState())


def test_no_embeddings() -> None:
    with pytest.raises(errors.UnsupportedFeatureError):
        anthropic().embed(["x"])


def fixture(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((FIXTURES / name).read_text())
    return data


def test_thinking_is_reasoning_redacted_thinking_is_counted_and_usage_counts_the_cache() -> None:
    response = anthropic().parse_chat(fixture("anthropic_thinking.json"))
    assert response.text == "Based on my analysis..."
    assert response.reasoning == "Let me analyze this step by step...[redacted thinking]"
    # Anthropic's input_tokens leaves the cache out; evalpipe's input is all of it.
    assert response.usage.input_tokens == 50 + 1200 + 3000
    assert (response.usage.cached_input_tokens, response.usage.cache_write_input_tokens) == (3000, 1200)
    assert (response.usage.output_tokens, response.usage.reasoning_tokens) == (420, 0)


def test_a_refusal_passes_through_with_what_was_said() -> None:
    response = anthropic().parse_chat(fixture("anthropic_refusal.json"))
    assert (response.finish_reason, response.refusal, response.text) == (
        "refusal", "I can't help with", "I can't help with")


def test_a_tool_call_is_not_text_and_finishes_with_tool_calls() -> None:
    response = anthropic().parse_chat(fixture("anthropic_tool_use.json"))
    assert response.text == "I'll check the weather in San Francisco."
    assert response.finish_reason == "tool_calls"


def stream_of(*events: dict[str, object]) -> tuple[StreamState, list[tuple[str, str]]]:
    state, chunks = StreamState(), []
    for data in events:
        chunk = anthropic().read_stream_event(SSEEvent(str(data["type"]), json.dumps(data)), state)
        if chunk is not None:
            chunks.append((chunk.text, chunk.reasoning))
    return state, chunks


def test_stream_thinking_tool_input_and_signatures() -> None:
    state, chunks = stream_of(
        {"type": "message_start", "message": {"model": "claude", "usage": {
            "input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "x"}},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Let me look."}},
        {"type": "content_block_start", "index": 3, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    )
    assert chunks == [("", "Hmm."), ("", "[redacted thinking]"), ("Let me look.", "")]
    assert (state.finish_reason, state.input_tokens, state.cached_input_tokens, state.output_tokens) == (
        "tool_calls", 105, 100, 30)


def test_the_answer_tool_of_a_json_schema_is_the_text_in_a_stream_too() -> None:
    state, chunks = stream_of(
        {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "respond", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
    )
    assert json.loads("".join(state.text)) == {"a": 1}
    assert state.finish_reason == "stop"


@pytest.mark.parametrize(("error_type", "expected"), [
    ("invalid_request_error", errors.BadRequestError),
    ("overloaded_error", errors.OverloadedError),
    ("rate_limit_error", errors.RateLimitError),
    ("api_error", errors.ServerError),
    ("authentication_error", errors.AuthenticationError),
    ("request_too_large", errors.ContextLengthError),
    ("billing_error", errors.QuotaExceededError),
])
def test_an_error_event_is_classified_by_its_own_type(error_type: str, expected: type) -> None:
    data = {"type": "error", "error": {"type": error_type, "message": "Something."}}
    with pytest.raises(errors.ProviderError) as caught:
        anthropic().read_stream_event(SSEEvent("error", json.dumps(data)), StreamState())
    assert type(caught.value) is expected
    assert caught.value.status is None  # the stream itself answered 200
    assert not (isinstance(caught.value, errors.TransientError) and expected is errors.BadRequestError)


def test_a_context_length_error_event_is_a_context_length_error() -> None:
    data = {"type": "error", "error": {"type": "invalid_request_error",
                                       "message": "prompt is too long: 210000 tokens > 200000 maximum"}}
    with pytest.raises(errors.ContextLengthError):
        anthropic().read_stream_event(SSEEvent("error", json.dumps(data)), StreamState())


def test_a_thinking_budget_enables_thinking_and_makes_room_for_the_answer() -> None:
    body = anthropic().chat_request([ChatMessage.user("x")], GenerationParams(reasoning_budget_tokens=2000),
                                    stream=False).body or {}
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    assert body["max_tokens"] == 2000 + AnthropicProvider.default_max_tokens
    body = anthropic().chat_request([ChatMessage.user("x")], GenerationParams(
        reasoning_budget_tokens=2000, max_tokens=5000, temperature=1.0, top_p=0.97), stream=False).body or {}
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (5000, 1.0, 0.97)


def test_an_effort_level_is_anthropics_own_effort_control() -> None:
    body = anthropic().chat_request([ChatMessage.user("x")], GenerationParams(reasoning_effort="low"),
                                    stream=False).body or {}
    assert body["output_config"] == {"effort": "low"}
    assert "thinking" not in body


@pytest.mark.parametrize(("params", "message"), [
    (GenerationParams(reasoning_budget_tokens=500), "at least 1024"),
    (GenerationParams(reasoning_budget_tokens=2000, max_tokens=2000), r"max_tokens \(2000\) must exceed"),
    (GenerationParams(reasoning_budget_tokens=2000, temperature=0.2), "temperature must be unset or 1"),
    (GenerationParams(reasoning_budget_tokens=2000, top_k=5), "top_k"),
    (GenerationParams(reasoning_budget_tokens=2000, top_p=0.5), "top_p"),
    (GenerationParams(reasoning_budget_tokens=2000, json_schema={"type": "object"}), "json_schema"),
])
def test_what_the_api_refuses_with_thinking_is_refused_before_sending(params: GenerationParams,
                                                                      message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        anthropic().chat_request([ChatMessage.user("x")], params, stream=False)


def test_seed_is_never_sent_and_says_so() -> None:
    body = anthropic().chat_request([ChatMessage.user("x")], GenerationParams(seed=7), stream=False).body or {}
    assert "seed" not in json.dumps(body)
    assert "seed" in AnthropicProvider.ignored_options


def live(server: FakeServer, key: str) -> AnthropicProvider:
    llm = (LLMBuilder().backend("anthropic").api_key(key).base_url(server.url_for("anthropic"))
           .max_retries(3).build())
    assert isinstance(llm, AnthropicProvider)
    return llm


def test_e2e_an_invalid_request_error_event_is_not_retried(fake_server: FakeServer) -> None:
    key = "sk-ant-stream-invalid-0123456789"
    prompt = "x y [[fault:error_event]] [[shape:invalid_request]]"
    with pytest.raises(errors.BadRequestError, match="invalid_request_error"):
        live(fake_server, key).stream([ChatMessage.user(prompt)]).collect()
    assert fake_server.stats(key).requests == 1


def test_e2e_an_overloaded_event_after_a_text_chunk_is_not_retried(fake_server: FakeServer) -> None:
    key = "sk-ant-stream-overloaded-0123456789"
    # The event follows the first text delta (the first attempt only): text already handed out
    # cannot be taken back, so the stream fails rather than starting over.
    with pytest.raises(errors.OverloadedError):
        live(fake_server, key).stream([ChatMessage.user("x y [[fault:error_event:1]]")]).collect()
    assert fake_server.stats(key).requests == 1


def test_e2e_thinking_delivered_counts_as_delivered(fake_server: FakeServer) -> None:
    key = "sk-ant-stream-thinking-0123456789"
    stream = live(fake_server, key).stream([ChatMessage.user("x y [[fault:error_event:1]]")],
                                           GenerationParams(reasoning_budget_tokens=1024))
    reasoning: list[str] = []
    with pytest.raises(errors.OverloadedError):
        for chunk in stream:
            reasoning.append(chunk.reasoning)
    # The first chunk was thinking, not text: it was handed out, so no second attempt repeats it.
    assert reasoning == ["Thinking: "]
    assert fake_server.stats(key).requests == 1


def test_e2e_chat_and_stream_agree_on_thinking(fake_server: FakeServer) -> None:
    llm = live(fake_server, "sk-ant-agree-0123456789")
    params = GenerationParams(reasoning_budget_tokens=1024)
    chat = llm.chat([ChatMessage.user("why is the sky blue")], params)
    streamed = llm.stream([ChatMessage.user("why is the sky blue")], params).collect()
    assert chat.reasoning == streamed.reasoning == "Thinking: why is the sky blue"
    assert chat.text == streamed.text == "Echo: why is the sky blue"
    assert chat.usage == streamed.usage
