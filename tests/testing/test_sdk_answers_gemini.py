"""The official google-genai SDK reads every shape of answer the fake sends: thought parts, usage
with thoughts and cached tokens, safety stops, blocked prompts and function calls."""

from __future__ import annotations

import uuid

from google import genai
from google.genai import types

from evalpipe.testing import FakeServer

MODEL = "gemini-2.5-flash"


def client(server: FakeServer) -> genai.Client:
    options = types.HttpOptions(base_url=server.url_for("gemini"), retry_options=types.HttpRetryOptions(attempts=1))
    return genai.Client(api_key=f"sk-{uuid.uuid4().hex[:12]}", http_options=options)


THOUGHTS = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=512))


def test_thought_parts_and_thought_tokens(fake_server: FakeServer) -> None:
    sdk = client(fake_server)  # held: the SDK closes its connections when the client is collected
    response = sdk.models.generate_content(model=MODEL, contents="why so", config=THOUGHTS)
    assert response.candidates and response.candidates[0].content and response.candidates[0].content.parts
    parts = response.candidates[0].content.parts
    assert [(part.thought, part.text) for part in parts] == [(True, "Thinking: why so"), (None, "Echo: why so")]
    assert response.text == "Echo: why so"  # the SDK leaves thoughts out of .text too
    usage = response.usage_metadata
    assert usage is not None and (usage.candidates_token_count, usage.thoughts_token_count) == (3, 3)
    assert usage.total_token_count == 2 + 3 + 3


def test_streamed_thoughts_come_before_the_answer(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    chunks = list(sdk.models.generate_content_stream(model=MODEL, contents="a b", config=THOUGHTS))
    parts = [part for chunk in chunks if chunk.candidates and chunk.candidates[0].content
             for part in chunk.candidates[0].content.parts or []]
    thoughts = "".join(part.text or "" for part in parts if part.thought)
    answer = "".join(part.text or "" for part in parts if not part.thought)
    assert (thoughts, answer) == ("Thinking: a b", "Echo: a b")
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata.thoughts_token_count == 3


def test_cached_content_tokens(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    response = sdk.models.generate_content(model=MODEL, contents="a b c [[cached:2]]")
    usage = response.usage_metadata
    assert usage is not None and (usage.prompt_token_count, usage.cached_content_token_count) == (4, 2)


def test_a_safety_stop_and_a_blocked_prompt(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    stopped = sdk.models.generate_content(model=MODEL, contents="x [[shape:content_filter]]")
    assert stopped.candidates and stopped.candidates[0].finish_reason == types.FinishReason.SAFETY
    ratings = stopped.candidates[0].safety_ratings or []
    assert any(rating.blocked for rating in ratings)
    assert stopped.text is None
    blocked = sdk.models.generate_content(model=MODEL, contents="x [[shape:blocked_prompt]]")
    assert not blocked.candidates
    assert blocked.prompt_feedback and blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY


def test_a_function_call_part(fake_server: FakeServer) -> None:
    sdk = client(fake_server)
    response = sdk.models.generate_content(model=MODEL, contents="weather? [[shape:tool_call]]")
    calls = response.function_calls or []
    assert [(call.name, call.args) for call in calls] == [("get_weather", {"city": "Paris"})]
