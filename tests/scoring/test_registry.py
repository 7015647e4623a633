"""Building scorers by name: model-calling scorers are checked against the job's backends at load time."""

from __future__ import annotations

from typing import Any

import pytest

from evalpipe import ConfigError
from evalpipe.scoring.calls import DirectCalls
from evalpipe.scoring.judge import LLMJudge
from evalpipe.scoring.registry import BUILT_IN, CALLS_MODELS, build_scorer
from evalpipe.scoring.self_explain import SelfExplain
from evalpipe.scoring.semantic import SemanticRelevance

VALID: dict[str, dict[str, Any]] = {
    "bleu": {"expected": "x"},
    "choice": {"expected": "{{ answer }}"},
    "edit_similarity": {"expected": "x"},
    "field": {"field": "latency_s", "max": 2.0},
    "is_refusal": {},
    "normalized_match": {"expected": "x"},
    "numeric": {"expected": "{{ answer }}", "abs_tol": 0.5},
    "rouge_l": {"expected": ["x", "y"]},
    "token_f1": {"expected": "x"},
    "tool_call": {"expected": "{{ expected_calls }}", "match": "subset"},
    "tool_call_valid": {},
    "trajectory": {"expected": ["search", "fetch"], "order": "in_order"},
    "contains": {"values": ["x"]},
    "exact_match": {"expected": "x"},
    "json_schema": {"schema": {"type": "object"}},
    "json_valid": {},
    "length": {"max": 10},
    "regex": {"pattern": "x"},
    "toxicity": {},
    "llm_judge": {"backend": "judge", "rubric": "Is it right? Expected: {{ expected }}", "scale": [0, 1]},
    "self_explain": {},
    "semantic_relevance": {"reference": "{{ expected }}"},
    "tone": {"backend": "judge", "tone": "formal"},
    "toxicity_judge": {"backend": "judge"},
}


def test_every_built_in_builds_with_its_name(calls: DirectCalls) -> None:
    assert set(VALID) == set(BUILT_IN)
    with_local = DirectCalls({**calls.providers, "local": calls.providers["judge"]})
    for kind, options in VALID.items():
        scorer = build_scorer(kind, f"my_{kind}", options, calls=with_local)
        assert scorer.name == f"my_{kind}"
    assert isinstance(build_scorer("self_explain", None, {}, calls=with_local), SelfExplain)
    judge = build_scorer("llm_judge", None, VALID["llm_judge"], calls=with_local)
    assert isinstance(judge, LLMJudge) and judge.scale.high == 1.0


@pytest.mark.parametrize("kind", sorted(CALLS_MODELS))
def test_model_scorers_without_calls_fail_at_load_naming_scorer_and_backend(kind: str) -> None:
    backend = VALID[kind].get("backend") or {"semantic_relevance": "local", "self_explain": "@answering"}[kind]
    with pytest.raises(ConfigError, match=f"scorer 'graded' \\({kind}\\) calls backend '{backend}', but no model"):
        build_scorer(kind, "graded", VALID[kind])


def test_a_backend_the_job_does_not_define(calls: DirectCalls) -> None:
    with pytest.raises(ConfigError, match=r"scorer 'judge_it' \(llm_judge\) calls backend 'gpt5', which the job"):
        build_scorer("llm_judge", "judge_it", {**VALID["llm_judge"], "backend": "gpt5"}, calls=calls)
    # semantic_relevance defaults to the local backend, which these calls lack.
    with pytest.raises(ConfigError, match="calls backend 'local', which the job does not define"):
        build_scorer("semantic_relevance", None, {}, calls=calls)
    assert isinstance(build_scorer("semantic_relevance", None, {"backend": "judge"}, calls=calls), SemanticRelevance)


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("llm_judge", {"rubric": "r"}, r"scorer 'llm_judge' \(llm_judge\) needs the option `backend`"),
    ("tone", {}, r"scorer 'tone' \(tone\) needs the option `backend`"),
    ("llm_judge", {"backend": 3, "rubric": "r"}, "backend must be a backend id, got 3"),
    ("llm_judge", {"backend": "judge"}, "missing 1 required keyword-only argument: 'rubric'"),
    ("llm_judge", {"backend": "judge", "rubric": "{{ oops"}, "scorer 'llm_judge': unexpected end of template"),
    ("llm_judge", {"backend": "judge", "rubric": "r", "scale": [10, 1]}, "scale must go from low to high"),
    ("llm_judge", {"backend": "judge", "rubric": "r", "calls": None}, "scorer 'llm_judge': calls is not an option"),
    ("self_explain", {"scale": "1-10"}, r"scale must be \[low, high\], got '1-10'"),
    ("semantic_relevance", {"backend": "judge", "refrence": "x"}, "unexpected keyword argument 'refrence'"),
    ("json_schema", {"schema": {}, "base_dir": "/"}, "base_dir is not an option"),
])
def test_wrong_options_are_config_errors(calls: DirectCalls, kind: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_scorer(kind, None, options, calls=calls)
