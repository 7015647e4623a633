"""One process at a time per run directory: an OS lock on `run.lock`, held while the run goes on.

Two `evalpipe run --resume DIR` at once would each pay for every unfinished task and write its rows
twice. The lock is `flock` on a file in the run directory: the kernel releases it when the process
ends in any way (SIGKILL, a power cut of the process), so a lock left by a dead run never blocks a
resume and there is nothing to clean up. The file also says who holds it (pid, host, start time),
for the message the second process prints; its content is informative only, the flock decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from evalpipe.errors import ConfigError

LOCK_FILENAME = "run.lock"
_HOLDER_WAIT_S = 0.5  # how long to wait for a just-started holder to write who it is


class RunDirLockedError(ConfigError):
    """Another live process is running in this run directory."""


class RunLock:
    """The exclusive lock of one run directory; `acquire` it, `release` it (or let the process end)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILENAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise `RunDirLockedError` naming the holder; never waits for it."""
        # O_CLOEXEC: a backend's child process (llama-server) must not inherit, and so hold, the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirLockedError(f"{self.path.parent} is in use by another run ({self._holder()}); "
                                    "wait for it to finish or stop it, then resume") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
        with contextlib.suppress(OSError):  # a full disk: the lock holds, a second process's message is poorer
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        """Give the lock back (the file stays: removing it would race with a process opening it)."""
        if self._fd is not None:
            # Emptied first: the next holder's first instant, before it writes who it is, must not name us.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def _holder(self) -> str:
        deadline = time.monotonic() + _HOLDER_WAIT_S
        while True:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                return f"pid {data['pid']} on {data['host']}, started {data['started_at']}"
            except (OSError, ValueError, KeyError, TypeError):
                # The holder may have locked the file and not yet written to it.
                if time.monotonic() >= deadline:
                    return "a process that did not say who it is"
                time.sleep(0.02)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
