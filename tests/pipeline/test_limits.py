"""Backend limits against the fake server over HTTP: no 429 at the configured rates, near-full use
of them, adaptive slow-down in a 429 storm, a Retry-After that pauses one backend only, and the
concurrency caps. Windows are shortened to a second or two so the whole file runs in seconds."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from evalpipe.backends.base import Provider
from evalpipe.backends.retry import RetryPolicy
from evalpipe.builder import LLMBuilder
from evalpipe.errors import RateLimitError, ServerError
from evalpipe.pipeline.running.limits import BackendLimiter, GlobalLimiter, Limiter, call_with_limits, estimate_tokens
from evalpipe.testing import FakeServer
from evalpipe.types import ChatMessage, ChatResponse

pytestmark = pytest.mark.anyio

TEN_WORDS = " ".join(f"w{i}" for i in range(10))  # 10 input tokens + "Echo:" and 10 words out = 21


def openai(srv: FakeServer, key: str) -> Provider:
    return LLMBuilder().backend("openai").api_key(key).base_url(srv.url_for("openai")).max_retries(0).build()


async def warm_openai(srv: FakeServer, key: str) -> Provider:
    """A client whose connection pool already exists, and a server that forgot the warm-up call.

    A cold client's first call spends tens of milliseconds building its pool after admission, more
    than the limiter's headroom in a two-second window (it is 1.2 s in a real minute)."""
    llm = openai(srv, key)
    await llm.achat([ChatMessage.user("warm up")])
    srv.reset()
    return llm


def total_tokens(response: ChatResponse) -> int:
    return response.usage.total_tokens


class Calls:
    """Sends texts through a limiter from several workers; records when attempts start and when
    429s arrive, and how many calls are in flight."""

    def __init__(self, llm: Provider, limiter: Limiter, policy: RetryPolicy | None = None) -> None:
        self.llm, self.limiter, self.policy = llm, limiter, policy or RetryPolicy()
        self.attempts: list[float] = []
        self.rate_limited: list[float] = []
        self.in_flight = self.max_in_flight = 0

    async def one(self, text: str, estimate: int) -> ChatResponse:
        async def attempt() -> ChatResponse:
            self.attempts.append(anyio.current_time())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self.llm.achat([ChatMessage.user(text)])
            except RateLimitError:
                self.rate_limited.append(anyio.current_time())
                raise
            finally:
                self.in_flight -= 1

        response, _ = await call_with_limits(self.limiter, self.policy, attempt, estimate, total_tokens)
        return response

    async def many(self, texts: Sequence[str], *, workers: int, estimate: int = 0) -> None:
        pending = iter(texts)

        async def worker() -> None:
            for text in pending:
                await self.one(text, estimate)

        async with anyio.create_task_group() as group:
            for _ in range(workers):
                group.start_soon(worker)


def most_in_window(stamps: Sequence[float], window_s: float, weight: int = 1) -> int:
    """The largest weight sent within any `window_s` (half-open, like the fake server's window)."""
    ordered, best, start = sorted(stamps), 0, 0
    for end, stamp in enumerate(ordered):
        while stamp - ordered[start] >= window_s:
            start += 1
        best = max(best, (end - start + 1) * weight)
    return best


def per_window(stamps: Sequence[float], window_s: float, weight: int = 1) -> float:
    """The steady pace, in weight per window, from the first send to the last."""
    return (len(stamps) - 1) * weight * window_s / (max(stamps) - min(stamps))


async def test_requests_per_window_hold_without_429_at_nearly_the_full_rate() -> None:
    rpm, window_s, calls = 20, 2.0, 50  # two and a half windows
    with FakeServer(rpm=rpm, window_s=window_s) as srv:
        llm = await warm_openai(srv, "sk-rpm")
        run = Calls(llm, BackendLimiter(max_concurrency=8, rpm=rpm, period_s=window_s))
        await run.many([f"question {i}" for i in range(calls)], workers=8)
        await llm.aclose()
        stats = srv.stats("sk-rpm")
    pace = per_window(run.attempts, window_s)
    print(f"rpm: {pace:.2f}/{rpm} per window = {pace / rpm:.3f}, 429s: {stats.by_status.get(429, 0)}")
    assert stats.by_status.get(429, 0) == 0
    assert stats.succeeded == calls
    assert most_in_window(run.attempts, window_s) <= rpm
    assert pace >= 0.95 * rpm


@pytest.mark.parametrize("estimate_ratio", [1.0, 0.5], ids=["exact-estimate", "under-estimate"])
async def test_tokens_per_window_hold_without_429_at_nearly_the_full_rate(estimate_ratio: float) -> None:
    tpm, window_s, calls, tokens = 2000, 2.0, 150, 21  # about 2.5 windows of 21-token calls
    key = f"sk-tpm-{estimate_ratio}"
    with FakeServer(tpm=tpm, window_s=window_s) as srv:
        llm = await warm_openai(srv, key)
        run = Calls(llm, BackendLimiter(max_concurrency=8, tpm=tpm, period_s=window_s))
        await run.many([TEN_WORDS] * calls, workers=8, estimate=round(tokens * estimate_ratio))
        await llm.aclose()
        stats = srv.stats(key)
    pace = per_window(run.attempts, window_s, tokens)
    print(f"tpm, estimate x{estimate_ratio}: {pace:.0f}/{tpm} per window = {pace / tpm:.3f}, "
          f"429s: {stats.by_status.get(429, 0)}")
    assert stats.input_tokens + stats.output_tokens == calls * tokens
    assert stats.by_status.get(429, 0) == 0
    assert most_in_window(run.attempts, window_s, tokens) <= tpm
    # An under-estimate is paid by the next call, a little late: a small loss of pace.
    assert pace >= (0.95 if estimate_ratio == 1 else 0.9) * tpm


async def test_an_over_estimate_of_a_quick_call_is_given_back() -> None:
    tpm, window_s, calls, tokens = 200, 1.0, 20, 21  # about 2 windows
    with FakeServer(tpm=tpm, window_s=window_s) as srv:
        llm = await warm_openai(srv, "sk-refund")
        run = Calls(llm, BackendLimiter(max_concurrency=4, tpm=tpm, period_s=window_s))
        await run.many([TEN_WORDS] * calls, workers=4, estimate=2 * tokens)
        await llm.aclose()
        stats = srv.stats("sk-refund")
    pace = per_window(run.attempts, window_s, tokens)
    print(f"tpm, estimate x2: {pace:.0f}/{tpm} per window = {pace / tpm:.3f}, 429s: {stats.by_status.get(429, 0)}")
    assert stats.by_status.get(429, 0) == 0
    assert pace >= 0.7 * tpm  # paying the whole estimate would give at most half


async def test_an_over_estimate_given_back_late_does_not_overflow_a_later_window() -> None:
    # Slow calls estimated ten times too high finish after the window of their admission has
    # passed; handing their over-charge to the quick calls then would burst past the limit.
    tpm, window_s, tokens = 1000, 1.0, 21
    with FakeServer(tpm=tpm, window_s=window_s) as srv:
        llm = await warm_openai(srv, "sk-late-refund")
        run = Calls(llm, BackendLimiter(max_concurrency=16, tpm=tpm, period_s=window_s))
        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(run.one, f"{TEN_WORDS} [[latency:1.2]]", 10 * tokens)
            group.start_soon(lambda: run.many([TEN_WORDS] * 80, workers=8, estimate=tokens))
        await llm.aclose()
        stats = srv.stats("sk-late-refund")
    print(f"late refunds: 429s: {stats.by_status.get(429, 0)}")
    assert stats.succeeded == 84
    assert stats.by_status.get(429, 0) == 0


async def test_a_429_storm_slows_the_backend_down_and_every_call_succeeds() -> None:
    # The server allows a third of what the limiter was told: only the adaptive slow-down helps.
    server_rpm, configured_rpm, window_s, calls = 10, 30, 2.0, 40
    with FakeServer(rpm=server_rpm, window_s=window_s) as srv:
        llm = await warm_openai(srv, "sk-storm")
        limiter = BackendLimiter(max_concurrency=4, rpm=configured_rpm, period_s=window_s)
        run = Calls(llm, limiter, RetryPolicy(max_retries=20))
        factors: list[float] = []

        async def watch() -> None:
            while True:
                factors.append(limiter.rate_factor)
                await anyio.sleep(0.05)

        started = anyio.current_time()
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await run.many([f"storm {i}" for i in range(calls)], workers=4)
            group.cancel_scope.cancel()
        elapsed = anyio.current_time() - started
        await llm.aclose()
        stats = srv.stats("sk-storm")
    limited = stats.by_status.get(429, 0)
    print(f"storm: {limited} 429s for {calls} calls in {elapsed:.1f}s, lowest rate factor {min(factors):.2f}")
    assert stats.succeeded == calls
    assert min(factors) <= server_rpm / configured_rpm
    assert limited <= calls // 10  # the Retry-After pause alone takes about one 429 per server window


async def test_retry_after_pauses_only_the_backend_that_got_it() -> None:
    pause_s = 1.0
    with FakeServer(retry_after_s=pause_s) as srv:
        llm_a, llm_b = openai(srv, "sk-backend-a"), openai(srv, "sk-backend-b")
        run_a = Calls(llm_a, BackendLimiter(name="a", max_concurrency=4, rpm=20, period_s=1.0))
        run_b = Calls(llm_b, BackendLimiter(name="b", max_concurrency=4, rpm=20, period_s=1.0))
        texts_a = [f"a {i}" for i in range(10)]
        texts_a[2] += " [[fault:rate_limit_retry_after:1]]"  # its first attempt gets 429 + retry-after: 1
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: run_a.many(texts_a, workers=4))
            group.start_soon(lambda: run_b.many([f"b {i}" for i in range(40)], workers=4))
        await llm_a.aclose()
        await llm_b.aclose()
        assert srv.stats("sk-backend-a").by_status.get(429) == 1
        assert srv.stats("sk-backend-a").succeeded == 10
    [limited_at] = run_a.rate_limited
    paused = (limited_at + 0.05, limited_at + pause_s - 0.05)
    a_during = [t for t in run_a.attempts if paused[0] < t < paused[1]]
    b_during = [t for t in run_b.attempts if paused[0] < t < paused[1]]
    print(f"pause: a sent {len(a_during)}, b sent {len(b_during)} during a's pause")
    assert a_during == []
    assert len(b_during) >= 0.8 * 20 * (paused[1] - paused[0])  # b kept its pace of 20 a second


async def test_a_backend_never_has_more_calls_in_flight_than_its_cap() -> None:
    with FakeServer() as srv:
        llm = openai(srv, "sk-cap")
        run = Calls(llm, BackendLimiter(max_concurrency=3))
        await run.many(["slow [[latency:0.2]]"] * 12, workers=12)
        await llm.aclose()
    assert run.max_in_flight == 3


async def test_the_job_wide_cap_holds_across_backends() -> None:
    shared = GlobalLimiter(4)
    with FakeServer() as srv:
        llm_a, llm_b = openai(srv, "sk-global-a"), openai(srv, "sk-global-b")
        run_a = Calls(llm_a, BackendLimiter(max_concurrency=3, shared=shared))
        run_b = Calls(llm_b, BackendLimiter(max_concurrency=3, shared=shared))
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, run_a.in_flight + run_b.in_flight)
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            async with anyio.create_task_group() as runs:
                runs.start_soon(lambda: run_a.many(["a [[latency:0.2]]"] * 8, workers=8))
                runs.start_soon(lambda: run_b.many(["b [[latency:0.2]]"] * 8, workers=8))
            group.cancel_scope.cancel()
        await llm_a.aclose()
        await llm_b.aclose()
    assert most == 4
    assert shared.in_flight == 0


async def test_the_retry_policy_gives_up_with_the_attempts_counted() -> None:
    with FakeServer() as srv:
        llm = openai(srv, "sk-give-up")
        run = Calls(llm, BackendLimiter(max_concurrency=2), RetryPolicy(max_retries=2, initial_backoff_s=0.01))
        with pytest.raises(ServerError) as raised:
            await run.one("broken [[fault:server_error]]", 0)
        await llm.aclose()
        assert srv.stats("sk-give-up").requests == 3
    assert raised.value.attempts == 3


def test_estimate_tokens_counts_four_characters_a_token_rounded_up() -> None:
    assert [estimate_tokens(t) for t in ("", "abc", "abcd", "abcde")] == [0, 1, 1, 2]
