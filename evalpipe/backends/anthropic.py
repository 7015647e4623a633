"""Anthropic Messages: system prompt at the top level, typed content blocks and stream events.

Wire details follow the Messages API reference (docs.anthropic.com/en/api/messages), its streaming
guide (event order, `thinking_delta`, `signature_delta`, `input_json_delta`), the extended-thinking
guide and the errors page. A plain answer and a stream fold into the same `StreamState`, so the
two always agree on text, reasoning, refusal and usage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from evalpipe import errors
from evalpipe.backends.anthropic_messages import messages_json, tool_fields
from evalpipe.backends.base import HttpRequest, Provider, StreamState
from evalpipe.backends.classify import classify_status, classify_stream_error, error_detail
from evalpipe.backends.framing import SSEEvent
from evalpipe.backends.image_rules import ANTHROPIC_IMAGES
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, StreamChunk

# Anthropic's stop reasons in the vocabulary every other backend uses; others ("refusal",
# "pause_turn", ...) pass through as they are.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}

# The forced tool that carries a structured answer (see `chat_request`): its input is the text.
ANSWER_TOOL = "respond"
# Redacted thinking is encrypted: it is counted in `reasoning`, never shown.
REDACTED_THINKING = "[redacted thinking]"
# The extended-thinking guide: budget_tokens must be at least 1024 and below max_tokens.
MIN_THINKING_BUDGET = 1024

# The errors page: each error type and the HTTP status it comes with. An `error` event inside a
# 200 stream carries only the type, so the status it stands for decides its class.
_ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def fold_usage(usage: Any, state: StreamState) -> None:
    """Add an Anthropic `usage` object to `state`, in evalpipe's convention.

    Anthropic's `input_tokens` excludes the prompt-cache reads and writes, which it reports apart
    (`cache_read_input_tokens`, `cache_creation_input_tokens`); evalpipe's input is all of them.
    `message_delta` usage is cumulative and may repeat any of the fields: a zero repeats nothing."""
    if not isinstance(usage, Mapping):
        return
    uncached = state.input_tokens - state.cached_input_tokens - state.cache_write_input_tokens
    uncached = _as_int(usage.get("input_tokens")) or uncached
    state.cached_input_tokens = _as_int(usage.get("cache_read_input_tokens")) or state.cached_input_tokens
    state.cache_write_input_tokens = (_as_int(usage.get("cache_creation_input_tokens"))
                                      or state.cache_write_input_tokens)
    state.input_tokens = uncached + state.cached_input_tokens + state.cache_write_input_tokens
    state.output_tokens = _as_int(usage.get("output_tokens")) or state.output_tokens


def finish_reason(stop_reason: Any, state: StreamState) -> str | None:
    """evalpipe's finish reason; a turn that only called the answer tool simply stopped."""
    if not isinstance(stop_reason, str) or not stop_reason:
        return None
    if stop_reason == "tool_use" and "tool_use" not in state.blocks.values():
        return "stop"
    return _FINISH.get(stop_reason, stop_reason)


def _block_kind(block: Mapping[str, Any]) -> str:
    kind = str(block.get("type") or "")
    if kind == "tool_use" and block.get("name") == ANSWER_TOOL:
        return ANSWER_TOOL
    return kind


def _add(state: StreamState, text: str = "", reasoning: str = "") -> StreamChunk | None:
    if not (text or reasoning):
        return None
    state.text.append(text)
    state.reasoning.append(reasoning)
    return StreamChunk(text, reasoning)


def start_block(index: int, block: Mapping[str, Any], state: StreamState) -> StreamChunk | None:
    """Open content block `index`: remember its kind; a whole block (plain answers) adds its content."""
    kind = state.blocks[index] = _block_kind(block)
    if kind == "text":
        return _add(state, text=str(block.get("text") or ""))
    if kind == "thinking":
        return _add(state, reasoning=str(block.get("thinking") or ""))
    if kind == "redacted_thinking":
        return _add(state, reasoning=REDACTED_THINKING)
    if kind == ANSWER_TOOL and block.get("input"):
        return _add(state, text=json.dumps(block["input"]))
    if kind == "tool_use":
        # Not text, but said all the same (counted in `hidden_output`): a plain answer carries the whole
        # `input`, a stream an empty one followed by `input_json_delta` fragments.
        # An input that is not an object (a server that could not parse the model's JSON) is kept as text.
        arguments = block.get("input")
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments) if arguments else ""
        state.tool_call(index, str(block.get("id") or ""), str(block.get("name") or ""), raw)
    return None


def delta_block(index: int, delta: Mapping[str, Any], state: StreamState) -> StreamChunk | None:
    """Add one `content_block_delta` to the block it belongs to."""
    kind = delta.get("type")
    if kind == "text_delta":
        return _add(state, text=str(delta.get("text") or ""))
    if kind == "thinking_delta":
        return _add(state, reasoning=str(delta.get("thinking") or ""))
    if kind == "input_json_delta" and state.blocks.get(index) == ANSWER_TOOL:
        return _add(state, text=str(delta.get("partial_json") or ""))
    if kind == "input_json_delta" and state.blocks.get(index) == "tool_use":
        state.tool_call(index, arguments=str(delta.get("partial_json") or ""))
    # signature_delta only lets thinking be sent back later; other tools' input is not text.
    return None


def stop(stop_reason: Any, state: StreamState) -> None:
    """Record why the turn ended; a refusal keeps what was said as the refusal."""
    state.finish_reason = finish_reason(stop_reason, state) or state.finish_reason
    if stop_reason == "refusal":
        state.refusal = list(state.text)


def stream_error(provider: str, data: Any) -> errors.ProviderError:
    """The error for an `error` event inside a 200 stream, classified by its own type."""
    error = data.get("error") if isinstance(data, Mapping) else None
    status = _ERROR_STATUS.get(str(error.get("type"))) if isinstance(error, Mapping) else None
    if status is None:
        return classify_stream_error(provider, data)
    # Classified as the HTTP status of that type would be (context length, billing, ...), but the
    # status itself was 200: the error records none.
    kind = type(classify_status(provider, status, data))
    message, code = error_detail(data)
    return kind(f"error event in stream: {message} [{code}]", provider=provider)


class AnthropicProvider(Provider):
    """Anthropic's `/v1/messages`; a JSON schema becomes one forced tool whose input is the answer.

    Where each part of an answer lands: `text` blocks → `text`; `thinking` blocks → `reasoning`;
    `redacted_thinking` blocks → a `[redacted thinking]` marker in `reasoning`; other `tool_use`
    blocks → `tool_calls` (finish reason `tool_calls`); `stop_reason: refusal` → finish reason
    `refusal` and the text said so far in `refusal`. Usage: `input_tokens` is Anthropic's
    `input_tokens` + `cache_read_input_tokens` + `cache_creation_input_tokens`, the last two also
    in `cached_input_tokens` and `cache_write_input_tokens`; Anthropic does not count thinking
    tokens apart, so `reasoning_tokens` stays 0 (they are in `output_tokens`).

    Reasoning controls: `reasoning_budget_tokens` → `thinking: {type: enabled, budget_tokens}`
    (at least 1024; `max_tokens` counts thinking and answer together, so it must exceed the budget
    and defaults to budget + `default_max_tokens`; temperature other than 1, top_k, top_p below
    0.95 and a JSON schema (a forced tool) cannot be combined with thinking: ConfigError before
    sending). `reasoning_effort` → `output_config: {effort}`, Anthropic's own effort control
    (Opus 4.5 also needs the header `anthropic-beta: effort-2025-11-24`); models that think
    adaptively take `extra_body={"thinking": {"type": "adaptive"}}` beside it. `seed` has no
    Anthropic equivalent and is never sent.
    """

    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    default_model = "claude-3-5-haiku-latest"
    api_key_env = "ANTHROPIC_API_KEY"
    supports_embeddings = False  # Anthropic has no embeddings endpoint (it points users to Voyage AI)
    ignored_options = frozenset({"seed"})
    api_version: ClassVar[str] = "2023-06-01"
    supports_tools = True
    supports_images = True
    image_rules = ANTHROPIC_IMAGES
    tool_prompt_tokens = 346  # the tool-use system prompt Anthropic's pricing page counts (tool_choice auto)
    # The API requires max_tokens; this default fits every current model's output limit.
    default_max_tokens: ClassVar[int] = 1024

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.api_version}
        if self.config.api_key is not None:
            headers["x-api-key"] = self.config.api_key.get_secret_value()
        return headers

    def thinking(self, params: GenerationParams) -> tuple[dict[str, Any] | None, int]:
        """(the `thinking` object or None, max_tokens) for `params`; ConfigError for what the API
        would refuse with thinking on."""
        budget = params.reasoning_budget_tokens
        if budget is None:
            return None, params.max_tokens or self.default_max_tokens
        problems = []
        if budget < MIN_THINKING_BUDGET:
            problems.append(f"reasoning_budget_tokens must be at least {MIN_THINKING_BUDGET}, got {budget}")
        if params.max_tokens is not None and params.max_tokens <= budget:
            problems.append(f"max_tokens ({params.max_tokens}) must exceed reasoning_budget_tokens ({budget}): "
                            "it counts thinking and answer together")
        if params.temperature is not None and params.temperature != 1:
            problems.append(f"temperature must be unset or 1 with thinking, got {params.temperature}")
        if params.top_k is not None:
            problems.append("top_k cannot be set with thinking")
        if params.top_p is not None and params.top_p < 0.95:
            problems.append(f"top_p must be unset or between 0.95 and 1 with thinking, got {params.top_p}")
        if params.json_schema is not None:
            problems.append("json_schema (a forced tool call) cannot be combined with thinking")
        if problems:
            raise errors.ConfigError(f"{self.name}: " + "; ".join(problems))
        max_tokens = params.max_tokens or budget + self.default_max_tokens
        return {"type": "enabled", "budget_tokens": budget}, max_tokens

    def chat_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> HttpRequest:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        thinking, max_tokens = self.thinking(params)
        fields: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": max_tokens,
            "messages": messages_json(messages),
            "system": system or None,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "stop_sequences": list(params.stop) if params.stop else None,
            "thinking": thinking,
            "output_config": {"effort": params.reasoning_effort} if params.reasoning_effort else None,
            "stream": True if stream else None,
        }
        fields.update(tool_fields(params.tools, params.tool_choice))
        if params.json_schema is not None and params.tools:
            raise errors.ConfigError(f"{self.name}: json_schema (a forced answer tool) cannot be combined "
                                     "with tools")
        if params.json_schema is not None:
            # Messages has no response_format: a forced tool call is Anthropic's documented way
            # to get JSON that follows a schema.
            fields["tools"] = [{"name": ANSWER_TOOL, "description": "Give the answer.",
                                "input_schema": params.json_schema}]
            fields["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        return HttpRequest("v1/messages", {k: v for k, v in fields.items() if v is not None})

    def parse_chat(self, body: Any) -> ChatResponse:
        if not isinstance(body, dict) or not isinstance(body.get("content"), list):
            raise errors.ProtocolError("answer has no content blocks", provider=self.name)
        state = StreamState(model=body.get("model") or self.config.model)
        fold_usage(body.get("usage"), state)
        for index, block in enumerate(body["content"]):
            if isinstance(block, dict):
                start_block(index, block, state)
        stop(body.get("stop_reason"), state)
        return state.to_response(0.0, None, 1)

    def read_stream_event(self, event: SSEEvent, state: StreamState) -> StreamChunk | None:
        data = self.event_json(event.data)
        kind = data.get("type", event.event)
        index = _as_int(data.get("index"))
        if kind == "error":
            raise stream_error(self.name, data)
        if kind == "message_start":
            message = data.get("message") or {}
            state.model = message.get("model") or state.model
            fold_usage(message.get("usage"), state)
        elif kind == "content_block_start" and isinstance(block := data.get("content_block"), dict):
            return start_block(index, block, state)
        elif kind == "content_block_delta" and isinstance(delta := data.get("delta"), dict):
            return delta_block(index, delta, state)
        elif kind == "message_delta":
            stop((data.get("delta") or {}).get("stop_reason"), state)
            fold_usage(data.get("usage"), state)
        elif kind == "message_stop":
            state.done = True
        # ping and unknown event types are ignored, as the API reference asks.
        return None
