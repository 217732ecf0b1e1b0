"""The MMRM's mean model: which z-columns exist and which of their coefficients are wave-specific.

Participant i has the covariate vector z_i = (intercept, one dummy per non-control arm, baseline, numeric
covariates) and its mean at follow-up wave t is row t of B z_i, B a T x p matrix. Each z-column j has a
*term* saying how column j of B depends on the parameters beta: ``per_wave`` (B[:, j] free, T parameters:
the default for the intercept, the arms and the baseline, i.e. wave means, arm x wave and baseline x wave as
in Mallinckrodt et al. 2008), ``common`` (B[:, j] = gamma_j 1, one slope for every wave: the default for
covariates) or ``linear_time`` (B[t, j] = a_j + b_j time_t, e.g. the growth-curve models of the dental data).
So vec(B) = M beta for a fixed T p x q matrix M (block diagonal, one block per z-column), which is what
the likelihood uses (``analysis/mmrm/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from analysis.errors import AnalysisInputError

TermKind = Literal["per_wave", "common", "linear_time"]
TERM_KINDS: tuple[str, ...] = ("per_wave", "common", "linear_time")
INTERCEPT = "intercept"
BASELINE = "baseline"


def arm_column(arm: str) -> str:
    return f"arm[{arm}]"


@dataclass(frozen=True)
class MMRMDesign:
    """Arms (control first), follow-up waves in time order, covariates and the terms of the mean model.

    ``wave_times`` (e.g. months since assignment) are needed only by ``linear_time`` terms. ``terms``
    overrides the default term of a z-column, e.g. ``{"intercept": "linear_time"}``. ``baseline`` says
    whether the source relation has a baseline column to adjust for.
    """

    arms: tuple[str, ...]
    waves: tuple[str, ...]
    covariates: tuple[str, ...] = ()
    baseline: bool = True
    wave_times: tuple[float, ...] | None = None
    terms: Mapping[str, TermKind] | tuple[tuple[str, TermKind], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", tuple(map(str, self.arms)))
        object.__setattr__(self, "waves", tuple(map(str, self.waves)))
        object.__setattr__(self, "covariates", tuple(map(str, self.covariates)))
        # held as sorted (column, kind) pairs so that the design stays hashable (a compile-cache key)
        object.__setattr__(self, "terms", tuple(sorted(dict(self.terms).items())))
        if len(self.arms) < 2 or len(set(self.arms)) != len(self.arms):
            raise AnalysisInputError(f"the design needs a control and at least one other arm, all distinct; got {self.arms}")
        if not self.waves or len(set(self.waves)) != len(self.waves):
            raise AnalysisInputError(f"the design needs distinct follow-up waves, got {self.waves}")
        reserved = {INTERCEPT, BASELINE, *map(arm_column, self.arms)}
        if len(set(self.covariates)) != len(self.covariates) or reserved & set(self.covariates):
            raise AnalysisInputError(f"covariate names must be distinct and not {sorted(reserved)}")
        if self.wave_times is not None:
            times = tuple(float(t) for t in self.wave_times)
            if len(times) != len(self.waves) or not np.all(np.isfinite(times)):
                raise AnalysisInputError("wave_times needs one finite time per follow-up wave")
            object.__setattr__(self, "wave_times", times)
        for col, kind in self.terms:
            if col not in self.z_columns:
                raise AnalysisInputError(f"terms names {col!r}, which is not a z-column {self.z_columns}")
            if kind not in TERM_KINDS:
                raise AnalysisInputError(f"term of {col!r} must be one of {TERM_KINDS}, got {kind!r}")
            if kind == "linear_time" and self.wave_times is None:
                raise AnalysisInputError(f"the linear_time term of {col!r} needs wave_times")

    # -- columns ------------------------------------------------------------------------------------
    @property
    def control(self) -> str:
        return self.arms[0]

    @property
    def treated(self) -> tuple[str, ...]:
        return self.arms[1:]

    @property
    def n_waves(self) -> int:
        return len(self.waves)

    @property
    def z_columns(self) -> tuple[str, ...]:
        return (INTERCEPT, *map(arm_column, self.treated), *((BASELINE,) if self.baseline else ()), *self.covariates)

    def term(self, column: str) -> TermKind:
        overrides = dict(self.terms)
        if column in overrides:
            return overrides[column]
        return "common" if column in self.covariates else "per_wave"

    def _basis(self, column: str) -> tuple[np.ndarray, tuple[str, ...]]:
        """T x k basis G_j (B[:, j] = G_j beta_j) and the names of beta_j."""
        kind, n_w = self.term(column), self.n_waves
        if kind == "per_wave":
            return np.eye(n_w), tuple(f"{column}:wave[{w}]" for w in self.waves)
        if kind == "common":
            return np.ones((n_w, 1)), (column,)
        assert self.wave_times is not None
        return np.column_stack([np.ones(n_w), self.wave_times]), (column, f"{column}:time")

    @property
    def coefficient_names(self) -> tuple[str, ...]:
        return tuple(name for col in self.z_columns for name in self._basis(col)[1])

    @property
    def coefficient_columns(self) -> tuple[str, ...]:
        """The z-column each coefficient belongs to (parallel to ``coefficient_names``)."""
        return tuple(col for col in self.z_columns for _ in self._basis(col)[1])

    def mean_map(self) -> np.ndarray:
        """M (T p x q) with vec(B) = M beta, vec stacking the columns of B (row index j T + t)."""
        n_w, cols = self.n_waves, self.z_columns
        blocks = [self._basis(c)[0] for c in cols]
        m = np.zeros((n_w * len(cols), sum(b.shape[1] for b in blocks)))
        at = 0
        for j, b in enumerate(blocks):
            m[j * n_w:(j + 1) * n_w, at:at + b.shape[1]] = b
            at += b.shape[1]
        return m

    def arm_effect_weights(self, arm: str, wave: str) -> np.ndarray:
        """Contrast L (q) with L'beta = mean(arm) - mean(control) at ``wave`` for equal covariates,
        i.e. B[wave, arm dummy]."""
        if arm not in self.treated:
            raise AnalysisInputError(f"{arm!r} is not a non-control arm of {self.arms}")
        if wave not in self.waves:
            raise AnalysisInputError(f"{wave!r} is not a follow-up wave of {self.waves}")
        j, t = self.z_columns.index(arm_column(arm)), self.waves.index(wave)
        return self.mean_map()[j * self.n_waves + t].copy()


def default_design(arms: Sequence[str], waves: Sequence[str], covariates: Sequence[str] = (), *,
                   baseline: bool = True) -> MMRMDesign:
    """The primary MMRM of a trial: wave means, arm x wave, baseline x wave, covariates with one slope."""
    return MMRMDesign(tuple(arms), tuple(waves), tuple(covariates), baseline)


__all__ = ["BASELINE", "INTERCEPT", "TERM_KINDS", "MMRMDesign", "TermKind", "arm_column", "default_design"]
