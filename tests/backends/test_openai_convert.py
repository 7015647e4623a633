"""Every part of an OpenAI-family answer lands in its field: documented examples, plain and streamed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evalpipe import LLMBuilder, Provider, errors
from evalpipe.backends.base import StreamState
from evalpipe.backends.classify import classify_status
from evalpipe.backends.framing import SSEDecoder, SSEEvent
from evalpipe.types import ChatResponse, Usage

FIXTURES = Path(__file__).parent / "fixtures"


def provider(backend: str) -> Provider:
    return LLMBuilder().backend(backend).api_key("sk-test-key-0123456789").base_url("http://h/v1").build()


def parse(backend: str, fixture: str) -> ChatResponse:
    return provider(backend).parse_chat(json.loads((FIXTURES / fixture).read_text()))


def test_openai_refusal_is_kept_with_its_own_finish_reason() -> None:
    response = parse("openai", "openai_refusal.json")
    assert response.text == ""
    assert response.refusal == "I'm sorry, I cannot assist with that request."
    assert response.finish_reason == "refusal"  # the wire says "stop", which hides the refusal


def test_openai_usage_by_kind() -> None:
    usage = parse("openai", "openai_reasoning_usage.json").usage
    # OpenAI's completion_tokens already include the reasoning tokens.
    assert usage == Usage(input_tokens=2006, output_tokens=1186, reasoning_tokens=1024, cached_input_tokens=1920)


def test_tool_calls_are_not_text() -> None:
    response = parse("openai", "openai_tool_calls.json")
    assert (response.text, response.finish_reason, response.reasoning) == ("", "tool_calls", None)


def test_xai_bills_reasoning_on_top_of_completion_tokens() -> None:
    usage = parse("xai", "xai_reasoning_usage.json").usage
    assert usage.output_tokens == 50 + 124  # all billed output: total_tokens 837 = 663 + 50 + 124
    assert (usage.reasoning_tokens, usage.cached_input_tokens, usage.input_tokens) == (124, 654, 663)
    assert usage.total_tokens == 837


def test_groq_reasoning_field() -> None:
    response = parse("groq", "groq_reasoning.json")
    assert (response.text, response.reasoning) == ("The answer is 4.", "The user asks for 2+2. That is 4.")
    assert (response.usage.output_tokens, response.usage.reasoning_tokens) == (33, 17)


def test_openrouter_reasoning_is_taken_once_not_from_both_fields() -> None:
    response = parse("openrouter", "openrouter_reasoning.json")
    assert response.reasoning == "The capital of France is Paris."
    assert response.text == "Paris."


def test_openrouter_encrypted_reasoning_is_not_shown() -> None:
    response = parse("openrouter", "openrouter_encrypted_reasoning.json")
    assert response.reasoning == "Computed the product."  # the summary; the encrypted entry is hidden
    assert response.usage.reasoning_tokens == 64


def test_mistral_thinking_chunks_make_text_a_string() -> None:
    response = parse("mistral", "mistral_magistral.json")
    assert response.text == "The answer is 42." and isinstance(response.text, str)
    assert response.reasoning == "Reasoning traces..."


def test_azure_content_filter_verdict_is_the_safety_detail() -> None:
    response = parse("azure_openai", "azure_content_filter.json")
    assert response.finish_reason == "content_filter" and response.text == ""
    assert response.safety is not None
    assert response.safety["content_filter_results"]["violence"] == {"filtered": True, "severity": "medium"}
    assert response.safety["prompt_filter_results"][0]["prompt_index"] == 0


def test_azure_prompt_refused_by_the_filter_is_a_bad_request_with_its_verdict() -> None:
    body = json.loads((FIXTURES / "azure_content_filter_error.json").read_text())
    error = classify_status("azure_openai", 400, body, {})
    assert type(error) is errors.BadRequestError and not error.retryable
    assert error.safety is not None and error.safety["jailbreak"] == {"filtered": True, "detected": True}
    assert "jailbreak" in error.message and "content_filter" in error.message


def test_deepseek_cache_hits_are_cached_input() -> None:
    body = json.loads((FIXTURES / "deepseek_reasoner.json").read_text())
    body["usage"].update(prompt_cache_hit_tokens=8, prompt_cache_miss_tokens=4,
                         completion_tokens_details={"reasoning_tokens": 30})
    usage = provider("deepseek").parse_chat(body).usage
    assert usage == Usage(input_tokens=12, output_tokens=40, reasoning_tokens=30, cached_input_tokens=8)


# -- streams ---------------------------------------------------------------------------------------
def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return json.dumps({"model": "m", "choices": choices, **extra})


def fold(backend: str, events: list[str]) -> ChatResponse:
    llm, state = provider(backend), StreamState()
    for data in [*events, "[DONE]"]:
        llm.read_stream_event(SSEEvent("message", data), state)
    return state.to_response(0.0, None, 1)


def test_stream_reasoning_in_every_shape() -> None:
    groq = fold("groq", [chunk({"reasoning": "think "}), chunk({"reasoning": "hard"}), chunk({"content": "4"})])
    assert (groq.reasoning, groq.text) == ("think hard", "4")
    detail = {"type": "reasoning.text", "text": "why"}
    both = chunk({"reasoning": "why", "reasoning_details": [detail]})
    openrouter = fold("openrouter", [both, chunk({"content": "ok"})])
    assert (openrouter.reasoning, openrouter.text) == ("why", "ok")
    thinking = {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]}
    mistral = fold("mistral", [chunk({"content": [thinking]}), chunk({"content": [{"type": "text", "text": "42"}]})])
    assert (mistral.reasoning, mistral.text) == ("hmm", "42")


def test_stream_refusal_and_tool_calls() -> None:
    refused = fold("openai", [chunk({"role": "assistant", "content": "", "refusal": None}),
                              chunk({"refusal": "I can't "}), chunk({"refusal": "help."}), chunk({}, "stop")])
    assert (refused.text, refused.refusal, refused.finish_reason) == ("", "I can't help.", "refusal")
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    tool = fold("openai", [chunk({"content": None, "tool_calls": [call]}),
                           chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                           chunk({}, "tool_calls")])
    assert (tool.text, tool.finish_reason, tool.refusal) == ("", "tool_calls", None)


def test_stream_usage_kinds_and_azure_filters() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 9,
             "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 3}}
    xai = fold("xai", [chunk({"content": "Hi"}), chunk({}, "stop", usage=usage)])
    assert xai.usage == Usage(5, 4, 3, 2)  # xAI: 1 completion token + 3 reasoning tokens billed
    filters = {"violence": {"filtered": True, "severity": "high"}}
    azure = fold("azure_openai", [
        json.dumps({"choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}),
        json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter",
                                 "content_filter_results": filters}]}),
    ])
    assert azure.finish_reason == "content_filter"
    assert azure.safety == {"prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
                            "content_filter_results": filters}


def test_encrypted_reasoning_counts_as_delivered() -> None:
    state = StreamState()
    entry = {"type": "reasoning.encrypted", "data": "gAAA"}
    chunk_out = provider("openrouter").read_stream_event(
        SSEEvent("message", chunk({"reasoning": None, "reasoning_details": [entry]})), state)
    assert chunk_out is None and state.delivered  # nothing to show, but a retry would resend paid output


MIXED_STREAM = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"reasoning": "Ä \u2028 step", "reasoning_details": [{"type": "reasoning.text", "text": "Ä \u2028 step"}]}),
    chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": " more"}]}]}),
    chunk({"content": "Answer "}),
    chunk({"content": [{"type": "text", "text": "ünïcode"}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
    chunk({}, "stop", usage={"prompt_tokens": 3, "completion_tokens": 4}),
]


def sse_body(events: list[str], newline: str) -> bytes:
    text = "".join(f": keep-alive{newline}{newline}data: {e}{newline}{newline}" for e in [*events, "[DONE]"])
    return text.encode()


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, 100_000), max_size=16), newline=st.sampled_from(["\n", "\r\n"]),
       backend=st.sampled_from(["openrouter", "mistral", "groq"]))
def test_mixed_shapes_do_not_depend_on_chunk_boundaries(cuts: list[int], newline: str, backend: str) -> None:
    body = sse_body(MIXED_STREAM, newline)
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    llm, decoder, state = provider(backend), SSEDecoder(), StreamState()
    for event in [e for piece in pieces for e in decoder.feed(piece)] + decoder.flush():
        llm.read_stream_event(event, state)
    response = state.to_response(0.0, None, 1)
    assert (response.text, response.reasoning) == ("Answer ünïcode", "Ä \u2028 step more")
    assert state.done and response.usage == Usage(3, 4)


def test_tool_calls_are_parsed_from_the_documented_example() -> None:
    response = parse("openai", "openai_tool_calls.json")
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_abc123", "get_current_weather", {"location": "Boston, MA"})]


def test_streamed_tool_call_fragments_assemble_with_or_without_index() -> None:
    def head(index: int | None, call_id: str, name: str) -> dict[str, object]:
        entry: dict[str, object] = {"id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        return entry if index is None else {"index": index, **entry}

    def piece(index: int | None, text: str) -> dict[str, object]:
        return {"function": {"arguments": text}} if index is None else {"index": index, "function": {"arguments": text}}

    for index in (0, None):  # some compatible servers leave `index` out: a new id is a new call
        second = None if index is None else 1
        folded = fold("openai", [chunk({"tool_calls": [head(index, "call_a", "f")]}),
                                 chunk({"tool_calls": [piece(index, '{"x": ')]}),
                                 chunk({"tool_calls": [piece(index, "1}")]}),
                                 chunk({"tool_calls": [head(second, "call_b", "g")]}),
                                 chunk({"tool_calls": [piece(second, '{"y": 2')]}),
                                 chunk({}, "tool_calls")])
        assert [(c.id, c.name, c.arguments, c.raw_arguments) for c in folded.tool_calls] == [
            ("call_a", "f", {"x": 1}, None), ("call_b", "g", None, '{"y": 2')]
