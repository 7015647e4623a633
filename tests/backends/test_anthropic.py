"""Anthropic Messages transforms (pure, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalpipe import ChatMessage, GenerationParams, LLMBuilder, errors
from evalpipe.backends.anthropic import AnthropicProvider
from evalpipe.backends.base import StreamState
from evalpipe.backends.framing import SSEEvent

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
