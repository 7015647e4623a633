"""SIGINT and SIGTERM for a process that runs jobs: counted from start to exit, passed to the run going on.

A signal can come at any moment: before a run starts (nothing to save: it raises KeyboardInterrupt),
while it runs (the runner stops dispatching, a second signal cancels the calls in flight), or after
it (while the final table prints: it is only counted, so the table and the resume line print whole).
One handler stays installed for all three, so there is no moment where Python's default handler
(a traceback) or the event loop's (restored to the default when it lets go) takes a signal.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The process's SIGINT/SIGTERM handler (main thread): counts signals and tells the listening run."""

    def __init__(self) -> None:
        self.count = 0
        self.signum: int | None = None  # the last signal received
        self._listener: Callable[[int], object] | None = None
        self._raises = True  # until a run has listened
        self._previous: dict[int, Any] = {}

    def install(self, *, raise_before_run: bool = True) -> Interrupts:
        """Take SIGINT and SIGTERM; before a run listens, a signal raises KeyboardInterrupt if `raise_before_run`."""
        self._raises = raise_before_run
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        """Give the signals back to the handlers that had them before `install`."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @contextmanager
    def listen(self, listener: Callable[[int], object]) -> Iterator[None]:
        """While the block runs, each signal calls `listener(signum)` (inside the signal handler: it must
        only schedule work); afterwards signals are only counted, never raised."""
        self._raises = False
        self._listener = listener
        try:
            yield
        finally:
            self._listener = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.signum = signum
        if self._listener is not None:
            self._listener(signum)
        elif self._raises:
            raise KeyboardInterrupt


__all__ = ["SIGNALS", "Interrupts"]
