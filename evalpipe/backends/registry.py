"""Which provider class serves which backend: adding a backend is one module plus one line here."""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import TYPE_CHECKING

from evalpipe.errors import ConfigError

if TYPE_CHECKING:
    from evalpipe.backends.base import Provider


class LLMBackend(StrEnum):
    """The backends evalpipe speaks to; the value is the name used in job files."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OLLAMA = "ollama"
    DEEPSEEK = "deepseek"
    PHIND = "phind"
    GOOGLE = "google"
    XAI = "xai"
    GROQ = "groq"
    MISTRAL = "mistral"
    OPENROUTER = "openrouter"
    AZURE_OPENAI = "azure_openai"
    LOCAL = "local"


# Imported on first use, so a backend's module costs nothing until someone uses it.
PROVIDERS: dict[LLMBackend, str] = {
    LLMBackend.OPENAI: "evalpipe.backends.openai:OpenAIProvider",
    LLMBackend.ANTHROPIC: "evalpipe.backends.anthropic:AnthropicProvider",
    LLMBackend.OLLAMA: "evalpipe.backends.ollama:OllamaProvider",
    LLMBackend.DEEPSEEK: "evalpipe.backends.openai_compatible:DeepSeekProvider",
    LLMBackend.PHIND: "evalpipe.backends.phind:PhindProvider",
    LLMBackend.GOOGLE: "evalpipe.backends.gemini:GeminiProvider",
    LLMBackend.XAI: "evalpipe.backends.openai_compatible:XAIProvider",
    LLMBackend.GROQ: "evalpipe.backends.openai_compatible:GroqProvider",
    LLMBackend.MISTRAL: "evalpipe.backends.openai_compatible:MistralProvider",
    LLMBackend.OPENROUTER: "evalpipe.backends.openai_compatible:OpenRouterProvider",
    LLMBackend.AZURE_OPENAI: "evalpipe.backends.openai_compatible:AzureOpenAIProvider",
    LLMBackend.LOCAL: "evalpipe.backends.local:LocalProvider",
}


def parse_backend(value: LLMBackend | str) -> LLMBackend:
    """The backend named by `value` ("openai", "OPENAI", LLMBackend.OPENAI, "azure-openai")."""
    if isinstance(value, LLMBackend):
        return value
    normalized = value.strip().lower().replace("-", "_")
    aliases = {"gemini": "google", "azure": "azure_openai", "grok": "xai", "llamacpp": "local"}
    try:
        return LLMBackend(aliases.get(normalized, normalized))
    except ValueError:
        known = ", ".join(b.value for b in LLMBackend)
        raise ConfigError(f"unknown backend {value!r}; expected one of: {known}") from None


def provider_class(backend: LLMBackend) -> type[Provider]:
    """The provider class for `backend`."""
    module_name, _, class_name = PROVIDERS[backend].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls
