"""Anthropic Messages as the fake speaks it, mounted at `/anthropic` (the SDK adds `/v1/messages`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from evalpipe.testing._wire import (
    Answer,
    Call,
    ErrorKind,
    Finish,
    HttpRequest,
    Operation,
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
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                role = message.get("role") if isinstance(message, dict) else None
                raise RequestRejected(
                    ErrorKind.BAD_REQUEST,
                    f'messages: Unexpected role "{role}". The Messages API accepts a top-level `system` '
                    f'parameter, not "system" as an input message role.',
                )
            call.texts.append(text_of(message.get("content")))
            if message["role"] == "user":
                call.prompt = text_of(message.get("content"))
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
        message = self._message(call, [{"type": "text", "text": answer.text}], _STOP_REASONS[answer.finish], 0)
        message["usage"] = {
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        return json_reply(200, message, [("request-id", new_id("req_"))])

    def stream(self, call: Call, answer: Answer) -> StreamPlan:
        start = self._message(call, [], None, 1)
        start["usage"]["input_tokens"] = answer.input_tokens
        head = [
            sse({"type": "message_start", "message": start}, event="message_start"),
            sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                event="content_block_start",
            ),
            sse({"type": "ping"}, event="ping"),
        ]
        deltas = [
            sse(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                event="content_block_delta",
            )
            for piece in answer.pieces
        ]
        stop = {"stop_reason": _STOP_REASONS[answer.finish], "stop_sequence": None}
        tail = [
            sse({"type": "content_block_stop", "index": 0}, event="content_block_stop"),
            sse(
                {"type": "message_delta", "delta": stop, "usage": {"output_tokens": answer.output_tokens}},
                event="message_delta",
            ),
            sse({"type": "message_stop"}, event="message_stop"),
        ]
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
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
