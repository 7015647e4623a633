"""Ollama's native protocol: request building, answers, NDJSON stream folding (pure, no network)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalpipe import ChatMessage, GenerationParams, LLMBuilder, errors
from evalpipe.backends.base import StreamState
from evalpipe.backends.framing import NDJSONDecoder
from evalpipe.backends.ollama import OllamaProvider, finish_reason
from evalpipe.testing import FakeServer

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def ollama(**options: Any) -> OllamaProvider:
    builder = LLMBuilder().backend("ollama").model("llama3.2")
    for name, value in options.items():
        builder.option(name, value)
    provider = builder.build()
    assert isinstance(provider, OllamaProvider)
    return provider


MESSAGES = [ChatMessage.system("be brief"), ChatMessage.user("why is the sky blue?")]


def test_needs_no_key_and_defaults_to_the_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    llm = LLMBuilder().backend("ollama").build()
    assert llm.config.base_url == "http://localhost:11434/"
    assert llm.auth_headers() == {}
    # ollama.com's cloud takes a Bearer key.
    cloud = LLMBuilder().backend("ollama").base_url("https://ollama.com").api_key("ollama-key-123").build()
    assert cloud.auth_headers() == {"Authorization": "Bearer ollama-key-123"}


@pytest.mark.parametrize("stream", [False, True])
def test_chat_request_always_says_whether_to_stream(stream: bool) -> None:
    request = ollama().chat_request(MESSAGES, GenerationParams(), stream=stream)
    assert request.path == "api/chat"
    # The server streams when `stream` is missing, so `false` must be explicit.
    assert request.body == {
        "model": "llama3.2",
        "stream": stream,
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "why is the sky blue?"}],
    }


def test_sampling_parameters_go_under_options_with_ollama_names() -> None:
    params = GenerationParams(temperature=0.2, top_p=0.9, top_k=40, max_tokens=64, seed=7, stop=("\n\n",))
    body = ollama(num_ctx=8192, keep_alive="10m").chat_request(MESSAGES, params, stream=False).body
    assert body is not None
    assert body["options"] == {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 64,
                               "seed": 7, "stop": ["\n\n"], "num_ctx": 8192}
    assert body["keep_alive"] == "10m"
    assert "max_tokens" not in body and "temperature" not in body


def test_json_schema_goes_to_format_and_an_empty_one_means_plain_json() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    body = ollama().chat_request(MESSAGES, GenerationParams(json_schema=schema), stream=False).body
    assert body is not None and body["format"] == schema
    body = ollama().chat_request(MESSAGES, GenerationParams(json_schema={}), stream=False).body
    assert body is not None and body["format"] == "json"


def test_complete_is_a_raw_generate_unless_a_system_prompt_needs_the_template() -> None:
    plain = ollama().complete_request("Once upon a time", GenerationParams(max_tokens=5))
    assert plain.path == "api/generate"
    assert plain.body == {"model": "llama3.2", "stream": False, "options": {"num_predict": 5},
                          "prompt": "Once upon a time", "raw": True}
    with_system = ollama().complete_request("Hi", GenerationParams(system="You are terse."))
    assert with_system.body is not None
    assert with_system.body["system"] == "You are terse." and with_system.body["raw"] is False
    forced = ollama(raw=False).complete_request("Hi", GenerationParams())
    assert forced.body is not None and forced.body["raw"] is False


def test_parse_documented_chat_answer() -> None:
    response = ollama().parse_chat(fixture("ollama_chat.json"))
    assert response.text == "Hello! How are you today?"
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (26, 298)
    assert response.model == "llama3.2"
    assert response.reasoning is None


def test_parse_documented_generate_answer() -> None:
    response = ollama().parse_complete(fixture("ollama_generate.json"))
    assert response.text == "The sky is blue because it is the color of the sky."
    assert (response.usage.input_tokens, response.usage.output_tokens) == (26, 290)


def test_thinking_is_kept_apart_from_the_answer() -> None:
    body = {**fixture("ollama_chat.json"),
            "message": {"role": "assistant", "content": "42", "thinking": "6 times 7"}}
    response = ollama().parse_chat(body)
    assert (response.text, response.reasoning) == ("42", "6 times 7")


@pytest.mark.parametrize(("done_reason", "expected"), [
    ("stop", "stop"), ("length", "length"), ("LENGTH", "length"), ("load", "load"), (None, None), ("", None),
])
def test_finish_reason_is_normalised(done_reason: str | None, expected: str | None) -> None:
    assert finish_reason({"done": True, "done_reason": done_reason}) == expected


@pytest.mark.parametrize("body", [{}, [], {"message": "not an object"}, "text"])
def test_malformed_answers_are_protocol_errors(body: Any) -> None:
    with pytest.raises(errors.ProtocolError):
        ollama().parse_chat(body)


def test_an_error_object_is_never_an_answer() -> None:
    with pytest.raises(errors.ServerError):
        ollama().parse_chat({"error": "llama runner process has terminated"})


def ndjson(lines: list[Any]) -> bytes:
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)


def fold(lines: list[Any], cuts: Sequence[int] = ()) -> tuple[StreamState, list[str]]:
    """Decode the NDJSON body of `lines`, split at `cuts`, and fold it as the base does."""
    llm, decoder, state = ollama(), NDJSONDecoder(), StreamState()
    body = ndjson(lines)
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    events = [e for piece in pieces for e in decoder.feed(piece)] + decoder.flush()
    texts = [chunk.text for e in events if (chunk := llm.read_stream_event(e, state)) is not None]
    return state, texts


def test_stream_folds_the_documented_lines() -> None:
    state, texts = fold(fixture("ollama_chat_stream.json"))
    assert texts == ["The", " sky is", " blue ☁️."]
    assert state.done and state.finish_reason == "length"
    assert (state.input_tokens, state.output_tokens) == (26, 282)
    assert state.model == "llama3.2"


@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_stream_text_does_not_depend_on_chunk_boundaries(cuts: list[int]) -> None:
    state, _ = fold(fixture("ollama_chat_stream.json"), cuts)
    assert "".join(state.text) == "The sky is blue ☁️."


def test_stream_without_the_done_line_is_not_finished() -> None:
    state, texts = fold(fixture("ollama_chat_stream.json")[:-1])
    assert texts == ["The", " sky is", " blue ☁️."]
    assert not state.done  # the base turns this into a ConnectionError
    assert state.finish_reason is None


def test_generate_stream_lines_carry_response() -> None:
    lines = [{"model": "llama3.2", "response": "Once", "done": False},
             {"model": "llama3.2", "response": "", "done": True, "done_reason": "stop", "eval_count": 1}]
    state, texts = fold(lines)
    assert texts == ["Once"] and state.done and state.output_tokens == 1


@pytest.mark.parametrize(("line", "expected"), [
    ({"error": "an unknown error was encountered while running the model"}, errors.ServerError),
    ({"error": "server overloaded, please retry"}, errors.OverloadedError),
])
def test_an_error_line_inside_a_200_stream_is_classified(line: dict[str, Any], expected: type) -> None:
    lines = fixture("ollama_chat_stream.json")[:2]
    with pytest.raises(expected):
        fold([*lines, line])


def test_http_errors_are_classified_from_ollamas_string_errors() -> None:
    error = ollama().classify_error(404, {"error": 'model "nope" not found, try pulling it first'}, {})
    assert isinstance(error, errors.NotFoundError)
    assert "try pulling it first" in error.message


def test_an_exhausted_cloud_plan_is_quota_not_a_rate_limit() -> None:
    plan = {"error": "you (someone) have reached your weekly usage limit, upgrade for higher limits"}
    assert type(ollama().classify_error(429, plan, {})) is errors.QuotaExceededError
    assert type(ollama().classify_error(429, {"error": "too many requests"}, {})) is errors.RateLimitError


def test_embed_request_and_answer() -> None:
    request = ollama(embedding_model="all-minilm").embed_request(["a", "b"])
    assert request.path == "api/embed"
    assert request.body == {"model": "all-minilm", "input": ["a", "b"]}
    assert ollama().embed_request(["a"]).body == {"model": "llama3.2", "input": ["a"]}
    vectors = ollama().parse_embed(fixture("ollama_embed.json"))
    assert len(vectors) == 2 and vectors[1][0] == pytest.approx(-0.0098027075)
    with pytest.raises(errors.ProtocolError):
        ollama().parse_embed({"embedding": [0.1]})


# ---- end to end, against the fake provider server ---------------------------------------------
# Chat, stream, complete, embed, every fault, retries and timeouts of every backend are covered by
# test_on_fake_server.py; these are the Ollama-specific paths.


@pytest.fixture(scope="module")
def srv() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


def test_e2e_json_schema_travels_as_format(srv: FakeServer) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    llm = LLMBuilder().backend("ollama").base_url(srv.url_for("ollama")).json_schema(schema).build()
    answer = llm.chat([ChatMessage.user("where?")])
    assert isinstance(json.loads(answer.text)["city"], str)


def test_e2e_embeddings_use_the_embedding_model(srv: FakeServer) -> None:
    srv.reset()
    llm = LLMBuilder().backend("ollama").base_url(srv.url_for("ollama")).embedding_model("nomic-embed-text")
    vectors = llm.build().embed(["red apple", "green apple", "tax law"])
    assert len(vectors) == 3 and all(len(v) == 64 for v in vectors)
    assert srv.stats("").requests == 1  # one request for all texts; Ollama calls count under ""


def test_thinking_is_reasoning_and_tool_calls_are_not_text() -> None:
    response = ollama().parse_chat(fixture("ollama_chat_thinking_tools.json"))
    assert response.text == ""
    assert response.reasoning == "The user asks for the weather in Toronto, so I call the tool."
    # Ollama says "stop" for a turn that called tools; evalpipe says why it stopped.
    assert response.finish_reason == "tool_calls"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (122, 33)


def test_a_streamed_tool_call_finishes_with_tool_calls() -> None:
    llm, state = ollama(), StreamState()
    lines = [{"model": "qwen3", "message": {"role": "assistant", "content": "", "tool_calls": [
                 {"function": {"name": "f", "arguments": {"a": 1}}}]}, "done": False},
             {"model": "qwen3", "message": {"role": "assistant", "content": ""}, "done": True,
              "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 4}]
    assert [llm.read_stream_event(line, state) for line in lines] == [None, None]
    assert (state.finish_reason, "".join(state.text)) == ("tool_calls", "")


@pytest.mark.parametrize(("params", "think"), [
    (GenerationParams(reasoning_effort="medium"), "medium"),
    (GenerationParams(reasoning_budget_tokens=2048), None),  # Ollama has no budget: never sent
    (GenerationParams(), None),
])
def test_an_effort_level_becomes_think(params: GenerationParams, think: str | None) -> None:
    body = ollama().chat_request([ChatMessage.user("x")], params, stream=False).body or {}
    assert body.get("think") == think
    assert "2048" not in json.dumps(body)
