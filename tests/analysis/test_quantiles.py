"""Exact quantiles from log-spaced histograms and a second pass: equal to polars' sorted-column quantile."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from evalpipe.analysis import quantiles


def quantiles_in_parts(frame: pl.DataFrame, qs: tuple[float, ...], parts: int) -> dict[tuple[object, ...], list]:
    chunks = [frame.slice(start, -(-frame.height // parts)) for start in range(0, frame.height, -(-frame.height
                                                                                                 // parts))]
    hist = quantiles.merge_histograms(pl.concat([quantiles.histogram(c.lazy(), "x", ("g",)).collect()
                                                 for c in chunks]), ("g",))
    located = quantiles.locate(hist, ("g",), qs)
    refined = None
    if not located.pending.is_empty():
        refined = quantiles.merge_refined(pl.concat([quantiles.refine(c.lazy(), "x", located).collect()
                                                     for c in chunks]), ("g",), "x")
    return quantiles.finish(located, "x", refined)


@pytest.mark.parametrize("kind", ["lognormal", "ties", "constant", "zeros_and_tiny", "crowded"])
def test_equal_to_the_sorted_column_quantile(kind: str) -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    values = {"lognormal": rng.lognormal(0, 0.6, n), "ties": rng.integers(1, 5, n) / 4,
              "constant": np.full(n, 0.25), "zeros_and_tiny": np.where(rng.random(n) < 0.6, 0.0, rng.random(n) * 1e-10),
              "crowded": 1.0 + rng.random(n) * 1e-4}[kind]
    frame = pl.DataFrame({"g": rng.choice(["a", "b", "c"], n), "x": values})
    qs = (0.0, 0.5, 0.95, 0.99, 1.0)
    expected = frame.group_by("g").agg([pl.col("x").quantile(q, "linear").alias(str(q)) for q in qs])
    found = quantiles_in_parts(frame, qs, parts=7)
    for record in expected.iter_rows(named=True):
        assert found[(record["g"],)] == [record[str(q)] for q in qs]


def test_a_group_of_one_value_and_nothing_finite() -> None:
    frame = pl.DataFrame({"g": ["a", "b", "b"], "x": [2.0, float("nan"), None]})
    found = quantiles_in_parts(frame, (0.5,), parts=1)
    assert found == {("a",): [2.0]}  # b has no finite value: no histogram row, no quantile
