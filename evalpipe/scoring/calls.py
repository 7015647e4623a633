"""The model calls a scorer may make (a judge's verdict, embeddings, a self-explanation).

Scorers never build providers: they get a `ModelCalls` when they are built and name the backend they
want by its id. In a job the runner supplies one that routes every call through that backend's
limits, retries and response cache, so a judge is rate limited and budgeted like any other call;
`DirectCalls` calls providers straight away, for scoring outside a job.

`ANSWERING` names whichever backend gave the answer being scored: the runner sets it for each task
(`answering`), so one scorer object can ask each answering model about its own answer.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from evalpipe.backends.base import Provider
from evalpipe.errors import ConfigError, EvalpipeError, ProviderError
from evalpipe.scoring.base import Score
from evalpipe.scoring.context_value import ContextValue
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams

ANSWERING = "@answering"

_answering: contextvars.ContextVar[str | None] = contextvars.ContextVar("evalpipe_answering_backend", default=None)


def answering(backend_id: str) -> AbstractContextManager[None]:
    """While scoring an answer: `ANSWERING` means `backend_id`."""
    return ContextValue(_answering, backend_id, None)


def resolve(backend_id: str) -> str:
    """`backend_id`, with `ANSWERING` replaced by the backend whose answer is being scored."""
    if backend_id != ANSWERING:
        return backend_id
    current = _answering.get()
    if current is None:
        raise ConfigError(f"{ANSWERING!r} names the answering backend, but no answer is being scored")
    return current


def failed_call(what: str, backend_id: str, error: Exception) -> Score:
    """A missing score for a call that failed, with the error's kind (`RateLimitError`, ...) in the reason."""
    kind = error.kind if isinstance(error, ProviderError) else type(error).__name__
    message = error.message if isinstance(error, EvalpipeError) else str(error)
    return Score(None, error=f"{what} call to {backend_id!r} failed: {kind}: {message}", metadata={"error_kind": kind})


class ModelCalls(Protocol):
    """Chat and embedding calls to backends named by id; errors are the client's (evalpipe.errors)."""

    def has(self, backend_id: str) -> bool:
        """Whether `backend_id` can be called (checked when a job is loaded, before any call)."""
        ...

    async def chat(
        self, backend_id: str, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> ChatResponse: ...

    async def embed(self, backend_id: str, texts: Sequence[str]) -> list[list[float]]: ...


class DirectCalls:
    """Calls to providers given by id, with no limits beyond the providers' own retries."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self.providers = dict(providers)

    def has(self, backend_id: str) -> bool:
        return backend_id == ANSWERING or backend_id in self.providers

    def _provider(self, backend_id: str) -> Provider:
        name = resolve(backend_id)
        try:
            return self.providers[name]
        except KeyError:
            raise ConfigError(f"no backend {name!r} to call; known: {', '.join(sorted(self.providers))}") from None

    async def chat(
        self, backend_id: str, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> ChatResponse:
        return await self._provider(backend_id).achat(list(messages), params)

    async def embed(self, backend_id: str, texts: Sequence[str]) -> list[list[float]]:
        return await self._provider(backend_id).aembed(list(texts))
