"""Anthropic Messages: system prompt at the top level, typed stream events, required max_tokens."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from evalpipe import errors
from evalpipe.backends.base import HttpRequest, Provider, StreamState
from evalpipe.backends.classify import classify_stream_error
from evalpipe.backends.framing import SSEEvent
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, StreamChunk, Usage

# Anthropic's stop reasons in the vocabulary every other backend uses.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def _finish(reason: str | None) -> str | None:
    return _FINISH.get(reason, reason) if reason else None


class AnthropicProvider(Provider):
    """Anthropic's `/v1/messages`; a JSON schema becomes one forced tool whose input is the answer."""

    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    default_model = "claude-3-5-haiku-latest"
    api_key_env = "ANTHROPIC_API_KEY"
    supports_embeddings = False  # Anthropic has no embeddings endpoint (it points users to Voyage AI)
    api_version: ClassVar[str] = "2023-06-01"
    # The API requires max_tokens; this default fits every current model's output limit.
    default_max_tokens: ClassVar[int] = 1024

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.api_version}
        if self.config.api_key is not None:
            headers["x-api-key"] = self.config.api_key.get_secret_value()
        return headers

    def chat_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> HttpRequest:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        fields: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": params.max_tokens or self.default_max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
            "system": system or None,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "stop_sequences": list(params.stop) if params.stop else None,
            "stream": True if stream else None,
        }
        if params.json_schema is not None:
            # Messages has no response_format: a forced tool call is Anthropic's documented way
            # to get JSON that follows a schema.
            fields["tools"] = [{"name": "respond", "description": "Give the answer.",
                                "input_schema": params.json_schema}]
            fields["tool_choice"] = {"type": "tool", "name": "respond"}
        return HttpRequest("v1/messages", {k: v for k, v in fields.items() if v is not None})

    def parse_chat(self, body: Any) -> ChatResponse:
        if not isinstance(body, dict) or not isinstance(body.get("content"), list):
            raise errors.ProtocolError("answer has no content blocks", provider=self.name)
        parts: list[str] = []
        for block in body["content"]:
            if block.get("type") == "text":
                parts.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                parts.append(json.dumps(block.get("input", {})))
        usage = body.get("usage") or {}
        return ChatResponse(
            text="".join(parts),
            finish_reason=_finish(body.get("stop_reason")),
            model=body.get("model") or self.config.model,
            usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
        )

    def read_stream_event(self, event: SSEEvent, state: StreamState) -> StreamChunk | None:
        data = self.event_json(event.data)
        kind = data.get("type", event.event)
        if kind == "error":
            raise classify_stream_error(self.name, data)
        if kind == "message_start":
            message = data.get("message") or {}
            state.model = message.get("model") or state.model
            state.input_tokens = int((message.get("usage") or {}).get("input_tokens") or 0)
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            text = delta.get("text") or delta.get("partial_json") or ""
            reasoning = delta.get("thinking") or ""
            if text or reasoning:
                state.text.append(text)
                state.reasoning.append(reasoning)
                return StreamChunk(text, reasoning)
        elif kind == "message_delta":
            state.finish_reason = _finish((data.get("delta") or {}).get("stop_reason")) or state.finish_reason
            usage = data.get("usage") or {}
            state.output_tokens = int(usage.get("output_tokens") or state.output_tokens)
            state.input_tokens = int(usage.get("input_tokens") or state.input_tokens)
        elif kind == "message_stop":
            state.done = True
        # ping and unknown event types are ignored, as the API reference asks.
        return None
