"""HTTP failures become the right error class, whatever the vendor's error body looks like."""

from __future__ import annotations

import pytest

from evalpipe import errors
from evalpipe.backends.classify import classify_status, classify_stream_error, error_detail, parse_body


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"error": {"message": "Incorrect API key", "type": "invalid_request_error"}},
         errors.AuthenticationError),
        (403, {"type": "error", "error": {"type": "permission_error", "message": "no"}},
         errors.PermissionDeniedError),
        (404, {"error": "model 'x' not found"}, errors.NotFoundError),
        (400, {"error": {"message": "bad temperature", "code": None}}, errors.BadRequestError),
        (400, {"error": {"message": "This model's maximum context length is 8192 tokens",
                         "code": "context_length_exceeded"}}, errors.ContextLengthError),
        (400, {"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "prompt is too long: 210000 tokens"}},
         errors.ContextLengthError),
        (413, {"type": "error", "error": {"type": "request_too_large", "message": "too big"}},
         errors.ContextLengthError),
        (429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
         errors.RateLimitError),
        (429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}},
         errors.QuotaExceededError),
        (402, {"error": {"code": 402, "message": "Insufficient credits"}}, errors.QuotaExceededError),
        (402, {"error": {"message": "Insufficient Balance"}}, errors.QuotaExceededError),
        (500, {"error": {"message": "internal"}}, errors.ServerError),
        (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", errors.ServerError),
        (503, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "overloaded"}},
         errors.OverloadedError),
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
         errors.OverloadedError),
        (408, {}, errors.ServerError),
        (409, {}, errors.ServerError),
        (422, {"object": "error", "message": "invalid model", "type": "invalid_request_error"},
         errors.BadRequestError),
    ],
)
def test_status_and_body_map_to_the_error_tree(status: int, body: object, expected: type) -> None:
    error = classify_status("vendor", status, body, {})
    assert type(error) is expected
    assert error.status == status
    assert error.provider == "vendor"


def test_retry_hint_comes_from_headers_or_gemini_body() -> None:
    assert classify_status("x", 429, {}, {"retry-after": "7"}).retry_after == 7.0
    gemini = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "rate",
                        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]}}
    error = classify_status("google", 429, gemini, {})
    assert isinstance(error, errors.RateLimitError)
    assert error.retry_after == 2.0


def test_x_should_retry_header_overrides_the_class_default() -> None:
    assert classify_status("openai", 500, {}, {"x-should-retry": "false"}).retryable is False
    assert classify_status("openai", 400, {}, {"x-should-retry": "true"}).retryable is True


def test_html_error_pages_keep_words_not_markup() -> None:
    message, _ = error_detail(parse_body(b"<html><title>Bad Gateway</title><p>upstream died</p></html>"))
    assert message == "Bad Gateway upstream died"


def test_flat_mistral_and_string_ollama_errors() -> None:
    assert error_detail({"object": "error", "message": "bad key", "type": "unauthorized"})[0] == "bad key"
    assert error_detail({"error": "model not found"}) == ("model not found", "")


def test_error_events_inside_a_stream() -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert isinstance(classify_stream_error("anthropic", overloaded), errors.OverloadedError)
    openrouter = {"error": {"code": 502, "message": "provider returned error"}}
    assert isinstance(classify_stream_error("openrouter", openrouter), errors.ServerError)
    assert isinstance(classify_stream_error("ollama", {"error": "boom"}), errors.ServerError)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}},
         errors.BadRequestError),
        ({"error": {"message": "bad", "status_code": 400}}, errors.BadRequestError),
        ({"error": {"message": "bad", "code": 400, "type": "invalid_request_error"}}, errors.BadRequestError),
        ({"error": {"message": "bad", "code": "400"}}, errors.BadRequestError),
        ({"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}},
         errors.ContextLengthError),
        ({"error": {"message": "no key", "type": "authentication_error"}}, errors.AuthenticationError),
        ({"error": {"message": "slow down", "type": "rate_limit_error"}}, errors.RateLimitError),
        ({"error": {"code": "server_error", "message": "Provider returned error"}}, errors.ServerError),
        ({"error": {"message": "oops", "type": "server_error", "code": None}}, errors.ServerError),
    ],
)
def test_stream_error_events_are_classified_by_their_own_status_and_type(event: object, expected: type) -> None:
    error = classify_stream_error("vendor", event)
    assert type(error) is expected
    # A request error fails the same way on every attempt: it must never be retried.
    assert error.retryable == issubclass(expected, errors.TransientError)
