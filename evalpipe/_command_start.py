"""The first moments of the `evalpipe` command, before its `main` takes the signals.

Importing the package and the CLI takes about a second; Python's own handler would turn a Ctrl-C
there into a KeyboardInterrupt traceback and exit code -2. Nothing has been written yet, so the
command just says so (as a JSON line with `--log-format json`) and exits 130. Only the command is
affected: a program importing evalpipe keeps its signal handlers.
"""

from __future__ import annotations

# The C module under `signal`: `signal` itself imports enum, which alone takes tens of milliseconds of
# the very window this guards.
import _signal  # type: ignore[import-not-found, unused-ignore]
import os
import sys
from collections.abc import Sequence
from types import FrameType

_said = [b"interrupted\n"]


def _quit(signum: int, frame: FrameType | None) -> None:
    os.write(2, _said[0])
    os._exit(130)  # nothing to flush or save yet


def log_format_asked(argv: Sequence[str]) -> str | None:
    """The last `--log-format` value on the command line, before it is parsed (None when not given)."""
    found = None
    for index, token in enumerate(argv):
        if token == "--":
            break
        if token == "--log-format" and index + 1 < len(argv):
            found = argv[index + 1]
        elif token.startswith("--log-format="):
            found = token.partition("=")[2]
    return found


def started_as_command() -> bool:
    """Whether this process is the `evalpipe` command (its console script, or `python -m evalpipe.cli`)."""
    argv = getattr(sys, "orig_argv", [])
    return argv[1:3] == ["-m", "evalpipe.cli"] or (len(argv) > 1 and os.path.basename(argv[1]) == "evalpipe")


def guard_command_start() -> None:
    """In the command only: SIGINT and SIGTERM exit 130 with one line until `main` installs its handler."""
    if not started_as_command():
        return
    if log_format_asked(sys.argv[1:]) == "json":
        _said[0] = b'{"event": "interrupted", "level": "warning"}\n'
    for signum in (_signal.SIGINT, _signal.SIGTERM):
        try:
            if _signal.getsignal(signum) in (_signal.default_int_handler, _signal.SIG_DFL):  # not if ignored (nohup)
                _signal.signal(signum, _quit)
        except ValueError:  # not the main thread
            return
