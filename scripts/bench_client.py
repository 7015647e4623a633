"""Client CPU time per call: evalpipe vs raw aiohttp and httpx loops vs the openai SDK vs LiteLLM.

    python scripts/bench_client.py [--requests 2000] [--concurrency 16] [--rounds 3] [--no-stream]
                                   [--clients evalpipe,raw httpx,...] [--server-only]

from the repository after `make install`; or `make bench`, which also installs LiteLLM, httpx-aiohttp
and uvloop (the `bench` extra; without them those rows are skipped with a note, and the fake server
runs on asyncio's own loop). The fake provider server runs in a separate
process on loopback, so its CPU is not counted: the number is this process's `time.process_time()` per
call. All clients send the same chat requests, `--concurrency` in flight (anyio task group and
CapacityLimiter); after a warm-up they take turns in a rotated order for `--rounds` rounds and the median
round is shown, so machine noise hits all alike. A second table does the same for streamed answers
(`include_usage`). The floor is a raw aiohttp loop: the least CPU a Python client can spend on the
call. Targets: evalpipe within 1.5x of it (2x streamed), and well below LiteLLM.

`--server-only` measures the fake server instead: a raw aiohttp loop drives it, and the table gives the
server process's CPU per call and so the calls a second one core of it can answer.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import httpx
from openai import AsyncOpenAI

from evalpipe import ChatMessage, LLMBuilder

MODEL = "gpt-4o-mini"
API_KEY = "sk-bench-not-a-real-key"
TARGETS = {False: 1.5, True: 2.0}  # evalpipe's CPU per call over raw aiohttp's: non-streamed, streamed


@dataclass
class Client:
    """One way of making the call, and its measurements (one per round)."""

    name: str
    send: Callable[[str], Awaitable[tuple[str, int]]]  # prompt -> (answer text, output tokens)
    close: Callable[[], Awaitable[None]]
    cpu_us: list[float] = field(default_factory=list)
    calls_per_s: list[float] = field(default_factory=list)


def prompt(index: int) -> str:
    return f"Request {index}: summarise what a client library costs per call, in one short sentence."


def request_body(text: str, *, stream: bool) -> dict[str, Any]:
    """The chat request every raw loop sends (streamed ones ask for the final usage chunk)."""
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def answer_of(answer: dict[str, Any]) -> tuple[str, int]:
    """(text, output tokens) of a non-streamed answer."""
    return answer["choices"][0]["message"]["content"], answer["usage"]["completion_tokens"]


def fold_chunk(line: str, pieces: list[str], tokens: int) -> int:
    """Add one `data:` line's text to `pieces`; the output tokens so far."""
    chunk = json.loads(line[5:])
    pieces.extend(choice["delta"].get("content") or "" for choice in chunk["choices"])
    return int(chunk["usage"]["completion_tokens"]) if chunk.get("usage") else tokens


def evalpipe_client(base: str, stream: bool) -> Client:
    llm = LLMBuilder().backend("openai").api_key(API_KEY).base_url(base).model(MODEL).max_retries(0).build()

    async def chat(text: str) -> tuple[str, int]:
        response = await llm.achat([ChatMessage.user(text)])
        return response.text, response.usage.output_tokens

    async def streamed(text: str) -> tuple[str, int]:
        response = await llm.astream([ChatMessage.user(text)]).collect()
        return response.text, response.usage.output_tokens

    return Client("evalpipe", streamed if stream else chat, llm.aclose)


def httpx_client(base: str, stream: bool, transport: httpx.AsyncBaseTransport | None = None) -> Client:
    """One pooled httpx AsyncClient, POST the JSON, parse the answer."""
    http = httpx.AsyncClient(
        base_url=base + "/", headers={"Authorization": f"Bearer {API_KEY}"}, transport=transport
    )

    async def chat(text: str) -> tuple[str, int]:
        body = request_body(text, stream=False)
        response = await http.post("chat/completions", json=body)
        response.raise_for_status()
        answer = json.loads(response.content)
        return answer_of(answer)

    async def streamed(text: str) -> tuple[str, int]:
        body = request_body(text, stream=True)
        pieces: list[str] = []
        tokens = 0
        async with http.stream("POST", "chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                tokens = fold_chunk(line, pieces, tokens)
        return "".join(pieces), tokens

    return Client("raw httpx", streamed if stream else chat, http.aclose)


def aiohttp_client(base: str, stream: bool) -> Client:
    """The floor: one pooled aiohttp session, POST the JSON, parse the answer."""
    state: dict[str, aiohttp.ClientSession] = {}

    def session() -> aiohttp.ClientSession:  # made on first use: a session belongs to the running loop
        if "session" not in state:
            state["session"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), headers={"Authorization": f"Bearer {API_KEY}"}
            )
        return state["session"]

    async def chat(text: str) -> tuple[str, int]:
        body = request_body(text, stream=False)
        async with session().post(f"{base}/chat/completions", json=body) as response:
            response.raise_for_status()
            answer = json.loads(await response.read())
        return answer_of(answer)

    async def streamed(text: str) -> tuple[str, int]:
        body = request_body(text, stream=True)
        pieces: list[str] = []
        tokens = 0
        async with session().post(f"{base}/chat/completions", json=body) as response:
            response.raise_for_status()
            async for raw in response.content:  # lines
                line = raw.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                tokens = fold_chunk(line, pieces, tokens)
        return "".join(pieces), tokens

    async def close() -> None:
        if "session" in state:
            await state.pop("session").close()

    return Client("raw aiohttp", streamed if stream else chat, close)


def httpx_aiohttp_client(base: str, stream: bool) -> Client | None:
    """The raw httpx loop on the `httpx-aiohttp` transport (what the openai SDK offers for speed)."""
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        return None
    client = httpx_client(base, stream, AiohttpTransport(limits=httpx.Limits(max_connections=None)))
    client.name = "httpx-aiohttp"
    return client


def openai_client(base: str, stream: bool) -> Client:
    sdk = AsyncOpenAI(base_url=base, api_key=API_KEY, max_retries=0)

    async def chat(text: str) -> tuple[str, int]:
        response = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}]
        )
        tokens = response.usage.completion_tokens if response.usage else 0
        return response.choices[0].message.content or "", tokens

    async def streamed(text: str) -> tuple[str, int]:
        pieces: list[str] = []
        tokens = 0
        chunks = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}],
            stream=True, stream_options={"include_usage": True},
        )
        async for chunk in chunks:
            tokens = chunk.usage.completion_tokens if chunk.usage else tokens
            pieces.extend(choice.delta.content or "" for choice in chunk.choices)
        return "".join(pieces), tokens

    return Client("openai SDK", streamed if stream else chat, sdk.close)


def litellm_client(base: str, stream: bool) -> Client | None:
    """LiteLLM's non-streamed `acompletion` (it has no row in the streaming table)."""
    # Use the cost map bundled with LiteLLM rather than fetching one at import: offline, and not timed.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        return None
    litellm.telemetry, litellm.suppress_debug_info = False, True
    litellm.callbacks, litellm.success_callback, litellm.failure_callback = [], [], []

    async def chat(text: str) -> tuple[str, int]:
        response = await litellm.acompletion(
            model=f"openai/{MODEL}", messages=[{"role": "user", "content": text}],
            api_base=base, api_key=API_KEY, max_retries=0,
        )
        return response.choices[0].message.content or "", response.usage.completion_tokens

    return None if stream else Client("LiteLLM", chat, litellm.close_litellm_async_clients)


FACTORIES: dict[str, Callable[[str, bool], Client | None]] = {
    "raw aiohttp": aiohttp_client, "evalpipe": evalpipe_client, "raw httpx": httpx_client,
    "httpx-aiohttp": httpx_aiohttp_client, "openai SDK": openai_client, "LiteLLM": litellm_client,
}
FLOOR = "raw aiohttp"


async def measure(client: Client, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs per call, calls per second of wall time) for `requests` calls."""
    limiter = anyio.CapacityLimiter(concurrency)
    wrong = 0

    async def one(index: int) -> None:
        nonlocal wrong
        async with limiter:
            text, tokens = await client.send(prompt(index))
        wrong += not text.startswith("Echo: Request") or tokens <= 0

    gc.collect()  # the previous client's garbage is not this one's cost
    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(requests):
            group.start_soon(one, index)
    wall = time.perf_counter() - wall
    # LiteLLM logs each call in a background task: let deferred work finish, charged to its cause.
    await anyio.sleep(0.2)
    cpu = time.process_time() - cpu
    if wrong:
        raise RuntimeError(f"{client.name}: {wrong} of {requests} answers were not the fake's echo")
    return cpu / requests * 1e6, requests / wall


async def run_rounds(clients: list[Client], args: argparse.Namespace) -> None:
    """A warm-up per client, then `args.rounds` measured rounds in a rotated order."""
    try:
        for client in clients:
            await measure(client, max(args.requests // 4, args.concurrency * 4), args.concurrency)
        for round_index in range(args.rounds):
            start = round_index % len(clients)
            for client in clients[start:] + clients[:start]:
                cpu_us, calls_per_s = await measure(client, args.requests, args.concurrency)
                client.cpu_us.append(cpu_us)
                client.calls_per_s.append(calls_per_s)
    finally:
        for client in clients:
            await client.close()


def print_table(title: str, clients: list[Client]) -> dict[str, float]:
    """Print one table; return each client's median CPU µs per call."""
    cpu = {c.name: statistics.median(c.cpu_us) for c in clients}
    floor = cpu[FLOOR]
    print(f"\n{title}\n{'client':<13} {'CPU µs/call':>11} {'spread':>7} {'over floor':>10} "
          f"{'calls/s wall':>12} {'ratio to raw aiohttp':>20}")
    for c in clients:
        spread = (max(c.cpu_us) - min(c.cpu_us)) / cpu[c.name] * 100
        rate = statistics.median(c.calls_per_s)
        print(f"{c.name:<13} {cpu[c.name]:>11.0f} {spread:>6.0f}% {cpu[c.name] - floor:>+10.0f} "
              f"{rate:>12.0f} {cpu[c.name] / floor:>20.2f}")
    return cpu


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) another process has used so far (Linux's /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure_server(pid: int, url: str, args: argparse.Namespace) -> None:
    """The fake server's CPU per call and calls per second, driven by the raw aiohttp loop."""
    print(f"\nFake server alone ({args.requests} requests x {args.rounds} rounds, concurrency "
          f"{args.concurrency}; median round)\n{'answer':<13} {'server CPU µs/call':>18} "
          f"{'calls/s on one core':>19} {'calls/s wall':>12}")
    for stream in (False,) if args.no_stream else (False, True):
        client = aiohttp_client(f"{url}/openai/v1", stream)
        rounds: list[tuple[float, float]] = []
        try:
            await measure(client, max(args.requests // 4, args.concurrency * 4), args.concurrency)
            for _ in range(args.rounds):
                cpu = process_cpu_s(pid)
                _, calls_per_s = await measure(client, args.requests, args.concurrency)
                rounds.append(((process_cpu_s(pid) - cpu) / args.requests * 1e6, calls_per_s))
        finally:
            await client.close()
        cpu_us, calls_per_s = statistics.median(rounds)
        print(f"{'streamed' if stream else 'non-streamed':<13} {cpu_us:>18.0f} {1e6 / cpu_us:>19.0f} "
              f"{calls_per_s:>12.0f}")


def start_server() -> tuple[subprocess.Popen[str], str]:
    """The fake provider server in its own process on a free loopback port, and its URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "evalpipe.testing", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    url = server.stdout.readline().strip() if server.stdout else ""
    if not url.startswith("http://"):
        server.kill()
        raise SystemExit(f"the fake server did not start (first line: {url!r})")
    return server, url.rstrip("/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="calls per client per round")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight at once")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (the median is shown)")
    parser.add_argument("--no-stream", action="store_true", help="skip the streaming table")
    parser.add_argument("--clients", help=f"comma-separated subset of: {', '.join(FACTORIES)} ({FLOOR} is always run)")
    parser.add_argument("--server-only", action="store_true", help="measure the fake server's own CPU per call")
    args = parser.parse_args()
    chosen = [FLOOR, *(name.strip() for name in args.clients.split(",") if name.strip() != FLOOR)] \
        if args.clients else list(FACTORIES)
    if unknown := [name for name in chosen if name not in FACTORIES]:
        parser.error(f"unknown client(s) {', '.join(unknown)}; known: {', '.join(FACTORIES)}")

    server, url = start_server()
    setup = f"{args.requests} requests x {args.rounds} rounds, concurrency {args.concurrency}; median round"
    try:
        if args.server_only:
            anyio.run(measure_server, server.pid, url, args)
            return 0
        for stream in (False,) if args.no_stream else (False, True):
            made = {name: FACTORIES[name](f"{url}/openai/v1", stream) for name in chosen}
            clients = [client for client in made.values() if client is not None]
            anyio.run(run_rounds, clients, args)
            kind = "Streaming chat with include_usage" if stream else "Non-streaming chat"
            cpu = print_table(f"{kind} ({setup})", clients)
            for name in [name for name, client in made.items() if client is None and (not stream or name != "LiteLLM")]:
                print(f"{name}: skipped, not installed (`make bench` installs it)")
            if "evalpipe" in cpu:
                ratio = cpu["evalpipe"] / cpu[FLOOR]
                print(f"\n{'streaming: ' * stream}evalpipe / {FLOOR} = {ratio:.2f} (target ≤ {TARGETS[stream]})")
            if "evalpipe" in cpu and "LiteLLM" in cpu:
                print(f"evalpipe / LiteLLM = {cpu['evalpipe'] / cpu['LiteLLM']:.2f}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
