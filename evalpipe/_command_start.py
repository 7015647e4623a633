"""The first moments of the `evalpipe` command, before its `main` takes the signals.

Importing the package and the CLI takes about a second; Python's own handler would turn a Ctrl-C
there into a KeyboardInterrupt traceback and exit code -2. Nothing has been written yet, so the
command just says so and exits 130. Only the command is affected: a program importing evalpipe
keeps its signal handlers.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def _quit(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"interrupted\n")
    os._exit(130)  # nothing to flush or save yet


def started_as_command() -> bool:
    """Whether this process is the `evalpipe` command (its console script, or `python -m evalpipe.cli`)."""
    argv = getattr(sys, "orig_argv", [])
    return argv[1:3] == ["-m", "evalpipe.cli"] or (len(argv) > 1 and os.path.basename(argv[1]) == "evalpipe")


def guard_command_start() -> None:
    """In the command only: SIGINT and SIGTERM exit 130 with one line until `main` installs its handler."""
    if not started_as_command():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL):  # not when ignored (nohup)
                signal.signal(signum, _quit)
        except ValueError:  # not the main thread
            return
