"""Logged exceptions show a plain traceback, never the local variables of its frames (rows, prompts, keys)."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from evalpipe import logs


def fail_with_a_local() -> None:
    prompt = "a prompt that must stay private"  # noqa: F841 - the local a rich traceback would print
    raise ValueError("boom")


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_logged_exception_prints_its_traceback_without_local_variables(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = structlog.get_config()
    logs.configure(log_format)
    try:
        try:
            fail_with_a_local()
        except ValueError:
            structlog.get_logger("test").exception("task failed unexpectedly")
        err = capsys.readouterr().err
    finally:
        structlog.configure(**saved)

    assert "ValueError: boom" in err and "fail_with_a_local" in err
    assert "a prompt that must stay private" not in err
    if log_format == "json":
        assert "Traceback" in json.loads(err)["exception"]


def test_with_json_standard_logging_is_json_lines_and_back_without(capsys: pytest.CaptureFixture[str]) -> None:
    saved = structlog.get_config()
    logs.configure("json")
    try:
        logging.getLogger("uvicorn.error").warning("address in use: %s", 8000)  # the web server's way
        line = capsys.readouterr().err
        assert json.loads(line) | {"timestamp": None} == {
            "event": "address in use: 8000", "logger": "uvicorn.error", "level": "warning", "timestamp": None}
        logs.reset()
        logging.getLogger("uvicorn.error").warning("address in use")
        assert "{" not in capsys.readouterr().err
    finally:
        structlog.configure(**saved)
