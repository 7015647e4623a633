"""The model calls scorers make during a job (judges, embeddings, self-explanations), done like any other call.

`JobCalls` is the runner's `ModelCalls`: a call to backend `id` waits for that backend's limits,
is retried by its policy, is answered from the run's response cache when it was already paid for
(a resumed run does not pay its judge twice), and its tokens and cost are charged to the task being
scored, so they reach the row, the budget and the manifest.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.task import stable_hash
from evalpipe.pipeline.running.backend import Backend, ResponseCache
from evalpipe.pipeline.running.limits import call_with_limits, estimate_tokens, prompt_tokens
from evalpipe.scoring.calls import ANSWERING, resolve
from evalpipe.scoring.context_value import ContextValue
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, ToolCall, Usage

T = TypeVar("T")


@dataclass(slots=True)
class ScoringSpend:
    """What the scorers of one task spent on model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


_task: contextvars.ContextVar[tuple[str, ScoringSpend] | None] = contextvars.ContextVar(
    "evalpipe_scored_task", default=None
)


def charging(task_id: str, spend: ScoringSpend | None = None) -> AbstractContextManager[ScoringSpend]:
    """While a task's scorers (or chain steps) run: their calls are cached under `task_id` and charged to
    `spend` (a new one if not given), which is yielded."""
    spend = spend if spend is not None else ScoringSpend()
    return ContextValue(_task, (task_id, spend), spend)


def scored_task_id() -> str | None:
    """The id of the task whose answer is being scored (or whose chain is running), if any."""
    scored = _task.get()
    return None if scored is None else scored[0]


class DeferredCall(BaseException):  # noqa: N818 - not an error: a call that waits for its batch
    """A scorer's chat call to a judge in batch mode whose answer is not collected yet: the row waits for it.

    A BaseException, so that no scorer's or task's `except Exception` turns it into a missing score."""

    def __init__(self, backend_id: str, key: str, messages: Sequence[ChatMessage], params: GenerationParams | None):
        super().__init__(backend_id, key)
        self.backend_id, self.key, self.messages, self.params = backend_id, key, list(messages), params


class JobCalls:
    """`ModelCalls` through the job's backends (evaluated ones and judges)."""

    def __init__(self, backends: Mapping[str, Backend], cache: ResponseCache | None = None) -> None:
        self.backends = backends
        self.cache = cache  # None: no caching
        # For judges in batch mode: (key, what the cache holds) -> the collected answer, None while it is not
        # collected (the call is deferred), or the request's error raised. Unset, they are called live.
        self.batch_answers: Callable[[str, dict[str, Any] | None], dict[str, Any] | None] | None = None

    def has(self, backend_id: str) -> bool:
        return backend_id == ANSWERING or backend_id in self.backends

    async def chat(
        self, backend_id: str, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> ChatResponse:
        backend = self._backend(backend_id)
        request = {"chat": [message_key(m) for m in messages], "params": _sent(backend, params)}
        provider = backend.provider
        estimate = prompt_tokens(messages, (params.tools if params is not None else None) or (), type(provider),
                                 provider.model) + _expected_output(backend, params)
        payload = await self._call(backend, request, lambda: backend.provider.achat(messages, params), estimate,
                                   _chat_payload, (backend_id, messages, params))
        return _chat_response(payload)

    async def complete(self, backend_id: str, prompt: str, params: GenerationParams | None = None) -> ChatResponse:
        """A plain-text completion (prompt chains' completion steps)."""
        backend = self._backend(backend_id)
        request = {"complete": prompt, "params": _sent(backend, params)}
        estimate = estimate_tokens(prompt) + _expected_output(backend, params)
        payload = await self._call(backend, request, lambda: backend.provider.acomplete(prompt, params), estimate,
                                   _chat_payload)
        return _chat_response(payload)

    async def embed(self, backend_id: str, texts: Sequence[str]) -> list[list[float]]:
        backend = self._backend(backend_id)
        estimate = sum(estimate_tokens(text) for text in texts)

        def payload_of(vectors: list[list[float]]) -> dict[str, Any]:
            # Embedding answers carry no usage here: the estimate is what is charged.
            return {"vectors": vectors, "input_tokens": estimate, "output_tokens": 0}

        payload = await self._call(backend, {"embed": list(texts)}, lambda: backend.provider.aembed(texts),
                                   estimate, payload_of)
        vectors: list[list[float]] = payload["vectors"]
        return vectors

    def _backend(self, backend_id: str) -> Backend:
        name = resolve(backend_id)
        try:
            return self.backends[name]
        except KeyError:
            raise ConfigError(f"scorers call backend {name!r}, which the job does not have") from None

    async def _call(self, backend: Backend, request: dict[str, Any], attempt: Callable[[], Awaitable[T]],
                    estimate: int, payload_of: Callable[[T], dict[str, Any]],
                    batchable: tuple[str, Sequence[ChatMessage], GenerationParams | None] | None = None,
                    ) -> dict[str, Any]:
        scored = _task.get()
        config = backend.provider.config
        key = stable_hash({"task": scored[0] if scored else None, "backend": config.backend,
                           "model": config.model, "base_url": config.base_url, **request}, 32)
        payload = await self.cache.get(key) if self.cache is not None else None
        if batchable is not None and backend.spec.mode == "batch" and self.batch_answers is not None:
            payload = self.batch_answers(key, payload)
            if payload is None:
                raise DeferredCall(batchable[0], key, batchable[1], batchable[2])
        if payload is None:
            def used(result: T) -> int:
                counted = payload_of(result)
                return int(counted["input_tokens"] + counted["output_tokens"])

            result, _ = await call_with_limits(backend.limiter, backend.policy, attempt, estimate, used)
            payload = payload_of(result)
            if self.cache is not None:
                await self.cache.put(key, payload)
        if scored is not None:
            # Charged from the cache too: a cached answer was paid by a session whose row was never
            # committed, so this row is the only place its cost shows.
            spend = scored[1]
            spend.input_tokens += payload["input_tokens"]
            spend.output_tokens += payload["output_tokens"]
            spend.cost_usd += backend.cost(Usage(payload["input_tokens"], payload["output_tokens"]))
        return payload


def message_key(message: ChatMessage) -> tuple[Any, ...]:
    """What of a message keys the cache: role and text, plus its images and tool parts when it has any."""
    if not (message.images or message.tool_calls or message.tool_call_id):
        return (message.role, message.content)
    return (message.role, message.content, repr(message.images), repr(message.tool_calls), message.tool_call_id)


def tool_calls_payload(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """A response's tool calls as cacheable JSON values."""
    return [{"id": c.id, "name": c.name, "arguments": c.arguments, "raw_arguments": c.raw_arguments,
             "signature": c.signature} for c in calls]


def tool_calls_from_payload(payload: Sequence[Mapping[str, Any]] | None) -> list[ToolCall]:
    """The tool calls `tool_calls_payload` stored (none for payloads cached before calls were kept)."""
    return [ToolCall(c["id"], c["name"], c.get("arguments"), c.get("raw_arguments"), c.get("signature"))
            for c in payload or ()]


def _sent(backend: Backend, params: GenerationParams | None) -> dict[str, Any]:
    """The parameters a call will send, for its cache key."""
    merged = backend.provider.config.params.merged(params)
    return {f.name: getattr(merged, f.name) for f in fields(merged)}


def _expected_output(backend: Backend, params: GenerationParams | None) -> int:
    """A pessimistic output estimate for the token limiter, corrected by the real usage after the call."""
    return (params.max_tokens if params is not None else None) or backend.provider.config.params.max_tokens or 256


def _chat_response(payload: Mapping[str, Any]) -> ChatResponse:
    return ChatResponse(text=payload["text"], finish_reason=payload["finish_reason"], model=payload["model"],
                        usage=Usage(payload["input_tokens"], payload["output_tokens"]),
                        latency_s=payload.get("latency_s", 0.0),
                        tool_calls=tool_calls_from_payload(payload.get("tool_calls")))


def _chat_payload(response: ChatResponse) -> dict[str, Any]:
    return {"text": response.text, "finish_reason": response.finish_reason, "model": response.model,
            "input_tokens": response.usage.input_tokens, "output_tokens": response.usage.output_tokens,
            "latency_s": response.latency_s, "tool_calls": tool_calls_payload(response.tool_calls)}
