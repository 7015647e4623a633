"""Vendors that speak OpenAI's protocol, each overriding only what differs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalpipe import errors
from evalpipe.backends.base import HttpRequest
from evalpipe.backends.image_rules import (
    AZURE_IMAGES,
    GROQ_IMAGES,
    MISTRAL_IMAGES,
    OPENROUTER_IMAGES,
    XAI_IMAGES,
)
from evalpipe.backends.openai import OpenAIProvider
from evalpipe.types import ChatMessage, GenerationParams


class DeepSeekProvider(OpenAIProvider):
    """DeepSeek; the reasoner's `reasoning_content` is kept apart from the answer.

    DeepSeek's API has no `top_k`, no `seed` and no reasoning controls (deepseek-reasoner always
    thinks, deepseek-chat never does): they are ignored, not sent. Cache hits
    (`prompt_cache_hit_tokens`) are the response's cached input tokens."""

    name = "deepseek"
    default_base_url = "https://api.deepseek.com"
    default_model = "deepseek-chat"
    api_key_env = "DEEPSEEK_API_KEY"
    ignored_options = frozenset({"top_k", "seed", "reasoning_effort", "reasoning_budget_tokens"})
    max_tokens_field = "max_tokens"
    seed_field = None
    reasoning_effort_field = None
    supports_embeddings = False  # DeepSeek offers no embeddings endpoint
    supports_images = False  # deepseek-chat and deepseek-reasoner take text only

    def response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        # DeepSeek knows only JSON mode, not schemas: the answer is valid JSON but the schema is
        # not enforced by the server (a json_schema scorer can check it).
        return {"type": "json_object"}


class XAIProvider(OpenAIProvider):
    """xAI (Grok); usage arrives on the chunk that carries the finish reason.

    xAI's `completion_tokens` leave out the reasoning tokens (`completion_tokens_details.
    reasoning_tokens`) it bills on top, so they are added to `output_tokens`. `reasoning_effort` is
    sent as given: grok-3-mini accepts "low" and "high" only, newer models also "medium", and some
    reasoning models (grok-4) none at all, which xAI answers with a 400. No `top_k`, no token budget."""

    name = "xai"
    default_base_url = "https://api.x.ai/v1"
    default_model = "grok-3-mini"
    default_embedding_model = "v1"
    api_key_env = "XAI_API_KEY"
    ignored_options = frozenset({"top_k", "reasoning_budget_tokens"})
    max_tokens_field = "max_tokens"
    completion_includes_reasoning = False
    image_rules = XAI_IMAGES


class GroqProvider(OpenAIProvider):
    """Groq's OpenAI-compatible endpoint.

    Reasoning models (gpt-oss, qwen3) answer with `message.reasoning` (and `delta.reasoning`) even
    when not asked; `reasoning_effort` is sent as given (gpt-oss: low/medium/high). No `top_k`,
    no token budget."""

    name = "groq"
    default_base_url = "https://api.groq.com/openai/v1"
    default_model = "llama-3.1-8b-instant"
    api_key_env = "GROQ_API_KEY"
    image_rules = GROQ_IMAGES
    ignored_options = frozenset({"top_k", "reasoning_budget_tokens"})
    max_tokens_field = "max_tokens"
    supports_embeddings = False


class MistralProvider(OpenAIProvider):
    """Mistral: `random_seed` instead of `seed`, flat error bodies, `mistral-embed`.

    Reasoning models (magistral) answer with `content` as a list of typed chunks: "text" chunks are
    the answer, "thinking" chunks the reasoning. `reasoning_effort` is sent as given (adjustable
    reasoning on mistral-small / mistral-medium; magistral always thinks). No `top_k`, no token
    budget."""

    name = "mistral"
    default_base_url = "https://api.mistral.ai/v1"
    default_model = "mistral-small-latest"
    default_embedding_model = "mistral-embed"
    api_key_env = "MISTRAL_API_KEY"
    image_rules = MISTRAL_IMAGES
    ignored_options = frozenset({"top_k", "reasoning_budget_tokens"})
    max_tokens_field = "max_tokens"
    seed_field = "random_seed"
    # Mistral's tool_choice: "auto" | "none" | "any" | "required"; "any" is the long-documented one.
    required_tool_choice = "any"


class OpenRouterProvider(OpenAIProvider):
    """OpenRouter; sends keep-alive comments and reports late failures as events under 200.

    Reasoning arrives as `message.reasoning` plus `reasoning_details` (text, summary or encrypted
    entries; encrypted ones are counted, not shown). The controls go in OpenRouter's own
    `reasoning` object: `{"effort": ...}` or `{"max_tokens": ...}`; OpenRouter takes one of the
    two, so a token budget, the more precise, wins when both are set."""

    name = "openrouter"
    default_base_url = "https://openrouter.ai/api/v1"
    default_model = "openai/gpt-4o-mini"
    api_key_env = "OPENROUTER_API_KEY"
    image_rules = OPENROUTER_IMAGES
    max_tokens_field = "max_tokens"
    top_k_field = "top_k"
    ignored_options = frozenset()

    def reasoning(self, params: GenerationParams) -> dict[str, Any]:
        if params.reasoning_budget_tokens is not None:
            return {"reasoning": {"max_tokens": params.reasoning_budget_tokens}}
        if params.reasoning_effort is not None:
            return {"reasoning": {"effort": params.reasoning_effort}}
        return {}


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: `api-key` header, deployment routes with `api-version`.

    Content filtering: a `content_filter` finish reason keeps Azure's `content_filter_results` and
    `prompt_filter_results` in the response's `safety`; a prompt refused with 400 `content_filter`
    becomes a BadRequestError whose `safety` holds `innererror.content_filter_result`. Reasoning
    controls as OpenAI's (`reasoning_effort`; no token budget).

    The base URL is the resource endpoint (`https://NAME.openai.azure.com`); option `deployment`
    defaults to the model name, option `api_version` to a GA version. `api_version="v1"` uses the
    v1 route (`/openai/v1/chat/completions`), which takes the model in the body instead."""

    name = "azure_openai"
    default_base_url = ""
    api_key_env = "AZURE_OPENAI_API_KEY"
    image_rules = AZURE_IMAGES
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
