"""Tool calling end to end: evalpipe against the fake server over loopback HTTP, plain and streamed."""

from __future__ import annotations

from itertools import count

import pytest

from evalpipe import ChatMessage, GenerationParams, LLMBuilder, Provider, Tool, ToolCall, errors
from evalpipe.testing import FakeServer
from evalpipe.types import ChatResponse

_keys = count()
WEATHER = Tool("get_weather", "The weather in a city.", {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"]})
TIME = Tool("get_time", "The time in a zone.", {"type": "object", "properties": {"zone": {"type": "string"}}})

# backend, fake vendor, model: every protocol that maps tools
BACKENDS = [
    ("openai", "openai", "gpt-4o-mini"), ("azure_openai", "azure", "gpt-4o-mini"), ("groq", "groq", "m"),
    ("mistral", "mistral", "mistral-small-latest"), ("xai", "xai", "grok-3-mini"), ("deepseek", "deepseek", "m"),
    ("openrouter", "openrouter", "m"), ("anthropic", "anthropic", "claude-3-5-haiku-latest"),
    ("google", "gemini", "gemini-2.0-flash"), ("ollama", "ollama", "qwen3"),
]
IDS = [b[0] for b in BACKENDS]


def build(srv: FakeServer, backend: str, vendor: str, model: str, *tools: Tool) -> Provider:
    builder = LLMBuilder().backend(backend).model(model).base_url(srv.url_for(vendor)).max_retries(0).timeout(5)
    if backend != "ollama":
        builder = builder.api_key(f"sk-tools-{backend}-{next(_keys):06d}")
    return builder.tools(list(tools)).build() if tools else builder.build()


def both(llm: Provider, messages: list[ChatMessage], params: GenerationParams | None = None,
         ) -> tuple[ChatResponse, ChatResponse]:
    """The plain answer and the streamed one."""
    return llm.chat(messages, params), llm.stream(messages, params).collect()


@pytest.mark.parametrize(("backend", "vendor", "model"), BACKENDS, ids=IDS)
def test_offered_tools_are_called_with_valid_arguments(fake_server: FakeServer, backend: str, vendor: str,
                                                       model: str) -> None:
    llm = build(fake_server, backend, vendor, model, WEATHER, TIME)
    for response in both(llm, [ChatMessage.user("weather in Oslo?")]):
        assert response.finish_reason == "tool_calls"
        assert [(c.name, c.arguments, c.raw_arguments) for c in response.tool_calls] == [
            ("get_weather", {"city": "text", "days": 1}, None)]
        assert response.tool_calls[0].id


@pytest.mark.parametrize(("backend", "vendor", "model"), BACKENDS, ids=IDS)
def test_scripted_parallel_calls_keep_their_order_and_arguments(fake_server: FakeServer, backend: str,
                                                                vendor: str, model: str) -> None:
    llm = build(fake_server, backend, vendor, model, WEATHER, TIME)
    prompt = 'both [[tool:get_time:{"zone": "CET"}]] [[tool:get_weather:{"city": "Oslo", "days": 3}]]'
    for response in both(llm, [ChatMessage.user(prompt)]):
        assert [(c.name, c.arguments) for c in response.tool_calls] == [
            ("get_time", {"zone": "CET"}), ("get_weather", {"city": "Oslo", "days": 3})]
        assert len({c.id for c in response.tool_calls}) == 2


@pytest.mark.parametrize(("backend", "vendor", "model"), [b for b in BACKENDS if b[0] not in ("google", "ollama")],
                         ids=[i for i in IDS if i not in ("google", "ollama")])
def test_malformed_arguments_are_kept_raw_never_a_crash(fake_server: FakeServer, backend: str, vendor: str,
                                                        model: str) -> None:
    llm = build(fake_server, backend, vendor, model, WEATHER)
    for response in both(llm, [ChatMessage.user("weather? [[tool:get_weather:malformed]]")]):
        (call,) = response.tool_calls
        assert (call.name, call.arguments, call.raw_arguments) == ("get_weather", None, '{"city": "Par')


def test_gemini_reports_a_malformed_call_as_its_finish_reason(fake_server: FakeServer) -> None:
    llm = build(fake_server, "google", "gemini", "gemini-2.0-flash", WEATHER)
    for response in both(llm, [ChatMessage.user("weather? [[tool:get_weather:malformed]]")]):
        assert (response.tool_calls, response.finish_reason) == ([], "malformed_function_call")


@pytest.mark.parametrize(("backend", "vendor", "model"), BACKENDS, ids=IDS)
def test_tool_results_go_back_and_the_model_answers(fake_server: FakeServer, backend: str, vendor: str,
                                                    model: str) -> None:
    llm = build(fake_server, backend, vendor, model, WEATHER, TIME)
    question = ChatMessage.user('both [[tool:get_time:{"zone": "CET"}]] [[tool:get_weather:{"city": "Oslo"}]]')
    first = llm.chat([question])
    history = [question, ChatMessage.assistant("", first.tool_calls),
               ChatMessage.tool_result(first.tool_calls[0].id, "12:00", name="get_time"),
               ChatMessage.tool_result(first.tool_calls[1].id, "sunny", name="get_weather")]
    for response in both(llm, history):
        assert (response.text, response.tool_calls) == ("Result: 12:00 | sunny", [])
        assert response.finish_reason == "stop"


@pytest.mark.parametrize(("backend", "vendor", "model"), [b for b in BACKENDS if b[0] != "ollama"],
                         ids=[i for i in IDS if i != "ollama"])
def test_tool_choice_forces_a_tool_or_none(fake_server: FakeServer, backend: str, vendor: str, model: str) -> None:
    llm = build(fake_server, backend, vendor, model, WEATHER, TIME)
    forced = llm.chat([ChatMessage.user("what time?")], GenerationParams(tool_choice="get_time"))
    assert [c.name for c in forced.tool_calls] == ["get_time"]
    none = llm.chat([ChatMessage.user("what time?")], GenerationParams(tool_choice="none"))
    assert (none.tool_calls, none.finish_reason) == ([], "stop")


def test_per_call_tools_without_builder_tools(fake_server: FakeServer) -> None:
    llm = build(fake_server, "openai", "openai", "gpt-4o-mini")
    assert llm.chat([ChatMessage.user("hi")]).tool_calls == []
    response = llm.chat([ChatMessage.user("hi")], GenerationParams(tools=(TIME,), tool_choice="required"))
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("get_time", {"zone": "text"})]


def test_a_backend_without_tools_refuses_before_sending(fake_server: FakeServer) -> None:
    llm = LLMBuilder().backend("phind").base_url(fake_server.url_for("phind")).tool("get_time").build()
    before = fake_server.stats().requests
    with pytest.raises(errors.UnsupportedFeatureError, match="phind does not support tool calling"):
        llm.chat([ChatMessage.user("hi")])
    with pytest.raises(errors.UnsupportedFeatureError, match="tool calling"):
        LLMBuilder().backend("phind").build().chat([ChatMessage.tool_result("call_1", "x")])
    assert fake_server.stats().requests == before


def test_ollama_refuses_a_forced_tool_choice_before_sending(fake_server: FakeServer) -> None:
    llm = build(fake_server, "ollama", "ollama", "qwen3", WEATHER)
    with pytest.raises(errors.UnsupportedFeatureError, match="tool_choice"):
        llm.chat([ChatMessage.user("hi")], GenerationParams(tool_choice="required"))
    none = llm.chat([ChatMessage.user("hi")], GenerationParams(tool_choice="none"))
    assert none.tool_calls == []


def test_bad_tool_definitions_are_config_errors() -> None:
    with pytest.raises(errors.ConfigError, match="tool name 'get weather'"):
        LLMBuilder().tool("get weather")
    with pytest.raises(errors.ConfigError, match="needs a 'name'"):
        LLMBuilder().tools([{"description": "no name"}])
    llm = LLMBuilder().backend("openai").api_key("sk-tools-0000000000").tool("get_time").build()
    with pytest.raises(errors.ConfigError, match="tool_choice 'get_weather'"):
        llm.chat([ChatMessage.user("hi")], GenerationParams(tool_choice="get_weather"))


def test_tools_in_every_spelling_make_the_same_tool() -> None:
    schema = {"type": "object", "properties": {"zone": {"type": "string"}}}
    openai = {"type": "function", "function": {"name": "get_time", "description": "d", "parameters": schema}}
    anthropic = {"name": "get_time", "description": "d", "input_schema": schema}
    assert Tool.from_dict(openai) == Tool.from_dict(anthropic) == Tool("get_time", "d", schema)


def test_tool_call_arguments_never_raise() -> None:
    assert ToolCall.from_raw("c", "f", "").arguments == {}
    assert ToolCall.from_raw("c", "f", '{"a": 1}').arguments == {"a": 1}
    broken = ToolCall.from_raw("c", "f", '{"a": ')
    assert (broken.arguments, broken.raw_arguments, broken.arguments_json) == (None, '{"a": ', '{"a": ')


def test_gemini_3_gets_its_thought_signatures_back(fake_server: FakeServer) -> None:
    llm = build(fake_server, "google", "gemini", "gemini-3-pro-preview", TIME)
    question = ChatMessage.user("what time?")
    (call,) = llm.chat([question]).tool_calls
    assert call.signature  # opaque, kept apart from the arguments
    answer = llm.chat([question, ChatMessage.assistant("", [call]), ChatMessage.tool_result(call.id, "12:00")])
    assert answer.text == "Result: 12:00"
    unsigned = ToolCall(call.id, call.name, call.arguments)
    with pytest.raises(errors.BadRequestError, match="thought_signature"):
        llm.chat([question, ChatMessage.assistant("", [unsigned]), ChatMessage.tool_result(call.id, "12:00")])
