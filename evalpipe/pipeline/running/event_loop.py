"""The event loop `evalpipe run` runs a job on: uvloop's when it is installed (`pip install
evalpipe[fast]`), else asyncio's own.

uvloop's loop schedules tasks and writes sockets in C, and those are most of what is left per task once
the pipeline's own work is cut down. `python scripts/bench_runner.py --only overhead --event-loops
asyncio,uvloop` compares them. `EVALPIPE_UVLOOP=0` keeps asyncio's loop (to compare, or to rule the loop
out when something misbehaves).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

UVLOOP_VARIABLE = "EVALPIPE_UVLOOP"
_OFF = frozenset({"0", "false", "no", "off"})


def uvloop_available() -> bool:
    """Whether uvloop can be imported here (it is not built for Windows)."""
    return importlib.util.find_spec("uvloop") is not None


def loop_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """anyio's `backend_options` for a run: uvloop's loop when installed, unless `EVALPIPE_UVLOOP` turns it off."""
    environ = os.environ if environ is None else environ
    if environ.get(UVLOOP_VARIABLE, "").strip().lower() in _OFF or not uvloop_available():
        return {}
    return {"use_uvloop": True}


def loop_name(options: Mapping[str, Any]) -> str:
    """The loop `options` ask for, as people call it."""
    return "uvloop" if options.get("use_uvloop") else "asyncio"


def running_loop_name() -> str:
    """The loop this coroutine runs on: "uvloop" or "asyncio"."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


__all__ = ["UVLOOP_VARIABLE", "loop_name", "loop_options", "running_loop_name", "uvloop_available"]
