"""The retry policy: which errors are retried, which hints are honoured, and the caps."""

from __future__ import annotations

import email.utils
import time

import pytest

from evalpipe import errors
from evalpipe.backends.retry import RetryPolicy, parse_retry_after


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == pytest.approx(0.25)


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    future = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.5 < (parse_retry_after({"retry-after": future}) or 0) <= 5.0


def test_gemini_retry_info_in_the_body() -> None:
    body = {"error": {"code": 429, "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"},
    ]}}
    assert parse_retry_after({}, body) == pytest.approx(1.5)


def test_garbage_hints_are_ignored() -> None:
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}, {"error": "x"}) is None


def test_only_transient_errors_are_retried() -> None:
    policy = RetryPolicy(max_retries=3)
    assert policy.delay(errors.QuotaExceededError("no money", status=429), 0) is None
    assert policy.delay(errors.BadRequestError("bad"), 0) is None
    assert policy.delay(errors.RateLimitError("slow down", retry_after=2.0), 0) == 2.0
    assert policy.delay(errors.ServerError("boom"), 3) is None  # out of retries


def test_a_hint_longer_than_the_cap_fails_instead_of_waiting() -> None:
    assert RetryPolicy(max_hint_s=10).delay(errors.RateLimitError("x", retry_after=3600), 0) is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff_s=0.5, max_backoff_s=2.0, max_retries=10)
    delays = [policy.delay(errors.ServerError("x"), i) or 0 for i in range(6)]
    assert 0.375 <= delays[0] <= 0.5
    assert 0.75 <= delays[1] <= 1.0
    assert all(d <= 2.0 for d in delays)


@pytest.mark.anyio
async def test_run_counts_attempts_and_gives_up_with_the_last_error() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise errors.OverloadedError("busy", retry_after=0.01)
        return "ok"

    assert await RetryPolicy(max_retries=4).run(flaky) == ("ok", 3)

    async def always() -> str:
        raise errors.ServerError("down", retry_after=0.01)

    with pytest.raises(errors.ServerError) as info:
        await RetryPolicy(max_retries=2).run(always)
    assert info.value.attempts == 3
