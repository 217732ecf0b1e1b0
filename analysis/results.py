"""Frozen result values of the analysis models (STYLE.md habit 1: data in, frozen results out).

The effects themselves are :class:`schemas.results.Effect` values, one type for every method and tier: each
says its outcome, arm and wave, its units (outcome units unless named otherwise), the method and the trust
tier it came from. Long-run rows carry ``wave="long_run"`` (the final wave's effect, ``LONG_RUN``); a
saturating trajectory also reports ``wave="plateau"``. This module holds what a model returns around them:
parameters, the convergence gate, the longitudinal result and the Bayesian-vs-frequentist comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import DiagnosticsFailed
from schemas.results import LONG_RUN, PLATEAU, Effect

__all__ = ["LONG_RUN", "PLATEAU", "Comparison", "Diagnostics", "LongitudinalResult", "ParameterEstimate"]

@dataclass(frozen=True)
class ParameterEstimate:
    """A fixed effect or variance component: posterior mean, SD and equal-tailed interval."""

    name: str
    mean: float
    sd: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Diagnostics:
    """Convergence gate: R-hat <= rhat_max, bulk ESS >= ess_bulk_min, no divergent transitions."""

    passed: bool
    rhat_max: float
    ess_bulk_min: float
    divergences: int
    reasons: tuple[str, ...] = ()
    sampling_seconds: float | None = None

    @classmethod
    def of(cls, idata, var_names: list[str], plan, seconds: float | None = None) -> "Diagnostics":
        """The gate over ``var_names`` of an ArviZ InferenceData, with ``plan.rhat_max`` and ``plan.ess_bulk_min``.

        R-hat needs at least two chains; with one it is NaN and not gated (and not computed: ArviZ would log a shape
        warning on stderr). Each failure names its worst parameter. The gate reads ArviZ's unrounded values (its
        ``summary`` rounds R-hat to two decimals, so 1.014 passed a 1.01 gate).
        """
        import arviz as az
        import numpy as np

        chains = idata.posterior.sizes["chain"]
        ess, ess_at = _extreme(az.ess(idata, var_names=var_names, method="bulk"), np.nanargmin)
        rhat, rhat_at = (_extreme(az.rhat(idata, var_names=var_names), np.nanargmax) if chains > 1
                         else (float("nan"), ""))
        div = int(np.asarray(idata.sample_stats["diverging"]).sum())
        reasons = []
        if chains > 1 and not rhat <= plan.rhat_max:
            reasons.append(f"R-hat {rhat:.3f} > {plan.rhat_max} (worst parameter {rhat_at})")
        if not ess >= plan.ess_bulk_min:
            reasons.append(f"bulk ESS {ess:.0f} < {plan.ess_bulk_min:.0f} (worst parameter {ess_at})")
        if div:
            reasons.append(f"{div} divergent transitions")
        return cls(not reasons, rhat, ess, div, tuple(reasons), seconds)


def _extreme(dataset, pick) -> tuple[float, str]:
    """The value ``pick`` (``np.nanargmin`` or ``np.nanargmax``) chooses over every element of every variable of an
    ArviZ diagnostic dataset, and its name (``beta[1, 0]``); NaN when every value is NaN."""
    import numpy as np

    best, name = float("nan"), ""
    for var, arr in dataset.data_vars.items():
        values = np.asarray(arr, dtype=float)
        if not np.isfinite(values).any():
            continue
        i = int(pick(values.ravel()))
        v = float(values.ravel()[i])
        if np.isnan(best) or pick([best, v]) == 1:
            index = np.unravel_index(i, values.shape) if values.ndim else ()
            best, name = v, var + (f"[{', '.join(str(int(k)) for k in index)}]" if index else "")
    return best, name


@dataclass(frozen=True)
class LongitudinalResult:
    """Result of the primary longitudinal model of one outcome.

    ``effects`` holds one row per (arm, wave) plus the long-run rows (and plateau rows for a
    saturating shape); ``fixed_effects`` are in outcome units of the original design columns;
    ``variance_components`` are ``sigma`` (residual SD), ``tau`` (participant-intercept SD) and their
    squares. ``idata`` is the ArviZ InferenceData (excluded from equality). A result whose
    diagnostics failed is still returned (for inspection) but ``confirmatory`` is False and
    :meth:`require_passed` raises :class:`DiagnosticsFailed`.
    """

    outcome: str
    direction: str
    control: str
    arms: tuple[str, ...]
    waves: tuple[str, ...]
    effect_shape: str
    time_trend: str
    effects: tuple[Effect, ...]
    fixed_effects: tuple[ParameterEstimate, ...]
    variance_components: tuple[ParameterEstimate, ...]
    diagnostics: Diagnostics
    n_participants: int
    n_obs: int
    method: str  # what the model is (e.g. bayes_random_slopes_marginal); every effect says the same
    tier: str = "trusted"
    idata: Any = field(default=None, compare=False, repr=False)

    @property
    def confirmatory(self) -> bool:
        """Only a result that passed its diagnostics may be reported as confirmatory."""
        return self.diagnostics.passed

    def require_passed(self) -> LongitudinalResult:
        if not self.diagnostics.passed:
            raise DiagnosticsFailed(self.outcome, self.diagnostics.reasons)
        return self

    def effect(self, arm: str, wave: str = LONG_RUN) -> Effect:
        for e in self.effects:
            if e.arm == arm and e.wave == wave:
                return e
        raise KeyError(f"no effect for arm {arm!r} at wave {wave!r}")

    @property
    def long_run(self) -> tuple[Effect, ...]:
        return tuple(e for e in self.effects if e.wave == LONG_RUN)

    def fixed(self, name: str) -> ParameterEstimate:
        for f in (*self.fixed_effects, *self.variance_components):
            if f.name == name:
                return f
        raise KeyError(f"no parameter {name!r}; have {[f.name for f in (*self.fixed_effects, *self.variance_components)]}")

    def summary_frame(self) -> pd.DataFrame:
        """Tidy table: one row per effect (the :class:`Effect` fields) and ``diagnostics_passed``."""
        return pd.DataFrame([{**e.as_record(), "diagnostics_passed": self.diagnostics.passed} for e in self.effects])

    def parameters_frame(self) -> pd.DataFrame:
        rows = [{"kind": "fixed", **asdict(f)} for f in self.fixed_effects]
        rows += [{"kind": "variance", **asdict(v)} for v in self.variance_components]
        return pd.DataFrame(rows)

    def to_netcdf(self, path: str | Path) -> Path:
        """Write the ArviZ InferenceData (posterior in standardised and outcome units, sample stats)."""
        if self.idata is None:
            raise ValueError("this result carries no InferenceData")
        p = Path(path)
        self.idata.to_netcdf(str(p))
        return p

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``posterior.nc`` (ArviZ netCDF), ``effects.csv`` and ``parameters.csv``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"effects": d / "effects.csv", "parameters": d / "parameters.csv"}
        self.summary_frame().to_csv(paths["effects"], index=False)
        self.parameters_frame().to_csv(paths["parameters"], index=False)
        if self.idata is not None:
            paths["posterior"] = d / "posterior.nc"
            self.idata.to_netcdf(str(paths["posterior"]))
        return paths


@dataclass(frozen=True)
class Comparison:
    """One row of the Bayesian-vs-frequentist side-by-side table."""

    outcome: str
    arm: str
    wave: str
    bayes_estimate: float
    bayes_lower: float
    bayes_upper: float
    freq_method: str
    freq_estimate: float
    freq_lower: float
    freq_upper: float
    sign_disagrees: bool
    intervals_disjoint: bool

    @property
    def flagged(self) -> bool:
        return self.sign_disagrees or self.intervals_disjoint
