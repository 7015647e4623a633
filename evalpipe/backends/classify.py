"""Turn a failed HTTP exchange into the right error of the tree. Shared by every protocol."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, cast

import aiohttp
import httpx

from evalpipe import errors
from evalpipe.backends.retry import parse_retry_after

_CONTEXT_LENGTH = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|too many tokens|"
    r"input is too long|exceeds the maximum|input token count",
    re.IGNORECASE,
)
_QUOTA = re.compile(r"insufficient_quota|insufficient balance|billing|credit balance|quota", re.IGNORECASE)


def parse_body(content: bytes) -> Any:
    """The JSON of an error body, or its text when it is not JSON (an HTML error page, say)."""
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", errors="replace")


def error_detail(body: Any) -> tuple[str, str]:
    """(message, code) from any vendor's error body: OpenAI/Anthropic/Gemini nest them under
    `error`, Mistral is flat, Ollama puts a string in `error`."""
    if isinstance(body, str):
        text = re.sub(r"<[^>]+>", " ", body)  # an HTML page: keep the words, not the markup
        return " ".join(text.split())[:300] or "empty error body", ""
    if not isinstance(body, dict):
        return str(body)[:300], ""
    error = body.get("error", body)
    if isinstance(error, str):
        return error, ""
    if not isinstance(error, dict):
        return str(error)[:300], ""
    message = str(error.get("message") or body.get("message") or "no message")
    code = " ".join(str(error.get(k)) for k in ("code", "type", "status") if error.get(k) is not None)
    return message, code


def classify_status(
    provider: str, status: int, body: Any, headers: Mapping[str, str] | None = None
) -> errors.ProviderError:
    """The error for an HTTP status with its (parsed) body and headers."""
    headers = headers or {}
    message, code = error_detail(body)
    text = f"{message} [{code}]" if code else message
    retry_after = parse_retry_after(headers, body)
    kwargs: dict[str, Any] = {"provider": provider, "status": status, "retry_after": retry_after}
    error: errors.ProviderError
    if status == 402 or (status in (400, 403, 429) and _QUOTA.search(f"{code} {message}")
                         and "rate" not in code.lower()):
        error = errors.QuotaExceededError(text, **kwargs)
    elif status == 429:
        error = errors.RateLimitError(text, **kwargs)
    elif status in (400, 413, 422):
        is_context = _CONTEXT_LENGTH.search(f"{code} {message}") or status == 413
        error = (errors.ContextLengthError if is_context else errors.BadRequestError)(text, **kwargs)
    elif status == 401:
        error = errors.AuthenticationError(text, **kwargs)
    elif status == 403:
        error = errors.PermissionDeniedError(text, **kwargs)
    elif status == 404:
        error = errors.NotFoundError(text, **kwargs)
    elif status in (503, 529):
        error = errors.OverloadedError(text, **kwargs)
    elif status in (408, 409) or status >= 500:
        error = errors.ServerError(text, **kwargs)
    else:
        error = errors.BadRequestError(text, **kwargs)
    if (safety := content_filter_detail(body)) is not None:
        error.safety = safety
        if blocked := filtered_categories(safety):
            error.message = f"{error.message} (filtered: {', '.join(blocked)})"
            error.args = (error.message,)
    # OpenAI's servers say explicitly when a retry is (not) worth it; the header wins.
    should_retry = headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        error.retryable = should_retry == "true"
    return error


# The status an error *type* stands for, for in-stream error events that carry a type but no status
# (OpenAI, Anthropic, llama-server and OpenRouter all name their types this way).
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "api_error": 500,
    "server_error": 500,
    "unavailable_error": 503,
    "overloaded_error": 529,
}


def classify_stream_error(provider: str, body: Any) -> errors.ProviderError:
    """The error for an error event inside a stream that started with status 200.

    The event is judged like an HTTP error with the status it names (`code`, `status`,
    `status_code`) or its type stands for: a 400 invalid_request_error inside a stream fails the
    same way on every attempt and must not be retried as a server error."""
    message, code = error_detail(body)
    status = _status_in(body)
    if status is not None and status >= 400:
        return classify_status(provider, status, body)
    lowered = f"{code} {message}".lower()
    if "overloaded" in lowered or "unavailable" in lowered:
        return errors.OverloadedError(message, provider=provider)
    if "rate_limit" in lowered or "rate limit" in lowered:
        return errors.RateLimitError(message, provider=provider)
    if _QUOTA.search(lowered):
        return errors.QuotaExceededError(message, provider=provider)
    if _CONTEXT_LENGTH.search(lowered):
        return errors.ContextLengthError(message, provider=provider)
    return errors.ServerError(f"error event in stream: {message}", provider=provider)


def _status_in(body: Any) -> int | None:
    """The HTTP status an error body names, as a number or by its error type."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("status_code", "code", "status"):
        value = error.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
            return value
    for key in ("type", "code"):
        status = _STATUS_OF_TYPE.get(str(error.get(key)))
        if status is not None:
            return status
    return None


def content_filter_detail(body: Any) -> dict[str, Any] | None:
    """Azure's content-filter verdict in an error body (`innererror.content_filter_result`), if any."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    inner = error.get("innererror")
    result = inner.get("content_filter_result") if isinstance(inner, dict) else None
    if result is None:
        result = error.get("content_filter_results")
    if not isinstance(result, dict):
        return None
    # Redacted through JSON: a vendor may echo parts of the request, and a key must never be kept.
    return cast(dict[str, Any], json.loads(errors.redact(json.dumps(result))))


def filtered_categories(result: dict[str, Any]) -> list[str]:
    """The categories a content-filter verdict blocked, with their severity where it gives one."""
    found = []
    for name, verdict in result.items():
        if isinstance(verdict, dict) and verdict.get("filtered") is True:
            severity = verdict.get("severity")
            found.append(f"{name}={severity}" if isinstance(severity, str) else name)
    return found


def classify_transport(provider: str, exc: httpx.HTTPError | aiohttp.ClientError | OSError) -> errors.ProviderError:
    """The error for a failure below HTTP (httpx's or aiohttp's): timeouts, refused or broken connections."""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return errors.TimeoutError(f"no answer in time ({name})", provider=provider)
    return errors.ConnectionError(f"connection failed ({name}: {exc})", provider=provider)
