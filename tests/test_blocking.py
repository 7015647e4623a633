"""Blocking twins: usable from plain code, from inside a running event loop, and next to async use."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from evalpipe import ChatMessage, LLMBuilder, Provider
from evalpipe.testing import FakeServer


def openai(srv: FakeServer) -> Provider:
    return LLMBuilder().backend("openai").api_key("sk-blocking-test").base_url(srv.url_for("openai")).build()


def test_blocking_call_inside_a_running_event_loop(fake_server: FakeServer) -> None:
    llm = openai(fake_server)

    async def notebook_cell() -> str:
        # A notebook runs cells inside a loop; asyncio.run() would fail here, the twin must not.
        return llm.chat([ChatMessage.user("inside a loop")]).text

    assert asyncio.run(notebook_cell()) == "Echo: inside a loop"


def test_same_provider_from_sync_and_async_code(fake_server: FakeServer) -> None:
    llm = openai(fake_server)
    assert llm.chat([ChatMessage.user("sync")]).text == "Echo: sync"

    async def many() -> list[str]:
        results: list[str] = []

        async def one(i: int) -> None:
            results.append((await llm.achat([ChatMessage.user(f"n{i}")])).text)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        return results

    assert sorted(anyio.run(many)) == sorted(f"Echo: n{i}" for i in range(50))
    assert llm.chat([ChatMessage.user("sync again")]).text == "Echo: sync again"


def test_blocking_stream_can_stop_early_and_the_provider_still_works(fake_server: FakeServer) -> None:
    llm = openai(fake_server)
    stream = llm.stream([ChatMessage.user("one two three four five six")])
    assert next(stream).text
    stream.close()
    assert llm.complete("after").text == "Echo: after"


@pytest.mark.anyio
async def test_async_stream_exposes_the_final_response(fake_server: FakeServer) -> None:
    llm = openai(fake_server)
    stream = llm.astream([ChatMessage.user("a b c")])
    texts = [chunk.text async for chunk in stream]
    assert stream.response is not None
    assert stream.response.text == "".join(texts) == "Echo: a b c"
    await llm.aclose()
