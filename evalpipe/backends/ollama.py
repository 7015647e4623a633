"""Ollama's native API: `/api/chat`, `/api/generate` and `/api/embed`, streamed as NDJSON.

Wire details follow the Ollama API reference (docs/api.md in the ollama repository).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from evalpipe import errors
from evalpipe.backends.base import HttpRequest, Provider, StreamState
from evalpipe.backends.classify import classify_status, classify_stream_error, error_detail
from evalpipe.backends.framing import NDJSONDecoder
from evalpipe.backends.image_rules import OLLAMA_IMAGES
from evalpipe.backends.images import inline_data
from evalpipe.backends.openai_messages import tool_json
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, StreamChunk, Usage

# Ollama reports why it stopped in `done_reason`: "stop" and "length" match evalpipe's names already;
# "load"/"unload" (an empty request that only (un)loads the model) are passed through lowercased.
_FINISH_REASONS = {"stop": "stop", "length": "length"}


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def finish_reason(body: dict[str, Any]) -> str | None:
    """evalpipe's finish reason for an Ollama answer or final stream line."""
    reason = body.get("done_reason")
    if not isinstance(reason, str) or not reason:
        return None
    return _FINISH_REASONS.get(reason.lower(), reason.lower())


def _with_tool_calls(reason: str | None, called: bool) -> str | None:
    # Ollama ends a turn that called tools with done_reason "stop"; evalpipe says why it stopped.
    return "tool_calls" if called and reason in ("stop", None) else reason


# Builder options read here: `num_ctx` (the context window: Ollama's default is small and it silently
# drops the start of longer prompts), `keep_alive`, `raw` (see `complete_request`), `embedding_model`.
def message_json(message: ChatMessage, backend: str) -> dict[str, Any]:
    """A message as `/api/chat` takes it: images as bare base64 in `images`, tool calls with object
    arguments, a tool result as role `tool` with `tool_name` (the chat API reference)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.images:
        out["images"] = [inline_data(image, backend)[1] for image in message.images]
    if message.tool_calls:
        out["tool_calls"] = [{"function": {"name": call.name, "arguments": call.arguments
                                           if isinstance(call.arguments, dict) else {}}}
                             for call in message.tool_calls]
    if message.role == "tool" and message.name:
        out["tool_name"] = message.name
    return out


def fold_tool_calls(tool_calls: Any, state: StreamState) -> None:
    """Add `message.tool_calls` (each whole, arguments an object) to `state`, after those it has."""
    for entry in tool_calls if isinstance(tool_calls, list) else []:
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments if arguments is not None else {})
        state.tool_call(len(state.tool_calls), str(entry.get("id") or ""), str(function.get("name") or ""), raw)


class OllamaProvider(Provider):
    """A local or remote Ollama server: no API key, NDJSON streams, sampling under `options`.

    Where each part of an answer lands: `message.content` (`response` on `/api/generate`) →
    `text`; `message.thinking` (`thinking`) → `reasoning`; `message.tool_calls` → `tool_calls` (ids
    `call_<n>`, since Ollama sends none; finish reason `tool_calls`: Ollama itself says "stop").
    Usage: `prompt_eval_count` → `input_tokens`,
    `eval_count` (thinking included) → `output_tokens`; Ollama has no prompt cache to report and
    does not count thinking apart, so the other kinds stay 0. Ollama has no refusal or safety field.

    Reasoning controls: `reasoning_effort` → `think: "low" | "medium" | "high"` (the levels models
    like gpt-oss take; others take only true/false and fall back to their default).
    `reasoning_budget_tokens` is never sent: Ollama has no thinking budget (see `ignored_options`).
    """

    name = "ollama"
    default_base_url = "http://localhost:11434"
    default_model = "llama3.2"
    api_key_env = "OLLAMA_API_KEY"  # only for ollama.com's cloud or a proxy; a local server needs none
    requires_api_key = False
    stream_decoder = NDJSONDecoder
    stream_needs_end_event = True  # the last line carries `"done": true`; without it the stream was cut
    ignored_options = frozenset({"reasoning_budget_tokens"})
    supports_tools = True
    supports_images = True
    image_rules = OLLAMA_IMAGES

    def auth_headers(self) -> dict[str, str]:
        # A plain Ollama server has no auth; a reverse proxy in front of it may expect a Bearer token.
        key = self.config.api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}

    def options(self, params: GenerationParams) -> dict[str, Any]:
        """The `options` object: sampling parameters under Ollama's (llama.cpp's) names."""
        fields: dict[str, Any] = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "num_predict": params.max_tokens,
            "seed": params.seed,
            "stop": list(params.stop) if params.stop else None,
            "num_ctx": self.config.options.get("num_ctx"),
        }
        return {k: v for k, v in fields.items() if v is not None}

    def _common(self, params: GenerationParams, *, stream: bool) -> dict[str, Any]:
        # `stream` defaults to true on the server, so it is always sent: a missing `false` would
        # turn a plain request into an NDJSON body.
        body: dict[str, Any] = {"model": self.config.model, "stream": stream}
        if options := self.options(params):
            body["options"] = options
        if params.json_schema is not None:
            # `format` takes a JSON schema (Ollama >= 0.5) or "json" for any JSON value; an empty
            # schema constrains nothing, so it asks for plain JSON mode.
            body["format"] = params.json_schema or "json"
        if params.reasoning_effort is not None:
            body["think"] = params.reasoning_effort
        if (keep_alive := self.config.options.get("keep_alive")) is not None:
            body["keep_alive"] = keep_alive
        return body

    def chat_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> HttpRequest:
        body = self._common(params, stream=stream)
        body["messages"] = [message_json(m, self.name) for m in messages]
        # Ollama has no tool_choice: "none" is not offering the tools, "auto" is what it always does.
        if params.tool_choice not in (None, "auto", "none"):
            raise errors.UnsupportedFeatureError(self.name, f"tool_choice {params.tool_choice!r} (it has none)")
        if params.tools and params.tool_choice != "none":
            body["tools"] = [tool_json(tool) for tool in params.tools]
        return HttpRequest("api/chat", body)

    def complete_request(self, prompt: str, params: GenerationParams, *, stream: bool = False) -> HttpRequest:
        """`/api/generate`; `raw` (no chat template) unless a system prompt needs the template."""
        body = self._common(params, stream=stream)
        body["prompt"] = prompt
        # With `raw: true` Ollama sends the prompt to the model untouched, which is what a plain
        # completion means; the template is also what places `system`, so raw is off when one is set.
        raw = self.config.options.get("raw", params.system is None)
        if params.system is not None:
            body["system"] = params.system
        body["raw"] = bool(raw)
        return HttpRequest("api/generate", body)

    def _parse(self, body: Any, text_field: str) -> ChatResponse:
        if not isinstance(body, dict):
            raise errors.ProtocolError("answer is not a JSON object", provider=self.name)
        if "error" in body:  # an error object is never an answer, whatever the status said
            raise classify_stream_error(self.name, body)
        if text_field == "message":
            message = body.get("message")
            if not isinstance(message, dict):
                raise errors.ProtocolError("answer has no message", provider=self.name)
            text, thinking = message.get("content"), message.get("thinking")
            calls = StreamState()
            fold_tool_calls(message.get("tool_calls"), calls)
            called = bool(calls.tool_calls)
        else:
            if "response" not in body:
                raise errors.ProtocolError("answer has no response", provider=self.name)
            text, thinking, called = body.get("response"), body.get("thinking"), False
        return ChatResponse(
            text=text if isinstance(text, str) else "",
            finish_reason=_with_tool_calls(finish_reason(body), called),
            model=body.get("model") or self.config.model,
            usage=Usage(_as_int(body.get("prompt_eval_count")), _as_int(body.get("eval_count"))),
            reasoning=thinking if isinstance(thinking, str) and thinking else None,
            tool_calls=calls.finished_tool_calls() if text_field == "message" else [],
        )

    def parse_chat(self, body: Any) -> ChatResponse:
        return self._parse(body, "message")

    def parse_complete(self, body: Any) -> ChatResponse:
        return self._parse(body, "response")

    def read_stream_event(self, event: Any, state: StreamState) -> StreamChunk | None:
        if not isinstance(event, dict):
            raise errors.ProtocolError("stream line is not an object", provider=self.name)
        if "error" in event:
            # A failure after generation started arrives as `{"error": "..."}` under status 200.
            raise classify_stream_error(self.name, event)
        state.model = event.get("model") or state.model
        message = event.get("message")
        message = message if isinstance(message, dict) else {}
        text = message.get("content") or event.get("response") or ""
        thinking = message.get("thinking") or event.get("thinking") or ""
        fold_tool_calls(message.get("tool_calls"), state)  # whole calls, possibly over several lines
        if event.get("done") is True:
            state.done = True
            state.finish_reason = _with_tool_calls(finish_reason(event), state.hidden_output > 0)
            state.input_tokens = _as_int(event.get("prompt_eval_count"))
            state.output_tokens = _as_int(event.get("eval_count"))
        if not (text or thinking):
            return None
        state.text.append(text)
        state.reasoning.append(thinking)
        return StreamChunk(text, thinking)

    def classify_error(self, status: int, body: Any, headers: Mapping[str, str]) -> errors.ProviderError:
        error = classify_status(self.name, status, body, headers)
        message, _ = error_detail(body)
        # Ollama's cloud answers an exhausted plan with 429 "you have reached your session|weekly usage
        # limit, upgrade for higher limits": billing, not a rate limit that passes in seconds.
        if status == 429 and "usage limit" in message.lower():
            return errors.QuotaExceededError(message, provider=self.name, status=status,
                                             retry_after=error.retry_after)
        return error

    def embed_request(self, texts: Sequence[str]) -> HttpRequest:
        # Ollama has no separate embedding default: the chat model embeds unless one is named.
        model = self.config.options.get("embedding_model") or self.config.model
        return HttpRequest("api/embed", {"model": model, "input": list(texts)})

    def parse_embed(self, body: Any) -> list[list[float]]:
        try:
            return [[float(x) for x in vector] for vector in body["embeddings"]]
        except (KeyError, TypeError, ValueError):
            raise errors.ProtocolError("embeddings answer has no embeddings", provider=self.name) from None
