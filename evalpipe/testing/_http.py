"""HTTP/1.1 plumbing of the fake server: requests read off asyncio streams, keep-alive, chunked
bodies, and the misbehaviours faults need (a TCP reset, a connection left hanging).

The protocol is written out here rather than driven through h11: h11 checks every event against its
state machine, and that was more than half of the server's CPU per call, which made the server, not
the client under test, the ceiling of every benchmark (`scripts/bench_client.py --server-only`). What
a test client sends is small: a request line, headers, and a body of a declared length or chunked.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

from evalpipe.testing._wire import HttpRequest, Reply, new_id

Handler = Callable[[HttpRequest, "Exchange"], Awaitable[None]]
MAX_BODY = 64 * 1024 * 1024  # a test request is far smaller; anything bigger is a client gone wrong


class BadRequest(Exception):
    """The bytes on a connection are no HTTP/1.1 request; the connection is dropped."""


class Exchange:
    """One request/response on a connection: writes the response, or aborts the connection.

    Bytes are gathered and leave in one write when the caller sends body data or ends the body:
    on loopback every write is a system call that also wakes the client, and a reply's head, body and
    end in three of them cost more than the rest of the reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep_alive: bool) -> None:
        self.reader, self.writer = reader, writer
        self.keep_alive = keep_alive
        self.headers: list[tuple[str, str]] = [("x-request-id", new_id("req_"))]
        self.closed = False  # a fault ended the connection
        self.finished = False  # the response was sent whole
        self._chunked = False
        self._pending: list[bytes] = []

    async def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self.writer.write(data)
            await self.writer.drain()

    def start(
        self, status: int, content_type: str, headers: Iterable[tuple[str, str]], length: int | None
    ) -> None:
        """Queue the status line and headers (chunked when `length` is None); they leave with the body."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:  # 529, Anthropic's "overloaded"
            reason = "Overloaded"
        self._chunked = length is None
        framing = ("transfer-encoding", "chunked") if length is None else ("content-length", str(length))
        names = [("content-type", content_type), ("date", http_date()), framing, *self.headers, *headers]
        if not self.keep_alive:
            names.append(("connection", "close"))
        lines = [f"HTTP/1.1 {status} {reason}\r\n", *(f"{name}: {value}\r\n" for name, value in names), "\r\n"]
        self._pending.append("".join(lines).encode("latin-1"))

    def _queue(self, data: bytes) -> None:
        if not data:  # an empty chunk would end a chunked body
            return
        self._pending.append(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)

    async def data(self, *parts: bytes) -> None:
        """Send part of the body (`parts` together, as one chunk), with anything queued before it."""
        self._queue(b"".join(parts))
        await self._flush()

    async def end(self) -> None:
        """Finish the body cleanly."""
        if self._chunked:
            self._pending.append(b"0\r\n\r\n")
        self.finished = True
        await self._flush()

    async def reply(self, reply: Reply) -> None:
        """Send a complete response, in one write."""
        self.start(reply.status, reply.content_type, reply.headers, len(reply.body))
        self._queue(reply.body)
        await self.end()

    def reset(self) -> None:
        """Abort the connection with a TCP RST."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        self.closed = True

    async def wait_for_disconnect(self) -> None:
        """Answer nothing more until the client closes the connection."""
        await self._flush()
        while await self.reader.read(65536):
            pass
        self.closed = True


def http_date() -> str:
    """The `date` header's value for now."""
    return _formatted_date(int(time.time()))


@functools.lru_cache(maxsize=1)
def _formatted_date(second: int) -> str:
    # Formatted once a second, not once a reply.
    return email.utils.formatdate(second, usegmt=True)


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: Handler) -> None:
    """Serve requests on one connection until the client or a fault closes it."""
    try:
        while True:
            read = await read_request(reader)
            if read is None:
                break
            request, keep_alive = read
            exchange = Exchange(reader, writer, keep_alive)
            await handle(request, exchange)
            if exchange.closed or not exchange.finished or not keep_alive:
                break
    except (ConnectionError, BadRequest):
        pass
    except asyncio.CancelledError:
        # Only the server's shutdown cancels a connection, and this is the top of its task: asyncio's
        # stream callback would report a cancelled handler as an error, so end quietly instead.
        pass
    finally:
        if not writer.transport.is_closing():
            writer.close()
        # A shutdown may cancel this wait too; the connection is being dropped either way.
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await writer.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[HttpRequest, bool] | None:
    """The next request on a connection and whether the client keeps the connection after it;
    None when the client closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("connection closed inside a request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too long") from None
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        raise BadRequest(f"not an HTTP/1.x request line: {lines[0][:80]!r}")
    method, target_text, version = request_line
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise BadRequest(f"malformed header line: {line[:80]!r}")
            headers[name.lower()] = value.strip()
    body = await read_body(reader, headers)
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    target = urlsplit(target_text)
    query = dict(parse_qsl(target.query, keep_blank_values=True))
    return HttpRequest(method, unquote(target.path), query, headers, body), keep_alive


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The request body, of a declared length or chunked (its trailers are read and dropped)."""
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return bytes(body)
                body += await reader.readexactly(size)
                if len(body) > MAX_BODY or await reader.readexactly(2) != b"\r\n":
                    raise BadRequest("malformed or oversized chunked body")
        length = int(headers.get("content-length", "0"))
        if not 0 <= length <= MAX_BODY:
            raise BadRequest(f"content-length out of range: {length}")
        return await reader.readexactly(length) if length else b""
    except ValueError:
        raise BadRequest("malformed body framing") from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise BadRequest("connection closed inside a request body") from None
