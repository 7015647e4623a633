"""The official SDKs (openai, anthropic, ollama, google-genai) call tools, send tool results and send
images to the fake server, plain and streamed, and read its answers with their own parsers."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import ollama
import openai
import pytest
from google import genai
from google.genai import types

from evalpipe.testing import FakeServer, tiny_png

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CLAUDE = "claude-3-5-haiku-latest"
PARALLEL = 'both [[tool:get_time:{"zone": "CET"}]] [[tool:get_weather:{"city": "Oslo"}]]'




def key() -> str:
    return f"sk-{uuid.uuid4().hex[:12]}"


# -- OpenAI ---------------------------------------------------------------------------------------
OPENAI_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


def test_openai_sdk_tool_calls_plain_streamed_and_results(fake_server: FakeServer) -> None:
    client = openai.OpenAI(base_url=fake_server.url_for("openai"), api_key=key(), max_retries=0)
    question: dict[str, Any] = {"role": "user", "content": PARALLEL}
    response = client.chat.completions.create(model="gpt-4o-mini", messages=[question], tools=OPENAI_TOOLS)
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "tool_calls" and message.content is None
    calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or [] if c.type == "function"]
    assert calls == [("get_time", '{"zone": "CET"}'), ("get_weather", '{"city": "Oslo"}')]
    with client.chat.completions.stream(model="gpt-4o-mini", messages=[question], tools=OPENAI_TOOLS) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in streamed if c.type == "function"] == calls
    results = [{"role": "tool", "tool_call_id": c.id, "content": answer}
               for c, answer in zip(message.tool_calls or [], ["12:00", "sunny"], strict=True)]
    history = [question, message.model_dump(exclude_none=True), *results]
    after = client.chat.completions.create(model="gpt-4o-mini", messages=history, tools=OPENAI_TOOLS)
    assert (after.choices[0].message.content, after.choices[0].finish_reason) == ("Result: 12:00 | sunny", "stop")
    forced = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                            tools=OPENAI_TOOLS, tool_choice={"type": "function",
                                                                             "function": {"name": "get_time"}})
    assert [c.function.name for c in forced.choices[0].message.tool_calls or [] if c.type == "function"] == [
        "get_time"]


def test_openai_sdk_rejects_a_tool_result_without_a_call(fake_server: FakeServer) -> None:
    client = openai.OpenAI(base_url=fake_server.url_for("openai"), api_key=key(), max_retries=0)
    with pytest.raises(openai.BadRequestError, match="role 'tool'"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "sunny"}])


def test_openai_sdk_sends_an_image(fake_server: FakeServer) -> None:
    client = openai.OpenAI(base_url=fake_server.url_for("openai"), api_key=key(), max_retries=0)
    url = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    content: Any = [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": url}}]
    response = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": content}])
    assert response.choices[0].message.content == "Echo: what is it [image: image/png]"


# -- Anthropic ------------------------------------------------------------------------------------
ANTHROPIC_TOOLS: list[Any] = [
    {"name": "get_weather", "description": "Weather.", "input_schema": WEATHER_SCHEMA},
    {"name": "get_time", "description": "Time.", "input_schema": {"type": "object", "properties": {}}},
]


def test_anthropic_sdk_tool_use_plain_streamed_and_results(fake_server: FakeServer) -> None:
    client = anthropic.Anthropic(base_url=fake_server.url_for("anthropic"), api_key=key(), max_retries=0)
    question: Any = {"role": "user", "content": PARALLEL}
    message = client.messages.create(model=CLAUDE, max_tokens=100, messages=[question],
                                     tools=ANTHROPIC_TOOLS)
    uses = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use"
    assert [(u.name, u.input) for u in uses] == [("get_time", {"zone": "CET"}), ("get_weather", {"city": "Oslo"})]
    with client.messages.stream(model=CLAUDE, max_tokens=100, messages=[question],
                                tools=ANTHROPIC_TOOLS) as stream:
        final = stream.get_final_message()
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [(u.name, u.input) for u in uses]
    results: Any = [{"type": "tool_result", "tool_use_id": u.id, "content": text}
                    for u, text in zip(uses, ["12:00", "sunny"], strict=True)]
    history: Any = [question, {"role": "assistant", "content": message.content}, {"role": "user", "content": results}]
    after = client.messages.create(model=CLAUDE, max_tokens=100, messages=history, tools=ANTHROPIC_TOOLS)
    assert [b.text for b in after.content if b.type == "text"] == ["Result: 12:00 | sunny"]
    forced = client.messages.create(model=CLAUDE, max_tokens=100, tools=ANTHROPIC_TOOLS,
                                    messages=[{"role": "user", "content": "hi"}],
                                    tool_choice={"type": "tool", "name": "get_weather"})
    assert [(b.type, getattr(b, "input", None)) for b in forced.content] == [("tool_use", {"city": "text"})]


def test_anthropic_sdk_sends_an_image(fake_server: FakeServer) -> None:
    client = anthropic.Anthropic(base_url=fake_server.url_for("anthropic"), api_key=key(), max_retries=0)
    image: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                              "data": base64.b64encode(tiny_png()).decode()}}
    message = client.messages.create(model=CLAUDE, max_tokens=100, messages=[
        {"role": "user", "content": [image, {"type": "text", "text": "what is it"}]}])
    assert [b.text for b in message.content if b.type == "text"] == ["Echo: what is it [image: image/png]"]


# -- Ollama ---------------------------------------------------------------------------------------
@pytest.fixture
def ollama_sdk(fake_server: FakeServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=fake_server.url_for("ollama")) as client:
        yield client


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    return "sunny"


def test_ollama_sdk_tool_calls_and_results(ollama_sdk: ollama.Client) -> None:
    question = {"role": "user", "content": "weather?"}
    response = ollama_sdk.chat(model="qwen3", messages=[question], tools=[get_weather])
    calls = response.message.tool_calls or []
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("get_weather", {"city": "text"})]
    streamed = [c for chunk in ollama_sdk.chat(model="qwen3", messages=[question], tools=[get_weather], stream=True)
                for c in chunk.message.tool_calls or []]
    assert [c.function.name for c in streamed] == ["get_weather"]
    history = [question, response.message, {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    after = ollama_sdk.chat(model="qwen3", messages=history, tools=[get_weather])
    assert (after.message.content, after.message.tool_calls) == ("Result: sunny", None)


def test_ollama_sdk_sends_an_image(ollama_sdk: ollama.Client) -> None:
    message = {"role": "user", "content": "what is it", "images": [tiny_png()]}
    response = ollama_sdk.chat(model="llava", messages=[message])
    assert response.message.content == "Echo: what is it [image: image/png]"


# -- Gemini ---------------------------------------------------------------------------------------
def gemini(server: FakeServer) -> genai.Client:
    options = types.HttpOptions(base_url=server.url_for("gemini"), retry_options=types.HttpRetryOptions(attempts=1))
    return genai.Client(api_key=key(), http_options=options)


GEMINI_TOOLS = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[
    types.FunctionDeclaration(name="get_weather", description="Weather.", parameters_json_schema=WEATHER_SCHEMA),
    types.FunctionDeclaration(name="get_time", description="Time."),
])])


def test_gemini_sdk_function_calls_and_responses(fake_server: FakeServer) -> None:
    sdk = gemini(fake_server)
    response = sdk.models.generate_content(model="gemini-2.5-flash", contents=PARALLEL, config=GEMINI_TOOLS)
    calls = response.function_calls or []
    assert [(c.name, c.args) for c in calls] == [("get_time", {"zone": "CET"}), ("get_weather", {"city": "Oslo"})]
    streamed = [c for chunk in sdk.models.generate_content_stream(model="gemini-2.5-flash", contents=PARALLEL,
                                                                  config=GEMINI_TOOLS)
                for c in chunk.function_calls or []]
    assert [c.name for c in streamed] == ["get_time", "get_weather"]
    assert response.candidates and response.candidates[0].content
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text=PARALLEL)]),
        response.candidates[0].content,
        types.Content(role="user", parts=[
            types.Part.from_function_response(name="get_time", response={"result": "12:00"}),
            types.Part.from_function_response(name="get_weather", response={"result": "sunny"})]),
    ]
    after = sdk.models.generate_content(model="gemini-2.5-flash", contents=history, config=GEMINI_TOOLS)
    assert (after.text, after.function_calls) == ("Result: 12:00 | sunny", None)
    forced = sdk.models.generate_content(model="gemini-2.5-flash", contents="hi", config=GEMINI_TOOLS.model_copy(
        update={"tool_config": types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_weather"]))}))
    assert [(c.name, c.args) for c in forced.function_calls or []] == [("get_weather", {"city": "text"})]


def test_gemini_sdk_sends_an_image(fake_server: FakeServer) -> None:
    sdk = gemini(fake_server)
    contents = [types.Part.from_bytes(data=tiny_png(), mime_type="image/png"), "what is it"]
    response = sdk.models.generate_content(model="gemini-2.5-flash", contents=contents)
    assert response.text == "Echo: what is it [image: image/png]"
