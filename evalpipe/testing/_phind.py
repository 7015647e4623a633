"""Phind's extension endpoint as the fake speaks it, mounted at `/phind` (clients post to `/agent/`).

No key. The answer always streams as `data: {"choices":[{"delta":{"content":...}}]}` lines and
ends with the body; sampling parameters are not part of the protocol. Phind has no embeddings.
"""

from __future__ import annotations

from typing import Any, ClassVar

from evalpipe.testing._wire import (
    Answer,
    Call,
    ErrorKind,
    HttpRequest,
    Operation,
    Protocol,
    Reply,
    RequestRejected,
    StreamPlan,
    identity_of,
    json_reply,
    sse,
    text_of,
)

_STATUS = {
    ErrorKind.AUTH_MISSING: 401,
    ErrorKind.AUTH_INVALID: 401,
    ErrorKind.PERMISSION: 403,
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONTEXT_LENGTH: 400,
    ErrorKind.QUOTA: 429,
    ErrorKind.RATE_LIMIT: 429,
    ErrorKind.SERVER_ERROR: 500,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.OVERLOADED: 503,
}


class PhindProtocol(Protocol):
    """Phind: one streaming endpoint, `POST /agent/`."""

    vendor: ClassVar[str] = "phind"
    prefix: ClassVar[str] = "/phind"
    requires_key: ClassVar[bool] = False
    models: ClassVar[tuple[str, ...]] = ("Phind-70B",)

    def route(self, method: str, path: str, query: dict[str, str]) -> tuple[Operation, dict[str, str]] | None:
        return (Operation.CHAT, {}) if method == "POST" and path.rstrip("/") == "/agent" else None

    def api_key(self, request: HttpRequest) -> str | None:
        return ""

    def parse(self, operation: Operation, params: dict[str, str], request: HttpRequest) -> Call:
        body = request.json()
        history = body.get("message_history")
        if not isinstance(history, list):
            raise RequestRejected(ErrorKind.BAD_REQUEST, "message_history is required")
        model = body.get("requested_model")
        call = Call(operation=Operation.CHAT, model=model if isinstance(model, str) else "Phind-70B", stream=True)
        call.identity = identity_of(self.vendor, body)
        for message in history:
            if isinstance(message, dict):
                call.texts.append(text_of(message.get("content")))
                if message.get("role") == "user":
                    call.prompt = text_of(message.get("content"))
        user_input = body.get("user_input")
        if isinstance(user_input, str) and user_input:
            call.prompt = user_input
        return call

    def reply(self, call: Call, answer: Answer) -> Reply:
        return json_reply(200, {"choices": [{"delta": {"content": answer.text}}]})

    def stream(self, call: Call, answer: Answer) -> StreamPlan:
        def event(text: str) -> bytes:
            return sse({"choices": [{"delta": {"content": text}}]})

        error = sse({"error": {"message": "An error occurred while generating the answer."}})
        return StreamPlan("text/event-stream", [], [event(p) for p in answer.pieces], [], error, b'data: {"choi\n\n')

    def error(self, kind: ErrorKind, message: str | None, model: str, retry_after_s: float | None) -> Reply:
        text: Any = message or kind.value.replace("_", " ")
        return json_reply(_STATUS[kind], {"error": {"message": text}})

    def list_models(self) -> Reply:
        return json_reply(404, {"error": {"message": "not found"}})
