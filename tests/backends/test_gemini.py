"""Gemini's REST protocol: requests, schema translation, answers, SSE folding, errors (pure, no network)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalpipe import ChatMessage, GenerationParams, LLMBuilder, Provider, errors
from evalpipe.backends.base import StreamState
from evalpipe.backends.framing import SSEDecoder, SSEEvent
from evalpipe.backends.gemini import GeminiProvider, finish_reason, response_schema
from evalpipe.testing import FakeServer

FIXTURES = Path(__file__).parent / "fixtures"
KEY = "AIzaSyTEST-key-0123456789abcdef"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def gemini(**options: Any) -> GeminiProvider:
    builder = LLMBuilder().backend("google").api_key(KEY).model("gemini-2.5-flash")
    for name, value in options.items():
        builder.option(name, value)
    provider = builder.build()
    assert isinstance(provider, GeminiProvider)
    return provider


CONVERSATION = [ChatMessage.system("be brief"), ChatMessage.user("hi"), ChatMessage.assistant("Hello!"),
                ChatMessage.user("what is AI?")]


def test_key_travels_in_a_header_never_in_the_url() -> None:
    llm = gemini()
    assert llm.auth_headers() == {"x-goog-api-key": KEY}
    requests = [llm.chat_request(CONVERSATION, GenerationParams(), stream=s) for s in (False, True)]
    for request in [*requests, llm.embed_request(["a"])]:
        assert KEY not in request.path and "key" not in (request.query or {})


def test_the_key_comes_from_gemini_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(errors.ConfigError, match="GEMINI_API_KEY"):
        LLMBuilder().backend("gemini").build()
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    assert LLMBuilder().backend("gemini").build().auth_headers() == {"x-goog-api-key": KEY}


def test_chat_request_places_the_system_prompt_and_renames_roles() -> None:
    request = gemini().chat_request(CONVERSATION, GenerationParams(), stream=False)
    assert request.path == "models/gemini-2.5-flash:generateContent" and not request.query
    assert request.body == {
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "what is AI?"}]},
        ],
    }


def test_stream_uses_the_sse_route() -> None:
    llm = LLMBuilder().backend("google").api_key(KEY).model("models/gemini-2.5-pro").build()
    request = llm.chat_request(CONVERSATION, GenerationParams(), stream=True)
    assert request.path == "models/gemini-2.5-pro:streamGenerateContent"
    assert request.query == {"alt": "sse"}


@pytest.mark.parametrize(("base_url", "path"), [
    ("https://generativelanguage.googleapis.com/v1beta", "models/gemini-2.5-flash:generateContent"),
    ("https://generativelanguage.googleapis.com/v1/", "models/gemini-2.5-flash:generateContent"),
    ("https://generativelanguage.googleapis.com", "v1beta/models/gemini-2.5-flash:generateContent"),
    ("http://127.0.0.1:8000/gemini", "v1beta/models/gemini-2.5-flash:generateContent"),
])
def test_the_base_url_may_carry_the_api_version_or_not(base_url: str, path: str) -> None:
    # The REST docs include the version in the base URL; the google-genai SDK's base_url does not.
    llm = LLMBuilder().backend("google").api_key(KEY).base_url(base_url).model("gemini-2.5-flash").build()
    assert llm.chat_request(CONVERSATION, GenerationParams(), stream=False).path == path


def test_generation_config_uses_gemini_names() -> None:
    params = GenerationParams(temperature=0.3, top_p=0.8, top_k=20, max_tokens=100, seed=5, stop=("END",))
    body = gemini().chat_request(CONVERSATION, params, stream=False).body
    assert body is not None
    assert body["generationConfig"] == {"temperature": 0.3, "topP": 0.8, "topK": 20, "maxOutputTokens": 100,
                                        "stopSequences": ["END"], "seed": 5}


def test_json_schema_becomes_response_mime_type_and_schema() -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": False}
    config = gemini().generation_config(GenerationParams(json_schema=schema))
    assert config == {"responseMimeType": "application/json",
                      "responseSchema": {"type": "object", "properties": {"name": {"type": "string"}},
                                         "required": ["name"]}}
    assert gemini().generation_config(GenerationParams(json_schema={})) == {
        "responseMimeType": "application/json"}


def test_schema_translation_strips_rejected_keys_at_every_depth_but_keeps_property_names() -> None:
    schema = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "additionalProperties": {"type": "string"},  # a user's field name, not the keyword
            "tags": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                "properties": {"k": {"type": "string", "const": "x"}}}},
        },
    }
    assert response_schema(schema) == {
        "type": "object",
        "properties": {
            "additionalProperties": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "object",
                                                "properties": {"k": {"type": "string", "enum": ["x"]}}}},
        },
    }


def test_schema_translation_inlines_refs_and_turns_null_into_nullable() -> None:
    # The shape pydantic emits for `class Person(BaseModel): pet: Pet | None; nick: str | None`.
    schema = {
        "$defs": {"Pet": {"title": "Pet", "type": "object", "properties": {"name": {"type": "string"}}}},
        "title": "Person", "type": "object",
        "properties": {
            "pet": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}], "description": "optional pet"},
            "nick": {"type": ["string", "null"]},
            "id": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        },
    }
    assert response_schema(schema) == {
        "title": "Person", "type": "object",
        "properties": {
            "pet": {"title": "Pet", "type": "object", "properties": {"name": {"type": "string"}},
                    "description": "optional pet", "nullable": True},
            "nick": {"type": "string", "nullable": True},
            "id": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        },
    }


def test_schema_translation_stops_at_recursive_refs() -> None:
    schema = {"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
              "$ref": "#/$defs/Node"}
    assert response_schema(schema) == {"type": "object", "properties": {"next": {}}}


def test_parse_documented_answer() -> None:
    response = gemini().parse_chat(fixture("gemini_generate.json"))
    assert response.text == "AI learns patterns from data to make predictions."
    assert response.finish_reason == "stop"
    assert response.model == "gemini-2.5-flash"
    # Thinking tokens are billed as output tokens.
    assert (response.usage.input_tokens, response.usage.output_tokens) == (8, 10 + 12)


def test_thought_parts_are_kept_apart_from_the_answer() -> None:
    response = gemini().parse_chat(fixture("gemini_thinking.json"))
    assert response.text == "9.8 is larger."
    assert response.reasoning is not None and response.reasoning.startswith("**Comparing decimals**")


def test_a_blocked_prompt_is_an_empty_filtered_answer() -> None:
    response = gemini().parse_chat(fixture("gemini_blocked_prompt.json"))
    assert (response.text, response.finish_reason) == ("", "content_filter")
    assert response.usage.input_tokens == 7


@pytest.mark.parametrize("body", [{}, {"candidates": []}, [], {"usageMetadata": {}}])
def test_answers_without_candidates_are_protocol_errors(body: Any) -> None:
    with pytest.raises(errors.ProtocolError):
        gemini().parse_chat(body)


@pytest.mark.parametrize(("reason", "expected"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
    ("RECITATION", "content_filter"), ("BLOCKLIST", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("MALFORMED_FUNCTION_CALL", "malformed_function_call"), ("OTHER", "other"), (None, None),
])
def test_finish_reasons_are_normalised(reason: str | None, expected: str | None) -> None:
    assert finish_reason(reason) == expected


def sse(events: list[Any]) -> bytes:
    # Gemini ends every event with a blank line written as \r\n\r\n.
    return b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\r\n\r\n" for e in events)


def fold(events: list[Any], cuts: Sequence[int] = ()) -> tuple[StreamState, list[str]]:
    llm, decoder, state = gemini(), SSEDecoder(), StreamState()
    body = sse(events)
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    decoded = [e for piece in pieces for e in decoder.feed(piece)] + decoder.flush()
    texts = [chunk.text for e in decoded if (chunk := llm.read_stream_event(e, state)) is not None]
    return state, texts


def test_stream_folds_documented_events() -> None:
    state, texts = fold(fixture("gemini_stream.json"))
    assert texts == ["AI learns", " patterns from data — ", "then predicts."]
    assert state.done and state.finish_reason == "stop"
    assert (state.input_tokens, state.output_tokens) == (8, 9)
    assert state.model == "gemini-2.5-flash"


@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_stream_text_does_not_depend_on_chunk_boundaries(cuts: list[int]) -> None:
    state, _ = fold(fixture("gemini_stream.json"), cuts)
    assert "".join(state.text) == "AI learns patterns from data — then predicts."
    assert state.done


def test_a_stream_cut_before_the_finish_reason_is_not_finished() -> None:
    # No end event exists: the finishReason is the only sign the answer is whole.
    state, texts = fold(fixture("gemini_stream.json")[:2])
    assert texts == ["AI learns", " patterns from data — "]
    assert not state.done


def test_a_blocked_prompt_ends_the_stream() -> None:
    state, texts = fold([fixture("gemini_blocked_prompt.json")])
    assert texts == [] and state.done and state.finish_reason == "content_filter"


@pytest.mark.parametrize(("event", "expected"), [
    ({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE"}}, errors.OverloadedError),
    ({"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}},
     errors.ServerError),
    (fixture("gemini_error_rate_limit.json"), errors.RateLimitError),
])
def test_an_error_event_inside_the_stream_is_classified(event: dict[str, Any], expected: type) -> None:
    with pytest.raises(expected):
        fold([fixture("gemini_stream.json")[0], event])


def test_a_malformed_event_is_a_protocol_error() -> None:
    with pytest.raises(errors.ProtocolError):
        gemini().read_stream_event(SSEEvent("message", '{"candidates": ['), StreamState())


def test_a_per_minute_429_is_a_rate_limit_with_the_retry_delay_despite_saying_quota() -> None:
    error = gemini().classify_error(429, fixture("gemini_error_rate_limit.json"), {})
    assert type(error) is errors.RateLimitError
    assert error.retry_after == 34.0 and error.status == 429


def test_a_per_day_429_is_quota_exhaustion() -> None:
    error = gemini().classify_error(429, fixture("gemini_error_daily_quota.json"), {})
    assert type(error) is errors.QuotaExceededError and not error.retryable


def test_a_bare_resource_exhausted_is_a_rate_limit() -> None:
    body = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                      "status": "RESOURCE_EXHAUSTED"}}
    assert type(gemini().classify_error(429, body, {})) is errors.RateLimitError


def test_a_quota_failure_with_no_retry_info_is_quota_exhaustion() -> None:
    violation = {"quotaMetric": "generate_content_paid_tier_input_token_count"}
    failure = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [failure],
                      "message": "You exceeded your current quota"}}
    assert type(gemini().classify_error(429, body, {})) is errors.QuotaExceededError


def test_an_invalid_key_is_an_authentication_error_although_the_status_is_400() -> None:
    error = gemini().classify_error(400, fixture("gemini_error_api_key.json"), {})
    assert type(error) is errors.AuthenticationError
    assert "API key not valid" in error.message and KEY not in error.message


def test_a_missing_key_is_an_authentication_error_although_the_status_is_403() -> None:
    body = {"error": {"code": 403, "status": "PERMISSION_DENIED", "message":
                      "Method doesn't allow unregistered callers (callers without established identity)."}}
    assert type(gemini().classify_error(403, body, {})) is errors.AuthenticationError
    denied = {"error": {"code": 403, "status": "PERMISSION_DENIED",
                        "message": "The caller does not have permission"}}
    assert type(gemini().classify_error(403, denied, {})) is errors.PermissionDeniedError


@pytest.mark.parametrize(("status", "body", "expected"), [
    (503, {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
     errors.OverloadedError),
    (400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "The input token count (1200000) "
                     "exceeds the maximum number of tokens allowed (1048576)."}},
     errors.ContextLengthError),
    (404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "models/gemini-9 is not found"}},
     errors.NotFoundError),
])
def test_other_errors_follow_the_shared_rules(status: int, body: Any, expected: type) -> None:
    assert type(gemini().classify_error(status, body, {})) is expected


def test_embeddings_are_one_batch_request() -> None:
    request = gemini().embed_request(["first", "second"])
    assert request.path == "models/gemini-embedding-001:batchEmbedContents"
    assert request.body == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "first"}]}},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "second"}]}},
    ]}
    custom = gemini(embedding_model="models/text-embedding-005").embed_request(["x"])
    assert custom.path == "models/text-embedding-005:batchEmbedContents"
    vectors = gemini().parse_embed(fixture("gemini_batch_embed.json"))
    assert len(vectors) == 2 and vectors[0][:2] == pytest.approx([0.013168523, -0.008711934])
    with pytest.raises(errors.ProtocolError):
        gemini().parse_embed({"embedding": {"values": [1.0]}})


# ---- end to end, against the fake provider server ---------------------------------------------
# Chat, stream, complete, embed, every fault, retries and timeouts of every backend are covered by
# test_on_fake_server.py (with a versioned base URL); these are the Gemini-specific paths.


@pytest.fixture(scope="module")
def srv() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


def live(srv: FakeServer, *, key: str = KEY) -> Provider:
    # The fake's base URL is the SDK-style bare root: the provider adds the API version itself.
    return LLMBuilder().backend("google").api_key(key).base_url(srv.url_for("gemini")).max_retries(0).build()


def test_e2e_chat_and_stream_on_a_bare_base_url(srv: FakeServer) -> None:
    llm = live(srv)
    assert llm.chat([ChatMessage.user("hello there")]).text == "Echo: hello there"
    stream = llm.stream([ChatMessage.user("one two")])
    assert "".join(chunk.text for chunk in stream) == "Echo: one two"
    assert stream.response is not None and stream.response.finish_reason == "stop"


def test_e2e_a_json_schema_with_rejected_keys_still_works(srv: FakeServer) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    answer = live(srv).chat([ChatMessage.user("where?")], GenerationParams(json_schema=schema))
    assert isinstance(json.loads(answer.text)["city"], str)


def test_e2e_embeddings_are_one_request(srv: FakeServer) -> None:
    srv.reset()
    vectors = live(srv).embed(["red apple", "green apple", "tax law"])
    assert len(vectors) == 3 and all(len(v) == 64 for v in vectors)
    assert srv.stats(KEY).requests == 1


def test_e2e_an_invalid_key_is_an_authentication_error_that_hides_the_key(srv: FakeServer) -> None:
    key = "invalid-AIzaSyE2E-0123456789abcdef"
    with pytest.raises(errors.AuthenticationError) as caught:
        live(srv, key=key).chat([ChatMessage.user("hi")])
    assert key not in str(caught.value) and key not in repr(caught.value)


def test_a_blocked_prompt_keeps_its_feedback_as_safety_detail() -> None:
    response = gemini().parse_chat(fixture("gemini_blocked_prompt.json"))
    assert response.safety == {"blockReason": "SAFETY", "safetyRatings": [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]}


def test_a_safety_stop_without_content_is_filtered_with_its_ratings() -> None:
    response = gemini().parse_chat(fixture("gemini_safety_stop.json"))
    assert (response.text, response.finish_reason) == ("", "content_filter")
    assert response.safety is not None and response.safety["finishReason"] == "SAFETY"
    assert {"category": "HARM_CATEGORY_HARASSMENT", "probability": "MEDIUM", "blocked": True} in (
        response.safety["safetyRatings"])


def test_usage_by_kind_thoughts_are_output_and_cached_content_is_input() -> None:
    response = gemini().parse_chat(fixture("gemini_function_call_cached.json"))
    usage = response.usage
    assert (usage.input_tokens, usage.cached_input_tokens) == (2100, 2048)
    assert (usage.output_tokens, usage.reasoning_tokens) == (12 + 30, 30)


def test_a_function_call_is_not_text_and_finishes_with_tool_calls() -> None:
    response = gemini().parse_chat(fixture("gemini_function_call_cached.json"))
    assert (response.text, response.finish_reason) == ("", "tool_calls")


def test_thought_parts_and_their_tokens_are_reasoning() -> None:
    response = gemini().parse_chat(fixture("gemini_thinking.json"))
    assert "Comparing decimals" not in response.text
    assert (response.usage.output_tokens, response.usage.reasoning_tokens) == (5 + 40, 40)


@pytest.mark.parametrize(("params", "expected"), [
    (GenerationParams(reasoning_effort="low"), {"thinkingLevel": "low", "includeThoughts": True}),
    (GenerationParams(reasoning_budget_tokens=0), {"thinkingBudget": 0, "includeThoughts": True}),
    (GenerationParams(reasoning_budget_tokens=4096), {"thinkingBudget": 4096, "includeThoughts": True}),
])
def test_reasoning_controls_become_the_thinking_config(params: GenerationParams, expected: Any) -> None:
    body = gemini().chat_request([ChatMessage.user("x")], params, stream=False).body or {}
    assert body["generationConfig"]["thinkingConfig"] == expected


def test_a_thinking_level_and_a_budget_together_are_refused_before_sending() -> None:
    with pytest.raises(errors.ConfigError, match="not both"):
        gemini().chat_request([ChatMessage.user("x")], GenerationParams(
            reasoning_effort="high", reasoning_budget_tokens=1000), stream=False)


def test_tool_use_prompt_tokens_are_input_too() -> None:
    body = fixture("gemini_function_call_cached.json")
    body["usageMetadata"] = {"promptTokenCount": 100, "toolUsePromptTokenCount": 50, "candidatesTokenCount": 10,
                             "totalTokenCount": 160}
    usage = gemini().parse_chat(body).usage
    assert (usage.input_tokens, usage.output_tokens) == (150, 10)
    assert usage.total_tokens == body["usageMetadata"]["totalTokenCount"]
