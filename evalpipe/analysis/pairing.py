"""What `compare` pairs with what: the two sides (a run, narrowed by conditions) and the keys pairs share.

A row's identity has two dimensions besides the item: the backend (`backend_id`, with its `provider` and
`model`) and the parameter set (`param_set`, with the sampling values it stands for). A side's conditions
(`--a backend_id=gpt-4.1`) choose rows; a dimension named by the conditions of both sides is compared
ACROSS (A's one backend against B's one backend), and every dimension not named is paired WITHIN: pairs
share its value and the results are split by it. So `--a backend_id=x --b backend_id=y` pairs x's and y's
rows of the same parameter set, and two runs without conditions pair the same backend and parameter set.

Pairs always share the item, and with `pair_on="task"` also the repeat and the turn. Nothing is merged
silently: a dimension compared across must hold one value per side (two backends on one side would pair
each item twice), and two sides with no parameter set in common are refused with the option that chooses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from evalpipe.analysis.runs import Run, RunDirError, collect

PairOn = Literal["task", "item"]
CLUSTER = "item_id"  # pairs of one item are resampled together
WITHIN_ITEM: dict[PairOn, tuple[str, ...]] = {"task": ("repeat", "turn"), "item": ()}
# Each dimension: its main column (pairs share it, results are split by it) and the columns that describe it.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "backend_id": ("backend_id", "provider", "model"),
    "param_set": ("param_set", "temperature", "top_p", "top_k", "max_tokens", "seed", "reasoning_effort",
                  "reasoning_budget_tokens"),
}
_PAIR_COLUMNS = (CLUSTER, "repeat", "turn")


@dataclass(frozen=True, slots=True)
class Condition:
    """`column=value`: a side keeps the rows whose `column` equals `value`."""

    column: str
    value: str

    def __str__(self) -> str:
        return f"{self.column}={self.value}"

    def expression(self, run: Run, flag: str) -> pl.Expr:
        """The filter over `run`'s rows, the value read as the column's type."""
        if not run.has(self.column):
            raise RunDirError(f"{flag} {self}: {run.path} has no column {self.column!r}; conditions name a row "
                              f"column such as backend_id, param_set or model")
        if self.column in _PAIR_COLUMNS:
            raise RunDirError(f"{flag} {self}: pairs always share {', '.join(_PAIR_COLUMNS)}, so they cannot be "
                              f"chosen per side; choose a backend_id, model or param_set")
        dtype = run.scan([self.column]).collect_schema()[self.column]
        booleans = {"true": True, "false": False}
        try:
            if dtype == pl.Boolean and self.value.lower() in booleans:  # polars casts no text to Boolean
                value: object = booleans[self.value.lower()]
            else:
                value = pl.Series([self.value]).cast(dtype, strict=True)[0]
        except pl.exceptions.PolarsError:
            raise RunDirError(f"{flag} {self}: {self.column} holds {dtype} values, not {self.value!r}") from None
        return pl.col(self.column) == pl.lit(value, dtype=dtype)


def parse_condition(text: str) -> Condition:
    """`backend_id=gpt-4.1` as a Condition; ValueError naming the expected form otherwise."""
    column, equals, value = text.partition("=")
    if not equals or not column.strip():
        raise ValueError(f"expected COLUMN=VALUE (like backend_id=gpt-4.1 or param_set=calm), got {text!r}")
    return Condition(column.strip(), value)


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a comparison: a run's rows that meet every condition."""

    run: Run
    conditions: tuple[Condition, ...] = ()
    flag: str = "--a"  # how the user names this side's conditions, for messages

    @property
    def label(self) -> str:
        """The run's name, with the conditions: `run-7 [backend_id=gpt-4.1]`."""
        where = ", ".join(str(c) for c in self.conditions)
        return f"{self.run.name} [{where}]" if where else self.run.name

    def named(self, dimension: str) -> bool:
        """Whether a condition names a column of `dimension`."""
        return any(c.column in DIMENSIONS[dimension] for c in self.conditions)

    def scan(self, columns: Sequence[str], parts: Sequence[Path] | None = None) -> pl.LazyFrame:
        """The side's rows (of `parts`, when given), limited to `columns`; conditions apply first."""
        frame = self.run.scan(None, parts)
        for condition in self.conditions:
            frame = frame.filter(condition.expression(self.run, self.flag))
        return frame.select([name for name in dict.fromkeys(columns) if self.run.has(name)])


@dataclass(frozen=True, slots=True)
class Pairing:
    """What pairs share and how results are split."""

    groups: tuple[str, ...]  # dimensions paired within: pairs share them, one result per value
    across: tuple[str, ...]  # dimensions compared across: one value per side
    within_item: tuple[str, ...]  # besides the item: repeat and turn, or nothing when sides are averaged per item
    pair_on: PairOn
    backend_map: dict[str, str] = field(default_factory=dict)  # B's backend id -> A's
    values_a: dict[str, list[str]] = field(default_factory=dict)  # dimension -> A's values
    values_b: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        """The join keys: the groups, the item, and (by task) the repeat and turn."""
        return [*self.groups, CLUSTER, *self.within_item]

    @property
    def description(self) -> str:
        """`paired on param_set, item_id, repeat, turn; backend_id compared across (gpt-4.1 → gpt-4.1-mini)`."""
        text = f"paired on {', '.join(self.keys)}"
        if self.pair_on == "item":
            text += " (each side averaged per item first)"
        for dimension in self.across:
            text += f"; {dimension} compared across ({self.values_a[dimension][0]} → {self.values_b[dimension][0]})"
        return text + "; intervals resample items"


def plan_pairing(side_a: Side, side_b: Side, pair_on: PairOn = "task",
                 backend_map: Mapping[str, str] | None = None) -> Pairing:
    """How `side_a` and `side_b` pair; RunDirError when they cannot be paired without merging something."""
    for side, other in ((side_a, side_b), (side_b, side_a)):
        for dimension in DIMENSIONS:
            if side.named(dimension) and not other.named(dimension):
                column = next(c.column for c in side.conditions if c.column in DIMENSIONS[dimension])
                raise RunDirError(f"{side.flag} chooses a {column} but {other.flag} does not; say which one B is "
                                  f"compared with, e.g. {other.flag} {column}=...")
    values_a, values_b = _values(side_a), _values(side_b)
    across = tuple(d for d in DIMENSIONS if side_a.named(d))
    for dimension in across:
        for side, values in ((side_a, values_a), (side_b, values_b)):
            if len(values[dimension]) > 1:
                raise RunDirError(f"{side.flag} {', '.join(str(c) for c in side.conditions)} selects "
                                  f"{len(values[dimension])} values of {dimension} ({', '.join(values[dimension])}); "
                                  f"compared across, each side needs one: add e.g. {side.flag} "
                                  f"{dimension}={values[dimension][0]}")
    groups = tuple(d for d in DIMENSIONS if d not in across)
    notes: list[str] = []
    mapping = dict(backend_map or {})
    if "backend_id" in groups and not mapping:
        mapping = _single_backend_map(values_a["backend_id"], values_b["backend_id"], notes)
    if "param_set" in groups:
        _check_param_sets(side_a, side_b, values_a["param_set"], values_b["param_set"], notes)
    if "backend_id" in groups:
        shared = set(values_a["backend_id"]) & {mapping.get(b, b) for b in values_b["backend_id"]}
        if not shared:
            notes.append(f"A and B share no backend_id (A: {', '.join(values_a['backend_id'])}; B: "
                         f"{', '.join(values_b['backend_id'])}): nothing pairs; to compare two backends, choose "
                         f"one per side, e.g. --a backend_id={values_a['backend_id'][0]} "
                         f"--b backend_id={values_b['backend_id'][0]}")
    return Pairing(groups, across, WITHIN_ITEM[pair_on], pair_on, mapping, values_a, values_b, notes)


def _values(side: Side) -> dict[str, list[str]]:
    """Each dimension's distinct values on `side`; RunDirError when the conditions select no row."""
    frame = collect(side.scan(list(DIMENSIONS)).unique(), side.run)
    if frame.is_empty():
        found = []
        for condition in side.conditions:
            values = collect(side.run.scan([condition.column]).unique().sort(condition.column).head(10), side.run)
            found.append(f"{condition.column} holds {', '.join(str(v) for v in values[condition.column].to_list())}")
        raise RunDirError(f"{side.flag} {', '.join(str(c) for c in side.conditions)} selects no row of "
                          f"{side.run.path} ({'; '.join(found)})")
    return {d: sorted(str(v) for v in frame[d].drop_nulls().unique().to_list()) for d in DIMENSIONS}


def _single_backend_map(ids_a: list[str], ids_b: list[str], notes: list[str]) -> dict[str, str]:
    """B's only backend paired with A's only backend when their ids differ (a model renamed between releases)."""
    if len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b:
        notes.append(f"each side has one backend: {ids_b[0]} (B) is compared with {ids_a[0]} (A)")
        return {ids_b[0]: ids_a[0]}
    return {}


def _check_param_sets(side_a: Side, side_b: Side, sets_a: list[str], sets_b: list[str], notes: list[str]) -> None:
    """Pairs share the parameter set: refuse sides with none in common, note the sets that stay unpaired."""
    if not set(sets_a) & set(sets_b):
        raise RunDirError(f"A and B share no parameter set (A: {', '.join(sets_a)}; B: {', '.join(sets_b)}) and "
                          f"pairs never mix parameter sets silently; choose one per side, e.g. "
                          f"{side_a.flag} param_set={sets_a[0]} {side_b.flag} param_set={sets_b[0]}")
    only_a, only_b = sorted(set(sets_a) - set(sets_b)), sorted(set(sets_b) - set(sets_a))
    if only_a or only_b:
        where = "; ".join(text for text in (f"only A has {', '.join(only_a)}" if only_a else "",
                                             f"only B has {', '.join(only_b)}" if only_b else "") if text)
        notes.append(f"parameter sets differ ({where}): their rows stay unpaired")
