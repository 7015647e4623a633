"""The fake provider server: HTTP/1.1 over asyncio streams, routing, faults, limits, counters."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import math
import threading
import time
from types import TracebackType
from typing import Any, Literal

from evalpipe.testing._answers import answer_for, markers
from evalpipe.testing._anthropic import AnthropicProtocol
from evalpipe.testing._batch_anthropic import AnthropicBatches
from evalpipe.testing._batch_gemini import GeminiBatches
from evalpipe.testing._batch_lines import BatchApi, BatchCall, Handler, LineAnswerer
from evalpipe.testing._batch_openai import OpenAIBatches
from evalpipe.testing._batch_store import BatchOptions, BatchStats, BatchStore
from evalpipe.testing._gemini import GeminiProtocol
from evalpipe.testing._http import Exchange, serve_connection
from evalpipe.testing._ollama import OllamaProtocol
from evalpipe.testing._openai import OpenAIProtocol
from evalpipe.testing._openai_compatible import (
    AzureOpenAIProtocol,
    DeepSeekProtocol,
    GroqProtocol,
    MistralProtocol,
    OpenRouterProtocol,
    XAIProtocol,
)
from evalpipe.testing._phind import PhindProtocol
from evalpipe.testing._state import ERROR_FAULTS, Fault, ServerState, Stats, marked_fault
from evalpipe.testing._wire import (
    Answer,
    Call,
    ErrorKind,
    HttpRequest,
    Operation,
    Protocol,
    Reply,
    RequestRejected,
    json_reply,
)

PROTOCOLS: tuple[Protocol, ...] = (
    OpenAIProtocol(),
    DeepSeekProtocol(),
    XAIProtocol(),
    GroqProtocol(),
    MistralProtocol(),
    OpenRouterProtocol(),
    AzureOpenAIProtocol(),
    AnthropicProtocol(),
    OllamaProtocol(),
    GeminiProtocol(),
    PhindProtocol(),
)
VENDORS: tuple[str, ...] = tuple(protocol.vendor for protocol in PROTOCOLS)
BATCH_APIS: tuple[BatchApi, ...] = (
    *(OpenAIBatches(p) for p in PROTOCOLS if isinstance(p, OpenAIProtocol) and p.batch_roots),
    *(AnthropicBatches(p) for p in PROTOCOLS if isinstance(p, AnthropicProtocol)),
    *(GeminiBatches(p) for p in PROTOCOLS if isinstance(p, GeminiProtocol)),
)

_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
# How long a reset waits after the first delta, so the client has read it before the RST drops buffers.
_RESET_GRACE_S = 0.05


class FakeServer:
    """A loopback HTTP server that speaks every supported vendor's protocol, for offline tests.

    Use it from sync code (`with FakeServer() as srv:`, it runs in a background thread) or from
    async code (`async with FakeServer() as srv:`, it runs on the current asyncio loop).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        stream_delay_s: float = 0.0,
        fault: Fault | str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        window_s: float = 60.0,
        retry_after_s: float = 1.0,
        batch_delay_s: float = 0.0,
    ) -> None:
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the fake server binds loopback addresses only, not {host!r}")
        self.host, self.port = host, port
        self.latency_s, self.stream_delay_s, self.retry_after_s = latency_s, stream_delay_s, retry_after_s
        self._state = ServerState(fault=_fault(fault), rpm=rpm, tpm=tpm, window_s=window_s)
        self._batches = BatchStore(BatchOptions(delay_s=batch_delay_s))
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- public surface -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The server's root URL, e.g. `http://127.0.0.1:54321`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url_for(self, vendor: str) -> str:
        """The base URL a client of `vendor` should use (see the package docstring)."""
        for protocol in PROTOCOLS:
            if protocol.vendor == vendor:
                return self.url + protocol.prefix + protocol.base_path
        raise KeyError(f"unknown vendor {vendor!r}; known: {', '.join(VENDORS)}")

    def stats(self, api_key: str | None = None) -> Stats:
        """Counters of inference calls for one API key ("" for keyless vendors), or for all keys."""
        return self._state.stats(api_key)

    def set_fault(self, fault: Fault | str | None, times: int | None = None) -> None:
        """Fail every inference call with `fault` (only the next `times` calls when given); None clears."""
        self._state.set_fault(_fault(fault), times)

    def reset(self) -> None:
        """Forget counters, fault attempts and rate-limit windows; restore the constructor's fault and
        batch options (stored files and batch jobs stay)."""
        self._state.reset()
        self._batches.reset()

    # -- batch APIs -----------------------------------------------------------------------------
    def batch_stats(self, api_key: str | None = None) -> BatchStats:
        """Counters of the batch APIs (files, jobs, downloads, answers per request id) for one API
        key, or for all keys. Batch work is not counted in `stats()`, which counts live calls."""
        return self._batches.stats(api_key)

    def set_batch_options(
        self,
        *,
        delay_s: float | None = None,
        fail_fraction: float | None = None,
        expire_after: int | None | Literal["keep"] = "keep",
    ) -> BatchOptions:
        """Change how batch jobs created from now on are processed (see `BatchOptions`); arguments
        left out keep their value. Returns the options in force."""
        changes: dict[str, Any] = {}
        if delay_s is not None:
            changes["delay_s"] = delay_s
        if fail_fraction is not None:
            changes["fail_fraction"] = fail_fraction
        if expire_after != "keep":
            changes["expire_after"] = expire_after
        return self._batches.set_options(**changes)

    def expire_batches(self, api_key: str | None = None) -> int:
        """End every unfinished batch job (of one key, or all) now as expired, the way a job outliving
        its completion window ends; returns how many jobs expired."""
        jobs = self._batches.unfinished(api_key)
        clock = time.monotonic()
        with self._batches.lock:
            for job in jobs:
                job.expire(clock, LineAnswerer(self._batches, self._state, _protocol_of(job.vendor)))
        return len(jobs)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start listening on the running event loop."""
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        """Serve until cancelled (the server must be started)."""
        assert self._server is not None, "call start() first"
        await self._server.serve_forever()

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> FakeServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="evalpipe-fake-server", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop, self._thread = None, None

    # -- HTTP plumbing --------------------------------------------------------------------------
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await serve_connection(reader, writer, self._handle)
        finally:
            self._connections.discard(task)

    async def _handle(self, request: HttpRequest, exchange: Exchange) -> None:
        if request.path.startswith("/_fake/"):
            await exchange.reply(self._control(request))
            return
        batch = _batch_route(request)
        if batch is not None:
            await exchange.reply(self._batch(request, *batch))
            return
        found = _route(request)
        if found is None:
            await exchange.reply(
                json_reply(404, {"error": {"message": f"No route for {request.method} {request.path}"}})
            )
            return
        protocol, operation, params = found
        if operation is Operation.LIST_MODELS:
            await exchange.reply(protocol.list_models())
            return
        key = protocol.api_key(request)
        account = key or ""
        self._state.count_request(account)
        denied = _auth_failure(key) if protocol.requires_key else None
        if denied is not None:
            message = protocol.denied_message(denied, account)  # some vendors quote the key back, masked
            await self._send(exchange, account, protocol.error(denied, message, "", None))
            return
        try:
            call = protocol.parse(operation, params, request)
            fault, times, latency_s, delay_s = self._options(call)
        except RequestRejected as rejected:
            reply = protocol.error(rejected.kind, rejected.message, "", None)
            reply.status = rejected.status or reply.status
            await self._send(exchange, account, reply)
            return
        answer = answer_for(call)
        if self._state.limited:
            wait, limits = self._state.admit(account, answer.input_tokens + answer.output_tokens)
            exchange.headers += protocol.ratelimit_headers(limits)
            if wait is not None:
                reply = protocol.error(ErrorKind.RATE_LIMIT, None, call.model, wait)
                hints = {"retry-after": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}
                reply.headers += [(name, hints[name]) for name in protocol.retry_headers]
                await self._send(exchange, account, reply)
                return
        chosen = self._state.pick_fault(account + "\0" + call.identity, fault, times)
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        if chosen is not None:
            exchange.headers.append(("x-fake-fault", chosen.value))
            await self._inject(chosen, protocol, call, answer, exchange, account, delay_s)
        elif call.stream:
            await self._stream(protocol, call, answer, exchange, account, delay_s)
        else:
            await self._send(exchange, account, protocol.reply(call, answer), answer)

    def _batch(self, request: HttpRequest, api: BatchApi, handler: Handler, params: dict[str, str]) -> Reply:
        """A request to a batch API: auth as the vendor checks it, then the endpoint's handler."""
        protocol = api.protocol
        key = protocol.api_key(request)
        denied = None if api.keyless(request) else _auth_failure(key)
        if denied is not None:
            return protocol.error(denied, protocol.denied_message(denied, key or ""), "", None)
        path = request.path[len(protocol.prefix):]
        return handler(BatchCall(request, path, params, key or "", self._batches,
                                 LineAnswerer(self._batches, self._state, protocol)))

    def _options(self, call: Call) -> tuple[Fault | None, int | None, float, float]:
        """The fault, its repeat count, the latency and the stream delay asked for by markers."""
        found = markers(call.prompt)
        fault, times = marked_fault(found)
        try:
            latency_s = float(found.get("latency", self.latency_s))
            delay_s = float(found.get("stream_delay", self.stream_delay_s))
        except ValueError as exc:
            raise RequestRejected(ErrorKind.BAD_REQUEST, f"bad fake-server marker: {exc}") from None
        return fault, times, latency_s, delay_s

    async def _send(self, exchange: Exchange, account: str, reply: Reply, answer: Answer | None = None) -> None:
        self._state.count_status(account, reply.status)
        if answer is None or reply.status != 200:
            await exchange.reply(reply)
            return
        # Count a paid call before its last byte leaves, so a client that has the answer sees it counted.
        self._state.count_success(account, answer.input_tokens, answer.output_tokens)
        try:
            await exchange.reply(reply)
        except ConnectionError:
            self._state.count_success(account, -answer.input_tokens, -answer.output_tokens, calls=-1)
            raise

    async def _stream(
        self,
        protocol: Protocol,
        call: Call,
        answer: Answer,
        exchange: Exchange,
        account: str,
        delay_s: float,
        fault: Fault | None = None,
    ) -> None:
        plan = protocol.stream(call, answer)
        self._state.count_status(account, 200)
        exchange.start(200, plan.content_type, [], None)
        first = plan.head + plan.deltas[:1]
        if fault is None:
            events = plan.head + plan.deltas + plan.tail
        elif fault is Fault.TRUNCATED_STREAM:
            events = plan.head + plan.deltas[: max(len(plan.deltas) // 2, 1)]
        elif fault is Fault.ERROR_EVENT:
            events = first + [plan.error_event]
        elif fault is Fault.MALFORMED_JSON:
            events = first + [plan.malformed_event] + plan.deltas[1:] + plan.tail
        else:  # the reset and hang faults send the first delta, then fail below
            events = first
        # A paid call is counted before its last event leaves, so a client holding the whole answer sees
        # it counted; it is taken back if the client is gone before that event could be written.
        paid_at = len(events) - 1 if fault is None else -1
        # Without a delay the events leave together, as from a server that outpaces its client.
        batches = [[event] for event in events] if delay_s > 0 else [events] if events else []
        sent, paying = 0, False
        try:
            for batch in batches:
                if sent:
                    await asyncio.sleep(delay_s)
                if sent <= paid_at < sent + len(batch):
                    self._state.count_success(account, answer.input_tokens, answer.output_tokens)
                    paying = True
                await exchange.data(*batch)
                sent, paying = sent + len(batch), False
        except ConnectionError:
            if paying:
                self._state.count_success(account, -answer.input_tokens, -answer.output_tokens, calls=-1)
            raise
        if fault is Fault.RESET_MIDSTREAM:
            await asyncio.sleep(_RESET_GRACE_S)
            exchange.reset()
        elif fault is Fault.HANG_MIDSTREAM:
            await exchange.wait_for_disconnect()
        elif fault is Fault.TRUNCATED_STREAM and not plan.tail:
            # Without a terminal event (Phind) a clean end would look complete: close the
            # connection instead, leaving the chunked body unfinished.
            exchange.closed = True
        else:
            await exchange.end()

    async def _inject(
        self,
        fault: Fault,
        protocol: Protocol,
        call: Call,
        answer: Answer,
        exchange: Exchange,
        account: str,
        delay_s: float,
    ) -> None:
        """Answer a call with a fault instead of its answer."""
        if fault in ERROR_FAULTS or (fault is Fault.ERROR_EVENT and not call.stream):
            await self._send(
                exchange,
                account,
                protocol.error(ERROR_FAULTS.get(fault, ErrorKind.SERVER_ERROR), None, call.model, None),
            )
        elif fault.value.startswith("rate_limit"):
            await self._send(exchange, account, self._rate_limited(fault, protocol, call))
        elif fault is Fault.HTML_ERROR:
            await self._send(exchange, account, Reply(502, _HTML_502, "text/html; charset=utf-8"))
        elif fault is Fault.HANG or (fault is Fault.HANG_MIDSTREAM and not call.stream):
            await exchange.wait_for_disconnect()
        elif call.stream:
            await self._stream(protocol, call, answer, exchange, account, delay_s, fault)
        elif fault is Fault.RESET_MIDSTREAM:
            exchange.reset()
        elif fault is Fault.MALFORMED_JSON:
            body = protocol.reply(call, answer).body
            await self._send(exchange, account, Reply(200, body[: len(body) // 2]))
        else:  # a truncated body: the declared length is never reached
            body = protocol.reply(call, answer).body
            self._state.count_status(account, 200)
            exchange.start(200, "application/json", [], len(body))
            await exchange.data(body[: len(body) // 2])
            exchange.closed = True

    def _rate_limited(self, fault: Fault, protocol: Protocol, call: Call) -> Reply:
        """A 429 carrying the retry hint in the style the fault names."""
        wait = self.retry_after_s
        gemini = isinstance(protocol, GeminiProtocol)
        if fault is Fault.RATE_LIMIT_GEMINI:
            return protocol.error(ErrorKind.RATE_LIMIT, None, call.model, wait if gemini else None)
        reply = protocol.error(ErrorKind.RATE_LIMIT, None, call.model, None)
        if fault is Fault.RATE_LIMIT_RETRY_AFTER:
            reply.headers.append(("retry-after", f"{wait:g}"))
        elif fault is Fault.RATE_LIMIT_RETRY_AFTER_MS:
            reply.headers.append(("retry-after-ms", str(round(wait * 1000))))
        else:
            reply.headers.append(("retry-after", email.utils.formatdate(time.time() + wait, usegmt=True)))
        return reply

    def _control(self, request: HttpRequest) -> Reply:
        """`/_fake/...`: stats, reset and fault control for tests in another process."""
        path = request.path.rstrip("/")
        if request.method == "GET" and path == "/_fake/stats":
            return json_reply(200, self.stats(request.query.get("key")).as_json())
        if request.method == "GET" and path == "/_fake/health":
            return json_reply(200, {"ok": True, "vendors": {vendor: self.url_for(vendor) for vendor in VENDORS}})
        if request.method == "POST" and path == "/_fake/reset":
            self.reset()
            return json_reply(200, {"ok": True})
        if request.method == "GET" and path == "/_fake/batch_stats":
            return json_reply(200, self.batch_stats(request.query.get("key")).as_json())
        if path == "/_fake/batch_options" and request.method in ("GET", "POST"):
            try:
                changes = json.loads(request.body or b"{}") if request.method == "POST" else {}
                options = self._batches.set_options(**changes)
            except (ValueError, TypeError) as exc:
                return json_reply(400, {"error": {"message": str(exc)}})
            return json_reply(200, options.as_json())
        if request.method == "POST" and path == "/_fake/batch_expire":
            try:
                key = json.loads(request.body or b"{}").get("key")
            except (ValueError, AttributeError) as exc:
                return json_reply(400, {"error": {"message": str(exc)}})
            return json_reply(200, {"expired": self.expire_batches(key)})
        if request.method == "POST" and path == "/_fake/fault":
            try:
                body = json.loads(request.body or b"{}")
                self.set_fault(body.get("fault"), body.get("times"))
            except (ValueError, AttributeError) as exc:
                return json_reply(400, {"error": {"message": str(exc)}})
            return json_reply(200, {"ok": True})
        return json_reply(404, {"error": {"message": f"No route for {request.method} {request.path}"}})


def _fault(fault: Fault | str | None) -> Fault | None:
    return Fault(fault) if isinstance(fault, str) else fault


def _auth_failure(key: str | None) -> ErrorKind | None:
    """Keys are accepted unless missing, starting with `invalid` (401) or `forbidden` (403)."""
    if not key:
        return ErrorKind.AUTH_MISSING
    if key.startswith("invalid"):
        return ErrorKind.AUTH_INVALID
    if key.startswith("forbidden"):
        return ErrorKind.PERMISSION
    return None


def _batch_route(request: HttpRequest) -> tuple[BatchApi, Handler, dict[str, str]] | None:
    for api in BATCH_APIS:
        prefix = api.protocol.prefix
        if request.path.startswith(prefix + "/"):
            found = api.route(request.method, request.path[len(prefix):])
            if found is not None:
                return api, found[0], found[1]
    return None


def _protocol_of(vendor: str) -> Protocol:
    return next(protocol for protocol in PROTOCOLS if protocol.vendor == vendor)


def _route(request: HttpRequest) -> tuple[Protocol, Operation, dict[str, str]] | None:
    for protocol in PROTOCOLS:
        if request.path.startswith(protocol.prefix + "/"):
            found = protocol.route(request.method, request.path[len(protocol.prefix) :], request.query)
            if found is not None:
                return protocol, found[0], found[1]
    return None
