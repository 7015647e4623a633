"""Tool definitions: the plan's token estimate against the bundled Gemma model's own tokenizer.

    PYTHONPATH=. python scripts/tool_tokens.py

Counts each tool set's definitions as a request carries them (compact JSON of name, description and
parameters) with llama-server's /tokenize, and prints the estimate `evalpipe plan` uses beside it
(`projection.json_tokens`, and the prose rule `text_tokens` it replaced for JSON). Gemma's
SentencePiece vocabulary is not OpenAI's or Anthropic's; like theirs, it merges JSON's punctuation.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from evalpipe.backends.llama_server import shared_server, stop_shared_servers
from evalpipe.backends.registry import LLMBackend, provider_class
from evalpipe.pipeline.job.projection import json_tokens, text_tokens, tool_definitions_text
from evalpipe.pipeline.job.tools import tool_from_function
from evalpipe.types import Tool

ROOT = Path(__file__).resolve().parents[1]


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


ORDERS = Tool("search_orders", "Search the customer's orders by status, date range and free text; returns at most 20.",
              {"type": "object", "required": ["status"], "properties": {
                  "status": {"type": "string", "enum": ["open", "shipped", "delivered", "cancelled", "returned"]},
                  "from_date": {"type": "string", "format": "date", "description": "ISO 8601 date, inclusive"},
                  "to_date": {"type": "string", "format": "date"},
                  "text": {"type": "string", "description": "Words to look for in item names"},
                  "limit": {"type": "integer", "minimum": 1, "maximum": 20}}})


def tool_sets() -> list[tuple[str, list[Tool]]]:
    shipped = [Tool.from_dict(t) for t in yaml.safe_load((ROOT / "jobs" / "tools.yaml").read_text())["tools"]]
    return [*((f"tools.yaml: {t.name}", [t]) for t in shipped), ("tools.yaml: all three", shipped),
            ("add (from a Python function)", [tool_from_function(add)]), ("search_orders", [ORDERS])]


def main() -> None:
    openai = provider_class(LLMBackend.OPENAI)
    server = shared_server()
    print("| tools | characters | Gemma tokens | estimate | error | one token per character of punctuation |")
    print("|---|---|---|---|---|---|")
    try:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"},
                          timeout=30) as client:
            for name, tools in tool_sets():
                text = tool_definitions_text(tools)
                counted = len(client.post("/tokenize", json={"content": text}).json()["tokens"])
                estimate = json_tokens(text, openai.letters_per_token, openai.digits_per_token)
                prose = text_tokens(text, openai.letters_per_token, openai.digits_per_token)
                print(f"| {name} | {len(text)} | {counted} | {estimate} | {estimate / counted - 1:+.0%} | "
                      f"{prose} ({prose / counted - 1:+.0%}) |")
    finally:
        stop_shared_servers()


if __name__ == "__main__":
    main()
