"""How long `redact` takes per message, with a few or many registered secrets.

    python scripts/bench_redaction.py [--secrets 1,10,50] [--messages 20000]

Each message is a realistic error text or log line (~200 characters); a tenth of them quote a
registered key in some spelling. Prints microseconds per message for each number of secrets.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time

from evalpipe.redaction import Redactor


def messages(keys: list[str], count: int) -> list[str]:
    plain = ('openai: Rate limit reached for gpt-4o-mini on requests per min (RPM). Please try again in '
             '1.2s. [rate_limit_exceeded requests] (HTTP 429)')
    line = json.dumps({"event": "retrying", "provider": "mistral", "error": "ServerError", "status": 500,
                       "wait_s": 0.42, "attempt": 2, "message": "The server had an error while processing"})
    out = []
    for i in range(count):
        if i % 10 == 0:
            key = keys[i % len(keys)]
            out.append(f"openai: Incorrect API key provided: {key[:8]}{'*' * 20}{key[-4:]}. (HTTP 401)")
        elif i % 10 == 1:
            out.append(f"connection failed (LocalProtocolError: Illegal header value {repr(keys[0].encode())})")
        else:
            out.append(plain if i % 2 else line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secrets", default="1,10,50")
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    for count in (int(n) for n in args.secrets.split(",")):
        redactor = Redactor()
        keys = [f"sk-{secrets.token_urlsafe(36)}" for _ in range(count)]
        started = time.perf_counter()
        for key in keys:
            redactor.register(key)
        redactor.redact("")  # the rules are compiled on first use after a registration
        registering = time.perf_counter() - started
        texts = messages(keys, args.messages)
        started = time.perf_counter()
        for text in texts:
            redactor.redact(text)
        per_message = (time.perf_counter() - started) / len(texts) * 1e6
        print(f"{count:3d} secrets: {per_message:6.1f} µs per message; "
              f"registering and compiling: {registering * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
