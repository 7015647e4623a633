"""Phind's unofficial VS Code extension endpoint, as the Rust `llm` crate speaks it.

There is no public API reference: the body, headers and `data:` parsing follow the crate's Phind
backend (src/backends/phind.rs), which is the only maintained client of this endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from evalpipe import errors
from evalpipe.backends.base import HttpRequest, Provider, StreamState
from evalpipe.backends.classify import classify_stream_error
from evalpipe.backends.framing import DataLineDecoder
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, StreamChunk


class PhindProvider(Provider):
    """Phind (no key): chat and complete only; every answer is streamed, even `chat()`'s.

    The endpoint takes no sampling parameters: temperature, top_p, top_k, max_tokens, seed, stop and
    the reasoning controls are accepted by the builder but never sent (see `ignored_options`). It has
    no embeddings and no structured output: `embed()` and a `json_schema` raise
    UnsupportedFeatureError. Its answers carry text only: no finish reason, reasoning or usage.
    """

    name = "phind"
    default_base_url = "https://https.extension.phind.com"
    default_model = "Phind-70B"
    api_key_env = None
    requires_api_key = False
    supports_embeddings = False
    supports_json_schema = False
    ignored_options = frozenset(
        {"temperature", "top_p", "top_k", "max_tokens", "seed", "stop", "reasoning_effort", "reasoning_budget_tokens"}
    )
    stream_decoder = DataLineDecoder
    stream_needs_end_event = False  # the answer ends with the body; there is no end event

    def auth_headers(self) -> dict[str, str]:
        # No auth: these are the headers the crate sends (the endpoint expects an empty User-Agent).
        return {"User-Agent": "", "Accept": "*/*", "Accept-Encoding": "Identity"}

    def chat_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> HttpRequest:
        if params.json_schema is not None:
            raise errors.UnsupportedFeatureError(self.name, "structured output (json_schema)")
        history = [{"role": m.role, "content": m.content} for m in messages]
        user_input = next((m.content for m in reversed(messages) if m.role == "user"), "")
        body = {
            "additional_extension_context": "",
            "allow_magic_buttons": True,
            "is_vscode_extension": True,
            "message_history": history,
            "requested_model": self.config.model,
            "user_input": user_input,
        }
        # The crate's base URL is the endpoint itself; a host root (as the fake server gives) works too.
        at_endpoint = self.config.base_url.rstrip("/").endswith("/agent")
        return HttpRequest("" if at_endpoint else "agent/", body)

    def read_stream_event(self, event: str, state: StreamState) -> StreamChunk | None:
        if event.strip() == "[DONE]":
            state.done = True
            return None
        chunk = self.event_json(event)
        if "error" in chunk:
            raise classify_stream_error(self.name, chunk)
        state.model = chunk.get("model") or state.model or self.config.model
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        state.finish_reason = choice.get("finish_reason") or state.finish_reason
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(text, str) or not text:
            return None
        state.text.append(text)
        return StreamChunk(text)

    def parse_chat(self, body: Any) -> ChatResponse:
        """Phind answers only as a stream: `achat` collects it, so a JSON body is never an answer."""
        raise errors.ProtocolError("Phind answers with a stream, not a JSON body", provider=self.name)

    async def achat(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> ChatResponse:
        """One chat answer, collected from the stream Phind always sends."""
        return await self.astream(messages, params).collect()

    async def acomplete(self, prompt: str, params: GenerationParams | None = None) -> ChatResponse:
        """`prompt` as a one-message chat: Phind has no completion endpoint."""
        return await self.achat([ChatMessage.user(prompt)], params)

    async def _stream_events(self, request: HttpRequest, state: StreamState) -> AsyncIterator[StreamChunk]:
        async for chunk in super()._stream_events(request, state):
            yield chunk
        # The crate's rule: a body with no text in it is a failure, not an empty answer.
        if not state.text:
            raise errors.ProtocolError("answer is empty", provider=self.name)
