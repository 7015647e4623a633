"""What `mode: batch` means for a backend of a job: which jobs may use it, its settings with the vendor's
defaults filled in, and the price factor that the row cost, the plan and the budget apply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evalpipe.backends.batch import adapter_class, batch_offered
from evalpipe.pipeline.job.spec import BackendSpec, JobSpec

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """A batch backend's settings: the job's, else its vendor's defaults."""

    max_requests: int
    max_bytes: int
    poll_interval_s: float
    max_wait_h: float
    price_factor: float


def batch_settings(spec: BackendSpec) -> BatchSettings:
    """`spec.batch` with the vendor's defaults where the job leaves a field unset."""
    vendor, given = adapter_class(spec.backend.value), spec.batch
    return BatchSettings(
        max_requests=min(given.max_requests or vendor.max_requests, vendor.max_requests),
        max_bytes=min(given.max_bytes or vendor.max_bytes, vendor.max_bytes),
        poll_interval_s=given.poll_interval_s or vendor.poll_interval_s,
        max_wait_h=given.max_wait_h or vendor.max_wait_h,
        price_factor=vendor.price_factor if given.price_factor is None else given.price_factor,
    )


def price_factor(spec: BackendSpec) -> float:
    """What a backend's answers cost relative to its live prices: 1 live, the batch discount in batch mode."""
    return batch_settings(spec).price_factor if spec.mode == "batch" else 1.0


def check_batch_mode(spec: JobSpec, report: Callable[[FieldPath, str], None]) -> None:
    """Report every batch backend the job cannot run in batch mode, and why."""
    for where, backends in (("backends", spec.backends), ("judges", spec.judges)):
        for index, backend in enumerate(backends):
            if backend.mode != "batch":
                continue
            path: FieldPath = (where, index, "mode")
            if (why := batch_offered(backend.backend.value)) is not None:
                report(path, f"`mode: batch` is not offered for {backend.backend.value}: {why}")
            elif where == "judges":
                # Its calls wait for the answers' batches, then go as batches of their own: every backend
                # it judges must be collected in batch mode (a live row cannot wait for a day).
                live = [b.id for b in spec.backends if b.mode != "batch"]
                if live:
                    report(path, f"a judge in batch mode judges backends in batch mode only; "
                                 f"{', '.join(live)} {'is' if len(live) == 1 else 'are'} live")
            elif spec.prompt.chain is not None:
                report(path, "a chain's steps depend on each other's answers: it cannot be sent as a batch")
            elif spec.prompt.dialogue is not None:
                report(path, "a dialogue's turns are sent one after another: it cannot be sent as a batch")
            elif spec.max_steps > 1:
                report(path, "a tool loop asks again after each tool call: it cannot be sent as a batch")


__all__ = ["BatchSettings", "batch_settings", "check_batch_mode", "price_factor"]
