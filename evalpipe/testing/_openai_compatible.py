"""OpenAI-compatible vendors: each overrides only what differs from OpenAI (see PROTOCOLS.md)."""

from __future__ import annotations

from typing import Any, ClassVar

from evalpipe.testing._answers import count_tokens, split_pieces, strip_markers
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


class DeepSeekProtocol(OpenAIProtocol):
    """DeepSeek: `/chat/completions` at the root (also under `/v1`); `*reasoner*` models think aloud
    in `reasoning_content`; `: keep-alive` comments while queued; 402 when the balance is spent."""

    vendor: ClassVar[str] = "deepseek"
    prefix: ClassVar[str] = "/deepseek"
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

    @staticmethod
    def reasoning(call: Call) -> str | None:
        """The deterministic 'thinking' of a reasoner model, None for other models."""
        return f"Thinking: {strip_markers(call.prompt)}".strip() if "reasoner" in call.model else None

    def usage(self, call: Call, answer: Answer) -> dict[str, Any]:
        usage = super().usage(call, answer)
        thinking = count_tokens(self.reasoning(call) or "")
        usage["completion_tokens"] += thinking
        usage["total_tokens"] += thinking
        usage["completion_tokens_details"] = {"reasoning_tokens": thinking}
        usage["prompt_cache_hit_tokens"] = 0
        usage["prompt_cache_miss_tokens"] = answer.input_tokens
        return usage

    def message(self, call: Call, answer: Answer) -> dict[str, Any]:
        message = {"role": "assistant", "content": answer.text}
        reasoning = self.reasoning(call)
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        return message

    def delta_chunks(self, call: Call, answer: Answer) -> list[dict[str, Any]]:
        reasoning = self.reasoning(call)
        if reasoning is None:
            return super().delta_chunks(call, answer)
        thinking = [{"content": None, "reasoning_content": piece} for piece in split_pieces(reasoning)]
        return thinking + [{"content": piece, "reasoning_content": None} for piece in answer.pieces]

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
    """xAI: OpenAI shapes at `/v1`; usage rides on the finish_reason chunk."""

    vendor: ClassVar[str] = "xai"
    prefix: ClassVar[str] = "/xai"
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


class GroqProtocol(OpenAIProtocol):
    """Groq: OpenAI shapes at `/openai/v1`; the finish chunk carries `x_groq.usage`."""

    vendor: ClassVar[str] = "groq"
    prefix: ClassVar[str] = "/groq"
    base_path: ClassVar[str] = "/openai/v1"
    api_roots: ClassVar[tuple[str, ...]] = ("/openai/v1",)
    models: ClassVar[tuple[str, ...]] = ("llama-3.1-8b-instant", "llama-3.3-70b-versatile")
    operations: ClassVar[dict[tuple[str, str], Operation]] = {
        ("POST", "/chat/completions"): Operation.CHAT,
        ("GET", "/models"): Operation.LIST_MODELS,
    }
    reasoning_models: ClassVar[tuple[str, ...]] = ()
    invalid_key_message: ClassVar[str | None] = None

    def finish_extras(self, call: Call, answer: Answer) -> dict[str, Any]:
        return {"x_groq": {"id": new_id("req_"), "usage": self.usage(call, answer)}}


class MistralProtocol(OpenAIProtocol):
    """Mistral: `random_seed` (a `seed` or `max_completion_tokens` field is refused with 422, as
    Mistral refuses extra inputs); flat error bodies; usage on the finish chunk."""

    vendor: ClassVar[str] = "mistral"
    prefix: ClassVar[str] = "/mistral"
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

    def check_params(self, model: str, body: dict[str, Any]) -> None:
        for name in self.refused_fields:
            if name in body:
                raise RequestRejected(ErrorKind.BAD_REQUEST, f"body.{name}: Extra inputs are not permitted", 422)

    def error_body(self, kind: ErrorKind, status: int, message: str, error_type: str, code: str | None) -> Any:
        return {"object": "error", "message": message, "type": error_type, "param": None, "code": code}


class OpenRouterProtocol(OpenAIProtocol):
    """OpenRouter: `: OPENROUTER PROCESSING` comments; errors `{"error":{"code":<status>,...}}`;
    402 for spent credits; a failure after the stream started arrives as a `data:` event."""

    vendor: ClassVar[str] = "openrouter"
    prefix: ClassVar[str] = "/openrouter"
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
        filters = {
            name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")
        }
        results = [{"prompt_index": 0, "content_filter_results": filters}]
        return [
            sse(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": results,
                }
            )
        ]

    def error_body(self, kind: ErrorKind, status: int, message: str, error_type: str, code: str | None) -> Any:
        codes = {ErrorKind.NOT_FOUND: "DeploymentNotFound", ErrorKind.BAD_REQUEST: "BadRequest"}
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
