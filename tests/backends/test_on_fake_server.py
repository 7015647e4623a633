"""Every backend end to end over loopback HTTP against the fake provider server:
chat, stream, complete, embed (or a clear unsupported error), every fault classified,
retries honouring every hint style, and timeouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count

import pytest

from evalpipe import ChatMessage, LLMBuilder, Provider, errors
from evalpipe.testing import FakeServer


@dataclass(frozen=True)
class Target:
    backend: str
    vendor: str
    path: str = ""
    model: str = "fake-model"
    embeds: bool = True
    hint_style_gemini: bool = False


TARGETS = [
    Target("openai", "openai"),
    Target("anthropic", "anthropic", embeds=False),
    Target("ollama", "ollama"),
    Target("deepseek", "deepseek", embeds=False),
    Target("phind", "phind", model="Phind-70B", embeds=False),
    Target("google", "gemini", "/v1beta", model="gemini-2.0-flash", hint_style_gemini=True),
    Target("xai", "xai"),
    Target("groq", "groq", embeds=False),
    Target("mistral", "mistral"),
    Target("openrouter", "openrouter"),
    Target("azure_openai", "azure"),
]
IDS = [t.backend for t in TARGETS]
_keys = count()
HINT_S = 0.3  # the fake's retry hint: short, so that waiting for it is quick but measurable


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeServer]:
    with FakeServer(retry_after_s=HINT_S) as server:
        yield server


def build(srv: FakeServer, target: Target, *, retries: int = 0, timeout: float = 5.0, key: str = "") -> Provider:
    key = key or f"sk-test-{target.backend}-{next(_keys):06d}"
    return (LLMBuilder().backend(target.backend).api_key(key).model(target.model)
            .base_url(srv.url_for(target.vendor) + target.path).max_retries(retries).timeout(timeout).build())


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage.system("Be brief."), ChatMessage.user(text)]


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_chat(fake_server: FakeServer, target: Target) -> None:
    response = build(fake_server, target).chat(ask("the quick brown fox"))
    assert response.text == "Echo: the quick brown fox"
    if target.backend != "phind":  # Phind's protocol reports neither a finish reason nor usage
        assert response.finish_reason == "stop"
        assert response.usage.output_tokens == 5
        assert response.usage.input_tokens > 0
    assert response.attempts == 1 and response.latency_s > 0


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_max_tokens_cuts_the_answer_with_finish_reason_length(fake_server: FakeServer, target: Target) -> None:
    from evalpipe import GenerationParams

    if target.backend == "phind":
        pytest.skip("Phind's protocol sends no sampling options (documented in PhindProvider)")
    response = build(fake_server, target).chat(ask("one two three four five"), GenerationParams(max_tokens=2))
    assert response.text == "Echo: one"
    assert response.finish_reason == "length"


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_stream_joins_to_the_chat_answer(fake_server: FakeServer, target: Target) -> None:
    stream = build(fake_server, target).stream(ask("stream me some words"))
    pieces = [chunk.text for chunk in stream]
    assert len(pieces) > 1
    assert "".join(pieces) == "Echo: stream me some words"
    assert stream.response is not None
    assert stream.response.text == "".join(pieces)
    assert stream.response.ttft_s is not None and stream.response.ttft_s <= stream.response.latency_s
    if target.backend != "phind":  # Phind reports no usage
        assert stream.response.usage.output_tokens == 5


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_complete(fake_server: FakeServer, target: Target) -> None:
    assert build(fake_server, target).complete("finish this").text.endswith("finish this")


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_embed_or_unsupported(fake_server: FakeServer, target: Target) -> None:
    llm = build(fake_server, target)
    if not target.embeds:
        with pytest.raises(errors.UnsupportedFeatureError, match="embeddings"):
            llm.embed(["a"])
        return
    vectors = llm.embed(["red apple pie", "red apple tart", "quantum tunnelling"])
    assert len(vectors) == 3 and len({len(v) for v in vectors}) == 1

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


FAULTS = [
    ("rate_limit_retry_after", errors.RateLimitError),
    ("rate_limit_retry_after_ms", errors.RateLimitError),
    ("rate_limit_http_date", errors.RateLimitError),
    ("rate_limit_gemini", errors.RateLimitError),
    ("server_error", errors.ServerError),
    ("unavailable", errors.OverloadedError),
    ("overloaded", errors.OverloadedError),
    ("malformed_json", errors.ProtocolError),
    ("html_error", errors.ServerError),
    ("insufficient_quota", errors.QuotaExceededError),
    ("context_length", errors.ContextLengthError),
    ("not_found", errors.NotFoundError),
    ("reset_midstream", errors.ConnectionError),
    ("truncated_stream", (errors.ConnectionError, errors.ProtocolError)),
]


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=[f for f, _ in FAULTS])
def test_faults_are_classified(fake_server: FakeServer, target: Target, fault: str, expected: type) -> None:
    llm = build(fake_server, target)
    with pytest.raises(expected) as info:
        llm.chat(ask(f"hello [[fault:{fault}]]"))
    assert info.value.provider == target.backend
    assert info.value.attempts == 1


STREAM_FAULTS = [
    ("reset_midstream", errors.ConnectionError),
    ("truncated_stream", errors.ConnectionError),
    ("malformed_json", errors.ProtocolError),
    ("error_event", errors.TransientError),
    ("server_error", errors.ServerError),
]


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
@pytest.mark.parametrize(("fault", "expected"), STREAM_FAULTS, ids=[f for f, _ in STREAM_FAULTS])
def test_stream_faults_are_classified(fake_server: FakeServer, target: Target, fault: str, expected: type) -> None:
    with pytest.raises(expected):
        for _ in build(fake_server, target).stream(ask(f"a b c d [[fault:{fault}]]")):
            pass


# retry-after in whole seconds rounds the hint up; an HTTP date has a resolution of one second.
HINTS = [("rate_limit_retry_after", HINT_S), ("rate_limit_retry_after_ms", HINT_S), ("rate_limit_http_date", 0.0)]


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
@pytest.mark.parametrize(("fault", "min_wait"), HINTS, ids=[f for f, _ in HINTS])
def test_retries_honour_the_hint_then_succeed(
    fake_server: FakeServer, target: Target, fault: str, min_wait: float
) -> None:
    llm = build(fake_server, target, retries=3)
    started = time.monotonic()
    response = llm.chat(ask(f"retry me [[fault:{fault}:2]]"))
    elapsed = time.monotonic() - started
    assert response.text == "Echo: retry me"
    assert response.attempts == 3
    assert elapsed >= 2 * min_wait
    assert elapsed < 2 * min_wait + 3.0  # waited for the hint, not for the default backoff


def test_gemini_retry_info_delay_is_honoured(fake_server: FakeServer) -> None:
    llm = build(fake_server, TARGETS[IDS.index("google")], retries=2)
    started = time.monotonic()
    assert llm.chat(ask("gem [[fault:rate_limit_gemini:1]]")).attempts == 2
    assert time.monotonic() - started >= HINT_S  # what the fake's RetryInfo.retryDelay says


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_quota_errors_are_never_retried(fake_server: FakeServer, target: Target) -> None:
    key = f"sk-quota-{target.backend}-{next(_keys)}"
    llm = build(fake_server, target, retries=4, key=key)
    with pytest.raises(errors.QuotaExceededError):
        llm.chat(ask("pay [[fault:insufficient_quota]]"))
    stats_key = "" if target.backend in ("ollama", "phind") else key
    assert fake_server.stats(stats_key).requests >= 1
    if stats_key:
        assert fake_server.stats(stats_key).requests == 1


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_stream_retries_before_the_first_chunk(fake_server: FakeServer, target: Target) -> None:
    stream = build(fake_server, target, retries=2).stream(ask("again please [[fault:server_error:1]]"))
    assert "".join(c.text for c in stream) == "Echo: again please"
    assert stream.response is not None and stream.response.attempts == 2


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_timeout(fake_server: FakeServer, target: Target) -> None:
    llm = build(fake_server, target, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        llm.chat(ask("wait [[fault:hang]]"))
    with pytest.raises(errors.TimeoutError):
        for _ in llm.stream(ask("wait [[fault:hang_midstream]]")):
            pass
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("target", [t for t in TARGETS if t.backend not in ("ollama", "phind")], ids=str)
def test_bad_keys(fake_server: FakeServer, target: Target) -> None:
    with pytest.raises(errors.AuthenticationError):
        build(fake_server, target, key="invalid-key-000000000000").chat(ask("hi"))
    if target.backend != "google":  # Gemini answers a bad key with 400 API_KEY_INVALID, handled above
        with pytest.raises(errors.PermissionDeniedError):
            build(fake_server, target, key="forbidden-key-0000000000").chat(ask("hi"))
