"""The one retry policy: which failures are retried, and how long to wait between attempts."""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import structlog

from evalpipe.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    QuotaExceededError,
)

T = TypeVar("T")
log = structlog.get_logger("evalpipe.retry")

# The request itself is wrong (key, permission, route, body, billing): the same request fails the
# same way, so it is sent once, whatever a header like `x-should-retry` says. 408, 409 and 429 are
# 4xx too, but they are about timing, not about the request.
_CLIENT_ERRORS = (AuthenticationError, PermissionDeniedError, NotFoundError, BadRequestError, QuotaExceededError)
_CLIENT_STATUSES = frozenset({400, 401, 402, 403, 404, 405, 413, 415, 422})


def is_client_error(error: ProviderError) -> bool:
    """Whether `error` says the request itself is wrong, so that sending it again cannot help."""
    return isinstance(error, _CLIENT_ERRORS) or error.status in _CLIENT_STATUSES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Jittered exponential backoff that prefers the provider's own hint, within caps."""

    max_retries: int = 4
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_hint_s: float = 60.0  # a longer hint than this is not waited for: the attempt fails instead
    max_total_wait_s: float = 120.0

    def delay(self, error: ProviderError, retry_index: int) -> float | None:
        """Seconds to wait before retry number `retry_index` (0-based), or None: give up."""
        if not error.retryable or is_client_error(error) or retry_index >= self.max_retries:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_hint_s else None
        backoff = min(self.initial_backoff_s * 2.0**retry_index, self.max_backoff_s)
        return backoff * (1 - 0.25 * random.random())  # jitter spreads clients that failed together

    async def wait_or_raise(self, error: ProviderError, retry_index: int, waited_s: float) -> float:
        """Sleep before the next attempt and return the total waited so far; re-raise `error`
        when the policy gives up."""
        wait = self.delay(error, retry_index)
        if wait is None or waited_s + wait > self.max_total_wait_s:
            error.attempts = retry_index + 1
            raise error
        log.info("retrying", provider=error.provider, error=error.kind, status=error.status,
                 wait_s=round(wait, 3), attempt=retry_index + 1, message=error.message)
        await anyio.sleep(wait)
        return waited_s + wait

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """Call `attempt` until it succeeds or the policy gives up; returns (result, attempts)."""
        waited = 0.0
        retry_index = 0
        while True:
            try:
                return await attempt(), retry_index + 1
            except ProviderError as error:
                waited = await self.wait_or_raise(error, retry_index, waited)
                retry_index += 1


_GO_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_retry_after(headers: Mapping[str, str], body: Any = None) -> float | None:
    """The wait a response asks for: `retry-after-ms`, `retry-after` (seconds or HTTP date),
    or Gemini's `RetryInfo.retryDelay` in the error body."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return max(float(value), 0.0)
        except ValueError:
            try:
                return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
            except (TypeError, ValueError):
                pass
    return _gemini_retry_delay(body)


def _gemini_retry_delay(body: Any) -> float | None:
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _GO_DURATION.match(str(detail.get("retryDelay", "")))
            if match and any(match.groups()):
                hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
                return hours * 3600 + minutes * 60 + seconds
    return None
