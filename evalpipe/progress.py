"""The progress of `evalpipe run` on stderr: a bar on a terminal, a plain line every few seconds otherwise,
both with done/total, a labelled ETA, the pass rate so far and the last error's type; with
`--log-format json`, a JSON object with those numbers as fields every few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from evalpipe import logs
from evalpipe.pipeline.running.outcome import RunProgress


def count(number: int, noun: str) -> str:
    """`1 backend`, `2 backends`."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


class ProgressDisplay:
    """A rich progress bar on a terminal; a plain line every few seconds otherwise (logs, CI)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                             console=console)
        self._task = self._bar.add_task("running", total=None, stats="")
        self._last_line = 0.0

    @property
    def _bar_shown(self) -> bool:
        return self._console.is_terminal and not logs.json_lines()

    def __enter__(self) -> Callable[[RunProgress], None]:
        if self._bar_shown:
            self._bar.start()
        return self.update

    def __exit__(self, *exc_info: object) -> None:
        if self._bar.live.is_started:  # stopping a bar never started would print an empty line
            self._bar.stop()

    def update(self, progress: RunProgress) -> None:
        now = time.monotonic()
        if self._bar_shown:
            self._bar.update(self._task, total=progress.total, completed=progress.done,
                             stats=progress_text(progress, now))
        elif now - self._last_line >= 5 or progress.done == progress.total:
            self._last_line = now
            if logs.json_lines():
                logs.say("progress", "info", **progress_fields(progress, now))
            else:
                self._console.print(progress_text(progress, now), highlight=False, markup=False, soft_wrap=True)


def progress_fields(progress: RunProgress, now: float) -> dict[str, object]:
    """The progress line's numbers, for a JSON line (`eta_s` None until there is a rate to go by)."""
    elapsed = max(now - progress.started, 1e-9)
    done_here = progress.done - progress.already_done
    eta = (progress.total - progress.done) * elapsed / done_here if done_here > 0 else None
    return {"done": progress.done, "total": progress.total, "eta_s": None if eta is None else round(eta, 1),
            "passed": progress.passed, "scored": progress.scored, "errors": progress.errors,
            "last_error_type": progress.last_error_type, "calls_per_s": round(progress.calls / elapsed, 2),
            "tokens": progress.input_tokens + progress.output_tokens, "cost_usd": round(progress.cost_usd, 6)}


def progress_text(progress: RunProgress, now: float) -> str:
    """`12/40 done · ETA 0:00:31 · 9/12 passed (75%) · 1 error (last: RateLimitError) · 2.0 calls/s · ...`."""
    elapsed = max(now - progress.started, 1e-9)
    parts = [f"{progress.done:,}/{progress.total:,} done"]
    done_here = progress.done - progress.already_done
    if done_here > 0 and progress.done < progress.total:
        remaining = (progress.total - progress.done) * elapsed / done_here
        parts.append(f"ETA {int(remaining) // 3600}:{int(remaining) % 3600 // 60:02d}:{int(remaining) % 60:02d}")
    if progress.scored:
        parts.append(f"{progress.passed:,}/{progress.scored:,} passed ({progress.passed / progress.scored:.0%})")
    errors = count(progress.errors, "error")
    parts.append(f"{errors} (last: {progress.last_error_type})" if progress.last_error_type else errors)
    parts.append(f"{progress.calls / elapsed:.1f} calls/s · {progress.input_tokens + progress.output_tokens:,} "
                 f"tokens · ${progress.cost_usd:.4f}")
    parts.extend(progress.batches.values())  # backends in batch mode: their batches' states
    return " · ".join(parts)
