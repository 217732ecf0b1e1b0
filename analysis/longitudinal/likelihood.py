r"""The random-intercept (and random-slope) marginal likelihood on cross-products, in numpy, and its ML fits.

Model (participant i, follow-up wave w, n_i observed follow-up rows)::

    y_iw = mu_w + effect_{arm(i), w} + b * baseline_i + g' c_i + u_i + e_iw
    u_i ~ N(0, tau^2),  e_iw ~ N(0, sigma^2)

The participant intercepts integrate out in closed form. Stacking participant i's rows,
y_i ~ N(X_i beta, V_i) with V_i = sigma^2 I + tau^2 J (J = 11'), and

    V_i^{-1} = (I - c_i J) / sigma^2,        c_i = tau^2 / (sigma^2 + n_i tau^2)
    log det V_i = (n_i - 1) log sigma^2 + log(sigma^2 + n_i tau^2)

(Sherman-Morrison). With r_i = y_i - X_i beta, r_i' V_i^{-1} r_i = (r_i'r_i - c_i (1'r_i)^2) / sigma^2,
and 1'r_i = s_y,i - s_x,i' beta where s = participant column sums. Summing over participants,

    sum_i r_i'r_i           = y'y - 2 beta'X'y + beta'X'X beta                       (global)
    sum_{i: n_i=m} (1'r_i)^2 = S_yy,m - 2 beta'S_xy,m + beta'S_xx,m beta              (group m)

with S_xx,m = sum s_x s_x', S_xy,m = sum s_x s_y, S_yy,m = sum s_y^2 over the K_m participants
with m rows. Hence, with N rows and K participants,

    log L = -1/2 [ N log 2 pi + (N - K) log sigma^2 + sum_m K_m log(sigma^2 + m tau^2)
                   + ( Q - sum_m c_m q_m ) / sigma^2 ]

where Q and q_m are the two quadratic forms above. The data enter only through
:class:`schemas.suffstats.CrossProducts`, so the cost does not grow with participants
(DESIGN.md, "Statistics from sufficient statistics"; the closed form is the standard
compound-symmetry result, e.g. Searle, Casella & McCulloch 1992, *Variance Components*, ch. 3).

This is the numpy reference of the likelihood the PyMC model (:mod:`analysis.longitudinal.model`) writes
in PyTensor; ``tests/analysis/longitudinal/test_likelihood.py`` holds the two equal at random parameters.
The ML fits serve the checks against published fits and statsmodels, and a cheap frequentist estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from analysis.errors import AnalysisInputError
from analysis.longitudinal.design import DesignSpec
from schemas.protocol import AnalysisPlan
from schemas.suffstats import CrossProducts

__all__ = [
    "MLFit",
    "MLFitSlopes",
    "constrain",
    "marginal_loglik",
    "marginal_loglik_slopes",
    "ml_fit",
    "ml_fit_slopes",
    "plan_constraint",
]


def marginal_loglik(cross: CrossProducts, beta: np.ndarray, sigma2: float, tau2: float) -> float:
    """Marginal log-likelihood of the random-intercept model from cross-products (module docstring)."""
    beta = np.asarray(beta, dtype=float)
    q_all = cross.yty - 2 * beta @ cross.xty + beta @ cross.xtx @ beta
    total = cross.n_obs * math.log(2 * math.pi) + (cross.n_obs - cross.n_participants) * math.log(sigma2)
    for g in cross.groups:
        m = g.rows_per_participant
        c = tau2 / (sigma2 + m * tau2)
        q_m = g.sysy - 2 * beta @ g.sxsy + beta @ g.sxsx @ beta
        total += g.n_participants * math.log(sigma2 + m * tau2)
        q_all -= c * q_m
    return -0.5 * (total + q_all / sigma2)


def _gls(cross: CrossProducts, sigma2: float, tau2: float) -> tuple[np.ndarray, np.ndarray]:
    """GLS estimate and its information matrix X'V^{-1}X for given variances."""
    h = cross.xtx.copy()
    g = cross.xty.copy()
    for grp in cross.groups:
        c = tau2 / (sigma2 + grp.rows_per_participant * tau2)
        h -= c * grp.sxsx
        g -= c * grp.sxsy
    h /= sigma2
    g /= sigma2
    return np.linalg.solve(h, g), h


@dataclass(frozen=True)
class _FixedEffects:
    """GLS fixed effects (``beta``) and their covariance over the named ``columns``."""

    columns: tuple[str, ...]
    beta: np.ndarray = field(repr=False)
    cov: np.ndarray = field(repr=False)

    def coef(self, name: str) -> tuple[float, float]:
        """(estimate, standard error) of one column."""
        j = self.columns.index(name)
        return float(self.beta[j]), float(math.sqrt(self.cov[j, j]))


@dataclass(frozen=True)
class MLFit(_FixedEffects):
    """Maximum-likelihood fit of the random-intercept model from cross-products."""

    sigma2: float
    tau2: float
    loglik: float


def plan_constraint(spec: DesignSpec, plan: AnalysisPlan) -> tuple[np.ndarray, tuple[str, ...]]:
    """The linear map beta = M theta from a linear plan's parameters to the design coefficients.

    Parameters: trend (``wave[w]`` each, or ``intercept`` and ``time_months``), effects
    (``arm[a]:wave[w]`` each, or ``arm[a]`` for a constant effect), then baseline and covariates.
    The saturating shape is non-linear and has no such map."""
    if plan.effect_shape == "saturating":
        raise AnalysisInputError("the saturating effect shape is not linear in its parameters")
    cols = spec.column_names()
    p, n_w = len(cols), len(spec.waves)
    blocks: list[np.ndarray] = []
    names: list[str] = []
    if plan.time_trend == "per_wave":
        blocks.append(np.eye(p)[:, :n_w])
        names += [f"wave[{w}]" for w in spec.waves]
    else:
        t = np.zeros((p, 2))
        t[:n_w, 0] = 1.0
        t[:n_w, 1] = spec.months
        blocks.append(t)
        names += ["intercept", "time_months"]
    eff_cols = [j for j, c in enumerate(cols) if c.startswith("arm[")]
    if plan.effect_shape == "per_wave":
        blocks.append(np.eye(p)[:, eff_cols])
        names += [cols[j] for j in eff_cols]
    else:
        e = np.zeros((p, len(spec.treated)))
        for i, a in enumerate(spec.treated):
            for w in spec.waves:
                e[cols.index(f"arm[{a}]:wave[{w}]"), i] = 1.0
        blocks.append(e)
        names += [f"arm[{a}]" for a in spec.treated]
    rest = list(range(n_w + n_w * len(spec.treated), p))
    blocks.append(np.eye(p)[:, rest])
    names += [cols[j] for j in rest]
    return np.hstack(blocks), tuple(names)


def constrain(cross: CrossProducts, m: np.ndarray, names: Sequence[str]) -> CrossProducts:
    """Cross-products of the reduced design X M (same outcome)."""
    p, q = m.shape
    t = np.zeros((p + 1, q + 1))
    t[:p, :q] = m
    t[p, q] = 1.0
    return cross.transformed(t, names)


def ml_fit(cross: CrossProducts) -> MLFit:
    """ML estimates (beta profiled out by GLS; the two log-variances optimised numerically).

    Used to check the likelihood against statsmodels and as a cheap frequentist estimate on the
    statistics; standard errors are the GLS ones at the ML variances (as lme4/statsmodels report).
    For a plan's reduced design, pass ``constrain(cross, *plan_constraint(spec, plan))``."""
    from scipy.optimize import minimize

    def negprof(theta: np.ndarray) -> float:
        s2, t2 = math.exp(theta[0]), math.exp(theta[1])
        b, _ = _gls(cross, s2, t2)
        return -marginal_loglik(cross, b, s2, t2)

    v0 = max(cross.yty / cross.n_obs * 0.25, 1e-8)
    best = minimize(negprof, np.log([v0, v0]), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 4000})
    best = minimize(negprof, best.x, method="BFGS")
    s2, t2 = math.exp(best.x[0]), math.exp(best.x[1])
    b, h = _gls(cross, s2, t2)
    return MLFit(cross.columns, b, np.linalg.inv(h), s2, t2, marginal_loglik(cross, b, s2, t2))


# -- random intercepts and slopes on time ---------------------------------------------------------
#
# u_i = (u0_i, u1_i) ~ N(0, G), Z_i = [1, t_i]: V_i = sigma^2 I + Z_i G Z_i'. With M = Z_i'Z_i (shared by
# a slope group) and H = sigma^2 I + G M (2 x 2), Woodbury and the determinant lemma give
#     V_i^{-1} = (I - Z_i A Z_i') / sigma^2,   A = (sigma^2 G^{-1} + M)^{-1} = H^{-1} G,
#     log det V_i = (m - 2) log sigma^2 + log det H,
# and with b = [-beta, 1], Z_i'r_i = (a0_i . b, a1_i . b), so the group's quadratic term is
#     sum_i (Z_i'r_i)' A (Z_i'r_i) = A00 b'W00 b + (A01 + A10) b'W01 b + A11 b'W11 b.
# With G = diag(tau^2, 0) this is the random-intercept likelihood above (tested).


def _g_matrix(tau0: float, tau1: float, rho: float) -> np.ndarray:
    c = rho * tau0 * tau1
    return np.array([[tau0 * tau0, c], [c, tau1 * tau1]])


def _slope_group_terms(g, sigma2: float, gmat: np.ndarray) -> tuple[np.ndarray, float]:
    m = np.array([[g.rows_per_participant, g.sum_t], [g.sum_t, g.sum_tt]])
    h = sigma2 * np.eye(2) + gmat @ m
    a = np.linalg.solve(h, gmat)
    return a, (g.rows_per_participant - 2) * math.log(sigma2) + math.log(np.linalg.det(h))


def _slope_quadratic_matrix(cross: CrossProducts, sigma2: float, gmat: np.ndarray) -> tuple[np.ndarray, float]:
    """B (augmented, symmetric) with sum_i r_i'V_i^{-1}r_i = b'Bb / sigma^2, and sum_i log det V_i."""
    if not cross.slope_groups:
        raise AnalysisInputError("these cross-products have no slope groups; compute them with slopes=True")
    p = len(cross.columns)
    w = np.empty((p + 1, p + 1))
    w[:p, :p], w[:p, p], w[p, :p], w[p, p] = cross.xtx, cross.xty, cross.xty, cross.yty
    logdet = 0.0
    for g in cross.slope_groups:
        a, ld = _slope_group_terms(g, sigma2, gmat)
        w = w - (a[0, 0] * g.w00 + a[0, 1] * g.w01 + a[1, 0] * g.w01.T + a[1, 1] * g.w11)
        logdet += g.n_participants * ld
    return 0.5 * (w + w.T), logdet


def marginal_loglik_slopes(cross: CrossProducts, beta: np.ndarray, sigma2: float, tau0: float, tau1: float, rho: float) -> float:
    """Marginal log-likelihood with random intercepts (SD tau0) and slopes on time (SD tau1, correlation rho)."""
    bmat, logdet = _slope_quadratic_matrix(cross, sigma2, _g_matrix(tau0, tau1, rho))
    b = np.append(-np.asarray(beta, dtype=float), 1.0)
    return -0.5 * (cross.n_obs * math.log(2 * math.pi) + logdet + float(b @ bmat @ b) / sigma2)


@dataclass(frozen=True)
class MLFitSlopes(_FixedEffects):
    """Maximum-likelihood fit with random intercepts and slopes on time, from cross-products."""

    sigma2: float
    tau0: float
    tau1: float
    rho: float
    loglik: float


def ml_fit_slopes(cross: CrossProducts) -> MLFitSlopes:
    """ML estimates of the random-slope model (beta profiled out by GLS; sigma^2, the two SDs and the
    correlation optimised on log / atanh scales). Standard errors are GLS ones at the ML variances."""
    from scipy.optimize import minimize

    p = len(cross.columns)

    def unpack(theta: np.ndarray) -> tuple[float, float, float, float]:
        return math.exp(theta[0]), math.exp(theta[1]), math.exp(theta[2]), math.tanh(theta[3])

    def gls(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        s2, t0, t1, r = unpack(theta)
        bmat, logdet = _slope_quadratic_matrix(cross, s2, _g_matrix(t0, t1, r))
        beta = np.linalg.solve(bmat[:p, :p], bmat[:p, p])
        return beta, bmat, logdet

    def negprof(theta: np.ndarray) -> float:
        s2 = math.exp(theta[0])
        beta, bmat, logdet = gls(theta)
        b = np.append(-beta, 1.0)
        return 0.5 * (cross.n_obs * math.log(2 * math.pi) + logdet + float(b @ bmat @ b) / s2)

    v0 = max(cross.yty / cross.n_obs * 0.25, 1e-8)
    start = np.array([math.log(v0), 0.5 * math.log(v0), 0.5 * math.log(v0) - 2.0, 0.0])
    best = minimize(negprof, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 8000})
    best = minimize(negprof, best.x, method="BFGS")
    s2, t0, t1, r = unpack(best.x)
    beta, bmat, _ = gls(best.x)
    return MLFitSlopes(cross.columns, beta, np.linalg.inv(bmat[:p, :p] / s2), s2, t0, t1, r, -float(best.fun))
