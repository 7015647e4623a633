"""The HTTP transport under every provider: one aiohttp connection pool per event loop.

httpx's async client spends about 2 ms of CPU on a call that aiohttp makes in 0.2 ms (see
`scripts/bench_client.py`), and at a thousand calls a second that is the whole machine. So requests
go out through aiohttp; the settings that httpx gave them are kept: no limit on connections,
keep-alive for 5 s, connect and per-read timeouts of the provider's `timeout_s`, no redirects,
proxies and certificates from the environment, JSON encoded as httpx encodes it. Failures below HTTP
are aiohttp's exceptions and `classify.classify_transport` turns them into the error tree.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import ssl
import urllib.request
import weakref
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import httpx

KEEPALIVE_S = 5.0  # httpx's keep-alive expiry, kept


class HttpPool:
    """One event loop's connections and what every request on them shares."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.proxy, self.proxy_headers = environment_proxy(base_url)
        connector = aiohttp.TCPConnector(
            limit=0,  # as httpx's max_connections=None: the runner's limiters bound concurrency
            keepalive_timeout=KEEPALIVE_S,
            ssl=certificates() if base_url.startswith("https:") else True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            # httpx's Timeout(t): connect (pool wait included) and every read within t; no total.
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s),
        )
        # The finalizer holds the session, so aiohttp's objects outlive a pool collected in a reference
        # cycle and are closed before their own finalizers could complain; `__del__` covers the
        # interpreter's exit, when finalizers no longer run.
        self.loop = asyncio.get_running_loop()
        weakref.finalize(self, _let_go, self.session, self.loop).atexit = False

    def request(
        self,
        method: str,
        url: str,
        body: Any,
        query: Mapping[str, str] | None,
        headers: dict[str, str],
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """Send a request (`body` as JSON); the response's context releases the connection (or drops it
        if the body was not read whole). A content type among `headers` wins, as with httpx."""
        data: bytes | None = None
        if body is not None:
            data = json_bytes(body)
            if not any(name.lower() == "content-type" for name in headers):
                headers["content-type"] = "application/json"
        return self.session.request(
            method, url, data=data, params=query, headers=headers, proxy=self.proxy,
            proxy_headers=self.proxy_headers, allow_redirects=False,
        )

    @property
    def closed(self) -> bool:
        return self.session.closed

    async def aclose(self) -> None:
        """Close every connection of the pool."""
        await self.session.close()

    def __del__(self) -> None:
        _let_go(self.session, self.loop)


def _let_go(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop) -> None:
    """Close what is still open of a pool let go without `aclose` (its event loop ended first, or its
    provider was dropped), and say nothing, as httpx did: aiohttp would log "Unclosed client session"
    and "Unclosed connector" for every such pool. `_close` is the synchronous part of `close`; it runs
    on the pool's loop, which may be running in another thread (the blocking API's)."""
    connector = session.connector
    session.detach()
    if connector is None or connector.closed:
        return
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if loop.is_closed() or loop is current:
        connector._close()
    else:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing is left open
            loop.call_soon_threadsafe(connector._close)


def json_bytes(body: Any) -> bytes:
    """`body` as httpx's `json=` sends it: compact, UTF-8, and no NaN (which is not JSON)."""
    return _request_json(body).encode()


# One encoder for every request body: `json.dumps` with options builds a new one per call.
_request_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def join_url(base_url: str, path: str) -> str:
    """`path` under `base_url`, as httpx's `base_url` joins them: always below the base's path."""
    return (base_url if base_url.endswith("/") else base_url + "/") + path.lstrip("/")


def environment_proxy(url: str) -> tuple[str | None, dict[str, str] | None]:
    """The proxy the environment names for `url` (`HTTPS_PROXY`, `NO_PROXY`, ...), as httpx honours
    it, and the credentials in the proxy's URL (sent as its Proxy-Authorization, as httpx sends them).

    Looked up once per pool: aiohttp's own `trust_env` reads the environment and ~/.netrc on every call."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None, None
    found = urlsplit(proxy if "://" in proxy else "http://" + proxy)  # httpx's reading of `host:port`
    if found.username is None:
        return found.geturl(), None
    credentials = f"{unquote(found.username)}:{unquote(found.password or '')}".encode()
    auth = {"proxy-authorization": "Basic " + base64.b64encode(credentials).decode()}
    return found._replace(netloc=found.netloc.rpartition("@")[2]).geturl(), auth


@functools.cache
def certificates() -> ssl.SSLContext:
    """The certificates httpx trusts (certifi's, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), loaded once."""
    return httpx.create_ssl_context()

