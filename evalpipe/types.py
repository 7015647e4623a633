"""Core value types: messages, generation parameters, responses. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from evalpipe.errors import ConfigError
from evalpipe.redaction import header_value_problem, register_secret

Role = Literal["system", "user", "assistant"]


def check_header_values(headers: Mapping[str, str], where: str) -> None:
    """Register header values as secrets and refuse one that cannot be sent, naming the header only.

    Header values may carry credentials (a proxy's token), and a value httpx cannot encode would
    otherwise fail on every attempt, quoted in the error."""
    register_secret(headers)
    for name, value in headers.items():
        if (problem := header_value_problem(value)) is not None:
            raise ConfigError(f"header {name!r} {where} {problem}")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        """A system (instruction) message."""
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        """A user message."""
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str) -> ChatMessage:
        """An assistant message (a previous answer)."""
        return cls("assistant", content)


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
    # How hard a reasoning model thinks: an effort level and/or a token budget for its reasoning.
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    reasoning_budget_tokens: int | None = None
    # Passed through to the vendor as they are: merged into the request body (deep) and its headers.
    extra_body: dict[str, Any] | None = None
    headers: dict[str, str] | None = field(default=None, repr=False)  # values may be credentials

    def __post_init__(self) -> None:
        if self.headers:
            check_header_values(self.headers, "in the generation parameters")

    def merged(self, override: GenerationParams | None) -> GenerationParams:
        """These params with every non-None field of `override` taking precedence."""
        if override is None:
            return self
        changes = {f.name: getattr(override, f.name) for f in fields(override)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


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


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed answer; `reasoning` carries thinking text kept apart from the answer."""

    text: str = ""
    reasoning: str = ""
