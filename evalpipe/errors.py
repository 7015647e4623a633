"""The one error tree of evalpipe.

    EvalpipeError
    ├── ConfigError                 bad builder options, missing key, missing local binary
    ├── UnsupportedFeatureError     the backend's protocol has no such call (Phind embeddings)
    └── ProviderError               anything a provider call can end with
        ├── AuthenticationError     401: key missing or wrong
        ├── PermissionDeniedError   403
        ├── NotFoundError           404: unknown model or route
        ├── BadRequestError         400, 413, 422: the request itself is wrong
        │   ├── ContextLengthError  the prompt does not fit the model's context
        │   └── BatchRejectedError  the vendor refused a whole batch at validation
        ├── BatchExpiredError       a batch's window ran out before this request was answered
        ├── BatchCancelledError     a batch was cancelled before this request was answered
        ├── QuotaExceededError      billing: insufficient_quota, 402; never retried
        ├── ProtocolError           a body or stream that does not parse
        └── TransientError          worth another attempt
            ├── RateLimitError      429 (retry_after from the response when given)
            ├── OverloadedError     529, 503
            ├── ServerError         other 5xx, 408, 409, error events inside a stream
            ├── TimeoutError        no answer in time
            └── ConnectionError     refused, reset, closed early

Every error carries the provider, the HTTP status (if any), a retry hint in seconds (if the
provider gave one) and a message that never contains a secret: messages are built from the
vendor's error text, which is passed through `redact` before it is stored (`evalpipe.redaction`
knows every spelling a registered secret can take).
"""

from __future__ import annotations

from typing import Any

from evalpipe.redaction import redact, register_secret


class EvalpipeError(Exception):
    """Base of every error evalpipe raises on purpose."""

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)


class ConfigError(EvalpipeError):
    """The configuration cannot work: a bad option, a missing key or a missing component."""


class UnsupportedFeatureError(EvalpipeError):
    """The backend's protocol has no such feature (embeddings on Phind, say)."""

    def __init__(self, provider: str, feature: str) -> None:
        super().__init__(f"{provider} does not support {feature}")
        self.provider = provider
        self.feature = feature


class ProviderError(EvalpipeError):
    """A provider call failed; see the subclass for why."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        prefix = f"{provider}: " if provider else ""
        suffix = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{prefix}{message}{suffix}")
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1  # set by the retry policy when it gives up
        # The vendor's safety verdict when it refused the request (Azure's content filter results).
        self.safety: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        """The class name, the error type recorded in result rows."""
        return type(self).__name__


class AuthenticationError(ProviderError):
    """The API key is missing or wrong (401)."""


class PermissionDeniedError(ProviderError):
    """The key may not use this model or route (403)."""


class NotFoundError(ProviderError):
    """The model or route does not exist (404)."""


class BadRequestError(ProviderError):
    """The request is invalid and would fail again as it is (400, 413, 422)."""


class ContextLengthError(BadRequestError):
    """The prompt plus the requested output exceeds the model's context window."""


class BatchRejectedError(BadRequestError):
    """The vendor refused a whole batch at validation (a malformed line, a model without batch support)."""


class BatchExpiredError(ProviderError):
    """A batch's window ran out before this request was answered (`--retry-errors` submits it again)."""


class BatchCancelledError(ProviderError):
    """A batch was cancelled before this request was answered."""


class QuotaExceededError(ProviderError):
    """Billing quota or balance exhausted (insufficient_quota, 402): waiting does not help."""


class ProtocolError(ProviderError):
    """The provider answered something that does not parse as its protocol."""


class TransientError(ProviderError):
    """A failure that may pass: the retry policy tries again."""

    retryable = True


class RateLimitError(TransientError):
    """Too many requests or tokens (429); `retry_after` says how long the provider asked to wait."""


class OverloadedError(TransientError):
    """The provider is overloaded or unavailable (529, 503)."""


class ServerError(TransientError):
    """The provider failed on its side (5xx, 408, 409, an error event inside a stream)."""


class TimeoutError(TransientError):  # noqa: A001 - the name the public API promises
    """No complete answer within the timeout."""


class ConnectionError(TransientError):  # noqa: A001 - the name the public API promises
    """The connection could not be made or broke before the answer was complete."""


__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BatchCancelledError",
    "BatchExpiredError",
    "BatchRejectedError",
    "ConfigError",
    "ConnectionError",
    "ContextLengthError",
    "EvalpipeError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "ProtocolError",
    "ProviderError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "TimeoutError",
    "TransientError",
    "UnsupportedFeatureError",
    "redact",
    "register_secret",
]
