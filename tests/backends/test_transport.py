"""The transport under every provider: aiohttp, with the limits, proxies and error classes httpx gave."""

from __future__ import annotations

import asyncio
import base64
import gc
import subprocess
import sys
import textwrap

import aiohttp
import anyio
import pytest

from evalpipe import ChatMessage, LLMBuilder, Provider, errors
from evalpipe.backends.classify import classify_transport
from evalpipe.backends.transport import environment_proxy, join_url
from evalpipe.blocking import run_blocking
from evalpipe.testing import FakeServer


def openai(base_url: str, key: str, **options: float) -> Provider:
    builder = LLMBuilder().backend("openai").api_key(key).base_url(base_url).model("gpt-4o-mini").max_retries(0)
    if "timeout" in options:
        builder = builder.timeout(options["timeout"])
    return builder.build()


def test_aiohttp_failures_are_classified_like_httpx_ones() -> None:
    """A read timeout is a timeout (retried as one), a body cut short or a refused connection is a
    broken connection: the same classes httpx's exceptions got."""
    assert isinstance(classify_transport("openai", aiohttp.SocketTimeoutError("read")), errors.TimeoutError)
    assert isinstance(classify_transport("openai", aiohttp.ConnectionTimeoutError("pool")), errors.TimeoutError)
    cut = aiohttp.ClientPayloadError("Response payload is not completed")
    assert isinstance(classify_transport("openai", cut), errors.ConnectionError)
    assert isinstance(classify_transport("openai", aiohttp.ServerDisconnectedError()), errors.ConnectionError)
    assert isinstance(classify_transport("openai", ConnectionResetError(104, "reset")), errors.ConnectionError)


def test_paths_join_below_the_base_url_as_httpx_joins_them() -> None:
    assert join_url("http://h/openai/v1", "chat/completions") == "http://h/openai/v1/chat/completions"
    assert join_url("http://h/openai/v1/", "/chat/completions") == "http://h/openai/v1/chat/completions"


def test_a_refused_connection_is_a_connection_error() -> None:
    with FakeServer() as server:
        url = server.url_for("openai")
    llm = openai(url, "sk-refused")  # the server is gone: nothing listens on its port
    with pytest.raises(errors.ConnectionError):
        llm.chat([ChatMessage.user("hi")])
    llm.close()


@pytest.mark.anyio
async def test_connections_are_not_capped() -> None:
    """As with httpx's `max_connections=None`: 250 slow calls are all at the server at once (aiohttp's
    own default would hold all but 100 back until the first ones are answered)."""
    async with FakeServer(latency_s=3.0) as server:
        llm = openai(server.url_for("openai"), "sk-uncapped", timeout=30)
        arrived = 0
        async with anyio.create_task_group() as group:
            for index in range(250):
                group.start_soon(llm.achat, [ChatMessage.user(f"call {index}")])
            for _ in range(50):  # 2.5 s: before the first answer could free a connection
                if (arrived := server.stats("sk-uncapped").requests) == 250:
                    break
                await anyio.sleep(0.05)
        await llm.aclose()
        assert arrived == 250, f"only {arrived} of 250 calls reached the server at once"
        assert server.stats("sk-uncapped").succeeded == 250


@pytest.mark.anyio
async def test_connections_are_kept_alive_between_calls() -> None:
    async with FakeServer() as server:
        llm = openai(server.url_for("openai"), "sk-keepalive")
        for index in range(5):
            await llm.achat([ChatMessage.user(f"call {index}")])
        assert len(server._connections) == 1  # one connection served all five calls
        await llm.aclose()


def test_the_proxy_named_by_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """`HTTP_PROXY` is honoured as httpx honoured it: the call reaches the (fake) proxy, which the
    fake server plays, although the base URL's host does not exist."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FakeServer() as server:
        monkeypatch.setenv("HTTP_PROXY", server.url)
        llm = openai("http://llm.invalid/openai/v1", "sk-proxied")
        assert llm.chat([ChatMessage.user("hi")]).text == "Echo: hi"
        llm.close()
        assert server.stats("sk-proxied").succeeded == 1


def test_a_provider_never_closed_leaves_no_noise() -> None:
    """A script that never closes its provider (and ends its event loop first) prints nothing more
    than its own output: no "Unclosed client session" from the transport."""
    script = textwrap.dedent("""
        import asyncio
        from evalpipe import ChatMessage, LLMBuilder
        from evalpipe.testing import FakeServer
        with FakeServer() as server:
            llm = LLMBuilder().backend("openai").api_key("sk-x").base_url(server.url_for("openai")).build()
            print(llm.chat([ChatMessage.user("blocking")]).text)
            async def main() -> None:
                print((await llm.achat([ChatMessage.user("async")])).text)
            asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Echo:", "blocking", "Echo:", "async"]
    assert done.stderr == ""


def test_one_pool_per_event_loop_and_none_kept_for_ended_loops() -> None:
    with FakeServer() as server:
        llm = openai(server.url_for("openai"), "sk-loops")

        async def call() -> None:
            await llm.achat([ChatMessage.user("hi")])

        for _ in range(3):
            asyncio.run(call())
        assert len(llm._clients) == 1  # the pools of the two loops that ended were let go


def test_proxy_credentials_and_bare_host_port_are_read_as_httpx_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://us%40er:p%3Ass@proxy.local:3128")
    monkeypatch.setenv("HTTP_PROXY", "proxy.local:8080")
    proxy, headers = environment_proxy("https://api.example.com/v1")
    assert proxy == "http://proxy.local:3128"
    assert headers == {"proxy-authorization": "Basic " + base64.b64encode(b"us@er:p:ss").decode()}
    assert environment_proxy("http://api.example.com/v1") == ("http://proxy.local:8080", None)
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert environment_proxy("https://api.example.com/v1") == (None, None)


def test_a_pool_let_go_in_a_reference_cycle_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A provider dropped inside a reference cycle (as a traceback makes one) without `aclose`: its pool
    is collected with aiohttp's own objects, whose complaints must not reach the log."""
    with FakeServer() as server:
        for index in range(5):
            llm = openai(server.url_for("openai"), f"sk-cycle-{index}")

            async def call(provider: Provider = llm) -> None:
                await provider.achat([ChatMessage.user("hi")])

            asyncio.run(call())
            cycle: list[object] = [llm]
            cycle.append(cycle)
            del llm, cycle, call
            gc.collect()
    assert "Unclosed" not in caplog.text


def test_a_blocking_providers_pool_dropped_elsewhere_is_closed_on_its_own_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The blocking API's pools live on a loop in another thread: one let go from this thread is
    closed there, not from here, and quietly."""
    with FakeServer() as server:
        llm = openai(server.url_for("openai"), "sk-dropped")
        llm.chat([ChatMessage.user("hi")])
        connector = next(iter(llm._clients.values())).session.connector
        assert connector is not None and not connector.closed
        del llm
        gc.collect()
        run_blocking(lambda: anyio.sleep(0.05))  # the close was queued on the pool's loop
        assert connector.closed
    assert "Unclosed" not in caplog.text


@pytest.mark.anyio
async def test_a_callers_cancel_scope_and_the_calls_own_timeout_each_keep_their_meaning() -> None:
    async with FakeServer() as server:
        llm = openai(server.url_for("openai"), "sk-scopes", timeout=5)
        with anyio.move_on_after(0.2) as outer:  # the caller gives up first: cancelled, not a timeout
            await llm.achat([ChatMessage.user("wait [[fault:hang]]")])
        assert outer.cancelled_caught
        quick = openai(server.url_for("openai"), "sk-scopes", timeout=0.2)
        with anyio.fail_after(5):  # the call's own timeout fires first, inside the caller's scope
            with pytest.raises(errors.TimeoutError):
                await quick.achat([ChatMessage.user("wait [[fault:hang]]")])
        await llm.aclose()
        await quick.aclose()
