"""`python -m evalpipe.testing`: run the fake provider server in the foreground.

The first line printed is the server's root URL; the lines after it give each vendor's base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import Callable

from evalpipe.testing._server import VENDORS, FakeServer
from evalpipe.testing._state import Fault


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="python -m evalpipe.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each response starts")
    parser.add_argument("--stream-delay", type=float, default=0.0, help="seconds between stream events")
    parser.add_argument("--fault", choices=[f.value for f in Fault], help="fail every inference call this way")
    parser.add_argument("--rpm", type=int, help="requests per window allowed per API key")
    parser.add_argument("--tpm", type=int, help="tokens per window allowed per API key")
    parser.add_argument("--window", type=float, default=60.0, help="rate-limit window in seconds (default 60)")
    parser.add_argument("--retry-after", type=float, default=1.0, help="retry hint of rate-limit faults, seconds")
    parser.add_argument("--batch-delay", type=float, default=0.0,
                        help="seconds a batch job takes from creation to its end (default 0)")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Start the server, print its URLs, serve until interrupted."""
    server = FakeServer(
        host=args.host,
        port=args.port,
        latency_s=args.latency,
        stream_delay_s=args.stream_delay,
        fault=args.fault,
        rpm=args.rpm,
        tpm=args.tpm,
        window_s=args.window,
        retry_after_s=args.retry_after,
        batch_delay_s=args.batch_delay,
    )
    async with server:
        print(server.url, flush=True)
        for vendor in VENDORS:
            print(f"{vendor} {server.url_for(vendor)}", flush=True)
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve_forever()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when it is installed (a fifth less CPU per call), else asyncio's."""
    try:
        uvloop = importlib.import_module("uvloop")  # optional, not a dependency: typed or not, it may be absent
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
