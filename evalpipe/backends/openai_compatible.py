"""Vendors that speak OpenAI's protocol, each overriding only what differs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalpipe import errors
from evalpipe.backends.base import HttpRequest
from evalpipe.backends.openai import OpenAIProvider
from evalpipe.types import ChatMessage, GenerationParams


class DeepSeekProvider(OpenAIProvider):
    """DeepSeek; the reasoner's `reasoning_content` is kept apart from the answer."""

    name = "deepseek"
    default_base_url = "https://api.deepseek.com"
    default_model = "deepseek-chat"
    api_key_env = "DEEPSEEK_API_KEY"
    max_tokens_field = "max_tokens"
    supports_embeddings = False  # DeepSeek offers no embeddings endpoint

    def response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        # DeepSeek knows only JSON mode, not schemas: the answer is valid JSON but the schema is
        # not enforced by the server (a json_schema scorer can check it).
        return {"type": "json_object"}


class XAIProvider(OpenAIProvider):
    """xAI (Grok); usage arrives on the chunk that carries the finish reason."""

    name = "xai"
    default_base_url = "https://api.x.ai/v1"
    default_model = "grok-3-mini"
    default_embedding_model = "v1"
    api_key_env = "XAI_API_KEY"
    max_tokens_field = "max_tokens"


class GroqProvider(OpenAIProvider):
    """Groq's OpenAI-compatible endpoint."""

    name = "groq"
    default_base_url = "https://api.groq.com/openai/v1"
    default_model = "llama-3.1-8b-instant"
    api_key_env = "GROQ_API_KEY"
    max_tokens_field = "max_tokens"
    supports_embeddings = False


class MistralProvider(OpenAIProvider):
    """Mistral: `random_seed` instead of `seed`, flat error bodies, `mistral-embed`."""

    name = "mistral"
    default_base_url = "https://api.mistral.ai/v1"
    default_model = "mistral-small-latest"
    default_embedding_model = "mistral-embed"
    api_key_env = "MISTRAL_API_KEY"
    max_tokens_field = "max_tokens"
    seed_field = "random_seed"


class OpenRouterProvider(OpenAIProvider):
    """OpenRouter; sends keep-alive comments and reports late failures as events under 200."""

    name = "openrouter"
    default_base_url = "https://openrouter.ai/api/v1"
    default_model = "openai/gpt-4o-mini"
    api_key_env = "OPENROUTER_API_KEY"
    max_tokens_field = "max_tokens"
    top_k_field = "top_k"
    ignored_options = frozenset()


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: `api-key` header, deployment routes with `api-version`.

    The base URL is the resource endpoint (`https://NAME.openai.azure.com`); option `deployment`
    defaults to the model name, option `api_version` to a GA version. `api_version="v1"` uses the
    v1 route (`/openai/v1/chat/completions`), which takes the model in the body instead."""

    name = "azure_openai"
    default_base_url = ""
    api_key_env = "AZURE_OPENAI_API_KEY"
    default_api_version = "2024-10-21"

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"api-key": key.get_secret_value()} if key is not None else {}

    def _route(self, operation: str) -> HttpRequest:
        version = str(self.config.options.get("api_version", self.default_api_version))
        if not self.config.base_url.strip("/"):
            raise errors.ConfigError("azure_openai needs .base_url('https://<resource>.openai.azure.com')")
        if version == "v1":
            return HttpRequest(f"openai/v1/{operation}")
        deployment = self.config.options.get("deployment") or self.config.model
        return HttpRequest(f"openai/deployments/{deployment}/{operation}", query={"api-version": version})

    def chat_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> HttpRequest:
        route = self._route("chat/completions")
        body = super().chat_request(messages, params, stream=stream).body
        return HttpRequest(route.path, body, route.query)

    def embed_request(self, texts: Sequence[str]) -> HttpRequest:
        route = self._route("embeddings")
        return HttpRequest(route.path, super().embed_request(texts).body, route.query)
