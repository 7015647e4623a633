"""Ollama's native API as the fake speaks it, mounted at `/ollama` (clients add `/api/...`).

No key is needed. `stream` defaults to true; streams are NDJSON ending with a `"done": true`
line that carries token counts and nanosecond durations.

A request with `think: true` (or a level: "low", "medium", "high") gets `message.thinking`
("Thinking: <last user message>"; `thinking` on `/api/generate`), streamed before the content and
counted in `eval_count`; `[[shape:tool_call]]` in the last user message adds `message.tool_calls` (an
object of arguments, not a string), on a line of its own before the last one when streamed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from evalpipe.testing._answers import count_tokens, image_kind, split_pieces, strip_markers
from evalpipe.testing._wire import (
    Answer,
    Call,
    ErrorKind,
    Finish,
    HttpRequest,
    Operation,
    Protocol,
    Reply,
    RequestRejected,
    StreamPlan,
    dumps,
    identity_of,
    json_reply,
    text_of,
)

_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.AUTH_MISSING: (401, "unauthorized"),
    ErrorKind.AUTH_INVALID: (401, "unauthorized"),
    ErrorKind.PERMISSION: (403, "forbidden"),
    ErrorKind.BAD_REQUEST: (400, "invalid request"),
    ErrorKind.NOT_FOUND: (404, 'model "{model}" not found, try pulling it first'),
    ErrorKind.CONTEXT_LENGTH: (400, "the input length exceeds the context length"),
    ErrorKind.QUOTA: (429, "you have reached your usage limit, please upgrade your plan"),
    ErrorKind.RATE_LIMIT: (429, "too many requests"),
    ErrorKind.SERVER_ERROR: (500, "an error was encountered while running the model"),
    ErrorKind.UNAVAILABLE: (503, "server busy, please try again.  maximum pending requests exceeded"),
    ErrorKind.OVERLOADED: (503, "server busy, please try again.  maximum pending requests exceeded"),
}

# Durations reported in the final line, in nanoseconds per token: fixed so answers stay deterministic.
_LOAD_NS, _PROMPT_NS, _EVAL_NS = 1_000_000, 200_000, 10_000_000


def _tool_calls(answer: Answer) -> list[dict[str, Any]]:
    """`message.tool_calls`: arguments as objects; Ollama parses calls itself, so one whose arguments
    are not JSON is not a call (see `_text`)."""
    return [{"function": {"index": index, "name": planned.name, "arguments": planned.parsed()}}
            for index, planned in enumerate(answer.tool_calls) if isinstance(planned.parsed(), dict)]


def _text(answer: Answer) -> str:
    """The answer text; a call Ollama could not parse stays in the text, as the model wrote it."""
    broken = [planned for planned in answer.tool_calls if not isinstance(planned.parsed(), dict)]
    return answer.text + "".join(f' {{"name": "{p.name}", "arguments": {p.arguments}' for p in broken)


def _thinking(call: Call) -> str:
    """What a model asked to think (`think: true` or a level) thinks: "Thinking: <prompt>"."""
    return f"Thinking: {strip_markers(call.prompt)}".strip() if call.extras.get("think") else ""


def _parse_messages(call: Call, messages: list[Any]) -> None:
    """Texts, the last user text and its images (base64 in `images`), and trailing tool results."""
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = text_of(message.get("content"))
        call.texts.append(content)
        role = message.get("role")
        if role == "user":
            call.prompt, call.tool_results = content, []
            images = message.get("images") or []
            if not isinstance(images, list):
                raise RequestRejected(ErrorKind.BAD_REQUEST, "images must be an array of base64 strings")
            call.images = [image_kind("", str(image)) for image in images]
        elif role == "tool":
            call.tool_results.append(content)
        else:
            call.tool_results = []


class OllamaProtocol(Protocol):
    """Ollama: `/api/chat`, `/api/generate`, `/api/embed` (and the older `/api/embeddings`), `/api/tags`."""

    vendor: ClassVar[str] = "ollama"
    prefix: ClassVar[str] = "/ollama"
    requires_key: ClassVar[bool] = False
    models: ClassVar[tuple[str, ...]] = ("llama3.2:latest", "gemma3:270m", "nomic-embed-text:latest")
    operations: ClassVar[dict[tuple[str, str], Operation]] = {
        ("POST", "/api/chat"): Operation.CHAT,
        ("POST", "/api/generate"): Operation.COMPLETE,
        ("POST", "/api/embed"): Operation.EMBED,
        ("POST", "/api/embeddings"): Operation.EMBED,
        ("GET", "/api/tags"): Operation.LIST_MODELS,
    }

    def route(self, method: str, path: str, query: dict[str, str]) -> tuple[Operation, dict[str, str]] | None:
        path = path.rstrip("/")
        operation = self.operations.get((method, path))
        if operation is None:
            return None
        return operation, ({"legacy": "yes"} if path == "/api/embeddings" else {})

    def api_key(self, request: HttpRequest) -> str | None:
        return request.bearer() or ""

    def parse(self, operation: Operation, params: dict[str, str], request: HttpRequest) -> Call:
        body = request.json()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "model is required")
        rest = {k: v for k, v in body.items() if k != "stream"}
        call = Call(operation=operation, model=model, stream=body.get("stream", True) is not False)
        call.identity = identity_of(self.vendor, operation.value, params, rest)
        options = body.get("options") or {}
        limit = options.get("num_predict") if isinstance(options, dict) else None
        call.max_tokens = limit if isinstance(limit, int) and limit >= 0 else None
        think = body.get("think")
        call.extras["think"] = think is True or think in ("low", "medium", "high")
        fmt = body.get("format")
        call.json_mode = fmt == "json"
        call.json_schema = fmt if isinstance(fmt, dict) else None
        if operation is Operation.CHAT:
            messages = body.get("messages") or []
            if not isinstance(messages, list):
                raise RequestRejected(ErrorKind.BAD_REQUEST, "messages must be an array")
            _parse_messages(call, messages)
            for tool in body.get("tools") or []:
                function = tool.get("function") if isinstance(tool, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise RequestRejected(ErrorKind.BAD_REQUEST, "invalid tool: function.name is required")
                parameters = function.get("parameters")
                call.tools[function["name"]] = parameters if isinstance(parameters, dict) else {}
        elif operation is Operation.COMPLETE:
            call.prompt = str(body.get("prompt") or "")
            call.texts = [str(body.get("system") or ""), call.prompt]
        else:
            call.stream = False
            value = body.get("prompt") if params.get("legacy") else body.get("input")
            call.inputs = [value] if isinstance(value, str) else [str(v) for v in value or []]
            dimensions = body.get("dimensions")
            call.dimensions = dimensions if isinstance(dimensions, int) else None
            call.extras["legacy"] = bool(params.get("legacy"))
        return call

    def _line(self, call: Call, text: str, done: bool, thinking: str = "",
              tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line: dict[str, Any] = {"model": call.model, "created_at": created}
        if call.operation is Operation.CHAT:
            line["message"] = {"role": "assistant", "content": text}
            if thinking:
                line["message"]["thinking"] = thinking
            if tool_calls:
                line["message"]["tool_calls"] = tool_calls
        else:
            line["response"] = text
            if thinking:
                line["thinking"] = thinking
        line["done"] = done
        return line

    def _final(self, call: Call, answer: Answer, text: str, thinking: str = "",
               tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        line = self._line(call, text, True, thinking, tool_calls)
        output = answer.output_tokens + count_tokens(_thinking(call))  # eval_count includes thinking
        prompt_ns, eval_ns = _PROMPT_NS * max(answer.input_tokens, 1), _EVAL_NS * output
        line.update(
            # Ollama ends a turn that called tools with "stop".
            done_reason="stop" if answer.finish is Finish.TOOL_CALLS else answer.finish.value,
            total_duration=_LOAD_NS + prompt_ns + eval_ns,
            load_duration=_LOAD_NS,
            prompt_eval_count=answer.input_tokens,
            prompt_eval_duration=prompt_ns,
            eval_count=output,
            eval_duration=eval_ns,
        )
        return line

    def reply(self, call: Call, answer: Answer) -> Reply:
        if call.operation is not Operation.EMBED:
            text = _text(answer) if call.operation is Operation.CHAT else answer.text
            return json_reply(200, self._final(call, answer, text, _thinking(call), _tool_calls(answer)))
        if call.extras.get("legacy"):
            return json_reply(200, {"embedding": answer.embeddings[0] if answer.embeddings else []})
        prompt_ns = _PROMPT_NS * max(answer.input_tokens, 1)
        return json_reply(
            200,
            {
                "model": call.model,
                "embeddings": answer.embeddings,
                "total_duration": _LOAD_NS + prompt_ns,
                "load_duration": _LOAD_NS,
                "prompt_eval_count": answer.input_tokens,
            },
        )

    def stream(self, call: Call, answer: Answer) -> StreamPlan:
        lines = [self._line(call, "", False, piece) for piece in split_pieces(_thinking(call))]
        text = _text(answer) if call.operation is Operation.CHAT else answer.text
        lines += [self._line(call, piece, False) for piece in split_pieces(text)]
        if calls := _tool_calls(answer):
            lines.append(self._line(call, "", False, tool_calls=calls))
        deltas = [dumps(line) + b"\n" for line in lines]
        tail = [dumps(self._final(call, answer, "")) + b"\n"]
        error = dumps({"error": "an error was encountered while running the model: unexpected EOF"}) + b"\n"
        broken = b'{"model":"' + call.model.encode() + b'","message":{"role":"assistant","content":"Ec\n'
        return StreamPlan("application/x-ndjson", [], deltas, tail, error, broken)

    def error(self, kind: ErrorKind, message: str | None, model: str, retry_after_s: float | None) -> Reply:
        status, default = _ERRORS[kind]
        return json_reply(status, {"error": message or default.format(model=model)})

    def list_models(self) -> Reply:
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": "2025-01-01T00:00:00Z",
                "size": 1_000_000,
                "digest": f"{index:064x}",
                "details": {"format": "gguf", "family": name.split(":")[0], "parameter_size": "1B"},
            }
            for index, name in enumerate(self.models)
        ]
        return json_reply(200, {"models": models})
