"""Requests with tools, images and tool results, in each vendor's documented shape (pure request
building: nothing is sent)."""

from __future__ import annotations

from typing import Any

import pytest

from evalpipe import ChatMessage, GenerationParams, Image, LLMBuilder, Provider, Tool, ToolCall, errors

PNG = b"\x89PNG\r\n\x1a\n0000"
TIME = Tool("get_time", "The time.", {"type": "object", "properties": {"zone": {"type": ["string", "null"]}}})
CALLS = (ToolCall("call_1", "get_time", {"zone": "CET"}), ToolCall("call_2", "get_time", {"zone": "UTC"}))
HISTORY = [ChatMessage.user("time?", [Image.from_bytes(PNG)]), ChatMessage.assistant("", CALLS),
           ChatMessage.tool_result("call_1", "12:00"), ChatMessage.tool_result("call_2", "11:00")]


def body(backend: str, params: GenerationParams, messages: list[ChatMessage] = HISTORY) -> dict[str, Any]:
    builder = LLMBuilder().backend(backend)
    llm: Provider = (builder if backend == "ollama" else builder.api_key("sk-wire-0123456789")).build()
    request = llm.chat_request(llm._with_system(messages, params), params, stream=False)
    assert request.body is not None
    return request.body


def test_openai_shapes() -> None:
    sent = body("openai", GenerationParams(tools=(TIME,), tool_choice="get_time"))
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_time", "parameters": TIME.parameters, "description": "The time."}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    user, assistant, first, second = sent["messages"]
    assert user["content"] == [{"type": "text", "text": "time?"},
                               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgowMDAw"}}]
    assert assistant == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "CET"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}]}
    assert (first, second) == ({"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
                               {"role": "tool", "tool_call_id": "call_2", "content": "11:00"})


def test_mistral_says_any_for_required() -> None:
    assert body("mistral", GenerationParams(tools=(TIME,), tool_choice="required"))["tool_choice"] == "any"
    assert body("openai", GenerationParams(tools=(TIME,), tool_choice="required"))["tool_choice"] == "required"


def test_anthropic_shapes_put_parallel_results_in_one_user_turn() -> None:
    sent = body("anthropic", GenerationParams(tools=(TIME,), tool_choice="required"))
    assert sent["tools"] == [{"name": "get_time", "description": "The time.", "input_schema": TIME.parameters}]
    assert sent["tool_choice"] == {"type": "any"}
    user, assistant, results = sent["messages"]
    assert user["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgowMDAw"}},
        {"type": "text", "text": "time?"}]
    assert assistant["content"] == [{"type": "tool_use", "id": "call_1", "name": "get_time", "input": {"zone": "CET"}},
                                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"zone": "UTC"}}]
    assert results == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "12:00"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "11:00"}]}
    with pytest.raises(errors.ConfigError, match="json_schema"):
        body("anthropic", GenerationParams(tools=(TIME,), json_schema={"type": "object"}))


def test_gemini_shapes() -> None:
    signed = ChatMessage.assistant("", (ToolCall("call_1", "get_time", {"zone": "CET"}, signature="c2ln"),))
    sent = body("google", GenerationParams(tools=(TIME,), tool_choice="get_time"),
                [HISTORY[0], signed, ChatMessage.tool_result("call_1", "12:00")])
    # The JSON Schema becomes a Gemini Schema (a null type is `nullable`).
    assert sent["tools"] == [{"functionDeclarations": [{"name": "get_time", "description": "The time.", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string", "nullable": True}}}}]}]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}
    user, model, results = sent["contents"]
    assert user["parts"] == [{"text": "time?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgowMDAw"}}]
    call = {"id": "call_1", "name": "get_time", "args": {"zone": "CET"}}
    assert model == {"role": "model", "parts": [{"functionCall": call, "thoughtSignature": "c2ln"}]}
    # The function's name comes from the call the result answers.
    assert results == {"role": "user", "parts": [{"functionResponse": {
        "name": "get_time", "response": {"result": "12:00"}, "id": "call_1"}}]}


def test_gemini_reads_the_signature_it_must_get_back() -> None:
    llm = LLMBuilder().backend("google").api_key("sk-wire-0123456789").build()
    answer = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_time", "args": {"zone": "CET"}}, "thoughtSignature": "c2ln"}]},
        "finishReason": "STOP"}]}
    response = llm.parse_chat(answer)
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == [ToolCall("call_0", "get_time", {"zone": "CET"}, signature="c2ln")]
    assert response.tool_calls[0].signature == "c2ln"


def test_ollama_shapes() -> None:
    named = [*HISTORY[:2], ChatMessage.tool_result("call_1", "12:00", name="get_time")]
    sent = body("ollama", GenerationParams(tools=(TIME,)), named)
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_time", "parameters": TIME.parameters, "description": "The time."}}]
    user, assistant, result = sent["messages"]
    assert user == {"role": "user", "content": "time?", "images": ["iVBORw0KGgowMDAw"]}
    assert assistant["tool_calls"][0] == {"function": {"name": "get_time", "arguments": {"zone": "CET"}}}
    assert result == {"role": "tool", "content": "12:00", "tool_name": "get_time"}
    assert "tools" not in body("ollama", GenerationParams(tools=(TIME,), tool_choice="none"), named)


def test_duplicate_tool_names_are_refused() -> None:
    with pytest.raises(errors.ConfigError, match="offered more than once: get_time"):
        body("openai", GenerationParams(tools=(TIME, TIME)))
