"""Every part of an answer (text, reasoning, refusal, safety, usage by kind, finish reason) lands in
the same place whether the answer was streamed or not, whatever the network's chunk boundaries.

The bodies come from the fake server (real HTTP, the request built by the provider itself); the
plain body goes through `parse_chat`, the streamed one through the provider's decoder cut at
arbitrary points. Each case also states what the answer must hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalpipe import ChatMessage, GenerationParams, LLMBuilder
from evalpipe.backends.base import Provider, StreamState
from evalpipe.testing import FakeServer
from evalpipe.types import ChatResponse, Usage

VENDOR = {"anthropic": "anthropic", "google": "gemini", "ollama": "ollama"}


@dataclass(frozen=True)
class Case:
    backend: str
    prompt: str
    params: GenerationParams
    text: str | None  # None: any text (a refusal's words are the fake's to choose)
    finish: str
    reasoning: str | None = None
    usage: dict[str, int] = field(default_factory=dict)  # the Usage fields this case pins down
    safety_keys: tuple[str, ...] = ()


THINK = GenerationParams(reasoning_budget_tokens=2048)
CASES = [
    Case("anthropic", "hello there", THINK, "Echo: hello there", "stop", reasoning="Thinking: hello there",
         usage={"output_tokens": 3 + 3, "reasoning_tokens": 0}),
    Case("anthropic", "hi [[shape:redacted_thinking]]", THINK, "Echo: hi", "stop",
         reasoning="Thinking: hi[redacted thinking]"),
    Case("anthropic", "hi [[shape:redacted_thinking]]", GenerationParams(), "Echo: hi", "stop",
         reasoning="[redacted thinking]"),
    Case("anthropic", "say no [[shape:refusal]]", GenerationParams(), None, "refusal"),
    Case("anthropic", "weather? [[shape:tool_call]]", GenerationParams(), "Echo: weather?", "tool_calls"),
    Case("anthropic", "a b c d e f [[cached:3]] [[cache_write:2]]", GenerationParams(),
         "Echo: a b c d e f", "stop",
         usage={"input_tokens": 8, "cached_input_tokens": 3, "cache_write_input_tokens": 2}),
    Case("google", "hello there", THINK, "Echo: hello there", "stop", reasoning="Thinking: hello there",
         usage={"input_tokens": 2, "output_tokens": 3 + 3, "reasoning_tokens": 3}),
    Case("google", "bad words [[shape:content_filter]]", GenerationParams(), "", "content_filter",
         safety_keys=("finishReason", "safetyRatings"), usage={"output_tokens": 0}),
    Case("google", "bad prompt [[shape:blocked_prompt]]", GenerationParams(), "", "content_filter",
         safety_keys=("blockReason", "safetyRatings")),
    Case("google", "weather? [[shape:tool_call]]", GenerationParams(), "Echo: weather?", "tool_calls"),
    Case("google", "a b c d [[cached:3]]", GenerationParams(), "Echo: a b c d", "stop",
         usage={"input_tokens": 5, "cached_input_tokens": 3}),
    Case("ollama", "hello there", GenerationParams(reasoning_effort="high"), "Echo: hello there", "stop",
         reasoning="Thinking: hello there", usage={"output_tokens": 6}),
    Case("ollama", "weather? [[shape:tool_call]]", GenerationParams(), "Echo: weather?", "tool_calls"),
]
IDS = [f"{c.backend}-{c.prompt}-{'params' if c.params != GenerationParams() else 'plain'}" for c in CASES]


@pytest.fixture(scope="module")
def srv() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


def provider(srv: FakeServer, backend: str) -> Provider:
    builder = LLMBuilder().backend(backend).base_url(srv.url_for(VENDOR[backend]))
    return (builder if backend == "ollama" else builder.api_key("sk-parts-0123456789")).build()


def fetch(srv: FakeServer, case: Case, *, stream: bool) -> bytes:
    """The raw body the fake sends for this case, to the request the provider builds."""
    llm = provider(srv, case.backend)
    request = llm.chat_request([ChatMessage.user(case.prompt)], case.params, stream=stream)
    url = srv.url_for(VENDOR[case.backend]).rstrip("/") + "/" + request.path
    answer = httpx.post(url, json=request.body, params=request.query, headers=llm.auth_headers())
    assert answer.status_code == 200, answer.text
    return answer.content


def fold(llm: Provider, body: bytes, cuts: list[int]) -> ChatResponse:
    decoder, state = llm.stream_decoder(), StreamState()
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    for event in [e for piece in pieces for e in decoder.feed(piece)] + decoder.flush():
        llm.read_stream_event(event, state)
    assert state.done
    return state.to_response(0.0, None, 1)


def check(case: Case, response: ChatResponse) -> None:
    assert response.text == case.text if case.text is not None else response.text
    assert response.finish_reason == case.finish
    assert response.reasoning == case.reasoning
    # Anthropic has no refusal field: what the model said before stopping with "refusal" is it.
    assert response.refusal == (response.text if case.finish == "refusal" else None)
    for name, value in case.usage.items():
        assert getattr(response.usage, name) == value, name
    if case.safety_keys:
        assert response.safety is not None and set(case.safety_keys) <= set(response.safety)
    else:
        assert response.safety is None


def parts(response: ChatResponse) -> tuple[Any, ...]:
    return (response.text, response.reasoning, response.finish_reason, response.refusal,
            json.dumps(response.safety, sort_keys=True), response.usage)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_plain_answer_holds_every_part(srv: FakeServer, case: Case) -> None:
    llm = provider(srv, case.backend)
    check(case, llm.parse_chat(json.loads(fetch(srv, case, stream=False))))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
def test_the_stream_agrees_with_the_plain_answer_at_any_chunk_boundaries(
    srv: FakeServer, case: Case, cuts: list[int]
) -> None:
    llm = provider(srv, case.backend)
    streamed = fold(llm, fetch(srv, case, stream=True), cuts)
    check(case, streamed)
    plain = llm.parse_chat(json.loads(fetch(srv, case, stream=False)))
    assert parts(streamed) == parts(plain)


def test_usage_convention_input_is_all_input_and_output_all_output(srv: FakeServer) -> None:
    # Anthropic leaves cache reads and writes out of input_tokens; Gemini leaves thoughts out of
    # candidatesTokenCount. In evalpipe's convention both are inside. (The fake counts words,
    # markers included: 8 input words, 7 answer words.)
    cached = next(c for c in CASES if c.backend == "anthropic" and "cached" in c.prompt)
    usage = provider(srv, "anthropic").parse_chat(json.loads(fetch(srv, cached, stream=False))).usage
    assert usage == Usage(input_tokens=8, output_tokens=7, cached_input_tokens=3, cache_write_input_tokens=2)
    thinking = next(c for c in CASES if c.backend == "google" and c.params == THINK)
    usage = provider(srv, "google").parse_chat(json.loads(fetch(srv, thinking, stream=False))).usage
    assert usage == Usage(input_tokens=2, output_tokens=6, reasoning_tokens=3)
