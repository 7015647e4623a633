"""Google Gemini (Generative Language API) as the fake speaks it, mounted at `/gemini`
(clients add `/v1beta/models/{model}:{method}`).

Auth is the `x-goog-api-key` header or `?key=`. As the real API does, a missing key is a 403
PERMISSION_DENIED and an invalid key a 400 INVALID_ARGUMENT with reason API_KEY_INVALID (Gemini
has no 401). Streams are `data: <GenerateContentResponse>\\r\\n\\r\\n` events with `?alt=sse`, and
a JSON array otherwise; the stream ends when the connection does, after a chunk that carries
`finishReason`. Rate-limit hints live in the body (`RetryInfo.retryDelay`), not in headers.

Beyond text: a request whose `thinkingConfig` has `includeThoughts` gets a thought part
(`thought: true`, "Thinking: <last user message>") counted in `thoughtsTokenCount`, apart from
`candidatesTokenCount`. Markers: `[[shape:content_filter]]` ends the candidate with finish reason
SAFETY, no content and `safetyRatings`; `[[shape:blocked_prompt]]` blocks the prompt
(`promptFeedback.blockReason`, no candidate at all); `[[shape:tool_call]]` adds a `functionCall`
part; `[[cached:N]]` reports N prompt tokens as `cachedContentTokenCount` (they stay in
`promptTokenCount`, as Gemini counts them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from evalpipe.testing._answers import count_tokens, image_kind, markers, split_pieces, strip_markers
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
    new_id,
    optional_int,
    sse,
    text_of,
)

_ERRORS: dict[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.AUTH_MISSING: (
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    ),
    ErrorKind.AUTH_INVALID: (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    ErrorKind.PERMISSION: (403, "PERMISSION_DENIED", "The caller does not have permission"),
    ErrorKind.BAD_REQUEST: (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    ErrorKind.NOT_FOUND: (
        404,
        "NOT_FOUND",
        "models/{model} is not found for API version v1beta, or is not supported for generateContent. "
        "Call ListModels to see the list of available models and their supported methods.",
    ),
    ErrorKind.CONTEXT_LENGTH: (
        400,
        "INVALID_ARGUMENT",
        "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).",
    ),
    ErrorKind.QUOTA: (
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    ErrorKind.RATE_LIMIT: (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    ErrorKind.SERVER_ERROR: (500, "INTERNAL", "An internal error has occurred. Please retry."),
    ErrorKind.UNAVAILABLE: (503, "UNAVAILABLE", "The service is currently unavailable."),
    ErrorKind.OVERLOADED: (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
}

# Gemini has no tool-call finish reason: a turn that calls functions simply stops.
_FINISH = {Finish.STOP: "STOP", Finish.LENGTH: "MAX_TOKENS", Finish.TOOL_CALLS: "STOP"}
_MODES = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}
_METHODS = {
    "generateContent": Operation.CHAT,
    "streamGenerateContent": Operation.CHAT,
    "embedContent": Operation.EMBED,
    "batchEmbedContents": Operation.EMBED,
}


_HARM_CATEGORIES = ("HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT",
                    "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_SEXUALLY_EXPLICIT")


def _ratings(*, blocked: bool) -> list[dict[str, Any]]:
    """`safetyRatings` as Gemini sends them; when `blocked`, the dangerous-content one blocked."""
    ratings: list[dict[str, Any]] = []
    for category in _HARM_CATEGORIES:
        hit = blocked and category == "HARM_CATEGORY_DANGEROUS_CONTENT"
        ratings.append({"category": category, "probability": "HIGH" if hit else "NEGLIGIBLE",
                        **({"blocked": True} if hit else {})})
    return ratings


@dataclass(frozen=True)
class GeminiShape:
    """The parts of one Gemini answer beyond its text, chosen by the request and its markers."""

    finish_reason: str
    thinking: str | None  # when the request's thinkingConfig asks for thoughts
    safety: str | None  # [[shape:content_filter]]: the candidate stops with SAFETY
    blocked: str | None  # [[shape:blocked_prompt]]: the prompt is blocked (SAFETY), no candidate
    calls: tuple[dict[str, Any], ...]  # functionCall parts (tool markers, [[shape:tool_call]], offered tools)
    cached: int  # [[cached:N]]
    input_tokens: int
    output_tokens: int

    @classmethod
    def of(cls, call: Call, answer: Answer) -> GeminiShape:
        found = markers(call.prompt)
        shape = found.get("shape")
        thinking = f"Thinking: {strip_markers(call.prompt)}".strip() if call.extras.get("thoughts") else None
        safety = "SAFETY" if shape == "content_filter" else None
        try:
            cached = min(max(int(found.get("cached") or 0), 0), answer.input_tokens)
        except ValueError:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "bad fake-server marker: cached") from None
        # Gemini sends arguments as an object: malformed ones end the turn with MALFORMED_FUNCTION_CALL.
        malformed = any(not isinstance(planned.parsed(), dict) for planned in answer.tool_calls)
        calls: tuple[dict[str, Any], ...] = () if malformed else tuple(
            {"functionCall": {"id": planned.id, "name": planned.name, "args": planned.parsed()}}
            for planned in answer.tool_calls)
        if calls and (_signs_calls(call.model) or call.extras.get("thoughts")):
            # The thought-signatures guide: a thinking model signs the first function call of a step.
            calls = ({**calls[0], "thoughtSignature": _SIGNATURE}, *calls[1:])
        finish = "MALFORMED_FUNCTION_CALL" if malformed else _FINISH[answer.finish]
        return cls(safety or finish, thinking, safety,
                   "SAFETY" if shape == "blocked_prompt" else None, calls,
                   cached, answer.input_tokens, 0 if safety else answer.output_tokens)

    def usage(self) -> dict[str, Any]:
        """The final `usageMetadata`: thoughts are counted apart from the candidates."""
        thoughts = count_tokens(self.thinking or "")
        usage: dict[str, Any] = {
            "promptTokenCount": self.input_tokens,
            "candidatesTokenCount": self.output_tokens,
            "totalTokenCount": self.input_tokens + self.output_tokens + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.input_tokens}],
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        if self.cached:
            usage["cachedContentTokenCount"] = self.cached
        return usage


_SIGNATURE = "CiQBjz1rX0Zha2VUaG91Z2h0U2lnbmF0dXJlT2ZUaGVDYWxs"


def _signs_calls(model: str) -> bool:
    """Gemini 3 models always think, sign their function calls and refuse a call sent back unsigned."""
    return "gemini-3" in model


def _parse_contents(call: Call, contents: list[Any]) -> None:
    """Texts, the last user text and its images, and the function responses the conversation ends with."""
    for content in contents:
        if not isinstance(content, dict):
            continue
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        text = text_of(parts)
        call.texts.append(text)
        if content.get("role", "user") != "user":
            called = [p for p in parts if isinstance(_field(p, "functionCall", "function_call"), dict)]
            if called and _signs_calls(call.model) and not _field(called[0], "thoughtSignature", "thought_signature"):
                raise RequestRejected(ErrorKind.BAD_REQUEST, "Function call is missing a thought_signature in "
                                      "functionCall parts. This is required for tools to work correctly.")
            call.tool_results = []
            continue
        responses = [_field(p, "functionResponse", "function_response") for p in parts]
        responses = [r for r in responses if isinstance(r, dict)]
        for response in responses:
            if not isinstance(response.get("name"), str):
                raise RequestRejected(ErrorKind.BAD_REQUEST, "* GenerateContentRequest.contents.parts."
                                      "function_response.name: Name cannot be empty.")
            # The guide's convention: {"result": ...} or {"output": ...} (or {"error": ...}); else the whole object.
            result = response.get("response")
            if isinstance(result, dict) and len(result) == 1 and next(iter(result)) in ("result", "output", "error"):
                result = next(iter(result.values()))
            call.tool_results.append(result if isinstance(result, str) else json.dumps(result))
        if not responses:
            call.prompt, call.tool_results = text, []
            inline = [_field(p, "inlineData", "inline_data") for p in parts]
            call.images = [image_kind(str(_field(i, "mimeType", "mime_type") or ""), str(i.get("data") or ""))
                           for i in inline if isinstance(i, dict)]
            call.images += ["url" for p in parts if isinstance(_field(p, "fileData", "file_data"), dict)]


def _parse_tools(call: Call, body: dict[str, Any]) -> None:
    """Offered `functionDeclarations` and the `toolConfig.functionCallingConfig` mode, in OpenAI's words."""
    for tool in body.get("tools") or []:
        for declaration in _field(tool, "functionDeclarations", "function_declarations") or [] \
                if isinstance(tool, dict) else []:
            if not isinstance(declaration, dict) or not isinstance(declaration.get("name"), str):
                raise RequestRejected(ErrorKind.BAD_REQUEST, "* GenerateContentRequest.tools[0]."
                                      "function_declarations[0].name: Name cannot be empty.")
            schema = (declaration.get("parameters") or _field(declaration, "parametersJsonSchema",
                                                                "parameters_json_schema") or {})
            call.tools[declaration["name"]] = schema if isinstance(schema, dict) else {}
    config = _field(body, "toolConfig", "tool_config") or {}
    calling = _field(config, "functionCallingConfig", "function_calling_config") if isinstance(config, dict) else None
    if isinstance(calling, dict):
        call.tool_choice = _MODES.get(str(calling.get("mode") or "AUTO").upper(), "auto")
        allowed = _field(calling, "allowedFunctionNames", "allowed_function_names")
        if call.tool_choice == "required" and isinstance(allowed, list) and len(allowed) == 1:
            call.tool_choice = str(allowed[0])


def _field(data: dict[str, Any], camel: str, snake: str) -> Any:
    """A field in either JSON spelling (the REST API accepts both)."""
    return data.get(camel, data.get(snake))


def _duration(seconds: float) -> str:
    """A protobuf Duration in JSON: `34s`, `0.2s`."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


class GeminiProtocol(Protocol):
    """Gemini: generateContent, streamGenerateContent, embedContent, batchEmbedContents, models."""

    vendor: ClassVar[str] = "gemini"
    prefix: ClassVar[str] = "/gemini"
    retry_headers: ClassVar[tuple[str, ...]] = ()
    models: ClassVar[tuple[str, ...]] = ("gemini-2.0-flash", "gemini-2.5-flash", "text-embedding-004")

    def route(self, method: str, path: str, query: dict[str, str]) -> tuple[Operation, dict[str, str]] | None:
        parts = path.strip("/").split("/", 2)
        if len(parts) < 2 or parts[0] not in ("v1beta", "v1", "v1alpha") or parts[1] != "models":
            return None
        if len(parts) == 2:
            return (Operation.LIST_MODELS, {}) if method == "GET" else None
        model, _, rpc = parts[2].rpartition(":")
        operation = _METHODS.get(rpc)
        if method != "POST" or operation is None or not model:
            return None
        return operation, {"model": model, "method": rpc}

    def api_key(self, request: HttpRequest) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key")

    def parse(self, operation: Operation, params: dict[str, str], request: HttpRequest) -> Call:
        body = request.json()
        rpc = params["method"]
        call = Call(operation=operation, model=params["model"], stream=rpc == "streamGenerateContent")
        call.identity = identity_of(self.vendor, operation.value, params["model"], body)
        call.extras["sse"] = request.query.get("alt") == "sse"
        if operation is Operation.EMBED:
            requests = body.get("requests") if rpc == "batchEmbedContents" else [body]
            if not isinstance(requests, list) or not requests:
                raise RequestRejected(
                    ErrorKind.BAD_REQUEST, "* BatchEmbedContentsRequest.requests: contents is not specified"
                )
            call.inputs = [text_of((r.get("content") or {}).get("parts")) for r in requests if isinstance(r, dict)]
            first = requests[0] if isinstance(requests[0], dict) else {}
            call.dimensions = optional_int(_field(first, "outputDimensionality", "output_dimensionality"), "dims")
            call.extras["batch"] = rpc == "batchEmbedContents"
            return call
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "* GenerateContentRequest.contents: contents is not specified")
        system = _field(body, "systemInstruction", "system_instruction")
        if isinstance(system, dict):
            call.texts.append(text_of(system.get("parts")))
        _parse_contents(call, contents)
        _parse_tools(call, body)
        config = _field(body, "generationConfig", "generation_config") or {}
        thinking = _field(config, "thinkingConfig", "thinking_config")
        call.extras["thoughts"] = isinstance(thinking, dict) and bool(
            _field(thinking, "includeThoughts", "include_thoughts"))
        call.max_tokens = optional_int(_field(config, "maxOutputTokens", "max_output_tokens"), "maxOutputTokens")
        if _field(config, "responseMimeType", "response_mime_type") == "application/json":
            schema = (
                _field(config, "responseJsonSchema", "response_json_schema")
                or config.get("_responseJsonSchema")
                or _field(config, "responseSchema", "response_schema")
            )
            call.json_schema = schema if isinstance(schema, dict) else None
            call.json_mode = call.json_schema is None
        return call

    def _chunk(self, call: Call, shape: GeminiShape, parts: list[dict[str, Any]], finish: bool,
               response_id: str) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        usage: dict[str, Any] = {
            "promptTokenCount": shape.input_tokens,
            "totalTokenCount": shape.input_tokens,
        }
        if finish:
            candidate["finishReason"] = shape.finish_reason
            usage = shape.usage()
            if shape.safety is not None:
                candidate["safetyRatings"] = _ratings(blocked=True)
                if not parts:
                    del candidate["content"]  # a blocked candidate comes without content
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": call.model,
            "responseId": response_id,
        }

    def _blocked(self, call: Call, shape: GeminiShape, response_id: str) -> dict[str, Any]:
        # A blocked prompt is answered with feedback and no candidate at all.
        return {
            "promptFeedback": {"blockReason": shape.blocked, "safetyRatings": _ratings(blocked=True)},
            "usageMetadata": {"promptTokenCount": shape.input_tokens, "totalTokenCount": shape.input_tokens},
            "modelVersion": call.model,
            "responseId": response_id,
        }

    def reply(self, call: Call, answer: Answer) -> Reply:
        if call.operation is Operation.EMBED:
            if call.extras.get("batch"):
                return json_reply(200, {"embeddings": [{"values": vector} for vector in answer.embeddings]})
            return json_reply(200, {"embedding": {"values": answer.embeddings[0]}})
        shape = GeminiShape.of(call, answer)
        if shape.blocked:
            return json_reply(200, self._blocked(call, shape, new_id("")))
        parts = [{"text": shape.thinking, "thought": True}] if shape.thinking else []
        parts += [{"text": answer.text}] if shape.safety is None else []
        parts += list(shape.calls)
        return json_reply(200, self._chunk(call, shape, parts, True, new_id("")))

    def stream(self, call: Call, answer: Answer) -> StreamPlan:
        response_id = new_id("")
        shape = GeminiShape.of(call, answer)
        pieces = [[{"text": piece, "thought": True}] for piece in split_pieces(shape.thinking or "")]
        if shape.safety is None:
            pieces += [[{"text": piece}] for piece in answer.pieces]
        chunks = [self._chunk(call, shape, parts, False, response_id) for parts in pieces]
        last = list(shape.calls) if shape.calls else [{"text": ""}] if shape.safety is None else []
        final = self._chunk(call, shape, last, True, response_id)
        if shape.blocked:
            chunks, final = [], self._blocked(call, shape, response_id)
        error = {
            "error": {
                "code": 500,
                "message": "An internal error has occurred. Please retry.",
                "status": "INTERNAL",
            }
        }
        broken = b'{"candidates":[{"content":{"parts":[{"te'
        if call.extras.get("sse"):

            def event(data: Any) -> bytes:
                return sse(data, end=b"\r\n\r\n")

            deltas = [event(chunk) for chunk in chunks]
            return StreamPlan("text/event-stream", [], deltas, [event(final)], event(error), event(broken))
        # Without alt=sse the API streams one JSON array, an element at a time.
        deltas = [(b"[" if i == 0 else b",\r\n") + dumps(chunk) for i, chunk in enumerate(chunks)]
        tail = [(b",\r\n" if chunks else b"[") + dumps(final), b"]"]
        return StreamPlan("application/json", [], deltas, tail, b",\r\n" + dumps(error) + b"]", b",\r\n" + broken)

    def error(self, kind: ErrorKind, message: str | None, model: str, retry_after_s: float | None) -> Reply:
        status, code, default = _ERRORS[kind]
        error: dict[str, Any] = {
            "code": status,
            "message": message or default.format(model=model),
            "status": code,
        }
        if kind is ErrorKind.AUTH_INVALID:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
        elif kind is ErrorKind.QUOTA:
            violation = {"quotaMetric": "generativelanguage.googleapis.com/generate_content_input_token_count"}
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}]
        elif kind is ErrorKind.RATE_LIMIT and retry_after_s is not None:
            error["details"] = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": _duration(retry_after_s)}
            ]
        return json_reply(status, {"error": error})

    def list_models(self) -> Reply:
        models = [
            {
                "name": f"models/{name}",
                "displayName": name,
                "supportedGenerationMethods": ["embedContent"] if "embedding" in name else ["generateContent"],
            }
            for name in self.models
        ]
        return json_reply(200, {"models": models})
