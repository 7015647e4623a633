"""Scoring overhead per row, as a share of the whole task, for the cheap scorers, the benchmark scorers
(numeric, choice, reference overlaps, refusal) and toxicity.

    python scripts/bench_scoring.py [--rows 2000] [--rounds 3] [--latency 0.8]

from the repository after `make install` (toxicity needs `pip install 'evalpipe[toxicity]'`; without
it that row is skipped with a note). What is measured:

1. Each scorer on the same realistic answers (prose of about 120 words, JSON objects, some in a
   ```json fence), one row at a time, and for toxicity also 16 rows in flight, as the runner scores
   them (the classifier predicts for all waiting rows in one batch). Median of the rounds, wall time.
2. The task it is added to: one chat call through evalpipe's client to the fake server (its own
   process, loopback HTTP), median over 64 calls: with `--latency` seconds of server latency (0.8 s:
   a short hosted-API answer), 16 in flight; and with none, one at a time (no task is cheaper).

Share = scoring / (task + scoring). The classifier's one-off model load (about 2 s per process, on
the first toxicity row) is shown apart and left out of the per-row figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from evalpipe import ChatMessage, ChatResponse, ConfigError, LLMBuilder
from evalpipe.scoring.base import Scorer
from evalpipe.scoring.registry import build_scorer

WORDS = ["the", "model", "answer", "pipeline", "score", "token", "latency", "budget", "result", "value", "cache",
         "retry", "limit", "prompt", "question", "careful", "evaluation", "summary", "number", "report", "quality",
         "metric", "dataset", "backend"]
CONCURRENCY = 16
TASK_CALLS = 64


def answers(rows: int, seed: int = 7) -> list[str]:
    """Realistic answers: two in three prose, one in three JSON (half of those in a ```json fence)."""
    rng = random.Random(seed)
    texts = []
    for index in range(rows):
        if index % 3 == 2:
            record = {f"field_{k}": rng.choice([rng.randint(0, 999), rng.choice(WORDS), [1, 2, 3], None])
                      for k in range(30)}
            text = json.dumps({"id": index, "record": record})
            texts.append(f"Here is the result:\n```json\n{text}\n```" if index % 2 else text)
        else:
            sentences = [" ".join(rng.choices(WORDS, k=12)).capitalize() + "." for _ in range(10)]
            texts.append(" ".join(sentences) + f" The answer is number {index}.")
    return texts


@dataclass
class Row:
    name: str
    one_at_a_time_us: float
    in_flight_us: float | None = None


async def per_row_us(scorer: Scorer, texts: list[str], concurrency: int) -> float:
    """Wall microseconds per row to score every text, `concurrency` rows in flight."""
    responses = [ChatResponse(text=text) for text in texts]
    messages = [ChatMessage.user("Summarise the pipeline's costs.")]
    started = time.perf_counter()
    if concurrency == 1:
        for response in responses:
            await scorer({}, messages, response)
    else:
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(response: ChatResponse) -> None:
            async with limiter:
                await scorer({}, messages, response)

        async with anyio.create_task_group() as group:
            for response in responses:
                group.start_soon(one, response)
    return (time.perf_counter() - started) / len(texts) * 1e6


def median_of(rounds: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(rounds))


async def scorer_rows(rows: int, rounds: int) -> tuple[list[Row], float | None, str | None]:
    texts = answers(rows)
    cheap: dict[str, tuple[str, dict[str, object]]] = {
        "json_valid": ("json_valid", {}),
        "regex": ("regex", {"pattern": r"answer is number \d+"}),
        "contains": ("contains", {"values": ["pipeline", "budget"], "mode": "all"}),
    }
    results: list[Row] = []
    for label, (kind, options) in cheap.items():
        scorer = build_scorer(kind, None, options)
        timings = [await per_row_us(scorer, texts, 1) for _ in range(rounds)]
        results.append(Row(label, statistics.median(timings)))
    results.append(Row("all three", sum(r.one_at_a_time_us for r in results)))
    # Benchmark scorers, against a reference of the answers' own size where they compare texts.
    reference = answers(1, seed=11)[0]
    compared: dict[str, tuple[str, dict[str, object]]] = {
        "numeric": ("numeric", {"expected": "7"}),
        "choice": ("choice", {"expected": "B"}),
        "normalized_match": ("normalized_match", {"expected": reference}),
        "token_f1": ("token_f1", {"expected": reference}),
        "edit_similarity": ("edit_similarity", {"expected": reference}),
        "rouge_l": ("rouge_l", {"expected": reference}),
        "bleu": ("bleu", {"expected": reference}),
        "is_refusal": ("is_refusal", {}),
    }
    for label, (kind, options) in compared.items():
        try:
            scorer = build_scorer(kind, None, options)
        except ConfigError as exc:  # bleu without its extra
            print(f"{label} skipped: {exc}")
            continue
        results.append(Row(label, statistics.median([await per_row_us(scorer, texts, 1) for _ in range(rounds)])))
    try:
        toxicity = build_scorer("toxicity")
    except ConfigError as exc:
        return results, None, str(exc)
    started = time.perf_counter()
    await toxicity({}, [], ChatResponse(text="warm-up: loads the model"))
    load_s = time.perf_counter() - started
    alone = statistics.median([await per_row_us(toxicity, texts[: max(rows // 10, 50)], 1) for _ in range(rounds)])
    batched = statistics.median([await per_row_us(toxicity, texts, CONCURRENCY) for _ in range(rounds)])
    results.append(Row("toxicity", alone, batched))
    return results, load_s, None


async def task_ms(base_url: str, latency_s: float, concurrency: int) -> float:
    """Median wall milliseconds of one chat call through evalpipe's client, `concurrency` calls in flight."""
    llm = LLMBuilder().backend("openai").api_key("sk-bench-scoring").base_url(base_url).model("gpt-4o-mini").build()
    timings: list[float] = []
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(index: int) -> None:
        prompt = f"[[latency:{latency_s}]] Summarise the pipeline's costs, question {index}."
        async with limiter:
            started = time.perf_counter()
            await llm.achat([ChatMessage.user(prompt)])
            timings.append((time.perf_counter() - started) * 1000)

    try:
        async with anyio.create_task_group() as group:
            for index in range(TASK_CALLS):
                group.start_soon(one, index)
    finally:
        await llm.aclose()
    return statistics.median(timings)


def fake_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "evalpipe.testing", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = process.stdout.readline().strip() if process.stdout else ""
    if not first.startswith("http://"):
        process.kill()
        raise SystemExit(f"the fake server did not start (first line: {first!r})")
    return process, first.rstrip("/") + "/openai/v1"


def share(score_us: float, task_ms_: float) -> str:
    return f"{100 * score_us / (score_us + task_ms_ * 1000):.3f} %"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=2000, help="answers scored per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is shown (default 3)")
    parser.add_argument("--latency", type=float, default=0.8, help="server latency of a typical task, s")
    args = parser.parse_args()

    process, base_url = fake_server()
    try:
        typical = await task_ms(base_url, args.latency, CONCURRENCY)
        instant = await task_ms(base_url, 0.0, 1)
    finally:
        process.terminate()
        process.wait(timeout=10)
    rows, load_s, skipped = await scorer_rows(args.rows, args.rounds)

    print(f"task: {typical:,.1f} ms with {args.latency:g} s server latency, {instant:,.2f} ms with none "
          f"(median of {TASK_CALLS} calls each)")
    print(f"{args.rows} answers per round, median of {args.rounds} rounds\n")
    header = ("scorer", "µs/row, 1 at a time", f"µs/row, {CONCURRENCY} in flight",
              f"share of a {args.latency:g} s task", "share of an instant task")
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        cost = row.in_flight_us if row.in_flight_us is not None else row.one_at_a_time_us
        in_flight = f"{row.in_flight_us:,.1f}" if row.in_flight_us is not None else "–"
        print(f"| {row.name} | {row.one_at_a_time_us:,.1f} | {in_flight} | {share(cost, typical)} | "
              f"{share(cost, instant)} |")
    if load_s is not None:
        print(f"\ntoxicity's model load, once per process: {load_s:.2f} s")
    if skipped:
        print(f"\ntoxicity skipped: {skipped}")


if __name__ == "__main__":
    anyio.run(main)
