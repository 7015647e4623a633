"""The vendors' batch APIs, one small adapter per family behind `BatchAdapter` (see `base`).

Which backends offer one: OpenAI, Azure OpenAI and Groq (OpenAI's `/files` + `/batches`), Anthropic
(Message Batches) and Google Gemini (`batchGenerateContent`). The others are refused when the job is
loaded, with the reason in `BATCH_REFUSED`."""

from __future__ import annotations

import importlib

from evalpipe.backends.base import Provider
from evalpipe.backends.batch.base import BatchAdapter

# Provider name -> "module:class" of its adapter.
BATCH_ADAPTERS: dict[str, str] = {
    "openai": "evalpipe.backends.batch.openai:OpenAIBatches",
    "azure_openai": "evalpipe.backends.batch.openai:AzureOpenAIBatches",
    "groq": "evalpipe.backends.batch.openai:GroqBatches",
    "anthropic": "evalpipe.backends.batch.anthropic:AnthropicBatches",
    "google": "evalpipe.backends.batch.gemini:GeminiBatches",
}

BATCH_REFUSED: dict[str, str] = {
    "mistral": "Mistral's batch API is not OpenAI's (`/v1/batch/jobs` with the model per job) and is not mapped",
    "deepseek": "DeepSeek offers no batch API",
    "xai": "xAI's batch API is not mapped",
    "openrouter": "OpenRouter offers no batch API",
    "ollama": "Ollama runs on your machine: there is no batch discount to have",
    "local": "the local model runs on your machine: there is no batch discount to have",
    "phind": "Phind offers no batch API",
}


def batch_offered(backend: str) -> str | None:
    """None when `backend` (a provider name) has a batch adapter; else why it cannot run in batch mode."""
    if backend in BATCH_ADAPTERS:
        return None
    return BATCH_REFUSED.get(backend, f"{backend} has no batch API mapped")


def adapter_class(backend: str) -> type[BatchAdapter]:
    """The batch adapter class of `backend` (a provider name with an adapter): its defaults are class attributes."""
    module_name, _, class_name = BATCH_ADAPTERS[backend].partition(":")
    cls: type[BatchAdapter] = getattr(importlib.import_module(module_name), class_name)
    return cls


def batch_adapter(provider: Provider) -> BatchAdapter:
    """The batch adapter for `provider`'s vendor, speaking through it."""
    return adapter_class(provider.name)(provider)


__all__ = ["BATCH_ADAPTERS", "BATCH_REFUSED", "BatchAdapter", "adapter_class", "batch_adapter", "batch_offered"]
