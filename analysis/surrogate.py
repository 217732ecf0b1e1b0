"""Surrogate index: forecast a long-run effect from short-run surrogates before the final wave.

Athey, Chetty, Imbens & Kang (2019), "The Surrogate Index: Combining Short-Term Proxies to Estimate
Long-Term Treatment Effects More Rapidly and Precisely", NBER w26463, sec. 3-4:

1. First stage, on a calibration cohort where the long-run outcome Y is observed (an earlier
   study, or a simulated one): fit the surrogate index h(s, x) = E[Y | S = s, X = x]; here a
   linear regression on the surrogates S (early-wave scores, telemetry) and pre-treatment X.
2. Second stage, in the running study: average h(S_i, X_i) by arm; the difference from control
   estimates the long-run effect tau = E[Y(1) - Y(0)].

It is valid under (i) *surrogacy*: the treatment is independent of Y given S and X (the surrogates
carry all of the treatment's effect on Y), and (ii) *comparability*: the conditional distribution
of Y given S and X is the same in the calibration cohort and in the study. Neither is testable
from the study alone, so every result states them.

Uncertainty includes the first stage's. Delta method: with a = mean(z | arm) - mean(z | control)
(z = [1, S, X]) and beta_hat's covariance V (HC1 sandwich, robust to heteroskedasticity),
    var(tau_hat) = a' V a  +  var(h_i | arm)/n_arm + var(h_i | control)/n_control,
the two samples being independent. :func:`surrogate_index_effects` can also bootstrap both samples
(``method="bootstrap"``), which the tests use to cross-check the delta method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemas.errors import FlourishError
from schemas.results import LONG_RUN, Effect

SURROGACY_ASSUMPTIONS = (
    "surrogacy: given the surrogates and baseline covariates, the arm carries no further information about "
    "the long-run outcome (all of the feature's long-run effect runs through the surrogates)",
    "comparability: the relation of the long-run outcome to the surrogates and covariates is the same in the "
    "calibration cohort as in this study",
)


class SurrogateError(FlourishError, ValueError):
    """A calibration cohort or study frame that cannot support a surrogate index."""


@dataclass(frozen=True, eq=False)
class SurrogateModel:
    """The fitted first stage: long_run ~ 1 + surrogates + covariates (OLS, HC1 covariance)."""

    long_run: str
    surrogates: tuple[str, ...]
    covariates: tuple[str, ...]
    coefficients: np.ndarray
    covariance: np.ndarray
    r_squared: float
    n_calibration: int

    @property
    def columns(self) -> tuple[str, ...]:
        return ("intercept", *self.surrogates, *self.covariates)

    def design(self, frame: pd.DataFrame) -> np.ndarray:
        absent = [c for c in (*self.surrogates, *self.covariates) if c not in frame.columns]
        if absent:
            raise SurrogateError(f"the study frame lacks surrogate/covariate column(s) {absent}")
        cols = [frame[c].to_numpy(float) for c in (*self.surrogates, *self.covariates)]
        z = np.column_stack([np.ones(len(frame)), *cols])
        if not np.all(np.isfinite(z)):
            raise SurrogateError("surrogates or covariates contain missing values; the index needs them all")
        return z

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.design(frame) @ self.coefficients


def _ols_hc1(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    n, p = z.shape
    if n <= p or np.linalg.matrix_rank(z) < p:
        raise SurrogateError(f"the calibration cohort has {n} complete rows for {p} coefficients (or collinear surrogates)")
    ztz_inv = np.linalg.inv(z.T @ z)
    beta = ztz_inv @ z.T @ y
    resid = y - z @ beta
    meat = (z * resid[:, None] ** 2).T @ z
    cov = ztz_inv @ meat @ ztz_inv * n / (n - p)  # HC1 (MacKinnon & White 1985)
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / tss if tss > 0 else float("nan")
    return beta, cov, r2


def fit_surrogate_index(
    calibration: pd.DataFrame, *, long_run: str, surrogates: Sequence[str], covariates: Sequence[str] = ()
) -> SurrogateModel:
    """First stage: E[long_run | surrogates, covariates] by OLS on the calibration cohort."""
    if not surrogates:
        raise SurrogateError("a surrogate index needs at least one surrogate")
    absent = [c for c in (long_run, *surrogates, *covariates) if c not in calibration.columns]
    if absent:
        raise SurrogateError(f"the calibration cohort lacks column(s) {absent}")
    d = calibration.dropna(subset=[long_run, *surrogates, *covariates])
    z = np.column_stack([np.ones(len(d)), *[d[c].to_numpy(float) for c in (*surrogates, *covariates)]])
    beta, cov, r2 = _ols_hc1(z, d[long_run].to_numpy(float))
    return SurrogateModel(long_run, tuple(surrogates), tuple(covariates), beta, cov, r2, len(d))


@dataclass(frozen=True)
class SurrogateEffect:
    """The forecast long-run effect (``effect``: arm minus control in the long-run outcome's units, wave
    ``long_run``, method ``surrogate_index_<delta|bootstrap>``), with the two parts of its standard error, the
    size of the calibration cohort and the assumptions it rests on."""

    long_run: str
    arm: str
    control: str
    se_first_stage: float
    se_second_stage: float
    n_calibration: int
    effect: Effect
    assumptions: tuple[str, ...] = SURROGACY_ASSUMPTIONS


def surrogate_index_effects(
    model: SurrogateModel,
    study: pd.DataFrame,
    *,
    control: str,
    arm_col: str = "arm",
    interval_level: float = 0.95,
    method: str = "delta",
    calibration: pd.DataFrame | None = None,
    n_boot: int = 400,
    seed: int = 0,
) -> list[SurrogateEffect]:
    """Second stage: the arm differences of the mean surrogate index, with their uncertainty.

    ``method="delta"`` (default) uses the closed form in the module docstring; ``"bootstrap"``
    resamples the calibration cohort (refitting the first stage) and each arm of the study, and
    needs ``calibration``; its interval is the percentile interval.
    """
    from scipy.stats import norm

    if arm_col not in study.columns:
        raise SurrogateError(f"the study frame has no {arm_col!r} column")
    arms = sorted(study[arm_col].unique())
    if control not in arms:
        raise SurrogateError(f"control arm {control!r} has no participants in the study frame")
    z_study = model.design(study)
    arm_vals = study[arm_col].to_numpy()
    h = z_study @ model.coefficients
    zq = float(norm.ppf(0.5 + interval_level / 2.0))
    ctl = arm_vals == control
    out: list[SurrogateEffect] = []
    boot = None
    if method == "bootstrap":
        if calibration is None:
            raise SurrogateError("the bootstrap needs the calibration cohort to refit the first stage")
        boot = _bootstrap(model, calibration, z_study, arm_vals, arms, control, n_boot, seed)
    elif method != "delta":
        raise SurrogateError(f"method must be 'delta' or 'bootstrap', got {method!r}")
    for a in arms:
        if a == control:
            continue
        sel = arm_vals == a
        if sel.sum() < 2 or ctl.sum() < 2:
            raise SurrogateError(f"arm {a!r} or control has fewer than 2 participants with surrogates")
        a_vec = z_study[sel].mean(axis=0) - z_study[ctl].mean(axis=0)
        est = float(a_vec @ model.coefficients)
        v1 = float(a_vec @ model.covariance @ a_vec)
        v2 = float(h[sel].var(ddof=1) / sel.sum() + h[ctl].var(ddof=1) / ctl.sum())
        se = math.sqrt(v1 + v2)
        lo, hi = est - zq * se, est + zq * se
        if boot is not None:
            draws = boot[a]
            se = float(draws.std(ddof=1))
            lo, hi = (float(q) for q in np.quantile(draws, [0.5 - interval_level / 2, 0.5 + interval_level / 2]))
        effect = Effect(outcome=model.long_run, arm=a, control=control, wave=LONG_RUN,
                        method=f"surrogate_index_{method}", estimate=est, sd=se, lower=lo, upper=hi,
                        interval_level=interval_level, n_arm=int(sel.sum()), n_control=int(ctl.sum()))
        out.append(SurrogateEffect(
            long_run=model.long_run, arm=a, control=control, se_first_stage=math.sqrt(v1),
            se_second_stage=math.sqrt(v2), n_calibration=model.n_calibration, effect=effect,
        ))
    return out


def _bootstrap(model: SurrogateModel, calibration: pd.DataFrame, z_study: np.ndarray, arm_vals: np.ndarray,
               arms: list, control: str, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = calibration.dropna(subset=[model.long_run, *model.surrogates, *model.covariates])
    z_cal = np.column_stack([np.ones(len(d)), *[d[c].to_numpy(float) for c in (*model.surrogates, *model.covariates)]])
    y_cal = d[model.long_run].to_numpy(float)
    idx_by_arm = {a: np.flatnonzero(arm_vals == a) for a in arms}
    draws: dict[str, list[float]] = {a: [] for a in arms if a != control}
    for _ in range(n_boot):
        i = rng.integers(0, len(y_cal), len(y_cal))
        beta = np.linalg.lstsq(z_cal[i], y_cal[i], rcond=None)[0]
        means = {a: z_study[rng.choice(ix, ix.size)].mean(axis=0) @ beta for a, ix in idx_by_arm.items()}
        for a in draws:
            draws[a].append(float(means[a] - means[control]))
    return {a: np.asarray(v) for a, v in draws.items()}
