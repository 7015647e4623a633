"""The fake server's mutable state: faults to inject, per-key rate limits, per-key counters.

Everything here is guarded by one lock, because tests read it from their own thread while the
server's event loop writes it.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from evalpipe.testing._wire import ErrorKind, RateLimitState, RequestRejected


class Fault(enum.Enum):
    """A failure scenario. Select one per request with `[[fault:NAME]]` or `[[fault:NAME:N]]`
    in the last user message, or for every request with `FakeServer(fault=...)` / `set_fault`."""

    RATE_LIMIT_RETRY_AFTER = "rate_limit_retry_after"  # 429 + `retry-after: <seconds>`
    RATE_LIMIT_RETRY_AFTER_MS = "rate_limit_retry_after_ms"  # 429 + `retry-after-ms`
    RATE_LIMIT_HTTP_DATE = "rate_limit_http_date"  # 429 + `retry-after: <HTTP date>`
    RATE_LIMIT_GEMINI = "rate_limit_gemini"  # 429 + RetryInfo.retryDelay in the body (Gemini only)
    SERVER_ERROR = "server_error"  # 500
    UNAVAILABLE = "unavailable"  # 503
    OVERLOADED = "overloaded"  # 529 where the vendor has it (Anthropic), else 503
    HANG = "hang"  # no response until the client gives up
    HANG_MIDSTREAM = "hang_midstream"  # a stream stalls after its first delta
    RESET_MIDSTREAM = "reset_midstream"  # TCP reset after the first delta (before any byte if not streamed)
    TRUNCATED_STREAM = "truncated_stream"  # the stream ends cleanly half-way, without its terminal event
    MALFORMED_JSON = "malformed_json"  # 200 with a broken JSON body / a broken event
    HTML_ERROR = "html_error"  # 502 with an HTML page
    ERROR_EVENT = "error_event"  # 200 stream, then the vendor's in-stream error event
    INSUFFICIENT_QUOTA = "insufficient_quota"  # the vendor's billing error (never worth retrying)
    CONTEXT_LENGTH = "context_length"  # 400 prompt too long
    NOT_FOUND = "not_found"  # 404 model not found


# Faults answered with one of the vendor's error responses (the others misbehave on the wire).
ERROR_FAULTS = {
    Fault.SERVER_ERROR: ErrorKind.SERVER_ERROR,
    Fault.UNAVAILABLE: ErrorKind.UNAVAILABLE,
    Fault.OVERLOADED: ErrorKind.OVERLOADED,
    Fault.INSUFFICIENT_QUOTA: ErrorKind.QUOTA,
    Fault.CONTEXT_LENGTH: ErrorKind.CONTEXT_LENGTH,
    Fault.NOT_FOUND: ErrorKind.NOT_FOUND,
}


def marked_fault(found: dict[str, str]) -> tuple[Fault | None, int | None]:
    """The fault a `[[fault:NAME]]` / `[[fault:NAME:N]]` marker asks for and its repeat count
    (`found` is the prompt's markers), or `RequestRejected` for a bad marker."""
    if "fault" not in found:
        return None, None
    name, _, count = found["fault"].partition(":")
    try:
        return Fault(name), int(count) if count else None
    except ValueError as exc:
        raise RequestRejected(ErrorKind.BAD_REQUEST, f"bad fake-server marker: {exc}") from None


@dataclass
class Stats:
    """Counters for inference calls (chat, completion, embedding), all keys or one key.

    `succeeded` counts paid calls: answered 200 and delivered to the end. `input_tokens` and
    `output_tokens` add up the succeeded calls only. `by_status` counts the status codes sent.
    """

    requests: int = 0
    succeeded: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    by_status: dict[int, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The counters as a JSON object (status codes become string keys)."""
        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
        }


@dataclass
class _Window:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)


class ServerState:
    """Faults, limits and counters of one fake server."""

    def __init__(self, *, fault: Fault | None, rpm: int | None, tpm: int | None, window_s: float) -> None:
        self._lock = threading.Lock()
        self._default_fault = fault
        self._fault = fault
        self._fault_left: int | None = None
        self._attempts: Counter[str] = Counter()
        self._rpm, self._tpm, self._window_s = rpm, tpm, window_s
        self._windows: dict[str, _Window] = {}
        self._stats: dict[str, Stats] = {}

    # -- faults ---------------------------------------------------------------------------------
    def set_fault(self, fault: Fault | None, times: int | None) -> None:
        """Fail every inference call with `fault` (only the next `times` calls when given)."""
        with self._lock:
            self._fault, self._fault_left = (None, None) if times is not None and times <= 0 else (fault, times)

    def pick_fault(self, identity: str, marked: Fault | None, marked_times: int | None) -> Fault | None:
        """The fault this call suffers: its own marker first (counted per identical request),
        then the server-wide one."""
        with self._lock:
            if marked is not None:
                self._attempts[identity] += 1
                if marked_times is None or self._attempts[identity] <= marked_times:
                    return marked
                return None
            fault = self._fault
            if fault is not None and self._fault_left is not None:
                self._fault_left -= 1
                if self._fault_left <= 0:
                    self._fault, self._fault_left = None, None
            return fault

    # -- rate limits ----------------------------------------------------------------------------
    @property
    def limited(self) -> bool:
        """Whether requests or tokens per window are limited."""
        return self._rpm is not None or self._tpm is not None

    def admit(self, key: str, tokens: int) -> tuple[float | None, RateLimitState]:
        """Count a request of `tokens` tokens against `key`'s window.

        Returns (None, state) when admitted, else (seconds until it would be admitted, state).
        A request larger than the whole token budget is admitted into an empty window.
        """
        with self._lock:
            clock = time.monotonic()
            window = self._windows.setdefault(key, _Window())
            while window.requests and window.requests[0] <= clock - self._window_s:
                window.requests.popleft()
            while window.tokens and window.tokens[0][0] <= clock - self._window_s:
                window.tokens.popleft()
            wait = 0.0
            if self._rpm is not None and len(window.requests) >= self._rpm:
                oldest = window.requests[len(window.requests) - self._rpm]
                wait = max(wait, oldest + self._window_s - clock)
            used = sum(n for _, n in window.tokens)
            if self._tpm is not None and window.tokens and used + tokens > self._tpm:
                freed = 0
                for stamp, n in window.tokens:
                    freed += n
                    if used - freed + tokens <= self._tpm:
                        wait = max(wait, stamp + self._window_s - clock)
                        break
                else:  # too big for any partly used window: wait for an empty one
                    wait = max(wait, window.tokens[-1][0] + self._window_s - clock)
            if wait <= 0:
                window.requests.append(clock)
                window.tokens.append((clock, tokens))
                used += tokens
            state = self._state(window, used, clock)
            return (wait if wait > 0 else None), state

    def _state(self, window: _Window, used: int, clock: float) -> RateLimitState:
        def reset(stamp: float | None) -> float:
            return max(stamp + self._window_s - clock, 0.0) if stamp is not None else 0.0

        return RateLimitState(
            limit_requests=self._rpm,
            remaining_requests=max((self._rpm or 0) - len(window.requests), 0),
            reset_requests_s=reset(window.requests[0] if window.requests else None),
            limit_tokens=self._tpm,
            remaining_tokens=max((self._tpm or 0) - used, 0),
            reset_tokens_s=reset(window.tokens[0][0] if window.tokens else None),
        )

    # -- counters -------------------------------------------------------------------------------
    def count_request(self, key: str) -> None:
        """Count an inference request."""
        with self._lock:
            self._stats.setdefault(key, Stats()).requests += 1

    def count_status(self, key: str, status: int) -> None:
        """Count a status line sent."""
        with self._lock:
            by_status = self._stats.setdefault(key, Stats()).by_status
            by_status[status] = by_status.get(status, 0) + 1

    def count_success(self, key: str, input_tokens: int, output_tokens: int, calls: int = 1) -> None:
        """Count a paid call: answered 200 and delivered completely (negative numbers take one back)."""
        with self._lock:
            stats = self._stats.setdefault(key, Stats())
            stats.succeeded += calls
            stats.input_tokens += input_tokens
            stats.output_tokens += output_tokens

    def stats(self, key: str | None) -> Stats:
        """A copy of the counters of one key, or of all keys added up."""
        with self._lock:
            chosen = [self._stats.get(key, Stats())] if key is not None else list(self._stats.values())
            total = Stats()
            for stats in chosen:
                total.requests += stats.requests
                total.succeeded += stats.succeeded
                total.input_tokens += stats.input_tokens
                total.output_tokens += stats.output_tokens
                for status, n in stats.by_status.items():
                    total.by_status[status] = total.by_status.get(status, 0) + n
            return total

    def reset(self) -> None:
        """Forget counters, fault attempts and rate-limit windows; restore the constructor's fault."""
        with self._lock:
            self._stats.clear()
            self._attempts.clear()
            self._windows.clear()
            self._fault, self._fault_left = self._default_fault, None
