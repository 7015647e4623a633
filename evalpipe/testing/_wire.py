"""Types shared by the fake server's core and its protocol modules.

A protocol module turns an HTTP request into a `Call` (what was asked), and turns an `Answer`
(what the fake decided to say) into the vendor's bytes: a `Reply` for a plain response, a
`StreamPlan` for a streamed one, and the vendor's error bodies. The core does everything
else: routing, auth outcomes, faults, rate limits, latency, counters.
"""

from __future__ import annotations

import enum
import json
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


class Operation(enum.Enum):
    """What a request asks for."""

    CHAT = "chat"
    COMPLETE = "complete"
    EMBED = "embed"
    LIST_MODELS = "list_models"


class Finish(enum.Enum):
    """Why an answer ended."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"


class ErrorKind(enum.Enum):
    """A failure the fake can answer with; each protocol maps it to its own status and body."""

    AUTH_MISSING = "auth_missing"
    AUTH_INVALID = "auth_invalid"
    PERMISSION = "permission"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length"
    QUOTA = "quota"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    CONTENT_FILTER = "content_filter"  # the prompt was refused by a content filter (OpenAI-style vendors)


@dataclass(frozen=True)
class HttpRequest:
    """One request as read off the wire (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, or `RequestRejected` when it is not one."""
        try:
            data = json.loads(self.body or b"null")
        except ValueError as exc:
            raise RequestRejected(ErrorKind.BAD_REQUEST, f"Request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RequestRejected(ErrorKind.BAD_REQUEST, "Request body must be a JSON object.")
        return data

    def bearer(self) -> str | None:
        """The token of an `Authorization: Bearer ...` header, if any."""
        value = self.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class RequestRejected(Exception):
    """Raised by a protocol's parser: the request is answered with this error."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


@dataclass
class Call:
    """A parsed inference request, in the same terms for every vendor."""

    operation: Operation
    model: str
    prompt: str = ""  # the last user message (or the prompt), markers included
    texts: list[str] = field(default_factory=list)  # every text sent, for input-token counting
    max_tokens: int | None = None
    json_schema: dict[str, Any] | None = None
    json_mode: bool = False
    stream: bool = False
    include_usage: bool = False
    inputs: list[str] = field(default_factory=list)  # texts to embed
    dimensions: int | None = None
    identity: str = ""  # the request minus its stream flag: identical retries share it
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)  # offered tools: name -> parameters schema
    tool_choice: str | None = None  # "auto", "none", "required" or a tool's name, in OpenAI's words
    tool_results: list[str] = field(default_factory=list)  # results the conversation ends with
    images: list[str] = field(default_factory=list)  # each image of the last user turn: its MIME type or "url"
    extras: dict[str, Any] = field(default_factory=dict)  # protocol-specific details


@dataclass(frozen=True)
class PlannedToolCall:
    """A tool call the fake makes: the tool's name and its arguments as the JSON text to send
    (not valid JSON when a `[[tool:NAME:malformed]]` marker asked for that); protocols put their
    own prefix before `id` (`call_`, `toolu_`)."""

    name: str
    arguments: str
    id: str = ""

    def parsed(self) -> Any:
        """The arguments as an object, for vendors that send objects (malformed ones as a string)."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments


@dataclass
class Answer:
    """What the fake says to a call: deterministic, computed before any byte is sent."""

    text: str = ""
    pieces: list[str] = field(default_factory=list)  # word-sized stream deltas; they join to `text`
    finish: Finish = Finish.STOP
    input_tokens: int = 0
    output_tokens: int = 0
    embeddings: list[list[float]] = field(default_factory=list)
    tool_calls: list[PlannedToolCall] = field(default_factory=list)


@dataclass
class Reply:
    """A complete (non-streamed) HTTP response."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class StreamPlan:
    """A streamed response, as framed events.

    `head` opens the stream (role chunk, keep-alive comments, `message_start`...), `deltas`
    carry the answer, `tail` closes it (finish reason, usage, the terminal event). Faults cut
    the plan: a truncated stream stops inside `deltas`, an error event follows the first delta.
    """

    content_type: str
    head: list[bytes]
    deltas: list[bytes]
    tail: list[bytes]
    error_event: bytes
    malformed_event: bytes


@dataclass(frozen=True)
class RateLimitState:
    """One key's limits after a request was admitted, for the vendors' rate-limit headers."""

    limit_requests: int | None
    remaining_requests: int
    reset_requests_s: float
    limit_tokens: int | None
    remaining_tokens: int
    reset_tokens_s: float

    def headers(self, name: Callable[[str, str], str], reset: Callable[[float], str]) -> list[tuple[str, str]]:
        """limit / remaining / reset headers for requests and tokens, as a vendor spells them:
        `name(kind, field)` gives the header name, `reset(seconds)` the reset value."""
        headers = []
        for kind, limit, remaining, reset_s in (
            ("requests", self.limit_requests, self.remaining_requests, self.reset_requests_s),
            ("tokens", self.limit_tokens, self.remaining_tokens, self.reset_tokens_s),
        ):
            if limit is not None:
                headers += [(name(kind, "limit"), str(limit)), (name(kind, "remaining"), str(remaining)),
                            (name(kind, "reset"), reset(reset_s))]
        return headers


def dumps(data: Any) -> bytes:
    """Compact JSON, as the vendors send it."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def sse(data: Any, *, event: str | None = None, end: bytes = b"\n\n") -> bytes:
    """One server-sent event: optional `event:` line, one `data:` line, then `end`."""
    payload = data if isinstance(data, bytes) else dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + end


def json_reply(status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    """A JSON response."""
    return Reply(status, dumps(data), "application/json", list(headers or []))


def new_id(prefix: str) -> str:
    """A random id like the vendors' (`chatcmpl-...`, `msg_...`)."""
    return prefix + uuid.uuid4().hex[:24]


def now() -> int:
    """Unix seconds, for `created` fields."""
    return int(time.time())


def text_of(content: Any) -> str:
    """The text of a message content: a string, or a list of parts holding `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text_of(part) for part in content if text_of(part))
    if isinstance(content, dict):
        text = content.get("text")
        return text if isinstance(text, str) else ""
    return ""


def identity_of(*parts: Any) -> str:
    """A stable identity for a request: its parts as canonical JSON."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)


def optional_int(value: Any, name: str) -> int | None:
    """An optional integer field, or `RequestRejected`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestRejected(ErrorKind.BAD_REQUEST, f"{name} must be an integer.")
    return value


class Protocol(ABC):
    """One vendor's wire format, mounted under `prefix` on the fake server."""

    vendor: ClassVar[str]
    prefix: ClassVar[str]
    base_path: ClassVar[str] = ""  # appended to prefix in `FakeServer.url_for`
    requires_key: ClassVar[bool] = True
    # Header names the fake adds to this vendor's 429s when it limits a key itself.
    retry_headers: ClassVar[tuple[str, ...]] = ("retry-after",)
    models: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def route(self, method: str, path: str, query: dict[str, str]) -> tuple[Operation, dict[str, str]] | None:
        """The operation a path (with the prefix removed) asks for, and its path parameters."""

    @abstractmethod
    def api_key(self, request: HttpRequest) -> str | None:
        """The API key the request carries the way this vendor expects it, or None."""

    @abstractmethod
    def parse(self, operation: Operation, params: dict[str, str], request: HttpRequest) -> Call:
        """The call a request makes, or `RequestRejected`."""

    @abstractmethod
    def reply(self, call: Call, answer: Answer) -> Reply:
        """The complete response to a call."""

    @abstractmethod
    def stream(self, call: Call, answer: Answer) -> StreamPlan:
        """The streamed response to a call."""

    @abstractmethod
    def error(self, kind: ErrorKind, message: str | None, model: str, retry_after_s: float | None) -> Reply:
        """This vendor's error response; `retry_after_s` is set for rate limits the fake imposes."""

    @abstractmethod
    def list_models(self) -> Reply:
        """The vendor's model listing."""

    def denied_message(self, kind: ErrorKind, key: str) -> str | None:
        """The vendor's own text for a refused key when it quotes the key back (masked); None: the default."""
        return None

    def ratelimit_headers(self, state: RateLimitState) -> list[tuple[str, str]]:
        """Rate-limit headers this vendor adds to every response (none by default)."""
        return []


def go_duration(seconds: float) -> str:
    """A duration the way OpenAI's `x-ratelimit-reset-*` headers write it (`1s`, `6m0s`, `120ms`)."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text
