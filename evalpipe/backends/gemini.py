"""Google Gemini's REST API: `generateContent`, `streamGenerateContent?alt=sse`, `batchEmbedContents`.

Wire details follow the Gemini API reference (ai.google.dev/api): `GenerateContentResponse`,
`Candidate.FinishReason`, `UsageMetadata`, the `Schema` object and google.rpc error details.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from evalpipe import errors
from evalpipe.backends.base import HttpRequest, Provider, StreamState
from evalpipe.backends.classify import classify_status, classify_stream_error, error_detail
from evalpipe.backends.framing import SSEEvent
from evalpipe.backends.gemini_messages import contents_json, tool_fields
from evalpipe.backends.image_rules import GEMINI_IMAGES
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, StreamChunk

_API_VERSION = re.compile(r"v\d+(?:alpha|beta)?\d*")
_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
# What `ChatResponse.safety` keeps of a blocked prompt's `promptFeedback` and of a candidate.
_FEEDBACK_KEYS = ("blockReason", "blockReasonMessage", "safetyRatings")
_CANDIDATE_SAFETY_KEYS = ("finishReason", "finishMessage", "safetyRatings", "citationMetadata")

# `responseSchema` is the `Schema` object of the Gemini API, "a select subset of an OpenAPI 3.0 schema
# object", not JSON Schema: any other key (`additionalProperties`, `$schema`, `$defs`, `$ref`, `const`,
# `oneOf`, ...) fails the whole request with 400 "Unknown name ... Cannot find field". So a user's JSON
# Schema is translated: local `$ref`s inlined, null types turned into `nullable`, the rest dropped.
_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "items", "minItems", "maxItems",
    "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern",
    "minimum", "maximum", "anyOf", "propertyOrdering", "default", "example",
})


def finish_reason(reason: Any) -> str | None:
    """evalpipe's name for a Gemini `finishReason`: stop, length, content_filter, else lowercased."""
    if not isinstance(reason, str) or not reason:
        return None
    if reason in _FILTERED:
        return "content_filter"
    return {"STOP": "stop", "MAX_TOKENS": "length"}.get(reason, reason.lower())


def response_schema(schema: Mapping[str, Any], defs: Mapping[str, Any] | None = None,
                    seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """`schema` (JSON Schema) as a Gemini `Schema`: only the keys Gemini accepts."""
    if defs is None:
        defs = {k: v for key in ("definitions", "$defs") if isinstance(schema.get(key), Mapping)
                for k, v in schema[key].items()}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen or not isinstance(defs.get(name), Mapping):
            return {}  # a recursive or remote reference has no inline form
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return response_schema({**defs[name], **siblings}, defs, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {name: response_schema(sub, defs, seen) for name, sub in value.items()}
        elif key == "items" and isinstance(value, Mapping):
            out[key] = response_schema(value, defs, seen)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [response_schema(sub, defs, seen) for sub in value if isinstance(sub, Mapping)]
        elif key == "const" and "enum" not in schema:
            out["enum"] = [value]
        elif key in _SCHEMA_KEYS:
            out[key] = value
    # JSON Schema says "or null" with a type list or an anyOf member; OpenAPI 3.0 says `nullable`.
    if isinstance(types := out.get("type"), list):
        kept = [t for t in types if t != "null"]
        out.pop("type")
        if len(kept) < len(types):
            out["nullable"] = True
        if len(kept) == 1:
            out["type"] = kept[0]
        elif kept:
            out["anyOf"] = [{"type": t} for t in kept]
    if isinstance(variants := out.get("anyOf"), list):
        kept = [v for v in variants if v.get("type") != "null"]
        if len(kept) < len(variants):
            out["nullable"] = True
            out["anyOf"] = kept
        if len(kept) == 1:  # pydantic's Optional[X]: X itself, nullable
            out.pop("anyOf")
            out = {**kept[0], **out}
    return out


def fold_usage(usage: Mapping[str, Any], state: StreamState) -> None:
    """Add a `usageMetadata` object to `state`, in evalpipe's convention.

    `promptTokenCount` already includes `cachedContentTokenCount` but not `toolUsePromptTokenCount`
    (the results of Google's own tools, read as input too); `candidatesTokenCount` does not include
    `thoughtsTokenCount`, which is billed as output too. (`totalTokenCount` is the sum of all four.)"""
    state.input_tokens = _as_int(usage.get("promptTokenCount")) + _as_int(usage.get("toolUsePromptTokenCount"))
    state.cached_input_tokens = _as_int(usage.get("cachedContentTokenCount"))
    state.reasoning_tokens = _as_int(usage.get("thoughtsTokenCount"))
    state.output_tokens = _as_int(usage.get("candidatesTokenCount")) + state.reasoning_tokens


def _details(body: Any) -> Iterator[dict[str, Any]]:
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    yield from (d for d in details if isinstance(d, dict)) if isinstance(details, list) else ()


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class GeminiProvider(Provider):
    """Google's Gemini API (AI Studio keys); the key travels in `x-goog-api-key`, never in the URL.

    Where each part of an answer lands: text parts → `text`; parts with `thought: true` →
    `reasoning`; `functionCall` parts → `tool_calls` (finish reason `tool_calls`; a call without an
    `id` gets `call_<n>`); `finishReason`
    SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII → `content_filter` with the candidate's
    `safetyRatings` (and finish reason, message, citations) in `safety`; a blocked prompt
    (`promptFeedback.blockReason`, no candidate) → `content_filter` with the feedback in `safety`.
    Usage: `promptTokenCount` (cached content included) + `toolUsePromptTokenCount` → `input_tokens`,
    `cachedContentTokenCount` → `cached_input_tokens`, `candidatesTokenCount` + `thoughtsTokenCount`
    → `output_tokens`, `thoughtsTokenCount` → `reasoning_tokens`.

    Reasoning controls: `reasoning_effort` → `thinkingConfig.thinkingLevel` (Gemini 3 models;
    3 Pro takes "low" and "high"), `reasoning_budget_tokens` → `thinkingConfig.thinkingBudget`
    (Gemini 2.5; 0 turns thinking off on Flash, -1 lets the model decide); both at once is a
    ConfigError, since the API refuses the pair. Either sets `includeThoughts`. Every sampling
    option has a Gemini field, so none is ignored.
    """

    name = "google"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"
    default_model = "gemini-2.5-flash"
    # The embeddings guide's model for text-only input (text-embedding-004 is its deprecated predecessor).
    default_embedding_model: ClassVar[str] = "gemini-embedding-001"
    api_key_env = "GEMINI_API_KEY"
    api_key_env_aliases = ("GOOGLE_API_KEY",)  # the google-genai SDK reads both
    # A Gemini stream has no end event: the last event carries `finishReason`, then the connection
    # closes. `read_stream_event` marks that event as the end, so a cut stream is a ConnectionError.
    stream_needs_end_event = True
    supports_tools = True
    supports_images = True
    image_rules = GEMINI_IMAGES

    def auth_headers(self) -> dict[str, str]:
        # `?key=` would work too, but URLs end up in proxy and httpx logs; headers do not.
        key = self.config.api_key
        return {"x-goog-api-key": key.get_secret_value()} if key is not None else {}

    def _model_path(self, model: str, method: str) -> str:
        # The REST docs put the version in the base URL (`.../v1beta`); the google-genai SDK takes the
        # bare host and adds it itself. Both forms work here: the version is added when it is missing.
        last_segment = self.config.base_url.rstrip("/").rsplit("/", 1)[-1]
        version = self.config.options.get("api_version", "v1beta")
        prefix = "" if _API_VERSION.fullmatch(last_segment) else f"{version}/"
        return f"{prefix}models/{model.removeprefix('models/')}:{method}"

    def generation_config(self, params: GenerationParams) -> dict[str, Any]:
        """The `generationConfig` object for `params`."""
        config: dict[str, Any] = {
            "temperature": params.temperature,
            "topP": params.top_p,
            "topK": params.top_k,
            "maxOutputTokens": params.max_tokens,
            "stopSequences": list(params.stop) if params.stop else None,
            "seed": params.seed,
        }
        if thinking := self.thinking_config(params):
            config["thinkingConfig"] = thinking
        if params.json_schema is not None:
            config["responseMimeType"] = "application/json"
            if params.json_schema:  # an empty schema: any JSON, nothing to constrain
                config["responseSchema"] = response_schema(params.json_schema)
        return {k: v for k, v in config.items() if v is not None}

    def thinking_config(self, params: GenerationParams) -> dict[str, Any] | None:
        """`thinkingConfig`: a level (Gemini 3) or a token budget (Gemini 2.5), never both (the API
        refuses the pair); thoughts are included so that the answer's `reasoning` shows them."""
        effort, budget = params.reasoning_effort, params.reasoning_budget_tokens
        if effort is not None and budget is not None:
            raise errors.ConfigError(f"{self.name}: reasoning_effort and reasoning_budget_tokens cannot both "
                                     "be set: Gemini takes a thinking level or a thinking budget, not both")
        if effort is not None:
            return {"thinkingLevel": effort, "includeThoughts": True}
        if budget is not None:
            return {"thinkingBudget": budget, "includeThoughts": True}
        return None

    def chat_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> HttpRequest:
        body: dict[str, Any] = {
            "contents": contents_json(messages, self.name),
            **tool_fields(params.tools, params.tool_choice, response_schema),
        }
        if system := [{"text": m.content} for m in messages if m.role == "system"]:
            body["systemInstruction"] = {"parts": system}
        if config := self.generation_config(params):
            body["generationConfig"] = config
        if stream:
            return HttpRequest(self._model_path(self.config.model, "streamGenerateContent"), body,
                               query={"alt": "sse"})
        return HttpRequest(self._model_path(self.config.model, "generateContent"), body)

    def _fold(self, body: Any, state: StreamState) -> StreamChunk | None:
        """Add one `GenerateContentResponse` (a whole answer or a stream event) to `state`."""
        if not isinstance(body, dict):
            raise errors.ProtocolError("answer is not a JSON object", provider=self.name)
        if "error" in body:
            # An error inside a 200 stream has the same shape as an error body; classify it alike.
            code = body["error"].get("code") if isinstance(body["error"], dict) else None
            if isinstance(code, int) and code >= 400:
                raise self.classify_error(code, body, {})
            raise classify_stream_error(self.name, body)
        state.model = body.get("modelVersion") or state.model
        if isinstance(usage := body.get("usageMetadata"), dict):
            fold_usage(usage, state)
        candidates = body.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            feedback = body.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                # The prompt itself was blocked: no candidate at all, the reason is in the feedback.
                state.finish_reason, state.done = "content_filter", True
                state.safety = {k: feedback[k] for k in _FEEDBACK_KEYS if k in feedback}
            return None
        candidate = candidates[0] if isinstance(candidates[0], dict) else {}
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        text: list[str] = []
        thought: list[str] = []
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if isinstance(call := part.get("functionCall"), dict):
                # Gemini sends each call whole, its arguments an object; a stream may spread calls over events.
                args = call.get("args")
                signature = part.get("thoughtSignature")  # thinking models want it back with the call
                state.tool_call(len(state.tool_calls), str(call.get("id") or ""), str(call.get("name") or ""),
                                json.dumps(args) if args is not None else "",
                                signature if isinstance(signature, str) else None)
            elif isinstance(part.get("text"), str):
                (thought if part.get("thought") is True else text).append(part["text"])
        if reason := finish_reason(candidate.get("finishReason")):
            called = reason == "stop" and state.hidden_output > 0  # Gemini's only hidden output: tool calls
            state.finish_reason, state.done = "tool_calls" if called else reason, True
        if candidate.get("safetyRatings") or reason == "content_filter":
            state.safety = {k: candidate[k] for k in _CANDIDATE_SAFETY_KEYS if k in candidate}
        chunk = StreamChunk("".join(text), "".join(thought))
        if not (chunk.text or chunk.reasoning):
            return None
        state.text.append(chunk.text)
        state.reasoning.append(chunk.reasoning)
        return chunk

    def parse_chat(self, body: Any) -> ChatResponse:
        state = StreamState(model=self.config.model)
        self._fold(body, state)
        if not state.done and not state.text:
            raise errors.ProtocolError("answer has no candidates", provider=self.name)
        return state.to_response(0.0, None, 1)

    def read_stream_event(self, event: SSEEvent, state: StreamState) -> StreamChunk | None:
        return self._fold(self.event_json(event.data), state)

    def embed_request(self, texts: Sequence[str]) -> HttpRequest:
        model = str(self.config.options.get("embedding_model") or self.default_embedding_model)
        model = model.removeprefix("models/")
        requests = [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}} for t in texts]
        return HttpRequest(self._model_path(model, "batchEmbedContents"), {"requests": requests})

    def parse_embed(self, body: Any) -> list[list[float]]:
        try:
            return [[float(x) for x in item["values"]] for item in body["embeddings"]]
        except (KeyError, TypeError, ValueError):
            raise errors.ProtocolError("embeddings answer has no embeddings", provider=self.name) from None

    def classify_error(self, status: int, body: Any, headers: Mapping[str, str]) -> errors.ProviderError:
        error = classify_status(self.name, status, body, headers)
        message, code = error_detail(body)
        text = f"{message} [{code}]" if code else message
        kwargs: dict[str, Any] = {"provider": self.name, "status": status, "retry_after": error.retry_after}
        details = list(_details(body))
        kinds = {str(d.get("@type", "")).rsplit(".", 1)[-1] for d in details}
        # Gemini has no 401: a bad key is a 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID,
        # a missing one a 403 "Method doesn't allow unregistered callers".
        if any(d.get("reason") == "API_KEY_INVALID" for d in details) or (
                status == 403 and "unregistered callers" in message):
            return errors.AuthenticationError(text, **kwargs)
        if status == 429:
            # Gemini's per-minute 429s also say "You exceeded your current quota ... billing", so the
            # words prove nothing. Waiting is pointless only for a per-day quota, or when the server
            # names a QuotaFailure and gives no RetryInfo to wait for.
            quota_ids = {str(v.get("quotaId", "")) for d in details
                         for v in (d.get("violations") or []) if isinstance(v, dict)}
            if any("PerDay" in quota_id for quota_id in quota_ids) or (
                    "QuotaFailure" in kinds and "RetryInfo" not in kinds):
                return errors.QuotaExceededError(text, **kwargs)
            return errors.RateLimitError(text, **kwargs)
        return error
