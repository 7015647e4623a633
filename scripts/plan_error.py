"""Plan error: what `evalpipe plan` projects against what a run really uses, for every shipped job.

    PYTHONPATH=. python scripts/plan_error.py                 # every jobs/*.yaml
    PYTHONPATH=. python scripts/plan_error.py jobs/quickstart.yaml
    PYTHONPATH=. python scripts/plan_error.py --tokenizer     # the estimate against Gemma's own tokenizer

Local backends run for real on the embedded model (llama-server with the bundled Gemma 3 270M).
Cloud backends run against the fake provider server (`evalpipe.testing.FakeServer`), whose token
counting is its own: whitespace-separated words, not the vendor's tokenizer. For them the table
gives two plans: the default estimate (the vendor's characters per token and chat framing, which is
what `evalpipe plan` prints) and the plan counting words as the fake does, which checks that the
plan renders and counts what is really sent (system prompt, templates, every call).

Input tokens used are the rows' `input_tokens` plus `scoring_input_tokens`. Embedding calls (the
dialogue job's semantic relevance) carry no usage from the server: the runner charges its own
estimate for them. Planned cost takes every answer at its `max_tokens`, so it is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from evalpipe.backends.registry import provider_class
from evalpipe.pipeline.job.expand import plan_job
from evalpipe.pipeline.job.load import LoadedJob, load_job, prepare_job
from evalpipe.pipeline.job.projection import estimated_prompt_tokens, turn_prompts
from evalpipe.pipeline.job.spec import BackendSpec, JobSpec
from evalpipe.pipeline.output.store import STORE_FILENAME
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer
from evalpipe.types import ChatMessage

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY_VARIABLE = "PLAN_ERROR_FAKE_KEY"
FAKE_VENDOR = {"google": "gemini"}  # a backend whose fake route is named differently


def on_fake(path: Path, srv: FakeServer) -> tuple[LoadedJob, set[str]]:
    """The job with every keyed (cloud) backend pointed at `srv`; and those backends' ids."""
    document = load_job(path, environ={**os.environ, **_every_key()}).spec.model_dump(mode="json")
    faked: set[str] = set()
    for entry in (*document["backends"], *document["judges"]):
        if provider_class(entry["backend"]).requires_api_key:
            entry["base_url"] = srv.url_for(FAKE_VENDOR.get(entry["backend"], entry["backend"]))
            entry["api_key_env"] = FAKE_KEY_VARIABLE
            faked.add(entry["id"])
    spec = JobSpec.model_validate(document)
    return prepare_job(spec, base_dir=path.parent.resolve(), environ=os.environ), faked


def _every_key() -> dict[str, str]:
    from evalpipe.backends.registry import LLMBackend

    keys = {}
    for backend in LLMBackend:
        variable = provider_class(backend).api_key_env
        if variable:
            keys[variable] = "sk-plan-error"
    return keys


def fake_words(faked: set[str]):  # type: ignore[no-untyped-def]
    """A token counter that counts as the fake server does for its backends, by default for the others."""
    def count(backend: BackendSpec, messages: Sequence[ChatMessage], completion: bool) -> int:
        if backend.id in faked:
            return sum(len(message.content.split()) for message in messages)
        return estimated_prompt_tokens(backend, messages, completion)
    return count


def used_by_backend(run_dir: Path) -> dict[str, tuple[int, int, float]]:
    """Per evaluated backend, from the run store: the answers' input tokens, their scorers' input
    tokens, and the cost of both."""
    used: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    with sqlite3.connect(run_dir / STORE_FILENAME) as connection:
        for (data,) in connection.execute("SELECT data FROM rows"):
            row = json.loads(data)
            entry = used[row["backend_id"]]
            entry[0] += row.get("input_tokens") or 0
            entry[1] += row.get("scoring_input_tokens") or 0
            entry[2] += (row.get("cost_usd") or 0.0) + (row.get("scoring_cost_usd") or 0.0)
    return {backend_id: (int(answers), int(scoring), cost) for backend_id, (answers, scoring, cost) in used.items()}


def error(planned: float, used: float) -> str:
    return f"{(planned - used) / used:+.1%}" if used else "n/a"


def measure(path: Path, out: Path) -> list[dict[str, Any]]:
    """Plan the job, run it (cloud backends on a fake server), and compare per evaluated backend."""
    os.environ[FAKE_KEY_VARIABLE] = "sk-plan-error"
    with FakeServer() as srv:
        loaded, faked = on_fake(path, srv)
        # The same job without its scorers: the plan of the answers alone, to set against the rows' own tokens.
        answers_only = prepare_job(loaded.spec.model_copy(update={"scorers": []}), base_dir=loaded.base_dir)
        plans = {"all": plan_job(loaded), "answers": plan_job(answers_only),
                 "answers, as the server counts": plan_job(answers_only, count=fake_words(faked))}
        outcome = anyio.run(run_job, loaded, RunOptions(out_root=out, handle_signals=False, quiet=True))
    used = used_by_backend(outcome.run_dir)
    planned = {name: {b.backend_id: b for b in plan.backends} for name, plan in plans.items()}
    rows = []
    for backend in loaded.spec.backends:
        answers, scoring, cost = used.get(backend.id, (0, 0, 0.0))
        fake = backend.id in faked
        rows.append({"job": path.stem, "backend": backend.id, "server": "fake" if fake else "llama-server",
                     "planned": planned["answers"][backend.id].input_tokens, "used": answers,
                     "as_server": planned["answers, as the server counts"][backend.id].input_tokens if fake else None,
                     "planned_all": planned["all"][backend.id].input_tokens, "used_all": answers + scoring,
                     "planned_cost": planned["all"][backend.id].cost_usd, "used_cost": cost})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| job | backend | server | answers' input: planned | used | error | planned as the server counts "
             "| error | with scorers' calls: planned | used | error | cost planned (USD) | used (USD) |",
             "|" + "---|" * 13]
    for r in rows:
        as_server = "" if r["as_server"] is None else f"{r['as_server']:,} | {error(r['as_server'], r['used'])}"
        lines.append(f"| {r['job']} | {r['backend']} | {r['server']} | {r['planned']:,} | {r['used']:,} "
                     f"| {error(r['planned'], r['used'])} | {as_server or ' | '} | {r['planned_all']:,} "
                     f"| {r['used_all']:,} | {error(r['planned_all'], r['used_all'])} "
                     f"| {r['planned_cost']:.6f} | {r['used_cost']:.6f} |")
    return "\n".join(lines)


def check_tokenizer(paths: Sequence[Path]) -> None:
    """The estimate against the bundled model's own tokenizer (llama-server's /apply-template and
    /tokenize) on every prompt the local backends of `paths` send, per job."""
    from evalpipe.backends.llama_server import shared_server, stop_shared_servers

    server = shared_server()
    print("| job | prompts | Gemma tokens | estimated | error |\n|---|---|---|---|---|")
    try:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"},
                          timeout=30) as client:
            for path in paths:
                loaded = load_job(path, environ={**os.environ, **_every_key()})
                local = next((b for b in loaded.spec.backends if b.backend.value == "local"), None)
                if local is None:
                    continue
                completion = loaded.spec.prompt.mode == "completion"
                dialogue = loaded.spec.prompt.dialogue is not None
                counted = estimated = prompts = 0
                for item in loaded.dataset:
                    for sent in turn_prompts(loaded.templates.render(item.data), dialogue):
                        if completion:
                            sent = [m for m in sent if m.role == "user"][-1:]
                            text = sent[0].content
                        else:
                            wire = [{"role": m.role, "content": m.content} for m in sent]
                            text = client.post("/apply-template", json={"messages": wire}).json()["prompt"]
                        found = client.post("/tokenize", json={"content": text, "add_special": True,
                                                               "parse_special": True}).json()["tokens"]
                        counted += len(found)
                        estimated += estimated_prompt_tokens(local, sent, completion)
                        prompts += 1
                print(f"| {path.stem} | {prompts} | {counted:,} | {estimated:,} | {error(estimated, counted)} |")
    finally:
        stop_shared_servers()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="*", type=Path, default=sorted((ROOT / "jobs").glob("*.yaml")))
    parser.add_argument("--tokenizer", action="store_true",
                        help="check the estimate against the bundled model's own tokenizer, prompt by prompt")
    args = parser.parse_args(argv)
    if args.tokenizer:
        check_tokenizer(args.jobs)
        return 0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="plan-error-") as out:
        for path in args.jobs:
            print(f"running {path.name} ...", file=sys.stderr, flush=True)
            rows += measure(path, Path(out))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
