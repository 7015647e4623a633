"""Anthropic Messages as the fake speaks it, mounted at `/anthropic` (the SDK adds `/v1/messages`).

Beyond text, an answer shows the other shapes of the Messages API: a request with `thinking`
enabled gets a `thinking` block ("Thinking: <last user message>", with a signature; streamed as
`thinking_delta`s then a `signature_delta`), and markers in the last user message add the rest:
`[[shape:redacted_thinking]]` a `redacted_thinking` block, `[[shape:tool_call]]` a `tool_use` block
(stop reason `tool_use`; streamed as `input_json_delta`s), `[[shape:refusal]]` the stop reason
`refusal`, `[[cached:N]]` / `[[cache_write:N]]` that many input tokens reported as read from /
written to the prompt cache (and taken out of `input_tokens`, as Anthropic counts them), and
`[[shape:invalid_request]]` makes the `error_event` fault an `invalid_request_error` event instead
of `overloaded_error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from evalpipe.testing._answers import count_tokens, image_kind, markers, split_pieces, strip_markers
from evalpipe.testing._wire import (
    Answer,
    Call,
    ErrorKind,
    Finish,
    HttpRequest,
    Operation,
    PlannedToolCall,
    Protocol,
    RateLimitState,
    Reply,
    RequestRejected,
    StreamPlan,
    identity_of,
    json_reply,
    new_id,
    optional_int,
    sse,
    text_of,
)

_ERRORS: dict[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.AUTH_MISSING: (401, "authentication_error", "x-api-key header is required"),
    ErrorKind.AUTH_INVALID: (401, "authentication_error", "invalid x-api-key"),
    ErrorKind.PERMISSION: (
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error", "Invalid request."),
    ErrorKind.NOT_FOUND: (404, "not_found_error", "model: {model}"),
    ErrorKind.CONTEXT_LENGTH: (
        400,
        "invalid_request_error",
        "prompt is too long: 210000 tokens > 200000 maximum",
    ),
    ErrorKind.QUOTA: (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. "
        "Please go to Plans & Billing to upgrade or purchase credits.",
    ),
    ErrorKind.RATE_LIMIT: (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization. Please try again later.",
    ),
    ErrorKind.SERVER_ERROR: (500, "api_error", "Internal server error"),
    ErrorKind.UNAVAILABLE: (503, "api_error", "Service unavailable"),
    ErrorKind.OVERLOADED: (529, "overloaded_error", "Overloaded"),
}

_STOP_REASONS = {Finish.STOP: "end_turn", Finish.LENGTH: "max_tokens"}
_SIGNATURE = "EqQBCkgIARABGAIiQFakeSignatureOfTheThinkingBlock=="
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _marker_int(found: dict[str, str], name: str) -> int:
    try:
        return max(int(found.get(name) or 0), 0)
    except ValueError:
        raise RequestRejected(ErrorKind.BAD_REQUEST, f"bad fake-server marker: {name}") from None


def _check_thinking(body: dict[str, Any], thinking: dict[str, Any]) -> None:
    """The extended-thinking guide's rules, refused with 400 as the API does."""
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        raise RequestRejected(ErrorKind.BAD_REQUEST, "thinking.enabled.budget_tokens: Input should be greater "
                                                     "than or equal to 1024")
    if isinstance(body.get("max_tokens"), int) and body["max_tokens"] <= budget:
        raise RequestRejected(ErrorKind.BAD_REQUEST, "`max_tokens` must be greater than "
                                                     "`thinking.budget_tokens`.")
    if body.get("temperature", 1) != 1 or "top_k" in body:
        raise RequestRejected(ErrorKind.BAD_REQUEST, "`temperature` may only be set to 1 when thinking is "
                                                     "enabled.")


def _parse_messages(call: Call, messages: list[Any]) -> None:
    """Texts, the last user text and its images, and the tool results the conversation ends with.

    As the API does: a `tool_result` must answer a `tool_use` of an earlier assistant turn."""
    called: set[str] = set()
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            role = message.get("role") if isinstance(message, dict) else None
            raise RequestRejected(
                ErrorKind.BAD_REQUEST,
                f'messages: Unexpected role "{role}". The Messages API accepts a top-level `system` '
                f'parameter, not "system" as an input message role.',
            )
        content = message.get("content")
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        call.texts.append(text_of(content))
        if message["role"] == "assistant":
            called.update(str(b.get("id")) for b in blocks if b.get("type") == "tool_use")
            call.tool_results = []
            continue
        results = [b for b in blocks if b.get("type") == "tool_result"]
        for result in results:
            if result.get("tool_use_id") not in called:
                raise RequestRejected(ErrorKind.BAD_REQUEST, "messages: unexpected `tool_use_id` found in "
                                      "`tool_result` blocks. Each `tool_result` block must have a corresponding "
                                      "`tool_use` block in the previous message.")
            call.tool_results.append(text_of(result.get("content")))
        if not results:
            call.prompt, call.tool_results = text_of(content), []
            call.images = [_image_kind(b) for b in blocks if b.get("type") == "image"]


def _image_kind(block: dict[str, Any]) -> str:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
        raise RequestRejected(ErrorKind.BAD_REQUEST, "messages: image.source: expected a base64 or url source")
    if source["type"] == "url":
        return "url"
    if source.get("media_type") not in ("image/jpeg", "image/png", "image/gif", "image/webp"):
        raise RequestRejected(ErrorKind.BAD_REQUEST, "messages: image.source.media_type: Input should be "
                              "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'")
    return image_kind(str(source["media_type"]), str(source.get("data") or ""))


def _parse_tools(call: Call, body: dict[str, Any]) -> None:
    """The offered tools (`{name, description, input_schema}`) and `tool_choice`, in OpenAI's words."""
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise RequestRejected(ErrorKind.BAD_REQUEST, "tools.0.name: Field required")
        if not isinstance(tool.get("input_schema"), dict):
            raise RequestRejected(ErrorKind.BAD_REQUEST, "tools.0.custom.input_schema: Field required")
        call.tools[tool["name"]] = tool["input_schema"]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        call.tool_choice = str(choice.get("name")) if choice.get("type") == "tool" else \
            _TOOL_CHOICES.get(str(choice.get("type")))


@dataclass(frozen=True)
class AnswerShape:
    """The parts of one Anthropic answer beyond its text, chosen by the request and its markers."""

    text: str
    thinking: str | None  # present when the request enabled extended thinking
    redacted: bool  # [[shape:redacted_thinking]]
    tool_calls: tuple[PlannedToolCall, ...]  # tool markers, [[shape:tool_call]], or offered tools
    stop_reason: str  # [[shape:refusal]] makes it "refusal"
    cache_read: int  # [[cached:N]]
    cache_write: int  # [[cache_write:N]]
    input_tokens: int
    stream_error: str  # the error type of the error_event fault: [[shape:invalid_request]] or overloaded

    @classmethod
    def of(cls, call: Call, answer: Answer) -> AnswerShape:
        found = markers(call.prompt)
        shape = found.get("shape")
        thinking = f"Thinking: {strip_markers(call.prompt)}".strip() if call.extras.get("thinking") else None
        stop = "tool_use" if answer.tool_calls else _STOP_REASONS.get(answer.finish, "end_turn")
        stop = "refusal" if shape == "refusal" else stop
        error = "invalid_request_error" if shape == "invalid_request" else "overloaded_error"
        # A forced tool call (tool_choice any or tool) comes without any text before it.
        forced = answer.tool_calls and call.tool_choice not in (None, "auto", "none")
        return cls("" if forced else answer.text, thinking, shape == "redacted_thinking",
                   tuple(answer.tool_calls), stop,
                   _marker_int(found, "cached"), _marker_int(found, "cache_write"), answer.input_tokens, error)

    def blocks(self) -> list[dict[str, Any]]:
        """The content blocks of the whole message."""
        blocks: list[dict[str, Any]] = []
        if self.thinking is not None:
            blocks.append({"type": "thinking", "thinking": self.thinking, "signature": _SIGNATURE})
        if self.redacted:
            blocks.append({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlx"})
        if self.text or not self.tool_calls:
            blocks.append({"type": "text", "text": self.text})
        blocks += [{"type": "tool_use", "id": "toolu_" + planned.id, "name": planned.name,
                    "input": planned.parsed()} for planned in self.tool_calls]
        return blocks

    def stream_blocks(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Each block as streamed: its opening `content_block` and its deltas."""
        streamed: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        if self.thinking is not None:
            deltas = [{"type": "thinking_delta", "thinking": p} for p in split_pieces(self.thinking)]
            streamed.append(({"type": "thinking", "thinking": "", "signature": ""},
                             [*deltas, {"type": "signature_delta", "signature": _SIGNATURE}]))
        if self.redacted:
            streamed.append((self.blocks()[1 if self.thinking is not None else 0], []))
        if self.text or not self.tool_calls:
            streamed.append(({"type": "text", "text": ""},
                             [{"type": "text_delta", "text": p} for p in split_pieces(self.text)]))
        for planned in self.tool_calls:
            # The input arrives as fragments of JSON text; a malformed one stays malformed.
            arguments = planned.arguments
            streamed.append(({"type": "tool_use", "id": "toolu_" + planned.id, "name": planned.name, "input": {}},
                             [{"type": "input_json_delta", "partial_json": arguments[:9]},
                              {"type": "input_json_delta", "partial_json": arguments[9:]}]))
        return streamed

    def usage(self, output_tokens: int) -> dict[str, int]:
        """Anthropic's usage: `input_tokens` excludes the cache reads and writes; thinking is output."""
        cached = min(self.cache_read + self.cache_write, self.input_tokens)
        return {
            "input_tokens": self.input_tokens - cached,
            "output_tokens": output_tokens + count_tokens(self.thinking or ""),
            "cache_creation_input_tokens": min(self.cache_write, cached),
            "cache_read_input_tokens": cached - min(self.cache_write, cached),
        }


class AnthropicProtocol(Protocol):
    """Anthropic: `x-api-key` and `anthropic-version` headers, `max_tokens` required, system
    prompt at the top level, SSE with named events ending with `message_stop`."""

    vendor: ClassVar[str] = "anthropic"
    prefix: ClassVar[str] = "/anthropic"
    models: ClassVar[tuple[str, ...]] = ("claude-3-5-haiku-latest", "claude-sonnet-4-5")

    def route(self, method: str, path: str, query: dict[str, str]) -> tuple[Operation, dict[str, str]] | None:
        path = path.rstrip("/")
        if method == "POST" and path == "/v1/messages":
            return Operation.CHAT, {}
        if method == "GET" and path == "/v1/models":
            return Operation.LIST_MODELS, {}
        return None

    def api_key(self, request: HttpRequest) -> str | None:
        return request.headers.get("x-api-key") or request.bearer()

    def parse(self, operation: Operation, params: dict[str, str], request: HttpRequest) -> Call:
        if "anthropic-version" not in request.headers:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "anthropic-version: header is required")
        body = request.json()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "model: Field required")
        if "max_tokens" not in body:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "max_tokens: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "messages: at least one message is required")
        rest = {k: v for k, v in body.items() if k != "stream"}
        call = Call(
            operation=Operation.CHAT,
            model=model,
            max_tokens=optional_int(body.get("max_tokens"), "max_tokens"),
            stream=bool(body.get("stream")),
            identity=identity_of(self.vendor, rest),
        )
        system = text_of(body.get("system"))
        if system:
            call.texts.append(system)
        _parse_messages(call, messages)
        _parse_tools(call, body)
        thinking = body.get("thinking")
        call.extras["thinking"] = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            _check_thinking(body, thinking)
        output = body.get("output_format") or (body.get("output_config") or {}).get("format")
        if isinstance(output, dict) and output.get("type") == "json_schema":
            schema = output.get("schema")
            call.json_schema = schema if isinstance(schema, dict) else {}
        return call

    def _message(self, call: Call, content: list[dict[str, Any]], stop: str | None, output: int) -> dict[str, Any]:
        return {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": output},
        }

    def reply(self, call: Call, answer: Answer) -> Reply:
        shape = AnswerShape.of(call, answer)
        message = self._message(call, shape.blocks(), shape.stop_reason, 0)
        message["usage"] = shape.usage(answer.output_tokens)
        return json_reply(200, message, [("request-id", new_id("req_"))])

    def stream(self, call: Call, answer: Answer) -> StreamPlan:
        shape = AnswerShape.of(call, answer)
        start = self._message(call, [], None, 1)
        start["usage"] = {**shape.usage(1), "output_tokens": 1}
        head = [sse({"type": "message_start", "message": start}, event="message_start")]
        # One element per delta the client sees; a block's start and stop events travel with its
        # first and last delta, so the faults that cut after the first delta cut inside a block.
        deltas: list[bytes] = []
        for index, (block, pieces) in enumerate(shape.stream_blocks()):
            opening = sse({"type": "content_block_start", "index": index, "content_block": block},
                          event="content_block_start")
            events = [sse({"type": "content_block_delta", "index": index, "delta": delta},
                          event="content_block_delta") for delta in pieces] or [b""]
            # The streaming guide's order: the first block opens, then a ping, then its deltas.
            events[0] = opening + (sse({"type": "ping"}, event="ping") if index == 0 else b"") + events[0]
            events[-1] += sse({"type": "content_block_stop", "index": index}, event="content_block_stop")
            deltas += events
        stop = {"stop_reason": shape.stop_reason, "stop_sequence": None}
        tail = [
            sse({"type": "message_delta", "delta": stop, "usage": shape.usage(answer.output_tokens)},
                event="message_delta"),
            sse({"type": "message_stop"}, event="message_stop"),
        ]
        error_type = shape.stream_error
        message = {"overloaded_error": "Overloaded", "invalid_request_error": "Invalid request."}.get(
            error_type, "Error")
        error = {"type": "error", "error": {"type": error_type, "message": message}}
        broken = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"ty\n\n'
        return StreamPlan("text/event-stream", head, deltas, tail, sse(error, event="error"), broken)

    def error(self, kind: ErrorKind, message: str | None, model: str, retry_after_s: float | None) -> Reply:
        status, error_type, default = _ERRORS[kind]
        request_id = new_id("req_")
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message or default.format(model=model)},
            "request_id": request_id,
        }
        return json_reply(status, body, [("request-id", request_id)])

    def list_models(self) -> Reply:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in self.models
        ]
        return json_reply(200, {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})

    def ratelimit_headers(self, state: RateLimitState) -> list[tuple[str, str]]:
        def at(seconds: float) -> str:
            return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

        return state.headers(lambda kind, field: f"anthropic-ratelimit-{kind}-{field}", at)
