"""The official ollama SDK reads the fake's thinking and tool calls, plain and streamed."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import pytest

from evalpipe.testing import FakeServer


@pytest.fixture
def sdk(fake_server: FakeServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=fake_server.url_for("ollama")) as client:
        yield client


def test_thinking_plain_and_streamed(sdk: ollama.Client) -> None:
    messages = [{"role": "user", "content": "why so"}]
    response = sdk.chat(model="qwen3", messages=messages, think=True)
    assert (response.message.thinking, response.message.content) == ("Thinking: why so", "Echo: why so")
    assert response.eval_count == 3 + 3  # thinking is generated output too
    chunks = list(sdk.chat(model="gpt-oss", messages=messages, think="high", stream=True))
    assert "".join(c.message.thinking or "" for c in chunks) == "Thinking: why so"
    assert "".join(c.message.content for c in chunks) == "Echo: why so"
    generated = sdk.generate(model="qwen3", prompt="why so", think=True)
    assert (generated.thinking, generated.response) == ("Thinking: why so", "Echo: why so")


def test_tool_calls_plain_and_streamed(sdk: ollama.Client) -> None:
    messages = [{"role": "user", "content": "weather? [[shape:tool_call]]"}]
    response = sdk.chat(model="qwen3", messages=messages)
    calls = response.message.tool_calls or []
    assert [(call.function.name, dict(call.function.arguments)) for call in calls] == [
        ("get_weather", {"city": "Paris"})]
    streamed = [call for chunk in sdk.chat(model="qwen3", messages=messages, stream=True)
                for call in chunk.message.tool_calls or []]
    assert [call.function.name for call in streamed] == ["get_weather"]
