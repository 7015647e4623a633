"""OpenAI-compatible vendors: each overrides only what differs from OpenAI (see PROTOCOLS.md)."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from evalpipe.testing._answers import shape_of, thinking_for
from evalpipe.testing._openai import OpenAIProtocol
from evalpipe.testing._wire import (
    Answer,
    Call,
    ErrorKind,
    HttpRequest,
    Operation,
    Reply,
    RequestRejected,
    new_id,
    sse,
)


def _thinking_chunk(text: str) -> dict[str, Any]:
    """Mistral's typed chunk of reasoning."""
    return {"type": "thinking", "thinking": [{"type": "text", "text": text}]}


def _filter_results(*, flagged: str | None = None) -> dict[str, Any]:
    """Azure's per-category content-filter verdict; `flagged` names a category that was filtered."""
    results: dict[str, Any] = {}
    for name in ("hate", "self_harm", "sexual", "violence"):
        filtered = name == flagged
        results[name] = {"filtered": filtered, "severity": "medium" if filtered else "safe"}
    return results


class DeepSeekProtocol(OpenAIProtocol):
    """DeepSeek: `/chat/completions` at the root (also under `/v1`); `*reasoner*` models think aloud
    in `reasoning_content`; `: keep-alive` comments while queued; 402 when the balance is spent."""

    vendor: ClassVar[str] = "deepseek"
    prefix: ClassVar[str] = "/deepseek"
    batch_roots: ClassVar[tuple[str, ...]] = ()
    base_path: ClassVar[str] = ""
    api_roots: ClassVar[tuple[str, ...]] = ("", "/v1")
    models: ClassVar[tuple[str, ...]] = ("deepseek-chat", "deepseek-reasoner")
    operations: ClassVar[dict[tuple[str, str], Operation]] = {
        ("POST", "/chat/completions"): Operation.CHAT,
        ("GET", "/models"): Operation.LIST_MODELS,
    }
    reasoning_models: ClassVar[tuple[str, ...]] = ()
    invalid_key_message: ClassVar[str | None] = "Authentication Fails, Your api key: ****{tail} is invalid"
    stream_comments: ClassVar[tuple[bytes, ...]] = (b": keep-alive\n\n",)
    status_overrides: ClassVar[dict[ErrorKind, int]] = {ErrorKind.QUOTA: 402}

    thinking_models: ClassVar[tuple[str, ...]] = ("reasoner",)

    def shows_reasoning(self, call: Call) -> bool:
        return True

    def usage(self, call: Call, answer: Answer) -> dict[str, Any]:
        usage = super().usage(call, answer)
        del usage["prompt_tokens_details"]  # DeepSeek reports its cache at the top level
        cached = min(int(call.extras.get("cached", 0)), answer.input_tokens)
        usage["prompt_cache_hit_tokens"] = cached
        usage["prompt_cache_miss_tokens"] = answer.input_tokens - cached
        return usage

    def message(self, call: Call, answer: Answer) -> dict[str, Any]:
        message = super().message(call, answer)
        for name in ("refusal", "annotations"):  # fields DeepSeek does not send
            message.pop(name, None)
        return message

    def reply(self, call: Call, answer: Answer) -> Reply:
        reply = super().reply(call, answer)
        # DeepSeek writes blank lines while a non-streamed request waits in its queue.
        reply.body = b"\n\n" + reply.body
        return reply

    def error(self, kind: ErrorKind, message: str | None, model: str, retry_after_s: float | None) -> Reply:
        texts = {
            ErrorKind.QUOTA: "Insufficient Balance",
            ErrorKind.OVERLOADED: "Server overloaded, please retry shortly.",
        }
        return super().error(kind, message or texts.get(kind), model, retry_after_s)


class XAIProtocol(OpenAIProtocol):
    """xAI: OpenAI shapes at `/v1`; usage rides on the finish_reason chunk; grok-3-mini shows its
    `reasoning_content`, grok-4 does not; `completion_tokens` leave out the reasoning tokens."""

    vendor: ClassVar[str] = "xai"
    prefix: ClassVar[str] = "/xai"
    batch_roots: ClassVar[tuple[str, ...]] = ()
    models: ClassVar[tuple[str, ...]] = ("grok-3-mini", "grok-4")
    operations: ClassVar[dict[tuple[str, str], Operation]] = {
        ("POST", "/chat/completions"): Operation.CHAT,
        ("POST", "/embeddings"): Operation.EMBED,
        ("GET", "/models"): Operation.LIST_MODELS,
    }
    reasoning_models: ClassVar[tuple[str, ...]] = ()
    # xAI answers a wrong key with 400 on the real API; the fake keeps 401 like the other vendors.
    invalid_key_message: ClassVar[str | None] = (
        "Incorrect API key provided: {head2}***{tail2}. You can obtain an API key from https://console.x.ai."
    )
    usage_on_finish_chunk: ClassVar[bool] = True
    thinking_models: ClassVar[tuple[str, ...]] = ("grok-3-mini", "grok-4")
    completion_includes_reasoning: ClassVar[bool] = False

    def shows_reasoning(self, call: Call) -> bool:
        return "grok-3-mini" in call.model  # grok-4 thinks without showing it


class GroqProtocol(OpenAIProtocol):
    """Groq: OpenAI shapes at `/openai/v1`; the finish chunk carries `x_groq.usage`; reasoning models
    (gpt-oss, qwen3) send `message.reasoning` / `delta.reasoning` unasked."""

    vendor: ClassVar[str] = "groq"
    prefix: ClassVar[str] = "/groq"
    batch_roots: ClassVar[tuple[str, ...]] = ("/openai/v1",)
    base_path: ClassVar[str] = "/openai/v1"
    api_roots: ClassVar[tuple[str, ...]] = ("/openai/v1",)
    models: ClassVar[tuple[str, ...]] = ("llama-3.1-8b-instant", "llama-3.3-70b-versatile", "openai/gpt-oss-20b")
    operations: ClassVar[dict[tuple[str, str], Operation]] = {
        ("POST", "/chat/completions"): Operation.CHAT,
        ("GET", "/models"): Operation.LIST_MODELS,
    }
    reasoning_models: ClassVar[tuple[str, ...]] = ()
    invalid_key_message: ClassVar[str | None] = None
    thinking_models: ClassVar[tuple[str, ...]] = ("gpt-oss", "qwen3")

    def shows_reasoning(self, call: Call) -> bool:
        return True

    def reasoning_fields(self, call: Call, text: str) -> dict[str, Any]:
        return {"reasoning": text}

    def finish_extras(self, call: Call, answer: Answer) -> dict[str, Any]:
        return {"x_groq": {"id": new_id("req_"), "usage": self.usage(call, answer)}}


class MistralProtocol(OpenAIProtocol):
    """Mistral: `random_seed` (a `seed` or `max_completion_tokens` field is refused with 422, as
    Mistral refuses extra inputs); flat error bodies; usage on the finish chunk; magistral models
    answer with `content` as a list of "thinking" and "text" chunks, in streams too."""

    vendor: ClassVar[str] = "mistral"
    prefix: ClassVar[str] = "/mistral"
    batch_roots: ClassVar[tuple[str, ...]] = ()
    models: ClassVar[tuple[str, ...]] = ("mistral-small-latest", "mistral-large-latest", "mistral-embed")
    operations: ClassVar[dict[tuple[str, str], Operation]] = {
        ("POST", "/chat/completions"): Operation.CHAT,
        ("POST", "/embeddings"): Operation.EMBED,
        ("GET", "/models"): Operation.LIST_MODELS,
    }
    reasoning_models: ClassVar[tuple[str, ...]] = ()
    invalid_key_message: ClassVar[str | None] = None
    usage_on_finish_chunk: ClassVar[bool] = True
    refused_fields: ClassVar[tuple[str, ...]] = ("seed", "max_completion_tokens")
    thinking_models: ClassVar[tuple[str, ...]] = ("magistral",)

    def shows_reasoning(self, call: Call) -> bool:
        return True

    def reasoning_fields(self, call: Call, text: str) -> dict[str, Any]:
        return {"content": [_thinking_chunk(text)]}

    def message(self, call: Call, answer: Answer) -> dict[str, Any]:
        message = super().message(call, answer)
        thinking = self.thinking(call)
        if thinking is not None:
            message["content"] = [_thinking_chunk(thinking), {"type": "text", "text": answer.text}]
        return message

    def delta_chunks(self, call: Call, answer: Answer) -> list[dict[str, Any]]:
        deltas = super().delta_chunks(call, answer)
        if self.thinking(call) is None:
            return deltas
        # A thinking model's text deltas are typed chunks as well.
        return [
            {"content": [{"type": "text", "text": d["content"]}]} if isinstance(d.get("content"), str) else d
            for d in deltas
        ]

    def check_params(self, model: str, body: dict[str, Any]) -> None:
        for name in self.refused_fields:
            if name in body:
                raise RequestRejected(ErrorKind.BAD_REQUEST, f"body.{name}: Extra inputs are not permitted", 422)

    def error_body(self, kind: ErrorKind, status: int, message: str, error_type: str, code: str | None) -> Any:
        return {"object": "error", "message": message, "type": error_type, "param": None, "code": code}


class OpenRouterProtocol(OpenAIProtocol):
    """OpenRouter: `: OPENROUTER PROCESSING` comments; errors `{"error":{"code":<status>,...}}`;
    402 for spent credits; a failure after the stream started arrives as a `data:` event; reasoning
    models send `reasoning` and the same text again in `reasoning_details` (or, with
    `[[shape:encrypted_reasoning]]`, only an encrypted entry)."""

    vendor: ClassVar[str] = "openrouter"
    prefix: ClassVar[str] = "/openrouter"
    batch_roots: ClassVar[tuple[str, ...]] = ()
    base_path: ClassVar[str] = "/api/v1"
    api_roots: ClassVar[tuple[str, ...]] = ("/api/v1",)
    models: ClassVar[tuple[str, ...]] = ("openai/gpt-4o-mini", "anthropic/claude-3.5-haiku")
    operations: ClassVar[dict[tuple[str, str], Operation]] = {
        ("POST", "/chat/completions"): Operation.CHAT,
        ("POST", "/embeddings"): Operation.EMBED,
        ("GET", "/models"): Operation.LIST_MODELS,
    }
    reasoning_models: ClassVar[tuple[str, ...]] = ()
    invalid_key_message: ClassVar[str | None] = None
    stream_comments: ClassVar[tuple[bytes, ...]] = (b": OPENROUTER PROCESSING\n\n",)
    status_overrides: ClassVar[dict[ErrorKind, int]] = {ErrorKind.QUOTA: 402}
    thinking_models: ClassVar[tuple[str, ...]] = ("deepseek-r1", ":thinking", "openai/o")

    def thinking(self, call: Call) -> str | None:
        if shape_of(call) == "encrypted_reasoning":
            return thinking_for(call)
        return super().thinking(call)

    def shows_reasoning(self, call: Call) -> bool:
        return True

    def reasoning_fields(self, call: Call, text: str) -> dict[str, Any]:
        if shape_of(call) == "encrypted_reasoning":
            data = base64.b64encode(text.encode()).decode()
            return {"reasoning": None, "reasoning_details": [
                {"type": "reasoning.encrypted", "data": data, "id": None, "format": "openai-responses-v1", "index": 0}
            ]}
        detail = {"type": "reasoning.text", "text": text, "signature": None, "format": "unknown", "index": 0}
        return {"reasoning": text, "reasoning_details": [detail]}

    def invalid_request_event(self, base: dict[str, Any]) -> dict[str, Any]:
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        return {**base, "error": {"code": 400, "message": "Provider returned error"}, "choices": [choice]}

    def error_body(self, kind: ErrorKind, status: int, message: str, error_type: str, code: str | None) -> Any:
        return {"error": {"code": status, "message": message, "metadata": {}}}

    def stream_error(self, base: dict[str, Any]) -> dict[str, Any]:
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        error = {"code": "server_error", "message": "Provider returned error"}
        return {**base, "error": error, "choices": [choice]}


class AzureOpenAIProtocol(OpenAIProtocol):
    """Azure OpenAI: `api-key` header (or Bearer); deployment routes need `?api-version=`; the
    v1 route takes the model in the body; streams open with a prompt-filter chunk without choices."""

    vendor: ClassVar[str] = "azure"
    prefix: ClassVar[str] = "/azure"
    batch_roots: ClassVar[tuple[str, ...]] = ("/openai/v1", "/openai")
    base_path: ClassVar[str] = ""
    models: ClassVar[tuple[str, ...]] = ("gpt-4o-mini",)
    reasoning_models: ClassVar[tuple[str, ...]] = ()
    invalid_key_message: ClassVar[str | None] = None

    def route(self, method: str, path: str, query: dict[str, str]) -> tuple[Operation, dict[str, str]] | None:
        parts = path.strip("/").split("/")
        if len(parts) >= 4 and parts[:2] == ["openai", "deployments"]:
            operation = self.operations.get((method, "/" + "/".join(parts[3:])))
            if operation is not None and operation is not Operation.LIST_MODELS:
                return operation, {"model": parts[2], "deployment": "yes"}
        if parts[:2] == ["openai", "v1"]:
            operation = self.operations.get((method, "/" + "/".join(parts[2:])))
            if operation is not None:
                return operation, {}
        return None

    def api_key(self, request: HttpRequest) -> str | None:
        return request.headers.get("api-key") or request.bearer()

    def parse(self, operation: Operation, params: dict[str, str], request: HttpRequest) -> Call:
        if params.get("deployment") and not request.query.get("api-version"):
            raise RequestRejected(ErrorKind.NOT_FOUND, "Resource not found")
        return super().parse(operation, params, request)

    def stream_preamble(self, call: Call) -> list[bytes]:
        preamble = {"choices": [], "created": 0, "id": "", "model": "", "object": "", **self.body_extras(call)}
        return [sse(preamble)]

    def body_extras(self, call: Call) -> dict[str, Any]:
        return {"prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _filter_results()}]}

    def choice_extras(self, call: Call, answer: Answer) -> dict[str, Any]:
        flagged = "violence" if shape_of(call) == "content_filter" else None
        return {"content_filter_results": _filter_results(flagged=flagged)}

    def error_body(self, kind: ErrorKind, status: int, message: str, error_type: str, code: str | None) -> Any:
        codes = {ErrorKind.NOT_FOUND: "DeploymentNotFound", ErrorKind.BAD_REQUEST: "BadRequest"}
        if kind is ErrorKind.CONTENT_FILTER:
            jailbreak = {"filtered": False, "detected": False}
            verdict = {**_filter_results(flagged="violence"), "jailbreak": jailbreak}
            inner = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": verdict}
            return {"error": {"message": message, "type": None, "param": "prompt", "code": "content_filter",
                              "status": 400, "innererror": inner}}
        return {"error": {"code": code or codes.get(kind, str(status)), "message": message}}

    def error(self, kind: ErrorKind, message: str | None, model: str, retry_after_s: float | None) -> Reply:
        if kind in (ErrorKind.AUTH_MISSING, ErrorKind.AUTH_INVALID):
            message = message or (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                "provide a valid key for an active subscription and use a correct regional API endpoint "
                "for your resource."
            )
        elif kind is ErrorKind.NOT_FOUND and not message:
            message = "The API deployment for this resource does not exist."
        return super().error(kind, message, model, retry_after_s)
