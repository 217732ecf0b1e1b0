"""The outcome summary: one tidy table of every effect a run reports.

A row is a :class:`schemas.results.Effect` (one type for every method and tier) plus the hash of the plan
that produced it and whether that plan was the locked one. Estimates are arm minus control in the
outcome's own units; long-run rows carry ``wave="long_run"``; probabilities are None for frequentist rows.
``exploratory`` is True whenever the run's protocol was not the locked preregistered plan, and it is on
*every* row, so no row can be lifted out of an exploratory run and read as confirmatory. Rows from the
surrogate index carry ``wave="long_run"`` and method ``surrogate_index_*`` (a forecast, not an observation of
the long-run wave). The tipping point is a row with method ``tipping_point_delta`` whose estimate is the
tipping delta in outcome units. A row that could not be estimated says why (``estimable`` false,
``reason``) and carries no number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from schemas.results import Effect

COLUMNS = ("outcome", "arm", "wave", "estimate", "lower", "upper", "p_benefit", "p_above_mcid", "p_in_rope",
           "method", "tier", "plan_hash", "exploratory", "subgroup", "p_value", "p_adjusted",
           "sd", "interval_level", "n_arm", "n_control", "control", "direction", "estimable", "reason")
"""Columns of the table (and keys of ``--json`` rows), in order: the first sixteen as before migration 0050;
every field of :class:`Effect` (``schemas.results.FIELDS``) is one (tested)."""


@dataclass(frozen=True)
class SummaryRow:
    """One effect of a run, with the plan it came from."""

    effect: Effect
    plan_hash: str
    exploratory: bool

    def as_record(self) -> dict[str, Any]:
        record = {**self.effect.as_record(), "plan_hash": self.plan_hash, "exploratory": self.exploratory}
        return {c: record[c] for c in COLUMNS}


@dataclass(frozen=True)
class OutcomeSummary:
    """The tidy table of one analysis run."""

    rows: tuple[SummaryRow, ...]

    @classmethod
    def of(cls, effects: Iterable[Effect], *, plan_hash: str, exploratory: bool) -> OutcomeSummary:
        """Every effect of one run, under one plan hash and one exploratory flag."""
        return cls(tuple(SummaryRow(e, plan_hash, exploratory) for e in effects))

    def __post_init__(self) -> None:
        hashes = {r.plan_hash for r in self.rows}
        if len(hashes) > 1:
            raise ValueError(f"one summary must come from one plan, got hashes {sorted(h[:12] for h in hashes)}")
        if len({r.exploratory for r in self.rows}) > 1:
            raise ValueError("one summary cannot mix confirmatory and exploratory rows")

    @property
    def effects(self) -> tuple[Effect, ...]:
        return tuple(r.effect for r in self.rows)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict a row, keys in :data:`COLUMNS` order; every number is finite or None (``Effect`` refuses NaN)."""
        return [r.as_record() for r in self.rows]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.to_records(), columns=list(COLUMNS))

    def to_json(self) -> str:
        return json.dumps(self.to_records(), allow_nan=False)
