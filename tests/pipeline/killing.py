"""A child Python process killed with SIGKILL at a moment its own output chooses (crash-safety tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable


def run_until_killed(script: str, *args: str, stop: Callable[[str], bool]) -> list[str]:
    """Run `script` with `args`, read its output lines until `stop(line)` says so, SIGKILL it; the lines read."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line.strip())
            if stop(lines[-1]):
                break
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    return lines
