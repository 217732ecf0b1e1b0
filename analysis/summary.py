"""The outcome summary: one tidy table of every effect a run reports.

Columns (one row per outcome x arm x wave x method): ``outcome, arm, wave, estimate, lower, upper,
p_benefit, p_above_mcid, p_in_rope, method, tier, plan_hash, exploratory``. Estimates are arm
minus control in the outcome's own units; long-run rows carry ``wave="long_run"``. Probabilities
are None for frequentist rows. ``exploratory`` is True whenever the run's protocol was not the
locked preregistered plan, and it is on *every* row, so no row can be lifted out of an exploratory
run and read as confirmatory. Rows from the surrogate index carry ``wave="long_run"`` and method
``surrogate_index_*`` (a forecast, not an observation of the long-run wave). The tipping point is a
row with method ``tipping_point_delta`` whose estimate is the tipping delta in outcome units. Three columns follow
the thirteen above: ``subgroup`` (prespecified subgroup rows, partially pooled), ``p_value`` and
``p_adjusted`` (frequentist final-wave ANCOVA rows; Holm across secondary outcomes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

LONG_RUN = "long_run"
COLUMNS = ("outcome", "arm", "wave", "estimate", "lower", "upper", "p_benefit", "p_above_mcid", "p_in_rope",
           "method", "tier", "plan_hash", "exploratory", "subgroup", "p_value", "p_adjusted")


@dataclass(frozen=True)
class SummaryRow:
    outcome: str
    arm: str
    wave: str
    estimate: float | None
    lower: float | None
    upper: float | None
    p_benefit: float | None
    p_above_mcid: float | None
    p_in_rope: float | None
    method: str
    tier: str
    plan_hash: str
    exploratory: bool
    subgroup: str | None = None      # e.g. 'baseline_tercile=T1'; None for the whole sample
    p_value: float | None = None     # frequentist two-sided p-value (ANCOVA rows)
    p_adjusted: float | None = None  # Holm-adjusted across the secondary outcomes


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def rows_from_effects(effects: Iterable[Any], *, plan_hash: str, exploratory: bool,
                      tier: str | None = None, method: str | None = None) -> list[SummaryRow]:
    """Rows from ``analysis.results.EffectEstimate`` values (the longitudinal model's effects)."""
    return [
        SummaryRow(e.outcome, e.arm, e.wave, _num(e.mean), _num(e.lower), _num(e.upper), _num(e.p_benefit),
                   _num(e.p_above_mcid), _num(e.p_in_rope), method or e.method, tier or e.tier, plan_hash, exploratory)
        for e in effects
    ]


def rows_from_ancova(effects: Iterable[Any], *, outcome: str, wave: str, plan_hash: str, exploratory: bool,
                     p_adjusted: dict[str, float] | None = None, tier: str = "trusted") -> list[SummaryRow]:
    """Rows from ``analysis.missing.AncovaEffect`` (frequentist final-wave ANCOVA, complete cases)."""
    return [SummaryRow(outcome, e.arm, wave, e.estimate, e.lower, e.upper, None, None, None, "ancova_final_wave",
                       tier, plan_hash, exploratory, None, e.p_value, (p_adjusted or {}).get(e.arm))
            for e in effects]


def rows_from_subgroups(pooled: Iterable[Any], *, outcome: str, wave: str, plan_hash: str, exploratory: bool,
                        tier: str = "trusted") -> list[SummaryRow]:
    """Rows from ``analysis.multiplicity.PooledSubgroup`` (partially pooled subgroup effects)."""
    return [SummaryRow(outcome, g.arm, wave, g.estimate, g.lower, g.upper, None, None, None,
                       "ancova_subgroup_partial_pooling", tier, plan_hash, exploratory, f"{g.subgroup}={g.level}")
            for g in pooled]


def rows_from_cuped(estimates: Iterable[Any], *, wave: str, plan_hash: str, exploratory: bool,
                    tier: str = "trusted") -> list[SummaryRow]:
    """Rows from ``analysis.cuped.CupedEstimate`` (telemetry metrics: outcome = metric name)."""
    return [SummaryRow(c.metric, c.arm, wave, c.difference, c.lower, c.upper, None, None, None, c.method, tier,
                       plan_hash, exploratory) for c in estimates]


def rows_from_surrogate(effects: Iterable[Any], *, plan_hash: str, exploratory: bool,
                        tier: str = "trusted") -> list[SummaryRow]:
    """Rows from ``analysis.surrogate.SurrogateEffect``: forecast long-run effects."""
    return [SummaryRow(s.long_run, s.arm, LONG_RUN, s.estimate, s.lower, s.upper, None, None, None, s.method, tier,
                       plan_hash, exploratory) for s in effects]


def rows_from_tipping(points: Iterable[Any], *, wave: str, plan_hash: str, exploratory: bool,
                      tier: str = "trusted") -> list[SummaryRow]:
    """Rows from ``analysis.missing.TippingPoint``: estimate = tipping delta (outcome units)."""
    return [SummaryRow(t.outcome, t.arm, wave, _num(t.tipping_delta), None, None, None, None, None,
                       "tipping_point_delta", tier, plan_hash, exploratory) for t in points]


@dataclass(frozen=True)
class OutcomeSummary:
    """The tidy table of one analysis run."""

    rows: tuple[SummaryRow, ...]

    @classmethod
    def of(cls, rows: Sequence[SummaryRow]) -> OutcomeSummary:
        hashes = {r.plan_hash for r in rows}
        if len(hashes) > 1:
            raise ValueError(f"one summary must come from one plan, got hashes {sorted(h[:12] for h in hashes)}")
        flags = {r.exploratory for r in rows}
        if len(flags) > 1:
            raise ValueError("one summary cannot mix confirmatory and exploratory rows")
        return cls(tuple(rows))

    def to_records(self) -> list[dict[str, Any]]:
        """Row dicts; a NaN (e.g. a p-value of a zero-variance cell) becomes None, so JSON stays valid."""
        return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(r).items()}
                for r in self.rows]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.to_records(), columns=list(COLUMNS))

    def to_json(self) -> str:
        return json.dumps(self.to_records(), allow_nan=False)
