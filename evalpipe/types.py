"""Core value types: messages, generation parameters, responses. No I/O here."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from evalpipe.errors import ConfigError
from evalpipe.redaction import header_value_problem, register_secret

Role = Literal["system", "user", "assistant", "tool"]
ToolChoice = str  # "auto", "none", "required", or the name of one tool the model must call
TOOL_CHOICE_MODES = ("auto", "none", "required")


def check_header_values(headers: Mapping[str, str], where: str) -> None:
    """Register header values as secrets and refuse one that cannot be sent, naming the header only.

    Header values may carry credentials (a proxy's token), and a value httpx cannot encode would
    otherwise fail on every attempt, quoted in the error."""
    register_secret(headers)
    for name, value in headers.items():
        if (problem := header_value_problem(value)) is not None:
            raise ConfigError(f"header {name!r} {where} {problem}")


@dataclass(frozen=True, slots=True)
class Image:
    """An image part of a message: a file path, a URL, or the bytes themselves.

    A path is read (and its MIME type detected) only when a request is built, by the backend
    layer; `media_type` may be left empty for paths and bytes."""

    path: str | None = None
    url: str | None = None
    data: bytes | None = field(default=None, repr=False)
    media_type: str = ""

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.path, self.url, self.data)) != 1:
            raise ConfigError("an Image needs exactly one of path, url or data")

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Image:
        """An image read from a file when the request is built."""
        return cls(path=os.fspath(path))

    @classmethod
    def from_url(cls, url: str) -> Image:
        """An image the vendor fetches itself (where it can)."""
        return cls(url=url)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str = "") -> Image:
        """An image given as bytes; an empty `media_type` is detected from the bytes."""
        return cls(data=bytes(data), media_type=media_type)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call of a tool by the model: `arguments` is the parsed JSON, `raw_arguments` the string the
    vendor sent when it was not valid JSON (then `arguments` is None)."""

    id: str
    name: str
    arguments: Any = None
    raw_arguments: str | None = None
    # An opaque token the vendor wants back with the call in the next turn (Gemini's thoughtSignature).
    signature: str | None = field(default=None, repr=False)

    @classmethod
    def from_raw(cls, id: str, name: str, raw: str, signature: str | None = None) -> ToolCall:
        """A call whose arguments arrived as a JSON string, parsed without ever raising."""
        if not raw.strip():
            return cls(id, name, {}, None, signature)
        try:
            return cls(id, name, json.loads(raw), None, signature)
        except ValueError:
            return cls(id, name, None, raw, signature)

    @property
    def arguments_json(self) -> str:
        """The arguments as a JSON string, as the model sent them when they were not valid JSON."""
        if self.raw_arguments is not None:
            return self.raw_arguments
        return json.dumps(self.arguments if self.arguments is not None else {})


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: its name, what it does, and a JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def __post_init__(self) -> None:
        if not TOOL_NAME.fullmatch(self.name):
            raise ConfigError(f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-' "
                              "(the vendors' common rule)")
        if not isinstance(self.parameters, dict):
            raise ConfigError(f"tool {self.name!r}: parameters must be a JSON Schema object")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Tool:
        """A tool from `{name, description, parameters}` (OpenAI's `{"type": "function", "function":
        {...}}` and Anthropic's `input_schema` spellings too)."""
        function = spec.get("function")
        spec = function if isinstance(function, Mapping) else spec
        name = spec.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"a tool needs a 'name' string, got {dict(spec)!r}")
        parameters = spec.get("parameters", spec.get("input_schema", {"type": "object", "properties": {}}))
        return cls(name, str(spec.get("description") or ""), parameters)


# The rule every vendor accepts (OpenAI: ^[a-zA-Z0-9_-]{1,64}$; Anthropic and Gemini are close).
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation.

    `content` is always the text; images, the tool calls of an assistant turn and the id of the
    call a tool message answers are parts beside it."""

    role: Role
    content: str
    images: tuple[Image, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None  # a tool message: the tool's name (Gemini and Ollama need it)

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        """A system (instruction) message."""
        return cls("system", content)

    @classmethod
    def user(cls, content: str, images: Sequence[Image | str] = ()) -> ChatMessage:
        """A user message, with images (an `Image`, or a path or http(s) URL as a string)."""
        return cls("user", content, tuple(as_image(image) for image in images))

    @classmethod
    def assistant(cls, content: str, tool_calls: Sequence[ToolCall] = ()) -> ChatMessage:
        """An assistant message (a previous answer), with the tool calls it made."""
        return cls("assistant", content, tool_calls=tuple(tool_calls))

    @classmethod
    def tool_result(cls, call_id: str, content: str, name: str | None = None) -> ChatMessage:
        """The result of tool call `call_id`, sent back to the model."""
        return cls("tool", content, tool_call_id=call_id, name=name)


def as_image(image: Image | str) -> Image:
    """An `Image` from an `Image`, an http(s) or data URL, or a file path."""
    if isinstance(image, Image):
        return image
    if image.startswith(("http://", "https://", "data:")):
        return Image.from_url(image)
    return Image.from_path(image)


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling and output options; None means "the backend's default"."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    system: str | None = None
    json_schema: dict[str, Any] | None = None
    tools: tuple[Tool, ...] | None = None
    tool_choice: ToolChoice | None = None
    # How hard a reasoning model thinks: an effort level and/or a token budget for its reasoning.
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    reasoning_budget_tokens: int | None = None
    # Passed through to the vendor as they are: merged into the request body (deep) and its headers.
    extra_body: dict[str, Any] | None = None
    headers: dict[str, str] | None = field(default=None, repr=False)  # values may be credentials

    def __post_init__(self) -> None:
        if self.headers:
            check_header_values(self.headers, "in the generation parameters")
        if self.tool_choice is not None and not (isinstance(self.tool_choice, str) and self.tool_choice):
            raise ConfigError(f"tool_choice must be one of {', '.join(TOOL_CHOICE_MODES)} or a tool's name")

    def merged(self, override: GenerationParams | None) -> GenerationParams:
        """These params with every non-None field of `override` taking precedence."""
        if override is None:
            return self
        key = (id(self), id(override))
        known = _MERGES.get(key)
        if known is not None and known[0] is self and known[1] is override:
            return known[2]
        changes = {f.name: getattr(override, f.name) for f in fields(override)}
        merged = replace(self, **{k: v for k, v in changes.items() if v is not None})
        if len(_MERGES) >= _MERGES_KEPT:  # params made afresh per call (a chain's steps) must not pile up
            _MERGES.clear()
        _MERGES[key] = (self, override, merged)
        return merged


# Merges by the identities of both sides, each kept with its result so that an id cannot be reused while
# cached (both are frozen): a provider merges its own params with the same parameter set's on every call
# of a job, and `replace` (with its checks) cost more than the rest of building the request.
_MERGES: dict[tuple[int, int], tuple[GenerationParams, GenerationParams, GenerationParams]] = {}
_MERGES_KEPT = 256


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys taking precedence; nested mappings merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        merged[key] = deep_merge(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return merged


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reported them (0 when it reported nothing), in one convention for
    every vendor.

    `input_tokens` is all input, cached or not; `cached_input_tokens` of it were read from the vendor's
    prompt cache and `cache_write_input_tokens` were written to it (each billed at its own price).
    `output_tokens` is all billed output, reasoning included; `reasoning_tokens` of it were reasoning."""

    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class ChatResponse:
    """A finished answer, whether it was streamed or not."""

    text: str
    finish_reason: str | None = None
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    ttft_s: float | None = None
    reasoning: str | None = None
    attempts: int = 1
    # Why the model declined, in its own words ("refusal" / "content_filter" finish reasons).
    refusal: str | None = None
    # The vendor's safety detail (content-filter results, safety ratings, block reason), as it sent it.
    safety: dict[str, Any] | None = None
    raw: Any = field(default=None, repr=False)
    # The tools the model called, in order (finish reason "tool_calls").
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed answer; `reasoning` carries thinking text kept apart from the answer."""

    text: str = ""
    reasoning: str = ""
