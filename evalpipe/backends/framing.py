"""Incremental decoders for streamed bodies: server-sent events and newline-delimited JSON.

Both are pure and buffer across network chunks, which may hold several events or half of one
(even half of a UTF-8 character).
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol


class StreamDecoder(Protocol):
    """Turns body chunks into protocol events; `flush` gives those completed by the body's end."""

    def feed(self, chunk: bytes) -> list[Any]: ...

    def flush(self) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: its `event:` name (default "message") and joined `data:` lines."""

    event: str
    data: str


# Only these end a line: str.splitlines would also split on U+2028 and friends inside JSON.
_NEWLINE = re.compile(r"\r\n|\r|\n")


class _LineSplitter:
    """Turns byte chunks into complete text lines; a line may end in \\n, \\r\\n or \\r."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, chunk: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(chunk)
        if "\r" not in text:  # the common case, several times faster than the regex below
            *lines, self._pending = text.split("\n")
            return lines
        lines = []
        start = 0
        for match in _NEWLINE.finditer(text):
            # A final "\r" may be the first half of "\r\n": keep it until the next chunk decides.
            if match.group() == "\r" and match.end() == len(text):
                break
            lines.append(text[start : match.start()])
            start = match.end()
        self._pending = text[start:]
        return lines

    def flush(self) -> tuple[list[str], str]:
        """At the end of the body: (the lines still held back, the unterminated rest)."""
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if text.endswith("\r"):  # no "\n" can follow any more: the "\r" ended the line
            return [text[:-1]], ""
        return [], text


class SSEDecoder:
    """Decodes a `text/event-stream` body; comment lines (keep-alives) are dropped.

    As the SSE specification says, an event cut off by the end of the body (no blank line after
    it) is discarded, so a truncated stream shows up as a missing end event, not as bad JSON.
    """

    def __init__(self) -> None:
        self._lines = _LineSplitter()
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        return self._consume(self._lines.feed(chunk))

    def flush(self) -> list[SSEEvent]:
        """Events completed by the end of the body (a last blank line written as a lone \\r)."""
        lines, _unterminated = self._lines.flush()
        return self._consume(lines)

    def _consume(self, lines: list[str]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._event = value
        return events


class NDJSONDecoder:
    """Decodes newline-delimited JSON; blank lines are ignored, a bad line raises ValueError."""

    def __init__(self) -> None:
        self._lines = _LineSplitter()

    def feed(self, chunk: bytes) -> list[Any]:
        return [json.loads(line) for line in self._lines.feed(chunk) if line.strip()]

    def flush(self) -> list[Any]:
        """Objects still buffered at the end of the body; the last line needs no newline."""
        lines, rest = self._lines.flush()
        return [json.loads(line) for line in [*lines, rest] if line.strip()]


class DataLineDecoder:
    """The payload of every `data:` line, blank lines between them or not (Phind's body).

    The SSE decoder does not fit there: it would join consecutive `data:` lines into one event
    and drop a last line with no blank line after it, and Phind sends both."""

    def __init__(self) -> None:
        self._lines = _LineSplitter()

    def feed(self, chunk: bytes) -> list[str]:
        return _data_payloads(self._lines.feed(chunk))

    def flush(self) -> list[str]:
        # The body's end is the stream's end, so a last line without a newline is complete.
        lines, rest = self._lines.flush()
        return _data_payloads([*lines, rest])


def _data_payloads(lines: list[str]) -> list[str]:
    return [line.removeprefix("data:").removeprefix(" ") for line in lines if line.startswith("data:")]
