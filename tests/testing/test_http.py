"""The fake server's HTTP/1.1 on the wire: framing, keep-alive and bad requests, seen as bytes."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx

from evalpipe.testing import FakeServer

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def request(body: bytes = BODY, *extra: str) -> bytes:
    head = ["POST /openai/v1/chat/completions HTTP/1.1", "Host: fake", "Authorization: Bearer k",
            "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_chunked_request_bodies_are_read(fake_server: FakeServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield BODY[:10]
        yield BODY[10:]

    response = httpx.post(
        fake_server.url_for("openai") + "/chat/completions", content=chunks(),
        headers={"authorization": "Bearer k", "content-type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hi"


def test_keep_alive_serves_pipelined_requests_then_honours_connection_close(fake_server: FakeServer) -> None:
    with socket.create_connection((fake_server.host, fake_server.port)) as sock:
        sock.sendall(request() + request(BODY, "Connection: close"))
        data = read_all(sock)  # returns only because the server closed after the second reply
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    first, second = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert b"connection: close" not in first.lower()
    assert b"connection: close\r\n" in second.lower()
    assert second.endswith(b"}")


def test_a_streamed_reply_is_chunked_and_ends_with_the_last_chunk(fake_server: FakeServer) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    with socket.create_connection((fake_server.host, fake_server.port)) as sock:
        sock.sendall(request(body, "Connection: close"))
        data = read_all(sock)
    head, _, chunked = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert chunked.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


def test_a_request_that_is_not_http_gets_the_connection_closed(fake_server: FakeServer) -> None:
    with socket.create_connection((fake_server.host, fake_server.port)) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        assert read_all(sock) == b""
    # and the server goes on serving others
    assert httpx.get(fake_server.url + "/_fake/health").json()["ok"] is True
