"""Logged exceptions show a plain traceback, never the local variables of its frames (rows, prompts, keys)."""

from __future__ import annotations

import json

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
