"""Fuzz job files for longer than `make test` does: hostile mutations of the shipped jobs (numbers out
of range, template bombs and sandbox escapes, YAML alias bombs and deep nesting), each run through
`evalpipe run` against the fake provider server. Every case must exit 2 with a located message
(`file:line: ...`), print no traceback, make no call, and end within the case time limit.

    PYTHONPATH=. python scripts/fuzz_jobs.py                    # 2,000 cases
    PYTHONPATH=. python scripts/fuzz_jobs.py --examples 10000 --seed 7

Prints the cases tried, the failures (each with its job and mutation), and the slowest case; exits 1
if any case failed. The cases are those of tests/pipeline/test_hostile_jobs.py, drawn at random
(reproducibly with --seed) instead of derandomized.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pipeline"))
from hostile_jobs import KEY, KEY_VARIABLE, Case, Outcome, cases, problems, run_case  # noqa: E402

from evalpipe.testing import FakeServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="cases to try (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args()
    os.environ[KEY_VARIABLE] = KEY
    tried: Counter[str] = Counter()
    failures: list[tuple[Case, list[str]]] = []
    slowest: tuple[float, str] = (0.0, "")
    started = time.monotonic()
    with FakeServer() as server, tempfile.TemporaryDirectory() as directory:

        # Generation only: a failure is recorded and the run goes on, so one run counts them all.
        @seed(args.seed)
        @settings(max_examples=args.examples, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(cases(server))
        def fuzz(case: Case) -> None:
            nonlocal slowest
            outcome: Outcome = run_case(case, Path(directory), server)
            tried[case.kind] += 1
            found = problems(outcome)
            if found:
                failures.append((case, found))
            slowest = max(slowest, (outcome.seconds, f"{case.job}: {case.mutation[:120]}"))

        fuzz()
        calls = server.stats(KEY).requests
    total = sum(tried.values())
    print(f"cases tried: {total:,} in {time.monotonic() - started:.0f} s; failures: {len(failures)}; "
          f"calls reaching the server: {calls}")
    print(f"by mutation: {', '.join(f'{kind} {count}' for kind, count in tried.most_common())}")
    print(f"slowest case: {slowest[0]:.2f} s ({slowest[1]})")
    for case, found in failures[:20]:
        print(f"FAILED {case.job}: {case.mutation[:200]}: {'; '.join(found)}")
    return 1 if failures or calls else 0


if __name__ == "__main__":
    sys.exit(main())
