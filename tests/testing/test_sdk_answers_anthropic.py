"""The official anthropic SDK reads every shape of answer the fake sends: thinking, redacted
thinking, tool use, refusals and prompt-cache usage, plain and streamed."""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import pytest

from evalpipe.testing import FakeServer

MODEL = "claude-3-5-haiku-latest"
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}


def client(server: FakeServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url_for("anthropic"), api_key=f"sk-{uuid.uuid4().hex[:12]}",
                               max_retries=0)


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def test_thinking_and_redacted_thinking_blocks(fake_server: FakeServer) -> None:
    message = client(fake_server).messages.create(
        model=MODEL, max_tokens=2048, thinking=THINKING, messages=user("why [[shape:redacted_thinking]]"))
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "redacted_thinking", "text"]
    thinking, redacted, text = message.content
    assert isinstance(thinking, anthropic.types.ThinkingBlock) and thinking.thinking == "Thinking: why"
    assert thinking.signature
    assert isinstance(redacted, anthropic.types.RedactedThinkingBlock) and redacted.data
    assert isinstance(text, anthropic.types.TextBlock) and text.text == "Echo: why"


def test_streamed_thinking_signature_and_tool_input(fake_server: FakeServer) -> None:
    with client(fake_server).messages.stream(
        model=MODEL, max_tokens=2048, thinking=THINKING, messages=user("weather? [[shape:tool_call]]")
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert {"thinking", "signature", "text", "input_json"} <= set(events)
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    tool = final.content[2]
    assert isinstance(tool, anthropic.types.ToolUseBlock) and tool.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    thinking = final.content[0]
    assert isinstance(thinking, anthropic.types.ThinkingBlock) and thinking.signature


@pytest.mark.parametrize("stream", [False, True])
def test_refusal_and_cache_usage(fake_server: FakeServer, stream: bool) -> None:
    prompt = "a b c d e [[shape:refusal]] [[cached:3]] [[cache_write:1]]"
    sdk = client(fake_server)
    if stream:
        with sdk.messages.stream(model=MODEL, max_tokens=100, messages=user(prompt)) as events:
            message = events.get_final_message()
    else:
        message = sdk.messages.create(model=MODEL, max_tokens=100, messages=user(prompt))
    assert message.stop_reason == "refusal"
    usage = message.usage
    # 8 words sent; Anthropic reports the cache reads and writes apart from input_tokens.
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (4, 3, 1)


def test_thinking_rules_are_enforced_like_the_api(fake_server: FakeServer) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client(fake_server).messages.create(model=MODEL, max_tokens=1024, thinking=THINKING, messages=user("x"))
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        client(fake_server).messages.create(model=MODEL, max_tokens=2048, thinking=THINKING,
                                            extra_body={"temperature": 0.2}, messages=user("x"))


def test_an_invalid_request_error_event_in_a_stream(fake_server: FakeServer) -> None:
    prompt = "a b [[fault:error_event]] [[shape:invalid_request]]"
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client(fake_server).messages.stream(model=MODEL, max_tokens=50, messages=user(prompt)) as stream,
    ):
        "".join(stream.text_stream)
    assert "invalid_request_error" in str(caught.value)
