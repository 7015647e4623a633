"""HTTP/1.1 plumbing of the fake server: h11 over asyncio streams, keep-alive, chunked bodies,
and the misbehaviours faults need (a TCP reset, a connection left hanging)."""

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

import h11

from evalpipe.testing._wire import HttpRequest, Reply, new_id

Handler = Callable[[HttpRequest, "Exchange"], Awaitable[None]]


class Exchange:
    """One request/response on a connection: writes h11 events, or aborts the connection.

    Bytes are gathered and leave in one write when the caller sends body data or ends the body:
    on loopback every write is a system call that also wakes the client, and a reply's head, body and
    end in three of them cost the server more than everything else it does for a call."""

    def __init__(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn, self.reader, self.writer = conn, reader, writer
        self.headers: list[tuple[str, str]] = [("x-request-id", new_id("req_"))]
        self.closed = False
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
        names = [("content-type", content_type), ("date", http_date())]
        if length is not None:
            names.append(("content-length", str(length)))
        names += self.headers + list(headers)
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:  # 529, Anthropic's "overloaded"
            reason = "Overloaded"
        response = h11.Response(status_code=status, headers=names, reason=reason)
        self._pending.append(self.conn.send(response) or b"")

    async def data(self, *parts: bytes) -> None:
        """Send part of the body (`parts` together, as one chunk), with anything queued before it."""
        self._pending.append(self.conn.send(h11.Data(data=b"".join(parts))) or b"")
        await self._flush()

    async def end(self) -> None:
        """Finish the body cleanly."""
        self._pending.append(self.conn.send(h11.EndOfMessage()) or b"")
        await self._flush()

    async def reply(self, reply: Reply) -> None:
        """Send a complete response, in one write."""
        self.start(reply.status, reply.content_type, reply.headers, len(reply.body))
        self._pending.append(self.conn.send(h11.Data(data=reply.body)) or b"")
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
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request = await read_request(conn, reader)
            if request is None:
                break
            exchange = Exchange(conn, reader, writer)
            await handle(request, exchange)
            if exchange.closed or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
    except (ConnectionError, h11.ProtocolError):
        pass
    except asyncio.CancelledError:
        # Only the server's shutdown cancels a connection, and this is the top of its task: asyncio's
        # stream callback would report a cancelled handler as an error, so end quietly instead.
        pass
    finally:
        if not writer.transport.is_closing():
            writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> HttpRequest | None:
    """The next request on a connection, or None when the client closed it."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            target = urlsplit(head.target.decode("latin-1"))
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in head.headers}
            query = dict(parse_qsl(target.query, keep_blank_values=True))
            return HttpRequest(head.method.decode(), unquote(target.path), query, headers, bytes(body))
        else:  # ConnectionClosed or PAUSED
            return None
