"""Logging: structlog events to stderr for people (or JSON for machines), and each run's own log file.

A run directory keeps `run.log.jsonl`: every event of level info and above while the run is going,
one JSON object per line, whatever stderr shows. The file gets its events from a processor early in
the chain, so it sees what `--verbose` would show even when stderr only shows warnings.

With `--log-format json` every line on stderr is one JSON object: the command's own lines (`say`: warnings,
errors, the progress line, skipped backends), Python warnings and the standard library's logging (the
web server's) go through the same structlog chain as the events.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import structlog

from evalpipe.redaction import redact

RUN_LOG_FILENAME = "run.log.jsonl"

_run_logs: list[IO[str]] = []  # the log files of the runs going on in this process
_SAID = "_said"  # marks a line the command says (`say`): shown whatever the level, not a run's event
_SHOW_WARNING = warnings.showwarning
_state = {"format": "console"}


def _to_run_logs(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _run_logs and not event.get(_SAID) and logging.getLevelName(method.upper()) >= logging.INFO:
        line = redact(json.dumps(event, default=str, ensure_ascii=False)) + "\n"
        for file in list(_run_logs):
            try:
                file.write(line)
            except OSError:
                # A full disk: the run's own writes say so once; logging must not raise into the code
                # that logs (each call would become a traceback), so this file stops being written.
                _run_logs.remove(file)
    return event


def _below(level: int) -> structlog.typing.Processor:
    def drop(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event.pop(_SAID, False):
            return event
        if logging.getLevelName(method.upper()) < level:
            raise structlog.DropEvent
        return event

    return drop


def _redacted(logger: Any, method: str, rendered: Any) -> Any:
    """The rendered line without secrets: redacted after rendering, so escaped spellings are caught too."""
    return redact(rendered) if isinstance(rendered, str) else rendered


def configure(log_format: str = "console", verbose: bool = False) -> None:
    """stderr shows warnings (everything with `verbose`), as text or JSON lines; run logs get info and up."""
    # Tracebacks as plain text, never rich's with `show_locals`: structlog's console default prints every
    # local variable of every frame, and those hold rows, prompts and configuration.
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    # JSON lines carry the traceback as text too (`dict_tracebacks` would add the locals).
    exceptions: list[structlog.typing.Processor] = [structlog.processors.format_exc_info] if log_format == "json" \
        else []
    stderr_level = logging.DEBUG if verbose else logging.WARNING
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    _to_run_logs, _below(stderr_level), *exceptions, renderer, _redacted],
        wrapper_class=structlog.make_filtering_bound_logger(min(stderr_level, logging.INFO)),
        # `sys.stderr` looked up per logger, not bound now: a test harness or a daemon may replace it later.
        logger_factory=lambda *args: structlog.PrintLogger(sys.stderr),
    )
    _state["format"] = log_format
    _route_foreign_lines(log_format == "json")


def json_lines() -> bool:
    """Whether stderr takes JSON lines only (`--log-format json`)."""
    return _state["format"] == "json"


def say(text: str, level: str = "info", **fields: Any) -> None:
    """A line the command says on stderr whatever the verbosity (a JSON object with `--log-format json`)."""
    structlog.get_logger("evalpipe.cli").log(logging.getLevelName(level.upper()), text, **fields, **{_SAID: True})


class _JSONHandler(logging.Handler):
    """Records of the standard library's logging (uvicorn's, a library's) as JSON lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **fields, **{_SAID: True})
        except Exception:  # logging must not raise into the code that logs
            self.handleError(record)


_handler = _JSONHandler()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: IO[str] | None = None, line: str | None = None) -> None:
    structlog.get_logger("evalpipe.warnings").warning(str(message), category=category.__name__,
                                                      location=f"{filename}:{lineno}")


def reset() -> None:
    """Python warnings and standard logging back as they were, and `json_lines()` false (structlog's own
    configuration is left as it is)."""
    _state["format"] = "console"
    _route_foreign_lines(False)


def _route_foreign_lines(as_json: bool) -> None:
    """Python warnings and standard logging to stderr as JSON lines (`as_json`), or back as they were."""
    root = logging.getLogger()
    root.removeHandler(_handler)
    warnings.showwarning = _show_warning if as_json else _SHOW_WARNING
    if as_json:
        root.addHandler(_handler)  # in place of logging's last-resort handler, which writes plain text


def run_logs_enabled() -> bool:
    """Whether the logging set up by `configure` is in place (a program may have set up its own)."""
    return _to_run_logs in structlog.get_config()["processors"]


@contextmanager
def run_log(run_dir: Path) -> Iterator[Path | None]:
    """While a run goes on: its events are appended to `run_dir/run.log.jsonl` (None when not enabled)."""
    if not run_logs_enabled():
        yield None
        return
    path = run_dir / RUN_LOG_FILENAME
    try:
        file = path.open("a", encoding="utf-8", buffering=1)  # line-buffered: readable during the run
    except OSError:
        yield None  # a full disk: the run goes on (and its own writes report the disk) without its log
        return
    _run_logs.append(file)
    try:
        yield path
    finally:
        if file in _run_logs:
            _run_logs.remove(file)
        with contextlib.suppress(OSError):  # the last line could not be flushed: the run reports the full disk
            file.close()
