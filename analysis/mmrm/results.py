"""Frozen results of the MMRM fits (STYLE.md habit 1) and the typed errors a failed fit raises.

Every number is in outcome units unless its name says otherwise. A contrast row carries one
:class:`Inference` per covariance estimate of beta-hat: ``model_based`` (inverse information,
Satterthwaite df), ``sandwich`` (CR0 empirical; present when the statistics carry the fourth-order sums;
its degrees of freedom are the model-based Satterthwaite ones, not ``mmrm``'s Bell-McCaffrey ones, see
``analysis/mmrm/frequentist.py``) and ``kenward_roger`` (REML only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.results import Diagnostics
from schemas.results import LONG_RUN, Effect


def _freeze_arrays(result: object) -> None:
    """Make a frozen result's arrays read-only too (the dataclass freezes the attributes, not the data)."""
    for value in vars(result).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)


class MMRMFitError(RuntimeError):
    """The frequentist MMRM fit failed; ``reason`` says why (never a plausible default instead)."""

    def __init__(self, reason: str, **details: Any):
        self.reason, self.details = reason, details
        extra = "; ".join(f"{k}={v}" for k, v in details.items())
        super().__init__(reason + (f" ({extra})" if extra else ""))


class NotConverged(MMRMFitError):
    """The optimiser stopped without meeting the convergence criteria (gradient, positive-definite Hessian)."""


class CovarianceNotPositiveDefinite(MMRMFitError):
    """The estimated Sigma (or the start, or a Hessian that should be) is not positive definite."""


@dataclass(frozen=True)
class Inference:
    """Standard error, degrees of freedom, interval and two-sided p-value of one contrast under one
    covariance estimate (``method``: model_based, sandwich or kenward_roger)."""

    method: str
    se: float
    df: float
    lower: float
    upper: float
    t_value: float
    p_value: float
    df_method: str

    @classmethod
    def of(cls, method: str, estimate: float, variance: float, df: float, level: float, df_method: str) -> Inference:
        from scipy import stats

        if not (variance > 0 and math.isfinite(variance)):
            raise MMRMFitError(f"the {method} variance of a contrast is {variance}, not a positive number")
        if not (df > 0 and math.isfinite(df)):
            raise MMRMFitError(f"the {df_method} degrees of freedom of a contrast are {df}, not a positive number")
        se = math.sqrt(variance)
        half = float(stats.t.ppf(0.5 + level / 2, df)) * se
        t = estimate / se
        return cls(method, se, df, estimate - half, estimate + half, t, float(2 * stats.t.sf(abs(t), df)), df_method)


@dataclass(frozen=True)
class ContrastEstimate:
    """A linear contrast L'beta: e.g. the arm-vs-control difference at one wave (``arm``/``wave`` set;
    ``wave == "long_run"`` is the final wave's difference, the long-run effect)."""

    name: str
    estimate: float
    interval_level: float
    model_based: Inference
    sandwich: Inference | None = None
    kenward_roger: Inference | None = None
    arm: str | None = None
    control: str | None = None
    wave: str | None = None

    def to_effect(self, outcome: str, direction: str = "higher_is_better", method: str = "model_based",
                  n_arm: int | None = None, n_control: int | None = None) -> Effect:
        """The house's effect row (``sd`` is the standard error, the two-sided p-value of this inference; the
        Bayesian probabilities are None as for every frequentist row), for the tables and reports that read
        :class:`schemas.results.Effect`."""
        inf = self.inference(method)
        return Effect(outcome=outcome, arm=self.arm or self.name, control=self.control or "", wave=self.wave or "",
                      method=f"mmrm_{method}", estimate=self.estimate, sd=inf.se, lower=inf.lower, upper=inf.upper,
                      interval_level=self.interval_level, p_value=inf.p_value, direction=direction,
                      n_arm=n_arm, n_control=n_control)

    def inference(self, method: str = "model_based") -> Inference:
        found = getattr(self, method, None)
        if not isinstance(found, Inference):
            raise KeyError(f"no {method} inference for {self.name} (statistics without fourth-order sums, or ML)")
        return found


@dataclass(frozen=True)
class Convergence:
    """How the optimiser ended: iterations, objective evaluations, the largest |gradient| of -2 log L
    per participant, the smallest Hessian eigenvalue (per participant) and the optimiser's message."""

    iterations: int
    evaluations: int
    gradient_max_abs: float
    hessian_min_eigenvalue: float
    message: str


@dataclass(frozen=True, eq=False)
class MMRMFit:
    """A frequentist MMRM fit from pattern statistics (``analysis.mmrm.fit_mmrm``).

    ``neg2_loglik`` is -2 log L (REML or ML, the SAS / ``mmrm`` form with its 2 pi terms); ``aic`` adds
    2 x the number of covariance parameters and ``bic`` log(participants) x that number, as ``mmrm``'s
    ``AIC()``/``BIC()`` do (SAS adds the fixed effects too for ML). ``sigma`` is the T x T covariance
    over the follow-up waves. ``theta`` is in ``mmrm``'s parameterisation (``analysis/mmrm/covariance.py``)
    and ``theta_cov`` its covariance (inverse Hessian of -log L). ``effects`` holds the arm-vs-control
    difference at every follow-up wave and the long-run (final-wave) rows.
    """

    method: str
    structure: str
    coefficient_names: tuple[str, ...]
    waves: tuple[str, ...]
    beta: np.ndarray = field(repr=False)
    cov_model_based: np.ndarray = field(repr=False)
    cov_sandwich: np.ndarray | None = field(repr=False)
    cov_kenward_roger: np.ndarray | None = field(repr=False)
    sigma: np.ndarray = field(repr=False)
    theta: np.ndarray = field(repr=False)
    theta_cov: np.ndarray = field(repr=False)
    neg2_loglik: float
    aic: float
    bic: float
    n_participants: int
    n_obs: int
    convergence: Convergence
    interval_level: float
    effects: tuple[ContrastEstimate, ...]
    # for the degrees of freedom of further contrasts: P_h = dH/dtheta_h (Satterthwaite uses
    # dPhi/dtheta_h = -Phi P_h Phi; Kenward-Roger uses P_h itself)
    p_matrices: np.ndarray = field(repr=False, default=None)

    def __post_init__(self) -> None:
        _freeze_arrays(self)

    def coef(self, name: str) -> tuple[float, float]:
        """(estimate, model-based standard error) of one coefficient."""
        j = self.coefficient_names.index(name)
        return float(self.beta[j]), math.sqrt(self.cov_model_based[j, j])

    def effect(self, arm: str, wave: str = LONG_RUN) -> ContrastEstimate:
        for e in self.effects:
            if e.arm == arm and e.wave == wave:
                return e
        raise KeyError(f"no effect for arm {arm!r} at wave {wave!r}")

    def contrast(self, weights: np.ndarray | dict[str, float], *, name: str = "contrast",
                 level: float | None = None) -> ContrastEstimate:
        """Inference on L'beta for weights given as a vector or as {coefficient name: weight}."""
        if isinstance(weights, dict):
            unknown = set(weights) - set(self.coefficient_names)
            if unknown:
                raise KeyError(f"unknown coefficients {sorted(unknown)}; have {self.coefficient_names}")
            vec = np.array([float(weights.get(c, 0.0)) for c in self.coefficient_names])
        else:
            vec = np.asarray(weights, dtype=float).reshape(-1)
        return contrast_estimate(self, vec, name=name, level=self.interval_level if level is None else level)

    @property
    def correlation(self) -> np.ndarray:
        sd = np.sqrt(np.diag(self.sigma))
        return self.sigma / np.outer(sd, sd)

    def effects_frame(self) -> pd.DataFrame:
        rows = []
        for e in self.effects:
            row = {"arm": e.arm, "control": e.control, "wave": e.wave, "estimate": e.estimate,
                   "interval_level": e.interval_level}
            for inf in (e.model_based, e.sandwich, e.kenward_roger):
                if inf is not None:
                    row |= {f"{inf.method}_{k}": getattr(inf, k) for k in ("se", "df", "lower", "upper", "p_value")}
            rows.append(row)
        return pd.DataFrame(rows)


@dataclass(frozen=True, eq=False)
class MMRMPosterior:
    """A Bayesian MMRM fit from pattern statistics (``analysis.mmrm.fit_mmrm_bayes``).

    ``effects`` are the house's :class:`~schemas.results.Effect` rows (posterior mean, SD,
    equal-tailed interval, P(benefit), P(benefit > MCID), P(|effect| < ROPE)), one per arm x wave plus
    the long-run rows, so they go wherever the random-intercept model's rows go.

    ``sigma_mean`` is the posterior mean of Sigma (outcome units^2); ``beta_mean``/``beta_sd`` of the fixed
    effects. ``diagnostics`` is the house gate (R-hat, bulk ESS, divergences); a result that failed it is
    returned for inspection but must not be reported as confirmatory. ``compile_seconds`` is 0 when the
    compiled model came from the cache.
    """

    coefficient_names: tuple[str, ...]
    waves: tuple[str, ...]
    beta_mean: np.ndarray = field(repr=False)
    beta_sd: np.ndarray = field(repr=False)
    sigma_mean: np.ndarray = field(repr=False)
    effects: tuple[Effect, ...]
    diagnostics: Diagnostics
    n_participants: int
    n_obs: int
    compile_seconds: float
    sampling_seconds: float
    idata: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _freeze_arrays(self)

    @property
    def confirmatory(self) -> bool:
        return self.diagnostics.passed

    def effect(self, arm: str, wave: str = LONG_RUN) -> Effect:
        for e in self.effects:
            if e.arm == arm and e.wave == wave:
                return e
        raise KeyError(f"no effect for arm {arm!r} at wave {wave!r}")


def _kenward_roger_df(l_vec: np.ndarray, phi: np.ndarray, w: np.ndarray, p_mats: np.ndarray) -> float:
    """KR denominator df m for one contrast row (Kenward & Roger 1997; ``mmrm``'s ``h_kr_df`` with c = 1)."""
    c = 1
    var = float(l_vec @ phi @ l_vec)
    t = np.array([float(l_vec @ phi @ p @ phi @ l_vec) / var for p in p_mats])  # tr(M Phi P_h Phi)
    a1 = float(t @ w @ t)
    a2 = a1  # tr(M Phi P_h Phi M Phi P_j Phi) = t_h t_j for a one-row contrast
    b = (a1 + 6 * a2) / (2 * c)
    g = ((c + 1) * a1 - (c + 4) * a2) / ((c + 2) * a2)
    denom = 3 * c + 2 - 2 * g
    c1, c2, c3 = g / denom, (c - g) / denom, (c + 2 - g) / denom
    e_star = 1 / (1 - a2 / c)
    v_star = 2 / c * (1 + c1 * b) / (1 - c2 * b) ** 2 / (1 - c3 * b)
    rho = v_star / (2 * e_star**2)
    return 4 + (c + 2) / (c * rho - 1)


def contrast_estimate(fit: MMRMFit, l_vec: np.ndarray, *, name: str, level: float) -> ContrastEstimate:
    """Estimate, model-based / sandwich / Kenward-Roger inference of L'beta (module docstring)."""
    l_vec = np.asarray(l_vec, dtype=float).reshape(-1)
    if l_vec.size != fit.beta.size:
        raise ValueError(f"the contrast has {l_vec.size} weights for {fit.beta.size} coefficients")
    phi = fit.cov_model_based
    est = float(l_vec @ fit.beta)
    var = float(l_vec @ phi @ l_vec)
    # f_h = L' dPhi/dtheta_h L = -L' Phi P_h Phi L
    phi_l = phi @ l_vec
    f = -np.einsum("a,hab,b->h", phi_l, fit.p_matrices, phi_l)
    denom = float(f @ fit.theta_cov @ f)
    df_sat = 2 * var * var / denom if denom > 0 else math.inf
    model = Inference.of("model_based", est, var, df_sat, level, "satterthwaite")
    sandwich = None
    if fit.cov_sandwich is not None:
        sandwich = Inference.of("sandwich", est, float(l_vec @ fit.cov_sandwich @ l_vec), df_sat, level,
                                "satterthwaite_model_based")
    kr = None
    if fit.cov_kenward_roger is not None:
        kr = Inference.of("kenward_roger", est, float(l_vec @ fit.cov_kenward_roger @ l_vec),
                          _kenward_roger_df(l_vec, phi, fit.theta_cov, fit.p_matrices), level, "kenward_roger")
    return ContrastEstimate(name, est, level, model, sandwich, kr)


__all__ = ["ContrastEstimate", "Convergence", "CovarianceNotPositiveDefinite", "Inference", "MMRMFit",
           "MMRMFitError", "MMRMPosterior", "NotConverged", "contrast_estimate"]
