"""`ignored_options` is complete: every generation option either changes the request a backend
sends or is listed as ignored by it (so rows never record an option as if it mattered)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from evalpipe import ChatMessage, GenerationParams, LLMBuilder, Tool, UnsupportedFeatureError
from evalpipe.backends.base import Provider

# One value per option that every backend in this file accepts on its own.
SAMPLES = {
    "temperature": 1.0, "top_p": 0.97, "top_k": 7, "max_tokens": 4321, "seed": 7, "stop": ("STOP",),
    "system": "Be terse.", "json_schema": {"type": "object"}, "reasoning_effort": "low",
    "reasoning_budget_tokens": 2048, "tools": (Tool("get_weather"),), "tool_choice": "required",
}
# Passed through as they are by the shared engine, not mapped by a protocol.
PASSED_THROUGH = {"extra_body", "headers"}
BACKENDS = ["anthropic", "google", "ollama", "phind"]


def build(backend: str) -> Provider:
    builder = LLMBuilder().backend(backend)
    return (builder if backend in ("ollama", "phind") else builder.api_key("sk-options-0123456789")).build()


def body(llm: Provider, params: GenerationParams) -> str:
    messages = llm._with_system([ChatMessage.user("hi")], params)
    return json.dumps(llm.chat_request(messages, params, stream=False).body, sort_keys=True)


def test_every_option_has_a_sample() -> None:
    assert {f.name for f in fields(GenerationParams)} == set(SAMPLES) | PASSED_THROUGH


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("option", sorted(SAMPLES))
def test_an_option_is_sent_or_listed_as_ignored(backend: str, option: str) -> None:
    llm = build(backend)
    params = GenerationParams(**{option: SAMPLES[option]})  # type: ignore[arg-type]
    if option == "json_schema" and not llm.supports_json_schema:
        pytest.skip(f"{backend} refuses a JSON schema outright")
    if option.startswith("tool"):
        params = GenerationParams(**{"tools": SAMPLES["tools"], option: SAMPLES[option]})  # type: ignore[arg-type]
        try:
            body(llm, params)
        except UnsupportedFeatureError:
            pytest.skip(f"{backend} refuses {option} outright")
        if option == "tool_choice":  # measured against the same tools offered without a choice
            assert body(llm, params) != body(llm, GenerationParams(tools=SAMPLES["tools"]))  # type: ignore[arg-type]
            return
    sent = body(llm, params) != body(llm, GenerationParams())
    assert sent != (option in llm.ignored_options), (
        f"{backend}: {option} is {'sent' if sent else 'not sent'} but "
        f"{'listed' if option in llm.ignored_options else 'not listed'} in ignored_options")
