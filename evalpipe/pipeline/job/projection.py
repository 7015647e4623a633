"""What a task will spend before it runs: its answer, its chain's steps and its scorers' model calls
(judges, embeddings, self-explanations), each on the backend or judge that makes it.

The runner's budget guard and `evalpipe plan` use this one projection, so the plan shows what the
guard counts. Input is the prompt as the backend receives it: every message the task sends (system
prompt included; for a dialogue, each turn's transcript up to that turn), plus the chat format's
framing, counted by a `TokenCounter` (by default `estimated_prompt_tokens`, from the backend's own
figures: `Provider.letters_per_token`, `digits_per_token`, `tokens_per_message`, ...), plus what
the vendors count besides the text: the tools offered (their definitions serialized, as the request
carries them, plus `Provider.tool_prompt_tokens`) and each image by the vendor's documented rule
(`Provider.image_rules`, from the image's header). Output is taken at its ceiling: `max_tokens`,
else `DEFAULT_OUTPUT_TOKENS`, so the projection of a call is an upper bound wherever `max_tokens` is set.

A task with a tool loop (`max_steps` above 1) is projected at its worst case, all `max_steps` calls:
step k's prompt is the first prompt grown by the k earlier steps' answers (each at its output ceiling)
and their tool results (`TOOL_RESULT_TOKENS` each, an estimate). `calls(..., steps=1)` gives the
expected one-call case beside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from evalpipe.backends.base import Provider
from evalpipe.backends.registry import provider_class
from evalpipe.pipeline.job.batch_mode import price_factor
from evalpipe.pipeline.job.spec import BackendSpec, JobSpec
from evalpipe.scoring.calls import ANSWERING
from evalpipe.scoring.judge import judge_prompt
from evalpipe.scoring.registry import model_backend
from evalpipe.scoring.verdict import Scale
from evalpipe.types import ChatMessage, Tool

# Output tokens assumed for a call whose parameter set has no `max_tokens`.
DEFAULT_OUTPUT_TOKENS = 256
# A tool result sent back in a tool loop, as a projection assumes it: a short JSON value or sentence.
# An estimate, not a bound: a tool may return up to `tool_loop.MAX_RESULT_CHARS` characters.
TOOL_RESULT_TOKENS = 200
# A scorer's reply when it sets no `max_tokens` (the scorers' own default).
SCORER_OUTPUT_TOKENS = 512
_EMBEDDING_SCORERS = frozenset({"semantic_relevance"})  # their calls embed; nothing comes out
# A verdict scorer's request is projected as a judge's: an evaluator's system prompt, then its text
# options (a rubric) with the question, the answer (counted at its ceiling) and the reply format.
_SCORER_SYSTEM = "You are a careful, impartial evaluator. You judge strictly by the rubric you are given."
_OPTIONS_NOT_SENT = frozenset({"backend", "name"})

# (backend, messages as sent, completion mode) -> input tokens.
TokenCounter = Callable[[BackendSpec, Sequence[ChatMessage], bool], int]


def estimated_prompt_tokens(backend: BackendSpec, messages: Sequence[ChatMessage], completion: bool) -> int:
    """Input tokens of a call without the backend's tokenizer: its text (`text_tokens`) plus its chat
    format's framing (none for a completion prompt)."""
    cls = provider_class(backend.backend)
    text = sum(text_tokens(message.content, cls.letters_per_token, cls.digits_per_token)
               + sum(text_tokens(call.name + call.arguments_json, cls.letters_per_token, cls.digits_per_token)
                     for call in message.tool_calls)
               for message in messages)
    if completion:
        return text
    system = cls.tokens_per_message if cls.tokens_per_system_message is None else cls.tokens_per_system_message
    return text + cls.tokens_per_request + sum(system if message.role == "system" else cls.tokens_per_message
                                               for message in messages)


def tool_definitions_text(tools: Sequence[Tool]) -> str:
    """The tools as a request declares them: each one's name, description and JSON Schema, as compact JSON."""
    return json.dumps([{"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools],
                      ensure_ascii=False, separators=(",", ":"))


def tool_tokens(cls: type[Provider], tools: Sequence[Tool]) -> int:
    """Input tokens of offering `tools` in a call: their definitions as text, plus the vendor's own tool prompt.

    Vendors render the definitions into their own prompt format (OpenAI a typed namespace, Anthropic a
    system prompt of its own), so this is an estimate of the same size, not their exact count."""
    if not tools:
        return 0
    definitions = json_tokens(tool_definitions_text(tools), cls.letters_per_token, cls.digits_per_token)
    return definitions + cls.tool_prompt_tokens


# JSON's runs of quotes, colons, commas and braces are merged tokens of BPE and SentencePiece vocabularies
# (`":"`, `{"`, `"},"`): a run of punctuation is a token per JSON_PUNCTUATION_PER_TOKEN characters. On the
# shipped tools and others, 2-28 % above Gemma's own count, where one token per character is 70-102 % above
# (scripts/tool_tokens.py).
JSON_PUNCTUATION_PER_TOKEN = 4
_JSON_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|\s+|[^A-Za-z0-9\s]+")


def json_tokens(text: str, letters_per_token: int, digits_per_token: int) -> int:
    """Tokens of JSON text: words and numbers as `text_tokens` counts them, punctuation by runs."""
    tokens = 0
    for piece in _JSON_PIECES.findall(text):
        first = piece[0]
        if first.isascii() and first.isalpha():
            tokens += -(-len(piece) // letters_per_token)
        elif first.isdigit():
            tokens += -(-len(piece) // digits_per_token)
        elif first.isspace():
            tokens += piece.count("\n") + (" " in piece)
        else:
            tokens += -(-len(piece) // JSON_PUNCTUATION_PER_TOKEN)
    return tokens


def image_tokens(cls: type[Provider], model: str, messages: Sequence[ChatMessage]) -> int:
    """Input tokens of the images in `messages` on `model`, by the vendor's rule (`Provider.image_rules`)."""
    return sum(cls.image_rules.image_tokens(image, model) for message in messages for image in message.images)


# Words of ASCII letters, numbers, runs of whitespace, and any other single character.
_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|\s+|.", re.DOTALL)


def text_tokens(text: str, letters_per_token: int, digits_per_token: int) -> int:
    """Tokens of `text` as BPE and SentencePiece tokenizers cut prose: a word per `letters_per_token`
    letters (short words are one token), a number per `digits_per_token` digits, every other character
    one (punctuation, symbols, letters outside ASCII), a line break one, and a space one where it
    cannot join the word after it. Within 6 % of Gemma's own count on every shipped job's prompts,
    where a flat characters-per-token rule is 20-40 % off (digits and few-shot lines against prose)."""
    pieces = _PIECES.findall(text)
    tokens = 0
    for index, piece in enumerate(pieces):
        first = piece[0]
        if first.isascii() and first.isalpha():
            tokens += -(-len(piece) // letters_per_token)
        elif first.isdigit():
            tokens += -(-len(piece) // digits_per_token)
        elif first.isspace():
            following = pieces[index + 1][0] if index + 1 < len(pieces) else ""
            tokens += piece.count("\n") + (" " in piece and not (following.isascii() and following.isalpha()))
        else:
            tokens += 1
    return tokens


def turn_prompts(messages: Sequence[ChatMessage], dialogue: bool) -> list[Sequence[ChatMessage]]:
    """The messages each call of a task sends: all of them, or for a dialogue one prefix per user turn
    (the transcript up to that turn's user message)."""
    if not dialogue:
        return [messages]
    return [messages[:position + 1] for position, message in enumerate(messages) if message.role == "user"]


@dataclass(frozen=True, slots=True)
class CallProjection:
    """Projected calls to one backend or judge, with their input and output tokens."""

    backend_id: str
    calls: int
    input_tokens: int  # everything sent, tool definitions and images included
    output_tokens: int
    tool_tokens: int = 0  # of the input: the tools' definitions, in every call that offers them
    image_tokens: int = 0  # of the input: the images, in every call that sends them


@dataclass(frozen=True, slots=True)
class _ScorerCall:
    target: str  # a backend or judge id, or ANSWERING
    output_tokens: int
    embeds: bool
    instructions: str  # what the scorer sends besides the question and the answer
    scale: Scale

    def request(self, question: str) -> list[ChatMessage]:
        """The scorer's request for `question`, without the answer."""
        if self.embeds:
            return [ChatMessage.user(question)]
        return [ChatMessage.system(_SCORER_SYSTEM),
                ChatMessage.user(judge_prompt(self.instructions, question, "", self.scale))]


class Projector:
    """Projects the calls and spend of a job's tasks."""

    def __init__(self, spec: JobSpec, count: TokenCounter | None = None, tools: Sequence[Tool] = ()) -> None:
        self.count: TokenCounter = count or estimated_prompt_tokens
        self.tools = tuple(tools)  # offered in every answering call of a chat job
        self.max_steps = spec.max_steps
        self.backends = {b.id: b for b in (*spec.backends, *spec.judges)}
        self.completion = spec.prompt.mode == "completion"
        self.dialogue = spec.prompt.dialogue is not None
        self.chain = [(step.backend, step.max_tokens or DEFAULT_OUTPUT_TOKENS) for step in spec.prompt.chain or ()]
        self.scorers: list[_ScorerCall] = []
        for scorer in spec.scorers:
            options = dict(scorer.model_extra or {})
            target = model_backend(scorer.type, options)
            if isinstance(target, str):
                embeds = scorer.type in _EMBEDDING_SCORERS
                output = 0 if embeds else int(options.get("max_tokens") or SCORER_OUTPUT_TOKENS)
                text = "\n".join(v for k, v in options.items() if isinstance(v, str) and k not in _OPTIONS_NOT_SENT)
                try:
                    scale = Scale.of(options.get("scale", (1, 10)))
                except ValueError:  # reported when the job is loaded; the projection needs only its text
                    scale = Scale.of((1, 10))
                self.scorers.append(_ScorerCall(target, output, embeds, text, scale))

    def calls(self, backend_id: str, messages: Sequence[ChatMessage], answer_tokens: int,
              steps: int | None = None) -> list[CallProjection]:
        """Every call one task on `backend_id` makes: its answer (or chain steps), then its scorers'.

        A tool loop's answer is `steps` calls (default: `max_steps`, the worst case)."""
        backend = self.backends[backend_id]
        if self.completion:  # only the user text is sent, as a plain prompt
            messages = [message for message in messages if message.role == "user"][-1:]
        cls = provider_class(backend.backend)
        model = backend.model or cls.default_model
        offered = 0 if self.completion or self.chain else tool_tokens(cls, self.tools)
        steps = self.max_steps if steps is None else steps
        projected: list[CallProjection] = []
        for sent in turn_prompts(messages, self.dialogue):
            pictures = image_tokens(cls, model, sent)
            prompt = self.count(backend, sent, self.completion) + pictures
            if not self.chain:
                projected.append(self._answer(cls, backend_id, prompt + offered, answer_tokens, steps,
                                              offered, pictures))
            for step_backend, output in self.chain:
                # A step's own template is rendered with earlier outputs only at run time.
                projected.append(CallProjection(step_backend or backend_id, 1, prompt + answer_tokens, output))
            question = next((m.content for m in reversed(sent) if m.role == "user"), "")
            for scorer in self.scorers:
                target = backend_id if scorer.target == ANSWERING else scorer.target
                request = self.count(self.backends[target], scorer.request(question), scorer.embeds)
                projected.append(CallProjection(target, 1, request + answer_tokens, scorer.output_tokens))
        return projected

    @staticmethod
    def _answer(cls: type[Provider], backend_id: str, prompt: int, answer_tokens: int, steps: int, offered: int,
                pictures: int) -> CallProjection:
        """The answering calls: one, or a tool loop's `steps`, each prompt grown by the earlier steps'
        answers (at their ceiling) and tool results, each a message of its own."""
        growth = answer_tokens + TOOL_RESULT_TOKENS + 2 * cls.tokens_per_message
        input_tokens = steps * prompt + growth * steps * (steps - 1) // 2
        return CallProjection(backend_id, steps, input_tokens, steps * answer_tokens, steps * offered, steps * pictures)

    def cost(self, calls: Sequence[CallProjection], *, live: bool = False) -> float:
        """What `calls` cost at their backends' prices (USD): a batch backend's at its batch discount, unless `live`."""
        total = 0.0
        for call in calls:
            spec = self.backends.get(call.backend_id)
            if spec is not None:
                factor = 1.0 if live else price_factor(spec)
                total += factor * (call.input_tokens * spec.price_input_per_1m
                                   + call.output_tokens * spec.price_output_per_1m)
        return total / 1_000_000


__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "TOOL_RESULT_TOKENS",
    "CallProjection",
    "Projector",
    "TokenCounter",
    "estimated_prompt_tokens",
    "image_tokens",
    "json_tokens",
    "text_tokens",
    "tool_definitions_text",
    "tool_tokens",
    "turn_prompts",
]
