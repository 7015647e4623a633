"""Whether a job is large enough that `plan` and `run` must be told `--yes` before going on.

A job past its `confirm_above` (default: 100,000 tasks or $10 of projected cost) is refused with exit 2
and a message saying how to go ahead: a repeats count with three zeros too many, or a grid that
multiplies out to a million calls, stops here instead of at the vendor's invoice.
"""

from __future__ import annotations

from evalpipe.pipeline.job.expand import Plan
from evalpipe.pipeline.job.spec import JobSpec

HOW_TO_CONFIRM = "run again with --yes to go ahead, or raise `confirm_above` (tasks, cost_usd) in the job file"


def confirmation_needed(spec: JobSpec, plan: Plan) -> str | None:
    """Why the job needs `--yes` (its task count or projected cost past `confirm_above`); None if it does not."""
    limits = spec.confirm_above
    reasons = []
    if plan.tasks > limits.tasks:
        reasons.append(f"{plan.tasks:,} tasks (confirm_above.tasks is {limits.tasks:,})")
    if plan.cost_usd > limits.cost_usd:
        reasons.append(f"a projected cost of ${plan.cost_usd:,.2f} (confirm_above.cost_usd is "
                       f"${limits.cost_usd:,.2f})")
    if not reasons:
        return None
    return f"this job is large: {' and '.join(reasons)}; {HOW_TO_CONFIRM}"


__all__ = ["HOW_TO_CONFIRM", "confirmation_needed"]
