"""Secrets out of every text evalpipe shows or stores: keys, header values, in every spelling.

A secret rarely appears in a message the way it was registered. An error text may quote it
escaped (`repr`, JSON: `\\n`, `\\u00e9`, `\\\\`), URL-encoded (`%2B`, `+`), stripped of the
whitespace around it, HTML-escaped, inside base64 (an `Authorization: Basic` value), cut short
by a truncated error body, or masked by the vendor itself in a 401 message (OpenAI
`sk-WRQsP****xQBt`, DeepSeek `****fcc2`, xAI `na***ys`). Every spelling of every registered
secret is compiled into one regular expression (a trie, so the cost hardly grows with the number
of secrets), and masked echoes are looked for from their asterisks; the rules are rebuilt on the
first use after a new secret is registered. `redact` runs on every error message and log line:
7-11 µs for a 200-character message, with 1 or 50 secrets (`scripts/bench_redaction.py`).
"""

from __future__ import annotations

import base64
import html
import json
import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

REDACTED = "***"
MIN_SECRET_LENGTH = 4  # shorter values ("1", "yes") would blank out ordinary words
_MIN_DERIVED_LENGTH = 8  # spellings derived from the secret must be this long to be worth a rule
_MIN_MASKED_KEY_LENGTH = 8  # a vendor masks only real keys; a short header value has no masked echo
_TRUNCATED_HEAD = 12  # this many first characters of a long secret, even cut short, are redacted
_MIN_TRUNCATABLE_LENGTH = 20
_KEY_CHARS = r"[A-Za-z0-9_\-+/=%]"  # what may follow such a head and still be part of the key
_MASK_HEAD_CHARS = 12  # vendors show up to 8 first characters (OpenAI: `sk-WRQsP`)

# Key-shaped strings even if they were never registered (a key from an env var a user pasted in).
_KEY_PATTERN = re.compile(r"\b(sk|pk|rk|key|gsk|xai|AIza)[-_A-Za-z0-9]{16,}")


def spellings(secret: str) -> set[str]:
    """Every way `secret` can be written out in a message or log line (the secret included)."""
    found = {secret, secret.strip(), "".join(secret.split())}
    escaped = secret.encode("unicode_escape").decode("ascii")
    json_ascii = json.dumps(secret)[1:-1]
    found |= {
        json_ascii,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(json_ascii)[1:-1],  # a JSON string quoted again, as a log line renders a message
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
        repr(secret.encode("utf-8", "surrogatepass"))[2:-1],  # httpx/h11 quote header bytes
        escaped,
        escaped.replace("'", "\\'"),  # repr of a longer text picks its quotes by what else it holds
        escaped.replace('"', '\\"'),
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        html.escape(secret),  # an HTML report
    }
    found |= _base64_cores(secret)
    return {s for s in found if s == secret or len(s) >= _MIN_DERIVED_LENGTH}


def _base64_cores(secret: str) -> set[str]:
    """The part of base64 that is fixed by `secret` alone, whatever precedes it (`user:` in Basic auth).

    base64 turns 3 bytes into 4 characters, so the encoding of the secret depends on where it
    starts modulo 3; for each of the 3 offsets the characters that only the secret's bytes
    determine are the same in any encoded text that holds it at that offset."""
    data = secret.encode("utf-8", "surrogatepass")
    cores: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode("ascii")
        start = -(-offset // 3) * 4  # the first group made only of the secret's bytes
        end = (offset + len(data)) // 3 * 4  # the last complete group
        core = encoded[start:end]
        if len(core) >= 16:
            cores |= {core, core.replace("+", "-").replace("/", "_")}
    return cores


_Trie = dict[str, "_Trie"]


def _trie_pattern(words: Iterable[str]) -> str:
    """A regular expression matching any of `words`, longest first, as a trie of literal prefixes.

    One alternation of many literals makes `re` try each of them at every position; a trie tries
    one branch per distinct next character instead."""
    trie: _Trie = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # end of a word

    def build(node: _Trie) -> str:
        # A chain of single children is one literal: recursion happens only where words part, so
        # its depth is bounded by the number of words, not by their length (keys can be long).
        literal = []
        while len(node) == 1 and "" not in node:
            (char, node), = node.items()
            literal.append(re.escape(char))
        branches = [re.escape(char) + build(child) for char, child in node.items() if char]
        if not branches:
            return "".join(literal)
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # Branches are greedy and an end marker makes the rest optional: the longest spelling wins.
        return "".join(literal) + ("(?:" + body + ")?" if "" in node else body)

    return build(trie)


class _MaskedEchoes:
    """Vendor echoes of the keys: some first characters, 3+ asterisks, the last 2 to 4 characters.

    The search is anchored on the asterisks and the tails (one compiled trie, whatever the number
    of keys); only then is the text before the asterisks compared with the keys' first characters,
    so that only a prefix of that very key goes and a quote or bracket around the echo stays (a
    JSON log line stays JSON)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._heads: dict[str, set[str]] = {}  # tail -> the first characters of each key ending so
        for secret in {s.strip() for s in secrets}:  # a vendor echoes the key it parsed: stripped
            if len(secret) >= _MIN_MASKED_KEY_LENGTH:
                for n in (4, 3, 2):
                    self._heads.setdefault(secret[-n:], set()).add(secret[:_MASK_HEAD_CHARS])
        tails = _trie_pattern(sorted(self._heads)) if self._heads else "(?!)"
        self._pattern = re.compile(rf"\*{{3,}}(?P<tail>{tails})(?![A-Za-z0-9])")

    def redact(self, text: str) -> str:
        """`text` with each masked echo of a key, from the first of its characters shown, as `***`."""
        pieces, done = [], 0
        for match in self._pattern.finditer(text):
            start = match.start()
            before = text[max(done, start - _MASK_HEAD_CHARS):start]
            shown = max((n for n in range(len(before) + 1)
                         for head in self._heads[match["tail"]] if head.startswith(before[len(before) - n:])),
                        default=0)
            pieces += [text[done:start - shown], REDACTED]
            done = match.end()
        return "".join(pieces) + text[done:] if pieces else text


class Redactor:
    """A set of secrets and the compiled rules that remove them from text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        # One tuple, replaced whole, so `redact` reads it without the lock; None until compiled.
        # Compiling waits for the next `redact`: secrets registered together cost one compilation.
        self._rules: tuple[re.Pattern[str], _MaskedEchoes] | None = None

    def register(self, value: object) -> None:
        """Remember a secret: a string, bytes, a `SecretStr`, a mapping (its values), a list, or None."""
        found = {part for s in _strings(value) for part in (s, *_credentials(s))}
        new = {s for s in found if len(s) >= MIN_SECRET_LENGTH} - self._secrets
        if new:
            with self._lock:
                self._secrets |= new
                self._rules = None

    def _compiled(self) -> tuple[re.Pattern[str], _MaskedEchoes]:
        with self._lock:
            if self._rules is None:
                words = set().union(*(spellings(s) for s in self._secrets))
                pattern = _trie_pattern(sorted(words))
                # A message cut short (error bodies are truncated) may end inside a secret: the first
                # characters of a long spelling and whatever key-like characters follow go too.
                if heads := {w[:_TRUNCATED_HEAD] for w in words if len(w) >= _MIN_TRUNCATABLE_LENGTH}:
                    pattern += f"|(?:{_trie_pattern(sorted(heads))}){_KEY_CHARS}*"
                self._rules = (re.compile(pattern), _MaskedEchoes(self._secrets))
            return self._rules

    def redact(self, text: str) -> str:
        """`text` with every registered secret (in any spelling) and anything key-shaped as `***`."""
        if self._secrets:
            literal, masked = self._rules or self._compiled()
            text = literal.sub(REDACTED, text)
            if "***" in text:
                text = masked.redact(text)
        return _KEY_PATTERN.sub(REDACTED, text)


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes | bytearray):
        return [bytes(value).decode("latin-1")]  # how HTTP headers decode bytes
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    reveal = getattr(value, "get_secret_value", None)  # pydantic's SecretStr and look-alikes
    if callable(reveal):
        return _strings(reveal())
    if isinstance(value, Iterable):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


# Only these schemes: any two-word value ("evalpipe nightly") would otherwise make a word a secret.
_AUTH_SCHEME = re.compile(r"^\s*(?P<scheme>bearer|basic|token|bot|api-?key|key)\s+(?P<credential>\S+)\s*$",
                          re.IGNORECASE)


def _credentials(value: str) -> list[str]:
    """The credential inside an `Authorization`-style value, which a vendor may quote on its own:
    `Bearer <token>` gives the token, `Basic <base64>` also the password of `user:password`."""
    match = _AUTH_SCHEME.match(value)
    if match is None:
        return []
    credential = match["credential"]
    if match["scheme"].lower() != "basic":
        return [credential]
    try:
        decoded = base64.b64decode(credential, validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return [credential]
    return [credential, decoded, decoded.partition(":")[2]]


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value (None when it can), never quoting it.

    httpx encodes header values as ASCII and refuses line breaks; an API key with a trailing
    newline (read from a file) would otherwise fail on every attempt, quoted in the error."""
    if not value:
        return "is empty"
    if value != value.strip():
        return "has whitespace at its start or end (a trailing newline from a file?)"
    if not value.isascii():
        return "has a non-ASCII character (HTTP headers carry ASCII only)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "has a control character (a line break or a tab?)"
    return None


_DEFAULT = Redactor()


def register_secret(value: object) -> None:
    """Remember a secret so that `redact` removes it, in every spelling, from any text.

    Accepts any value (None, str, bytes, SecretStr, a mapping of header values, a list) and may be
    called again with the same value at no cost."""
    _DEFAULT.register(value)


def redact(text: str) -> str:
    """`text` with every registered secret, in every spelling, and anything key-shaped as `***`."""
    return _DEFAULT.redact(text)


__all__ = ["REDACTED", "Redactor", "header_value_problem", "redact", "register_secret", "spellings"]
