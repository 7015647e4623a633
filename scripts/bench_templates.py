"""What the bounded template sandbox costs per render, against jinja2's plain sandbox.

    python scripts/bench_templates.py [--renders 20000]

Renders the user templates of `jobs/quickstart.yaml` and `jobs/dialogue.yaml` against their datasets'
first items, in evalpipe's environment (time, size, depth and arithmetic bounded) and in jinja2's own
`SandboxedEnvironment`, alternating, and prints µs per render (best of 3 rounds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml
from jinja2.sandbox import SandboxedEnvironment

from evalpipe.pipeline.job.templates import template_environment

ROOT = Path(__file__).resolve().parent.parent


def job_template(job: str) -> tuple[str, dict[str, Any]]:
    """The job's user template and its dataset's first item."""
    spec = yaml.safe_load((ROOT / "jobs" / job).read_text(encoding="utf-8"))
    dataset = (ROOT / "jobs" / spec["dataset"]["path"]).resolve()
    with dataset.open(encoding="utf-8") as file:
        item = json.loads(file.readline())
    return spec["prompt"]["user"], item


def per_render_us(environment: SandboxedEnvironment, source: str, item: dict[str, Any], renders: int) -> float:
    template = environment.from_string(source)
    started = time.perf_counter()
    for _ in range(renders):
        template.render(item)
    return (time.perf_counter() - started) / renders * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=20_000)
    args = parser.parse_args()
    environments = {"bounded (evalpipe)": template_environment(), "plain jinja2 sandbox": SandboxedEnvironment()}
    for job in ("quickstart.yaml", "dialogue.yaml"):
        source, item = job_template(job)
        best = {name: min(per_render_us(env, source, item, args.renders) for _ in range(3))
                for name, env in environments.items()}
        cells = ", ".join(f"{name} {us:.0f} µs" for name, us in best.items())
        print(f"{job}: {cells}")


if __name__ == "__main__":
    main()
