"""`evalpipe compare`: a planted regression is flagged and gates the pipeline, no difference is not,
unpaired rows are counted, and the same inputs give the same report."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.analysis.compare import compare_runs
from evalpipe.analysis.runs import RunDirError, open_run
from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run
from evalpipe.cli import EXIT_BAD_INPUT, main
from evalpipe.cli_analysis import EXIT_REGRESSION
from evalpipe.pipeline.job.load import prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.running.execute import Criterion
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.scoring.base import FunctionScorer
from evalpipe.testing import FakeServer
from evalpipe.types import ChatResponse


def rerun(spec: SyntheticRun, path: Path, **changes: Any) -> Path:
    """The same job run again: same items, fresh noise, optionally a planted quality shift."""
    return write_synthetic_run(path, dataclasses.replace(spec, noise_seed=spec.noise_seed + 1, run_id="candidate",
                                                         **changes))


def compare_json(args: list[str], capsys: pytest.CaptureFixture[str], code: int = 0) -> dict[str, Any]:
    assert main(["compare", *args, "--format", "json"]) == code
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def label(group: dict[str, str]) -> str:
    return " · ".join(group.values()) or "all pairs"


def differences(data: dict[str, Any], metric: str = "score_total") -> dict[str, dict[str, Any]]:
    """The differences on `metric`, by group label (`beta · cold`)."""
    return {label(d["group"]): d for d in data["differences"] if d["metric"] == metric}


def test_planted_regression_is_flagged_and_fails_the_gate(tmp_path: Path, baseline_run: Path,
                                                          baseline_spec: SyntheticRun,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    candidate = rerun(baseline_spec, tmp_path / "b", shift={"beta": -0.15})
    data = compare_json([str(baseline_run), str(candidate), "--fail-on-regression", "0.02"], capsys,
                        code=EXIT_REGRESSION)
    # One result per backend and parameter set: pairs never pool parameter sets.
    found = differences(data)
    assert sorted(found) == [f"{b} · {p}" for b in ("alpha", "beta") for p in ("cold", "hot", "warm")]
    for name, difference in found.items():  # 80 items of 2 repeats, less the error rows
        assert 78 <= difference["difference"]["items"] <= 80 and 1.9 < difference["difference"]["repeats"] <= 2
        if name.startswith("beta"):
            assert difference["difference"]["high"] < -0.02  # the whole interval is a loss beyond the threshold
            assert difference["losses"] > difference["wins"]
        else:
            assert difference["difference"]["low"] < 0 < difference["difference"]["high"]  # alpha did not change
    assert data["failed_groups"] == ["beta · cold", "beta · hot", "beta · warm"] and data["gate_failed"] is True
    assert [r["difference"] < 0 for r in data["regressions"]["beta · cold"]] == [True] * 5
    worst = data["regressions"]["beta · cold"][0]
    assert worst["prompt"].startswith("What is question") and worst["response_a"] and worst["response_b"]
    assert worst["group"] == {"backend_id": "beta", "param_set": "cold"} and set(worst["key"]) == {
        "item_id", "repeat", "turn"}
    # The terminal table says it too, and a large enough threshold lets the same runs pass.
    assert main(["compare", str(baseline_run), str(candidate), "--fail-on-regression", "0.02"]) == EXIT_REGRESSION
    assert "REGRESSION GATE FAILED" in capsys.readouterr().out
    assert main(["compare", str(baseline_run), str(candidate), "--fail-on-regression", "0.5"]) == 0


def test_no_difference_is_not_flagged(tmp_path: Path, baseline_run: Path, baseline_spec: SyntheticRun,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    candidate = rerun(baseline_spec, tmp_path / "b")
    data = compare_json([str(baseline_run), str(candidate), "--fail-on-regression", "0.0"], capsys)
    assert data["gate_failed"] is False
    for difference in data["differences"]:  # every metric of every backend: the CI covers zero
        assert difference["difference"]["low"] < 0 < difference["difference"]["high"], difference


def test_gate_on_a_chosen_criterion(tmp_path: Path, baseline_run: Path, baseline_spec: SyntheticRun,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    candidate = rerun(baseline_spec, tmp_path / "b", shift={"alpha": -0.2})
    args = [str(baseline_run), str(candidate), "--fail-on-regression", "0.01"]
    assert main(["compare", *args, "--metric", "judge"]) == EXIT_REGRESSION
    assert main(["compare", *args, "--metric", "nonexistent"]) == EXIT_BAD_INPUT
    assert "cannot compare on 'score_nonexistent'" in capsys.readouterr().err


def test_same_inputs_give_the_same_report(tmp_path: Path, baseline_run: Path, baseline_spec: SyntheticRun,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    candidate = rerun(baseline_spec, tmp_path / "b", shift={"beta": -0.05})
    first = compare_json([str(baseline_run), str(candidate)], capsys)
    second = compare_json([str(baseline_run), str(candidate)], capsys)
    assert first == second


def test_unpaired_rows_are_counted_not_dropped(tmp_path: Path, baseline_run: Path, baseline_spec: SyntheticRun,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    candidate = rerun(baseline_spec, tmp_path / "b")
    part = candidate / "parquet" / "part-00000.parquet"
    table = pq.read_table(part)
    # B lost item-0's rows (both backends, all parameter sets and repeats: 12 rows) ...
    pq.write_table(table.filter(pc.not_equal(table["item_id"], "item-0")), part)
    comparison = compare_runs(open_run(baseline_run), open_run(candidate))
    assert {c.label: (c.only_in_a, c.only_in_b, c.unpaired_items) for c in comparison.changes} == {
        f"{b} · {p}": (2, 0, 1) for b in ("alpha", "beta") for p in ("cold", "hot", "warm")}
    assert {c.pairs for c in comparison.changes} == {158} and {c.items for c in comparison.changes} == {79}
    # ... and error rows pair but have no score: counted as unscored.
    total = [d for d in comparison.differences if d.metric == "score_total"]
    assert all(d.pairs + d.unscored == 158 for d in total) and sum(d.unscored for d in total) > 0
    assert main(["compare", str(baseline_run), str(candidate), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| alpha · cold | 158 | 79 | 1 | 2 | 0 |" in out
    assert "Paired on backend_id, param_set, item_id, repeat, turn; intervals resample items" in out


def test_parameter_sets_are_never_merged(tmp_path: Path, baseline_run: Path, baseline_spec: SyntheticRun,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # B ran each item once with one parameter set that A does not have. Pairing by item used to average
    # A's three parameter sets into one number without saying so.
    candidate = write_synthetic_run(tmp_path / "b", dataclasses.replace(
        baseline_spec, repeats=1, param_sets={"only": (0.7, 0.9)}, noise_seed=9, shift={"beta": -0.2}))
    for pair_on in ("task", "item"):
        with pytest.raises(RunDirError, match=r"share no parameter set .* --a param_set=cold --b param_set=only"):
            compare_runs(open_run(baseline_run), open_run(candidate), pair_on=pair_on)  # type: ignore[arg-type]
    assert main(["compare", str(baseline_run), str(candidate), "--pair-on", "item"]) == EXIT_BAD_INPUT
    assert "choose one per side" in capsys.readouterr().err
    # Chosen per side, one parameter set is compared with the other, item by item.
    args = [str(baseline_run), str(candidate), "--a", "param_set=warm", "--b", "param_set=only"]
    data = compare_json([*args, "--pair-on", "item", "--fail-on-regression", "0.02"], capsys, code=EXIT_REGRESSION)
    assert sorted(differences(data)) == ["alpha", "beta"] and data["failed_groups"] == ["beta"]
    assert {c["group"]["backend_id"]: c["pairs"] for c in data["changes"]} == {"alpha": 80, "beta": 80}
    assert "param_set compared across (warm → only)" in data["paired_on"]
    assert all(set(r["key"]) == {"item_id"} for found in data["regressions"].values() for r in found)
    # By task, A's second repeat has no partner in B: counted, not dropped.
    data = compare_json(args, capsys)
    assert {c["group"]["backend_id"]: (c["pairs"], c["only_in_a"]) for c in data["changes"]} == {
        "alpha": (80, 80), "beta": (80, 80)}
    # A condition on one side only would pair B's every parameter set with A's one: refused.
    assert main(["compare", str(baseline_run), str(candidate), "--a", "param_set=warm"]) == EXIT_BAD_INPUT
    assert "--a chooses a param_set but --b does not" in capsys.readouterr().err


def test_nothing_paired_fails_the_gate_rather_than_passing_it(tmp_path: Path, baseline_run: Path,
                                                               baseline_spec: SyntheticRun,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    other = write_synthetic_run(tmp_path / "b", dataclasses.replace(baseline_spec, backends={"gamma": 0.6,
                                                                                            "delta": 0.6}))
    assert main(["compare", str(baseline_run), str(other), "--fail-on-regression", "0.1"]) == EXIT_REGRESSION
    assert "no row of B pairs with a row of A" in capsys.readouterr().out


def test_a_renamed_single_backend_is_paired_with_the_other(tmp_path: Path) -> None:
    spec = SyntheticRun(items=60, backends={"model-2024": 0.6})
    old = write_synthetic_run(tmp_path / "a", spec)
    new = write_synthetic_run(tmp_path / "b", dataclasses.replace(spec, backends={"model-2025": 0.6}, noise_seed=4))
    comparison = compare_runs(open_run(old), open_run(new))
    assert comparison.backend_map == {"model-2025": "model-2024"}
    assert [c.pairs for c in comparison.changes] == [60]
    assert "model-2025 (B) is compared with model-2024 (A)" in comparison.notes[0]


@pytest.mark.parametrize("pair_on", ["task", "item"])
def test_partitioned_join_gives_the_same_comparison(tmp_path: Path, baseline_run: Path, baseline_spec: SyntheticRun,
                                                    monkeypatch: pytest.MonkeyPatch, pair_on: str) -> None:
    # Large runs are joined a partition of items at a time; every figure must merge exactly.
    candidate = rerun(baseline_spec, tmp_path / "b", shift={"beta": -0.1})
    whole = compare_runs(open_run(baseline_run), open_run(candidate), pair_on=pair_on)  # type: ignore[arg-type]
    monkeypatch.setattr("evalpipe.analysis.compare.PAIRS_PER_PARTITION", 100)
    split = compare_runs(open_run(baseline_run), open_run(candidate), pair_on=pair_on)  # type: ignore[arg-type]
    assert split == whole


def item_noise_runs(tmp_path: Path, within: str = "repeat") -> tuple[Path, Path]:
    """A and B: 30 items × 20 repeats (or dialogue turns: `within="turn"`) of one backend. B − A is an item
    effect (some items better, some worse, no shift in the population) whose mean over these 30 items
    happens to be −0.03; the rows of an item agree up to small noise, as repeats of one question do."""
    spec = SyntheticRun(items=30, repeats=20, backends={"model": 0.6}, error_rate=0.0)
    rng = np.random.default_rng(3)
    effect = rng.normal(0.0, 0.12, spec.items)
    effect += -0.03 - effect.mean()
    base = rng.uniform(0.35, 0.65, spec.items)
    paths = []
    for name, shift in (("a", np.zeros(spec.items)), ("b", effect)):
        path = write_synthetic_run(tmp_path / name, dataclasses.replace(spec, run_id=name))
        part = path / "parquet" / "part-00000.parquet"
        table = pq.read_table(part)
        item = np.array([int(text.removeprefix("item-")) for text in table["item_id"].to_pylist()])
        score = base[item] + shift[item] + rng.normal(0.0, 0.02, len(item))
        if within == "turn":  # the same rows as the turns of one dialogue per item
            table = table.set_column(table.schema.get_field_index("turn"), "turn", table["repeat"])
            table = table.set_column(table.schema.get_field_index("repeat"), "repeat",
                                     pa.array(np.zeros(len(item), dtype=np.int64)))
        for column in ("score_total", "score_accuracy", "score_judge"):
            table = table.set_column(table.schema.get_field_index(column), column, pa.array(score))
        pq.write_table(table, part)
        paths.append(path)
    return paths[0], paths[1]


@pytest.mark.parametrize("within", ["repeat", "turn"])
def test_repeats_and_turns_do_not_make_item_noise_a_regression(tmp_path: Path, within: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # 600 pairs, but only 30 items: resampled as independent pairs, the interval of B − A would be about
    # [-0.04, -0.02] and the gate at 0.01 would fail on noise. Resampling items, it covers zero.
    run_a, run_b = item_noise_runs(tmp_path, within)
    data = compare_json([str(run_a), str(run_b), "--fail-on-regression", "0.01"], capsys)
    assert data["gate_failed"] is False and data["failed_groups"] == []
    difference = differences(data)["model · default"]["difference"]
    assert difference["items"] == 30 and difference["repeats"] == 20 and difference["n"] == 600
    assert difference["mean"] == pytest.approx(-0.03, abs=0.005)
    assert difference["low"] < -0.05 and difference["high"] > -0.01
    # The three metrics hold the same numbers: one set of item weights gives them the same interval.
    intervals = {(d["difference"]["low"], d["difference"]["high"]) for d in data["differences"]}
    assert len(intervals) == 1
    assert main(["compare", str(run_a), str(run_b), "--format", "markdown"]) == 0
    assert "| model · default | total | 600 | 30 | 20 |" in capsys.readouterr().out


# -- comparisons inside one run, on the fake provider server ------------------------------------------------


def knows(item: Mapping[str, Any], response: ChatResponse) -> float:
    """The older model knows the even items, the newer one the first four: two gains, two losses of eight."""
    number = int(item["id"].removeprefix("q"))
    return float(number % 2 == 0 if response.model == "model-2024" else number < 4)


@pytest.fixture(scope="module")
def releases_run(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeServer) -> Path:
    """Two releases of a model as two backends of ONE run: 8 items × 2 parameter sets × 3 repeats each."""
    key_env = "EVALPIPE_TEST_COMPARE_KEY"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(key_env, "sk-compare-tests")
        spec = JobSpec.model_validate({
            "name": "releases",
            "dataset": {"items": [{"id": f"q{n}", "q": f"say the answer {n}"} for n in range(8)]},
            "prompt": {"user": "{{ q }}"},
            "backends": [{"id": release, "backend": "openai", "model": f"model-{release}",
                          "base_url": fake_server.url_for("openai"), "api_key_env": key_env}
                         for release in ("2024", "2025")],
            # `short` cuts the echo before the word "answer".
            "parameters": {"sets": [{"name": "calm", "temperature": 0}, {"name": "short", "max_tokens": 2}]},
            "repeats": 3,
            "scorers": [{"type": "contains", "name": "says_answer", "values": ["answer"]}],
        })
        options = RunOptions(out_root=tmp_path_factory.mktemp("releases"), handle_signals=False,
                             criteria=[Criterion(FunctionScorer(knows))])
        outcome = anyio.run(run_job, prepare_job(spec), options)
        assert outcome.state == "completed"
        return outcome.run_dir


def test_two_backends_of_one_run_are_compared_within_each_parameter_set(releases_run: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(releases_run), "--a", "backend_id=2024", "--b", "backend_id=2025", "--metric", "knows"]
    data = compare_json([*args, "--fail-on-regression", "0.1"], capsys)
    assert data["paired_on"] == ("paired on param_set, item_id, repeat, turn; backend_id compared across "
                                 "(2024 → 2025); intervals resample items")
    assert data["run_a"].endswith("[backend_id=2024]") and data["run_b"].endswith("[backend_id=2025]")
    for param_set in ("calm", "short"):
        known = differences(data, "score_knows")[param_set]
        assert (known["mean_a"], known["mean_b"], known["pairs"]) == (0.5, 0.5, 24)
        assert known["difference"]["items"] == 8 and known["difference"]["repeats"] == 3
        assert known["difference"]["low"] < 0 < known["difference"]["high"]
        assert (known["wins"], known["ties"], known["losses"]) == (6, 12, 6)
    says = differences(data, "score_says_answer")
    assert (says["calm"]["mean_a"], says["short"]["mean_a"]) == (1.0, 0.0)  # parameter sets kept apart
    # The most improved pairs beside the most regressed, each with its prompt and both answers.
    improved, regressed = data["improvements"]["calm"], data["regressions"]["calm"]
    assert {p["key"]["item_id"] for p in improved} == {"q1", "q3"} and len(improved) == 5
    assert {p["key"]["item_id"] for p in regressed} == {"q4", "q6"}
    assert all(p["difference"] == 1.0 for p in improved) and all(p["difference"] == -1.0 for p in regressed)
    first = improved[0]
    assert first["prompt"] == f"say the answer {first['key']['item_id'][1:]}"
    assert first["response_a"] == first["response_b"] == f"Echo: {first['prompt']}"
    # The table shows both lists; `model=` chooses the same rows as `backend_id=`.
    assert main(["compare", str(releases_run), "--a", "model=model-2024", "--b", "model=model-2025",
                 "--metric", "knows"]) == 0
    table = capsys.readouterr().out
    assert "most regressed pairs on knows" in table and "most improved pairs on knows" in table


def test_two_parameter_sets_of_one_run_are_compared_within_each_backend(releases_run: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = compare_json([str(releases_run), "--a", "param_set=calm", "--b", "param_set=short",
                         "--metric", "says_answer", "--fail-on-regression", "0.5"], capsys, code=EXIT_REGRESSION)
    assert sorted(differences(data)) == ["2024", "2025"]
    assert data["failed_groups"] == ["2024", "2025"]
    says = differences(data, "score_says_answer")["2024"]["difference"]
    assert (says["mean"], says["low"], says["high"], says["method"]) == (-1.0, -1.0, -1.0, "exact")


def test_one_run_needs_both_selections(releases_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(releases_run), "--a", "backend_id=2024"]) == EXIT_BAD_INPUT
    assert "give both --a and --b" in capsys.readouterr().err
    assert main(["compare", str(releases_run), "--a", "backend_id=2023", "--b", "backend_id=2025"]) == EXIT_BAD_INPUT
    assert "--a backend_id=2023 selects no row" in capsys.readouterr().err
    assert main(["compare", str(releases_run), "--a", "provider=openai", "--b", "backend_id=2025"]) == EXIT_BAD_INPUT
    assert "selects 2 values of backend_id (2024, 2025)" in capsys.readouterr().err
    assert main(["compare", str(releases_run), "--a", "repeat=0", "--b", "repeat=1"]) == EXIT_BAD_INPUT
    assert "pairs always share item_id, repeat, turn" in capsys.readouterr().err
