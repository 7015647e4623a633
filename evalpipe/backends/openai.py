"""OpenAI Chat Completions and Embeddings: the protocol most other vendors copy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from evalpipe import errors
from evalpipe.backends.base import HttpRequest, Provider, StreamState
from evalpipe.backends.classify import classify_stream_error
from evalpipe.backends.framing import SSEEvent
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, StreamChunk, Usage


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else 0


class OpenAIProvider(Provider):
    """OpenAI's `/chat/completions` and `/embeddings`; vendor variants override class attributes."""

    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    default_model = "gpt-4o-mini"
    default_embedding_model: ClassVar[str] = "text-embedding-3-small"
    api_key_env = "OPENAI_API_KEY"
    ignored_options = frozenset({"top_k"})
    chat_path: ClassVar[str] = "chat/completions"
    # Newer OpenAI models reject `max_tokens`; most compatible vendors only know `max_tokens`.
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    seed_field: ClassVar[str] = "seed"
    top_k_field: ClassVar[str | None] = None
    stream_usage: ClassVar[bool] = True  # ask for the final usage chunk (`stream_options.include_usage`)

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}

    def sampling(self, params: GenerationParams) -> dict[str, Any]:
        """The sampling fields of a request body, under this vendor's names."""
        fields: dict[str, Any] = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            self.max_tokens_field: params.max_tokens,
            self.seed_field: params.seed,
            "stop": list(params.stop) if params.stop else None,
        }
        if self.top_k_field is not None:
            fields[self.top_k_field] = params.top_k
        return {k: v for k, v in fields.items() if v is not None}

    def response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": "response", "strict": True, "schema": schema}}

    def chat_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> HttpRequest:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            **self.sampling(params),
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
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError):
            raise errors.ProtocolError("answer has no choices", provider=self.name) from None
        usage = body.get("usage") or {}
        return ChatResponse(
            text=message.get("content") or choice.get("text") or "",
            finish_reason=choice.get("finish_reason"),
            model=body.get("model") or self.config.model,
            usage=Usage(_as_int(usage.get("prompt_tokens")), _as_int(usage.get("completion_tokens"))),
            reasoning=message.get("reasoning_content"),
        )

    def read_stream_event(self, event: SSEEvent, state: StreamState) -> StreamChunk | None:
        if event.data.strip() == "[DONE]":
            state.done = True
            return None
        chunk = self.event_json(event.data)
        if "error" in chunk:
            raise classify_stream_error(self.name, chunk)
        state.model = chunk.get("model") or state.model
        if usage := chunk.get("usage"):  # the include_usage chunk, or (xAI) the finish chunk
            state.input_tokens = _as_int(usage.get("prompt_tokens"))
            state.output_tokens = _as_int(usage.get("completion_tokens"))
        choices = chunk.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        state.finish_reason = choice.get("finish_reason") or state.finish_reason
        delta = choice.get("delta") or {}
        text = delta.get("content") or choice.get("text") or ""
        reasoning = delta.get("reasoning_content") or ""
        if not (text or reasoning):
            return None
        state.text.append(text)
        state.reasoning.append(reasoning)
        return StreamChunk(text, reasoning)

    def embed_request(self, texts: Sequence[str]) -> HttpRequest:
        model = self.config.options.get("embedding_model") or self.default_embedding_model
        return HttpRequest("embeddings", {"model": model, "input": list(texts), "encoding_format": "float"})

    def parse_embed(self, body: Any) -> list[list[float]]:
        try:
            items = sorted(body["data"], key=lambda item: item.get("index", 0))
            return [[float(x) for x in item["embedding"]] for item in items]
        except (KeyError, TypeError, ValueError):
            raise errors.ProtocolError("embeddings answer has no data", provider=self.name) from None
