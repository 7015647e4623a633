"""Generated tokens per second through evalpipe vs a raw httpx loop, against the same llama-server.

    python scripts/bench_local.py [--requests 4] [--rounds 5] [--max-tokens 64] [--levels 1 2 4] [--threads N]

Both sides send the same `/v1/completions` requests (same prompts, seeds, temperature 0, so the same
tokens) at each concurrency level to the one managed server, in a single run. The sides alternate in
short rounds so that a change in machine load hits both alike. A side's rate is its tokens over its
time, summed over the rounds; the ratio is the median of the rounds' evalpipe/raw ratios, which a
load spike during one round does not move. It shows what the client layer costs; the target is
>= 0.95 at every level.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

from evalpipe.backends.llama_server import LlamaServer, default_threads
from evalpipe.backends.local import LocalProvider
from evalpipe.builder import LLMBuilder
from evalpipe.types import GenerationParams

PROMPTS = [
    "The history of the printing press begins",
    "A recipe for bread needs flour, water,",
    "The three laws of motion state that",
    "In the morning the harbour was quiet, and",
    "The best way to learn a language is",
    "Volcanoes form where tectonic plates",
    "Once upon a time a fox found a",
    "The committee met on Tuesday to discuss",
]

Send = Callable[[str, int], Awaitable[int]]  # (prompt, seed) -> generated tokens


async def measure(send: Send, requests: int, concurrency: int) -> tuple[int, float]:
    """(generated tokens, seconds) for `requests` calls, at most `concurrency` at a time."""
    limiter = anyio.CapacityLimiter(concurrency)
    tokens = 0

    async def one(index: int) -> None:
        nonlocal tokens
        async with limiter:
            generated = await send(PROMPTS[index % len(PROMPTS)], index)
        tokens += generated  # not `tokens += await ...`: that reads `tokens` before the await

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(requests):
            group.start_soon(one, index)
    return tokens, time.perf_counter() - started


async def run(
    requests: int, rounds: int, max_tokens: int, levels: list[int], threads: int | None
) -> list[tuple[int, float, float, float]]:
    builder = LLMBuilder().backend("local").temperature(0).max_tokens(max_tokens).max_retries(0).timeout(600)
    if threads:
        builder = builder.option("threads", threads)
    llm = builder.build()
    assert isinstance(llm, LocalProvider)
    server = await llm.server()
    assert isinstance(server, LlamaServer)
    raw = httpx.AsyncClient(
        base_url=f"{server.base_url}/v1/", headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=300, limits=httpx.Limits(max_connections=None),
    )

    async def send_raw(prompt: str, seed: int) -> int:
        body: dict[str, Any] = {"model": llm.model, "prompt": prompt, "temperature": 0,
                                "max_tokens": max_tokens, "seed": seed}
        response = await raw.post("completions", json=body)
        response.raise_for_status()
        completion_tokens: int = response.json()["usage"]["completion_tokens"]
        return completion_tokens

    async def send_evalpipe(prompt: str, seed: int) -> int:
        answer = await llm.acomplete(prompt, GenerationParams(seed=seed))
        return answer.usage.output_tokens

    await measure(send_raw, 2, 2)  # warm-up: first requests pay for cache allocation
    await measure(send_evalpipe, 2, 2)
    results = []
    for level in levels:
        totals = {send_raw: [0, 0.0], send_evalpipe: [0, 0.0]}
        ratios = []
        for round_index in range(rounds):
            # Who goes first alternates too: the first side of a round sees a slightly cooler cache.
            order = (send_raw, send_evalpipe) if round_index % 2 == 0 else (send_evalpipe, send_raw)
            rates = {}
            for send in order:
                tokens, seconds = await measure(send, requests, level)
                totals[send][0] += tokens
                totals[send][1] += seconds
                rates[send] = tokens / seconds
            ratios.append(rates[send_evalpipe] / rates[send_raw])
        rate = {send: tokens / seconds for send, (tokens, seconds) in totals.items()}
        results.append((level, rate[send_raw], rate[send_evalpipe], statistics.median(ratios)))
    await raw.aclose()
    await llm.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4, help="requests per round, level and side")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, help="server compute threads (default: evalpipe's)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = anyio.run(run, args.requests, args.rounds, args.max_tokens, args.levels, args.threads)
    print(f"{args.rounds} x {args.requests} requests x {args.max_tokens} tokens per level and side, "
          f"/v1/completions, temperature 0, {args.threads or default_threads()} server threads; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'concurrent':>10} | {'raw httpx tok/s':>15} | {'evalpipe tok/s':>14} | {'median ratio':>12}")
    print(f"{'-' * 10}-+-{'-' * 15}-+-{'-' * 14}-+-{'-' * 12}")
    for level, raw_rate, evalpipe_rate, ratio in results:
        print(f"{level:>10} | {raw_rate:>15.1f} | {evalpipe_rate:>14.1f} | {ratio:>12.2f}")

if __name__ == "__main__":
    main()
