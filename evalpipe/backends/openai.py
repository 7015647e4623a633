"""OpenAI Chat Completions and Embeddings: the protocol most other vendors copy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from evalpipe import errors
from evalpipe.backends.base import HttpRequest, Provider, StreamState
from evalpipe.backends.classify import classify_stream_error
from evalpipe.backends.framing import SSEEvent
from evalpipe.backends.image_rules import OPENAI_IMAGES
from evalpipe.backends.openai_convert import Parts, choice_parts, prompt_safety, usage_of
from evalpipe.backends.openai_messages import fold_tool_calls, message_json, tool_fields
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, StreamChunk, Usage


def finish_reason(reported: Any, parts: Parts) -> str | None:
    """The finish reason to record: "refusal" when the model declined in words (OpenAI reports
    "stop" then, which would pass the empty answer off as a normal one)."""
    if parts.refusal:
        return "refusal"
    return reported if isinstance(reported, str) else None


class OpenAIProvider(Provider):
    """OpenAI's `/chat/completions` and `/embeddings`; vendor variants override class attributes.

    Reasoning: `reasoning_effort` is sent as OpenAI's `reasoning_effort` (o-series and gpt-5 models;
    others reject it). OpenAI has no reasoning token budget (`max_completion_tokens` caps reasoning
    and answer together), so `reasoning_budget_tokens` is ignored, like `top_k`. A refusal
    (`message.refusal`) is the response's `refusal` with finish reason "refusal"."""

    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    default_model = "gpt-4o-mini"
    default_embedding_model: ClassVar[str] = "text-embedding-3-small"
    api_key_env = "OPENAI_API_KEY"
    ignored_options = frozenset({"top_k", "reasoning_budget_tokens"})
    chat_path: ClassVar[str] = "chat/completions"
    # Newer OpenAI models reject `max_tokens`; most compatible vendors only know `max_tokens`.
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    seed_field: ClassVar[str | None] = "seed"
    top_k_field: ClassVar[str | None] = None
    reasoning_effort_field: ClassVar[str | None] = "reasoning_effort"
    # False where `completion_tokens` leaves out the reasoning tokens billed on top of it (xAI).
    completion_includes_reasoning: ClassVar[bool] = True
    stream_usage: ClassVar[bool] = True  # ask for the final usage chunk (`stream_options.include_usage`)
    supports_tools = True
    supports_images = True
    image_rules = OPENAI_IMAGES
    required_tool_choice: ClassVar[str] = "required"  # the vendor's word for "must call a tool"

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}

    def sampling(self, params: GenerationParams) -> dict[str, Any]:
        """The sampling fields of a request body, under this vendor's names."""
        fields: dict[str, Any] = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            self.max_tokens_field: params.max_tokens,
            "stop": list(params.stop) if params.stop else None,
        }
        if self.seed_field is not None:
            fields[self.seed_field] = params.seed
        if self.top_k_field is not None:
            fields[self.top_k_field] = params.top_k
        return {k: v for k, v in {**fields, **self.reasoning(params)}.items() if v is not None}

    def reasoning(self, params: GenerationParams) -> dict[str, Any]:
        """The request fields that set how hard a reasoning model thinks, under this vendor's names."""
        if self.reasoning_effort_field is None or params.reasoning_effort is None:
            return {}
        return {self.reasoning_effort_field: params.reasoning_effort}

    def response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": "response", "strict": True, "schema": schema}}

    def chat_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> HttpRequest:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [message_json(m) for m in messages],
            **self.sampling(params),
            **tool_fields(params.tools, params.tool_choice, self.required_tool_choice),
        }
        if params.json_schema is not None:
            body["response_format"] = self.response_format(params.json_schema)
        if stream:
            body["stream"] = True
            if self.stream_usage:
                body["stream_options"] = {"include_usage": True}
        return HttpRequest(self.chat_path, body)

    def parse_chat(self, body: Any) -> ChatResponse:
        try:
            choice = body["choices"][0]
            if not isinstance(choice, dict):
                raise TypeError
        except (KeyError, IndexError, TypeError):
            raise errors.ProtocolError("answer has no choices", provider=self.name) from None
        parts = choice_parts(choice, "message")
        safety = {**prompt_safety(body), **parts.safety}
        usage = usage_of(body.get("usage"), reasoning_in_completion=self.completion_includes_reasoning)
        calls = StreamState()
        message = choice.get("message")
        fold_tool_calls(message.get("tool_calls") if isinstance(message, dict) else None, calls, whole=True)
        return ChatResponse(
            text=parts.text,
            finish_reason=finish_reason(choice.get("finish_reason"), parts),
            model=body.get("model") or self.config.model,
            usage=usage or Usage(),
            reasoning=parts.reasoning or None,
            refusal=parts.refusal or None,
            safety=safety or None,
            tool_calls=calls.finished_tool_calls(),
        )

    def read_stream_event(self, event: SSEEvent, state: StreamState) -> StreamChunk | None:
        if event.data.strip() == "[DONE]":
            state.done = True
            if state.refusal:
                state.finish_reason = "refusal"
            return None
        chunk = self.event_json(event.data)
        if "error" in chunk:
            raise classify_stream_error(self.name, chunk)
        state.model = chunk.get("model") or state.model
        state.safety.update(prompt_safety(chunk))
        # The include_usage chunk, the finish chunk (xAI, Mistral), or Groq's x_groq.usage.
        groq = chunk.get("x_groq")
        raw_usage = chunk.get("usage") or (groq.get("usage") if isinstance(groq, dict) else None)
        if usage := usage_of(raw_usage, reasoning_in_completion=self.completion_includes_reasoning):
            state.set_usage(usage)
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return None
        choice = choices[0]
        parts = choice_parts(choice, "delta")
        state.safety.update(parts.safety)
        state.finish_reason = choice.get("finish_reason") or state.finish_reason
        state.hidden_output += parts.hidden_reasoning
        delta = choice.get("delta")
        fold_tool_calls(delta.get("tool_calls") if isinstance(delta, dict) else None, state)
        if parts.refusal:
            state.refusal.append(parts.refusal)
        if not (parts.text or parts.reasoning):
            return None
        state.text.append(parts.text)
        state.reasoning.append(parts.reasoning)
        return StreamChunk(parts.text, parts.reasoning)

    def embed_request(self, texts: Sequence[str]) -> HttpRequest:
        model = self.config.options.get("embedding_model") or self.default_embedding_model
        return HttpRequest("embeddings", {"model": model, "input": list(texts), "encoding_format": "float"})

    def parse_embed(self, body: Any) -> list[list[float]]:
        try:
            items = sorted(body["data"], key=lambda item: item.get("index", 0))
            return [[float(x) for x in item["embedding"]] for item in items]
        except (KeyError, TypeError, ValueError):
            raise errors.ProtocolError("embeddings answer has no data", provider=self.name) from None
