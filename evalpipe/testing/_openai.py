"""OpenAI Chat Completions, Completions, Embeddings and Models, as the fake speaks them.

Mounted at `/openai/v1`. Compatible vendors (DeepSeek, xAI, Groq, Mistral, OpenRouter, Azure)
subclass `OpenAIProtocol` in `_openai_compatible` and override only what differs.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, ClassVar

from evalpipe.testing._answers import (
    count_tokens,
    data_url_kind,
    markers,
    shape_of,
    split_pieces,
    thinking_for,
)
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
    go_duration,
    identity_of,
    json_reply,
    new_id,
    now,
    optional_int,
    sse,
    text_of,
)

DONE = b"data: [DONE]\n\n"

# status, error type, error code, message ({model} and {wait} are filled in)
_ERRORS: dict[ErrorKind, tuple[int, str, str | None, str]] = {
    ErrorKind.AUTH_MISSING: (
        401,
        "invalid_request_error",
        None,
        "You didn't provide an API key. You need to provide your API key in an Authorization header "
        "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    ),
    ErrorKind.AUTH_INVALID: (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    ErrorKind.PERMISSION: (
        403,
        "invalid_request_error",
        "permission_denied",
        "You are not allowed to use this resource with this API key.",
    ),
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error", None, "Invalid request."),
    ErrorKind.NOT_FOUND: (
        404,
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    ErrorKind.CONTEXT_LENGTH: (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens. However, your messages resulted in "
        "131072 tokens. Please reduce the length of the messages.",
    ),
    ErrorKind.QUOTA: (
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    ErrorKind.RATE_LIMIT: (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} on requests per min (RPM).{wait}",
    ),
    ErrorKind.SERVER_ERROR: (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    ErrorKind.UNAVAILABLE: (503, "server_error", None, "The service is temporarily unavailable."),
    ErrorKind.OVERLOADED: (
        503,
        "server_error",
        None,
        "The engine is currently overloaded, please try again later.",
    ),
    ErrorKind.CONTENT_FILTER: (
        400,
        "invalid_request_error",
        "content_filter",
        "The response was filtered due to the prompt triggering the content management policy. "
        "Please modify your prompt and retry.",
    ),
}


class OpenAIProtocol(Protocol):
    """The OpenAI API: Bearer auth, SSE streams ending `data: [DONE]`."""

    vendor: ClassVar[str] = "openai"
    prefix: ClassVar[str] = "/openai"
    base_path: ClassVar[str] = "/v1"
    api_roots: ClassVar[tuple[str, ...]] = ("/v1",)
    # Where the Files and Batch APIs live (the first root also runs the batch lines); () for none.
    batch_roots: ClassVar[tuple[str, ...]] = ("/v1",)
    retry_headers: ClassVar[tuple[str, ...]] = ("retry-after", "retry-after-ms")
    models: ClassVar[tuple[str, ...]] = ("gpt-4o-mini", "gpt-4o", "o3-mini", "text-embedding-3-small")
    operations: ClassVar[dict[tuple[str, str], Operation]] = {
        ("POST", "/chat/completions"): Operation.CHAT,
        ("POST", "/completions"): Operation.COMPLETE,
        ("POST", "/embeddings"): Operation.EMBED,
        ("GET", "/models"): Operation.LIST_MODELS,
    }
    # Reasoning models reject `max_tokens` with 400 unsupported_parameter.
    reasoning_models: ClassVar[tuple[str, ...]] = ("o1", "o3", "o4", "gpt-5")
    usage_on_finish_chunk: ClassVar[bool] = False  # xAI, Mistral: usage rides on the finish_reason chunk
    # Models (by substring) that think before answering, and whether the vendor shows the thinking
    # (OpenAI's o-series only count it in `completion_tokens_details.reasoning_tokens`).
    thinking_models: ClassVar[tuple[str, ...]] = ("o1", "o3", "o4", "gpt-5")
    completion_includes_reasoning: ClassVar[bool] = True  # xAI bills reasoning on top of completion_tokens
    stream_comments: ClassVar[tuple[bytes, ...]] = ()  # SSE comments sent before the first chunk
    status_overrides: ClassVar[dict[ErrorKind, int]] = {}
    # How a wrong key is quoted back in the 401 message, masked: a format over the key's `head` (first
    # 8 characters), `stars` and `tail` (last 4), as OpenAI writes "sk-WRQsP****...xQBt"; None: not quoted.
    invalid_key_message: ClassVar[str | None] = (
        "Incorrect API key provided: {head}{stars}{tail}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )

    # -- requests -------------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, str]) -> tuple[Operation, dict[str, str]] | None:
        for root in self.api_roots:
            if path.startswith(root + "/"):
                operation = self.operations.get((method, path[len(root) :].rstrip("/")))
                if operation is not None:
                    return operation, {}
        return None

    def api_key(self, request: HttpRequest) -> str | None:
        return request.bearer()

    def parse(self, operation: Operation, params: dict[str, str], request: HttpRequest) -> Call:
        body = request.json()
        model = params.get("model") or body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "you must provide a model parameter")
        self.check_params(model, body)
        call = Call(operation=operation, model=model, stream=bool(body.get("stream")))
        rest = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        call.identity = identity_of(self.vendor, operation.value, params, rest)
        options = body.get("stream_options")
        call.include_usage = call.stream and isinstance(options, dict) and bool(options.get("include_usage"))
        call.max_tokens = optional_int(body.get("max_completion_tokens", body.get("max_tokens")), "max_tokens")
        if operation is Operation.CHAT:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise RequestRejected(ErrorKind.BAD_REQUEST, "'messages' must be a non-empty array.")
            self.parse_messages(call, messages)
            self.parse_tools(call, body)
            self.parse_response_format(call, body.get("response_format"))
            call.extras["cached"] = _cached_marker(call.prompt)
            if shape_of(call) == "content_filter_error":
                raise RequestRejected(ErrorKind.CONTENT_FILTER, _ERRORS[ErrorKind.CONTENT_FILTER][3])
        elif operation is Operation.COMPLETE:
            prompt = body.get("prompt", "")
            call.prompt = prompt[0] if isinstance(prompt, list) and prompt else str(prompt or "")
            call.texts.append(call.prompt)
        elif operation is Operation.EMBED:
            call.inputs = _embedding_inputs(body.get("input"))
            call.dimensions = optional_int(body.get("dimensions"), "dimensions")
            call.extras["base64"] = body.get("encoding_format") == "base64"
        return call

    @staticmethod
    def parse_messages(call: Call, messages: list[Any]) -> None:
        """Texts, the last user turn (and its images) and the tool results the conversation ends with.

        As the API does, a `tool` message must answer a call of an earlier assistant message."""
        called: set[str] = set()
        for message in messages:
            if not isinstance(message, dict) or "role" not in message:
                raise RequestRejected(ErrorKind.BAD_REQUEST, "Each message needs a 'role'.")
            content = message.get("content")
            call.texts.append(text_of(content))
            role = message["role"]
            if role == "user":
                call.prompt, call.tool_results = text_of(content), []
                parts = content if isinstance(content, list) else []
                call.images = [data_url_kind(_image_url(part)) for part in parts
                               if isinstance(part, dict) and part.get("type") == "image_url"]
            elif role == "assistant":
                call.tool_results = []
                for entry in message.get("tool_calls") or []:
                    called.add(str(entry.get("id")) if isinstance(entry, dict) else "")
            elif role == "tool":
                if message.get("tool_call_id") not in called:
                    raise RequestRejected(ErrorKind.BAD_REQUEST, "Invalid parameter: messages with role 'tool' "
                                          "must be a response to a preceeding message with 'tool_calls'.")
                call.tool_results.append(text_of(content))

    @staticmethod
    def parse_tools(call: Call, body: dict[str, Any]) -> None:
        """The offered tools (`{"type": "function", "function": {name, parameters}}`) and `tool_choice`."""
        for tool in body.get("tools") or []:
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise RequestRejected(ErrorKind.BAD_REQUEST, "Missing required parameter: 'tools[0].function'.")
            parameters = function.get("parameters")
            call.tools[function["name"]] = parameters if isinstance(parameters, dict) else {}
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            choice = (choice.get("function") or {}).get("name")
        call.tool_choice = {"any": "required"}.get(str(choice), choice) if choice is not None else None
        if call.tool_choice is not None and not call.tools:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "Invalid value for 'tool_choice': 'tool_choice' is "
                                  "only allowed when 'tools' are specified.")

    def check_params(self, model: str, body: dict[str, Any]) -> None:
        """Reject parameters this vendor or model refuses."""
        if "max_tokens" in body and model.startswith(self.reasoning_models):
            raise RequestRejected(
                ErrorKind.BAD_REQUEST,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
            )

    @staticmethod
    def parse_response_format(call: Call, response_format: Any) -> None:
        """Structured output: `json_object` mode or a `json_schema`."""
        if not isinstance(response_format, dict):
            return
        if response_format.get("type") == "json_object":
            call.json_mode = True
        elif response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            call.json_schema = schema if isinstance(schema, dict) else {}

    # -- responses ------------------------------------------------------------------------------
    def thinking(self, call: Call) -> str | None:
        """The reasoning of a thinking model (shown or not), None for other models."""
        if call.operation is not Operation.CHAT or not any(name in call.model for name in self.thinking_models):
            return None
        return thinking_for(call)

    def usage(self, call: Call, answer: Answer) -> dict[str, Any]:
        """The `usage` object of a response: reasoning tokens in the details (and, except on xAI, in
        `completion_tokens`); `[[cached:N]]` reports N prompt tokens read from the cache."""
        reasoning = count_tokens(self.thinking(call) or "")
        completion = answer.output_tokens + (reasoning if self.completion_includes_reasoning else 0)
        cached = min(int(call.extras.get("cached", 0)), answer.input_tokens)
        return {
            "prompt_tokens": answer.input_tokens,
            "completion_tokens": completion,
            "total_tokens": answer.input_tokens + answer.output_tokens + reasoning,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def shows_reasoning(self, call: Call) -> bool:
        """Whether the vendor sends a thinking model's reasoning text (OpenAI only counts it)."""
        return False

    def reasoning_fields(self, call: Call, text: str) -> dict[str, Any]:
        """Where this vendor puts (a piece of) reasoning in a message or delta."""
        return {"reasoning_content": text}

    def finish_reason(self, call: Call, answer: Answer) -> str:
        shape = shape_of(call)
        if answer.tool_calls:
            return Finish.TOOL_CALLS.value
        if shape == "content_filter":
            return Finish.CONTENT_FILTER.value
        return answer.finish.value

    def choice_extras(self, call: Call, answer: Answer) -> dict[str, Any]:
        """Fields a vendor adds to each choice (Azure's `content_filter_results`)."""
        return {}

    def body_extras(self, call: Call) -> dict[str, Any]:
        """Fields a vendor adds to a chat response body (Azure's `prompt_filter_results`)."""
        return {}

    def message(self, call: Call, answer: Answer) -> dict[str, Any]:
        """The assistant message of a chat response."""
        message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []}
        shape = shape_of(call)
        if shape == "refusal":
            message.update(content=None, refusal=answer.text)
        elif answer.tool_calls:
            message.update(content=None, tool_calls=[
                {"id": "call_" + planned.id, "type": "function",
                 "function": {"name": planned.name, "arguments": planned.arguments}}
                for planned in answer.tool_calls])
        elif shape == "content_filter":
            message["content"] = None
        thinking = self.thinking(call)
        if thinking is not None and self.shows_reasoning(call):
            message.update(self.reasoning_fields(call, thinking))
        return message

    def delta_chunks(self, call: Call, answer: Answer) -> list[dict[str, Any]]:
        """The `delta` objects that stream the answer (reasoning first, where shown)."""
        thinking = self.thinking(call)
        deltas: list[dict[str, Any]] = []
        if thinking is not None and self.shows_reasoning(call):
            deltas += [self.reasoning_fields(call, piece) for piece in split_pieces(thinking)]
        shape = shape_of(call)
        if shape == "refusal":
            return deltas + [{"refusal": piece} for piece in answer.pieces]
        if answer.tool_calls:
            # Each call opens with its id and name, then its arguments come in fragments keyed by index.
            for index, planned in enumerate(answer.tool_calls):
                head = {"index": index, "id": "call_" + planned.id, "type": "function",
                        "function": {"name": planned.name, "arguments": ""}}
                pieces = split_pieces(planned.arguments)
                arguments = [{"index": index, "function": {"arguments": piece}} for piece in pieces]
                deltas += [{"tool_calls": [part]} for part in [head, *arguments]]
            return deltas
        if shape == "content_filter":
            return deltas + [{"content": piece} for piece in answer.pieces[:1]]
        return deltas + [{"content": piece} for piece in answer.pieces]

    def reply(self, call: Call, answer: Answer) -> Reply:
        if call.operation is Operation.EMBED:
            return json_reply(200, self.embeddings(call, answer))
        base = {"created": now(), "model": call.model, "system_fingerprint": "fp_fake"}
        finish = self.finish_reason(call, answer)
        if call.operation is Operation.COMPLETE:
            choice: dict[str, Any] = {
                "text": answer.text,
                "index": 0,
                "logprobs": None,
                "finish_reason": finish,
            }
            body = {"id": new_id("cmpl-"), "object": "text_completion", **base, "choices": [choice]}
        else:
            choice = {
                "index": 0,
                "message": self.message(call, answer),
                "logprobs": None,
                "finish_reason": finish,
                **self.choice_extras(call, answer),
            }
            body = {"id": new_id("chatcmpl-"), "object": "chat.completion", **base, "choices": [choice],
                    **self.body_extras(call)}
        body["usage"] = self.usage(call, answer)
        return json_reply(200, body)

    def embeddings(self, call: Call, answer: Answer) -> dict[str, Any]:
        """An embeddings response body (`base64` packs little-endian float32, as OpenAI does)."""
        data = []
        for index, vector in enumerate(answer.embeddings):
            value: Any = vector
            if call.extras.get("base64"):
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        usage = {"prompt_tokens": answer.input_tokens, "total_tokens": answer.input_tokens}
        return {"object": "list", "data": data, "model": call.model, "usage": usage}

    def stream(self, call: Call, answer: Answer) -> StreamPlan:
        completion = call.operation is Operation.COMPLETE
        base: dict[str, Any] = {
            "id": new_id("cmpl-" if completion else "chatcmpl-"),
            "object": "text_completion" if completion else "chat.completion.chunk",
            "created": now(),
            "model": call.model,
            "system_fingerprint": "fp_fake",
        }
        if call.include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            if completion:
                choice = {
                    "text": delta.get("content") or "",
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": finish,
                }
            else:
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        head = list(self.stream_comments) + self.stream_preamble(call)
        if not completion:
            head.append(sse(chunk({"role": "assistant", "content": "", "refusal": None})))
        deltas = [sse(chunk(delta)) for delta in self.delta_chunks(call, answer)]
        finish = {**chunk({}, self.finish_reason(call, answer)), **self.finish_extras(call, answer)}
        if not completion:
            finish["choices"][0].update(self.choice_extras(call, answer))
        tail = []
        if self.usage_on_finish_chunk:
            finish["usage"] = self.usage(call, answer)
            tail.append(sse(finish))
        else:
            tail.append(sse(finish))
            if call.include_usage:
                tail.append(sse({**base, "choices": [], "usage": self.usage(call, answer)}))
        tail.append(DONE)
        broken = b'data: {"id":"' + base["id"].encode() + b'","choices":[{"index":0,"delta":{"content":"Ec\n\n'
        error = self.invalid_request_event(base) if shape_of(call) == "invalid_request" else self.stream_error(base)
        return StreamPlan("text/event-stream", head, deltas, tail, sse(error), broken)

    def finish_extras(self, call: Call, answer: Answer) -> dict[str, Any]:
        """Fields a vendor adds to the finish_reason chunk (Groq's `x_groq`)."""
        return {}

    def stream_preamble(self, call: Call) -> list[bytes]:
        """Events sent before the role chunk (Azure's prompt filter results)."""
        return []

    def stream_error(self, base: dict[str, Any]) -> dict[str, Any]:
        """The `data:` payload of an error that happens after the stream started."""
        message = "The server had an error while processing your request. Sorry about that!"
        return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}

    def invalid_request_event(self, base: dict[str, Any]) -> dict[str, Any]:
        """The `data:` payload of a request error found after the stream started (a 400 in disguise)."""
        message = "Invalid value for 'messages': the request cannot be served by this model."
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}

    def error(self, kind: ErrorKind, message: str | None, model: str, retry_after_s: float | None) -> Reply:
        status, error_type, code, default = _ERRORS[kind]
        status = self.status_overrides.get(kind, status)
        wait = f" Please try again in {retry_after_s:.3g}s." if retry_after_s is not None else ""
        text = message or default.format(model=model or "the model", wait=wait)
        return json_reply(status, self.error_body(kind, status, text, error_type, code))

    def denied_message(self, kind: ErrorKind, key: str) -> str | None:
        if kind is not ErrorKind.AUTH_INVALID or self.invalid_key_message is None:
            return None
        return self.invalid_key_message.format(
            head=key[:8], head2=key[:2], stars="*" * max(len(key) - 12, 3), tail=key[-4:], tail2=key[-2:]
        )

    def error_body(self, kind: ErrorKind, status: int, message: str, error_type: str, code: str | None) -> Any:
        """The JSON body of an error response."""
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}

    def list_models(self) -> Reply:
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": self.vendor} for m in self.models]
        return json_reply(200, {"object": "list", "data": data})

    def ratelimit_headers(self, state: RateLimitState) -> list[tuple[str, str]]:
        return state.headers(lambda kind, field: f"x-ratelimit-{field}-{kind}", go_duration)


def _image_url(part: dict[str, Any]) -> str:
    """The URL of an `image_url` part: `{"url": ...}` (OpenAI) or a bare string (Mistral)."""
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise RequestRejected(ErrorKind.BAD_REQUEST, "Invalid image_url: expected an object with a 'url'.")
    return url


def _cached_marker(prompt: str) -> int:
    """N of a `[[cached:N]]` marker (0 without one), or `RequestRejected`."""
    value = markers(prompt).get("cached") or "0"
    if not value.isdigit():
        raise RequestRejected(ErrorKind.BAD_REQUEST, f"bad fake-server marker: cached:{value} is not a count")
    return int(value)


def _embedding_inputs(value: Any) -> list[str]:
    """Texts to embed: a string, a list of strings, or token arrays (each token counts as a word)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) for item in value):
            return [" ".join(str(token) for token in value)]
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, list) for item in value):
            return [" ".join(str(token) for token in item) for item in value]
    raise RequestRejected(ErrorKind.BAD_REQUEST, "'input' must be a string, an array of strings or token arrays.")
