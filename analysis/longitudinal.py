r"""The primary model: a Bayesian Gaussian random-intercept model fitted to cross-products.

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
:class:`schemas.suffstats.CrossProducts`, so sampling cost does not grow with participants
(DESIGN.md, "Statistics from sufficient statistics"; the closed form is the standard
compound-symmetry result, e.g. Searle, Casella & McCulloch 1992, *Variance Components*, ch. 3).

The design (one SQL for the frame path and the warehouse path, :func:`crossproducts_sql`):
one indicator column per follow-up wave (these sum to the intercept), one indicator per
(non-control arm, wave), the baseline, and the plan's covariates (categorical ones as
treatment-coded dummies). Every plan is a linear (or, for the saturating shape, non-linear)
map from a few parameters to these coefficients, so one set of statistics serves every plan:

- time trend ``per_wave``: mu_w free; ``linear_months``: mu_w = alpha + slope * months_w;
- effect shape ``per_wave``: effect_{a,w} free; ``constant``: effect_{a,w} = delta_a;
  ``saturating``: effect_{a,w} = plateau_a (1 - exp(-months_w / rate_a)).

Priors come from ``plan.priors`` in units of the outcome's baseline SD: the model works on the
outcome and baseline standardised by the baseline's mean and SD (participant level) and
covariates standardised by their row mean and SD — an affine map of the columns, hence a
linear map of the augmented cross-products (:meth:`CrossProducts.transformed`). Estimates are
mapped back to outcome units. When every participant has a single follow-up row (e.g. a study
whose second follow-up has not happened yet) tau is not identified apart from sigma, and the model
is fitted with tau = 0 (the ANCOVA); the result reports tau as 0.

With ``plan.random_slopes`` each participant also has a random slope on months (intercept and
slope correlated, G unstructured); the likelihood then needs finer statistics, grouped by the
participants' time pattern (:class:`schemas.suffstats.SlopeGroupCrossProducts`, derivation at
:func:`marginal_loglik_slopes`). Priors: slope SD HalfNormal(sigma_scale / longest follow-up in
months), (rho + 1) / 2 ~ Beta(2, 2), the LKJ(2) marginal.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError, InsufficientData
from analysis.results import (
    LONG_RUN,
    PLATEAU,
    Diagnostics,
    EffectEstimate,
    LongitudinalResult,
    ParameterEstimate,
)
from schemas.protocol import AnalysisPlan, Outcome, StudyProtocol, Wave
from schemas.sqltext import ident, literal, number
from schemas.suffstats import CrossProducts, Moments

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

__all__ = [
    "DesignSpec",
    "LongitudinalStats",
    "crossproducts_from_frame",
    "crossproducts_sql",
    "slope_groups_sql",
    "marginal_loglik_slopes",
    "ml_fit_slopes",
    "fit_from_crossproducts",
    "fit_longitudinal",
    "marginal_loglik",
    "ml_fit",
    "plan_constraint",
    "constrain",
    "compute_longitudinal_stats",
    "design_spec_from_frame",
    "MLFit",
]

# ==============================================================================================
# The design and its SQL
# ==============================================================================================


@dataclass(frozen=True)
class DesignSpec:
    """Which columns the design has: arms (control first), follow-up waves with months, covariates.

    ``covariates`` maps each covariate to ``()`` for a numeric one, or to its category levels
    (reference level first) for a categorical one, which becomes one dummy per non-reference level.
    """

    arms: tuple[str, ...]
    waves: tuple[str, ...]
    months: tuple[float, ...]
    covariates: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if len(self.arms) < 2:
            raise AnalysisInputError(f"the design needs a control and at least one other arm, got {self.arms}")
        if len(self.waves) < 1 or len(self.waves) != len(self.months):
            raise AnalysisInputError("each follow-up wave needs its months since assignment")

    @property
    def control(self) -> str:
        return self.arms[0]

    @property
    def treated(self) -> tuple[str, ...]:
        return self.arms[1:]

    def columns(self) -> list[tuple[str, str, dict[str, str]]]:
        """(column name, SQL expression over the source relation, metadata) in design order."""
        cols: list[tuple[str, str, dict[str, str]]] = []
        for w, mo in zip(self.waves, self.months, strict=True):
            cols.append((f"wave[{w}]", f"CASE WHEN wave = {literal(w)} THEN 1.0 ELSE 0.0 END",
                         {"role": "wave", "wave": w, "months": repr(float(mo))}))
        for a in self.treated:
            for w in self.waves:
                cols.append((f"arm[{a}]:wave[{w}]",
                             f"CASE WHEN arm = {literal(a)} AND wave = {literal(w)} THEN 1.0 ELSE 0.0 END",
                             {"role": "effect", "arm": a, "wave": w}))
        cols.append(("baseline", "CAST(baseline AS DOUBLE)", {"role": "baseline"}))
        for name, levels in self.covariates:
            if not levels:
                cols.append((name, f"CAST({ident(name)} AS DOUBLE)", {"role": "covariate"}))
            else:
                for lev in levels[1:]:
                    cols.append((f"{name}[{lev}]",
                                 f"CASE WHEN CAST({ident(name)} AS VARCHAR) = {literal(lev)} THEN 1.0 ELSE 0.0 END",
                                 {"role": "covariate", "variable": name}))
        return cols

    def column_names(self) -> tuple[str, ...]:
        return tuple(c[0] for c in self.columns())

    def column_info(self) -> tuple[tuple[str, str, str], ...]:
        return tuple((c, k, v) for c, _, meta in self.columns() for k, v in meta.items())


def crossproducts_sql(spec: DesignSpec, source: str) -> tuple[str, str, str]:
    """Three SQL statements over ``source`` (a relation with columns participant, arm, wave, y,
    baseline and the covariates; one row per observed follow-up value):

    1. global sums: n_obs, sum(c_j c_k) for j <= k, sum(c_j y), sum(y y);
    2. per group of participants with m rows: K_m, sums of s_j s_k, s_j s_y, s_y^2 over participants
       (participant sums first, in a sub-query; no Python loop over participants);
    3. baseline moments over participants (one baseline per participant).

    The same text runs on an in-memory frame (:func:`crossproducts_from_frame`) and on the warehouse
    (``flows.suffstats``).
    """
    cols = spec.columns()
    p = len(cols)
    design = ", ".join(f"{expr} AS c{j}" for j, (_, expr, _) in enumerate(cols))
    design_rel = f"(SELECT participant, CAST(y AS DOUBLE) AS y, {design} FROM {source})"
    pairs = [(j, k) for j in range(p) for k in range(j, p)]
    glob = ", ".join(
        ["count(*) AS n_obs"]
        + [f"sum(c{j} * c{k}) AS xx_{j}_{k}" for j, k in pairs]
        + [f"sum(c{j} * y) AS xy_{j}" for j in range(p)]
        + ["sum(y * y) AS yy"]
    )
    global_sql = f"SELECT {glob} FROM {design_rel}"
    sums = ", ".join(["count(*) AS m"] + [f"sum(c{j}) AS s{j}" for j in range(p)] + ["sum(y) AS sy"])
    per_participant = f"(SELECT {sums} FROM {design_rel} GROUP BY participant)"
    grp = ", ".join(
        ["m", "count(*) AS k"]
        + [f"sum(s{j} * s{k}) AS xx_{j}_{k}" for j, k in pairs]
        + [f"sum(s{j} * sy) AS xy_{j}" for j in range(p)]
        + ["sum(sy * sy) AS yy"]
    )
    group_sql = f"SELECT {grp} FROM {per_participant} GROUP BY m ORDER BY m"
    baseline_sql = (
        "SELECT count(*) AS n, sum(b) AS s, sum(b * b) AS ss FROM "
        f"(SELECT participant, any_value(CAST(baseline AS DOUBLE)) AS b FROM {source} GROUP BY participant)"
    )
    return global_sql, group_sql, baseline_sql


def slope_groups_sql(spec: DesignSpec, source: str) -> str:
    """SQL for the random-slope statistics over ``source`` (same relation as :func:`crossproducts_sql`).

    Time is the wave's months since assignment. Per participant: m rows, sum t, sum t^2 and the sums
    a0 = 1'[X, y] and a1 = t'[X, y]; then per group of participants sharing (m, sum t, sum t^2):
    the count and the sums of a0 a0', a0 a1' and a1 a1' (schemas.suffstats.SlopeGroupCrossProducts).
    """
    cols = spec.columns()
    q = len(cols) + 1  # augmented with y as the last column
    # DOUBLE throughout: SQL number literals are DECIMALs, whose sums of products overflow HUGEINT at scale
    t_expr = "CAST(CASE " + " ".join(f"WHEN wave = {literal(w)} THEN {float(mo)!r}"
                                     for w, mo in zip(spec.waves, spec.months, strict=True)) + " END AS DOUBLE)"
    design = ", ".join([f"CAST({expr} AS DOUBLE) AS c{j}" for j, (_, expr, _) in enumerate(cols)]
                       + [f"CAST(y AS DOUBLE) AS c{q - 1}"])
    rel = f"(SELECT participant, {t_expr} AS t, {design} FROM {source})"
    sums = ", ".join(["count(*) AS m", "round(sum(t), 9) AS st", "round(sum(t * t), 9) AS stt"]
                     + [f"sum(c{j}) AS a{j}" for j in range(q)] + [f"sum(t * c{j}) AS b{j}" for j in range(q)])
    upper = [(j, k) for j in range(q) for k in range(j, q)]
    aggs = (["m", "st", "stt", "count(*) AS k"]
            + [f"sum(a{j} * a{k})" for j, k in upper]
            + [f"sum(a{j} * b{k})" for j in range(q) for k in range(q)]
            + [f"sum(b{j} * b{k})" for j, k in upper])
    return f"SELECT {', '.join(aggs)} FROM (SELECT {sums} FROM {rel} GROUP BY participant) GROUP BY m, st, stt ORDER BY m, st, stt"


def _slope_groups(con: duckdb.DuckDBPyConnection, spec: DesignSpec, source: str):
    from schemas.suffstats import SlopeGroupCrossProducts

    q = len(spec.columns()) + 1
    n = q * (q + 1) // 2
    out = []
    for row in con.execute(slope_groups_sql(spec, source)).fetchall():
        vals = _floats(row[4:])  # w00 upper triangle, w01 whole (row-major), w11 upper triangle
        w00 = _symmetric(vals[:n], q)
        w01 = np.array(vals[n:n + q * q]).reshape(q, q)
        w11 = _symmetric(vals[n + q * q:], q)
        out.append(SlopeGroupCrossProducts(int(row[0]), float(row[1]), float(row[2]), int(row[3]), w00, w01, w11))
    return tuple(out)


def _symmetric(upper: Sequence[float], p: int) -> np.ndarray:
    """The p x p symmetric matrix whose upper triangle, row by row (j <= k), is ``upper``."""
    m = np.zeros((p, p))
    m[np.triu_indices(p)] = upper
    return m + np.triu(m, 1).T


def _floats(values: Sequence[float | None]) -> list[float]:
    return [0.0 if v is None else float(v) for v in values]  # SQL sums over no rows are NULL


def _unpack(row: Sequence[float], p: int, offset: int) -> tuple[np.ndarray, np.ndarray, float]:
    n = p * (p + 1) // 2
    vals = _floats(row[offset:offset + n + p + 1])
    return _symmetric(vals[:n], p), np.array(vals[n:n + p]), vals[n + p]


@dataclass(frozen=True)
class LongitudinalStats:
    """Everything the primary model needs: the cross-products, the baseline moments (for the prior
    scale and standardisation) and the design spec."""

    spec: DesignSpec
    cross: CrossProducts
    baseline: Moments

    def __add__(self, other: LongitudinalStats) -> LongitudinalStats:
        if not isinstance(other, LongitudinalStats):
            raise TypeError(f"cannot add LongitudinalStats and {type(other).__name__}")
        if self.spec != other.spec:
            raise ValueError("cannot pool statistics of different designs")
        return LongitudinalStats(self.spec, self.cross + other.cross, self.baseline + other.baseline)


def compute_longitudinal_stats(
    con: duckdb.DuckDBPyConnection, source: str, spec: DesignSpec, *, slopes: bool = False
) -> LongitudinalStats:
    """Run :func:`crossproducts_sql` on an open DuckDB connection (and :func:`slope_groups_sql` with ``slopes``)."""
    from schemas.suffstats import GroupCrossProducts

    p = len(spec.columns())
    global_sql, group_sql, baseline_sql = crossproducts_sql(spec, source)
    g = con.execute(global_sql).fetchone()
    n_obs = int(g[0])
    if n_obs == 0:
        raise InsufficientData("the longitudinal model", 1, 0, "follow-up rows with a baseline")
    xtx, xty, yty = _unpack(g, p, 1)
    groups = []
    for row in con.execute(group_sql).fetchall():
        sxx, sxy, syy = _unpack(row, p, 2)
        groups.append(GroupCrossProducts(int(row[0]), int(row[1]), sxx, sxy, syy))
    b = con.execute(baseline_sql).fetchone()
    slope_groups = _slope_groups(con, spec, source) if slopes else ()
    cross = CrossProducts(spec.column_names(), n_obs, xtx, xty, yty, tuple(groups), spec.column_info(), slope_groups)
    return LongitudinalStats(spec, cross, Moments(int(b[0]), float(b[1]), float(b[2])))


def design_spec_from_frame(
    frame: pd.DataFrame,
    *,
    control: str,
    waves: Mapping[str, float],
    covariates: Sequence[str] = (),
    arms: Sequence[str] | None = None,
) -> DesignSpec:
    """Arms (control first, then the others sorted), waves in months order, covariate levels
    (non-numeric columns become categorical with sorted levels, the first the reference)."""
    present = sorted(map(str, frame["arm"].unique()))
    if control not in present:
        raise AnalysisInputError(f"control arm {control!r} is not in the data; arms present: {present}")
    arm_list = [control] + [a for a in (arms or present) if a != control]
    missing = [a for a in arm_list if a not in present]
    if missing:
        raise AnalysisInputError(f"arms {missing} have no follow-up rows in the data")
    covs: list[tuple[str, tuple[str, ...]]] = []
    for c in covariates:
        if c not in frame.columns:
            raise AnalysisInputError(f"the plan names covariate {c!r}, which the frame lacks (columns: {list(frame.columns)})")
        col = frame[c]
        if col.isna().any():
            raise AnalysisInputError(f"covariate {c!r} has missing values; impute or drop them before the fit")
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            covs.append((c, tuple(sorted(map(str, col.unique())))))
        else:
            covs.append((c, ()))
    order = sorted(waves.items(), key=lambda kv: kv[1])
    return DesignSpec(tuple(arm_list), tuple(w for w, _ in order), tuple(float(m) for _, m in order), tuple(covs))


def crossproducts_from_frame(
    frame: pd.DataFrame, spec: DesignSpec, *, value: str = "outcome", slopes: bool = False
) -> LongitudinalStats:
    """The frame path: register the long frame in an in-memory DuckDB and run the same SQL as the
    warehouse path. Rows with a missing outcome are dropped (missing at random is the model's
    assumption); waves not in ``spec`` are ignored."""
    import duckdb

    needed = ["participant", "arm", "wave", value, "baseline", *[c for c, _ in spec.covariates]]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise AnalysisInputError(f"the frame lacks columns {absent}; it needs {needed}")
    f = frame[needed].copy()
    f = f.rename(columns={value: "y"}) if value != "y" else f
    f["wave"] = f["wave"].astype(str)
    f["arm"] = f["arm"].astype(str)
    f = f[f["y"].notna() & f["wave"].isin(spec.waves)]
    if f["baseline"].isna().any():
        raise AnalysisInputError("some rows lack a baseline value; the model adjusts for baseline, so drop or impute them")
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET threads TO 1")
        con.register("obs_frame", f)
        return compute_longitudinal_stats(con, "obs_frame", spec, slopes=slopes)
    finally:
        con.close()


# ==============================================================================================
# Likelihood on cross-products (numpy reference, ML fit used for checks and frequentist parity)
# ==============================================================================================


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


# ==============================================================================================
# The PyMC model
# ==============================================================================================


def _standardise(stats: LongitudinalStats) -> tuple[CrossProducts, np.ndarray, np.ndarray, float, float]:
    """Standardised cross-products and the map back: beta_orig = sb * (A @ beta_std + d)."""
    cross, spec = stats.cross, stats.spec
    cols = list(cross.columns)
    p = len(cols)
    mb, sb = stats.baseline.mean, stats.baseline.sd
    if not sb > 0:
        raise InsufficientData("a baseline SD above zero", 2, stats.baseline.n)
    wave_idx = [cols.index(f"wave[{w}]") for w in spec.waves]
    ones = np.zeros(p)
    ones[wave_idx] = 1.0  # X @ ones = 1 (the wave indicators sum to the intercept)
    col_sum = cross.xtx @ ones
    n = cross.n_obs
    # new X = X A, new y = y / sb - X d  (all as a (p+1) x (p+1) map of [X, y])
    a = np.eye(p)
    d = np.zeros(p)
    d[wave_idx] = mb / sb
    j_base = cols.index("baseline")
    a[j_base, j_base] = 1.0 / sb
    a[wave_idx, j_base] = -mb / sb
    for j, name in enumerate(cols):
        if name.startswith(("wave[", "arm[")) or name == "baseline":
            continue
        mean = col_sum[j] / n
        var = cross.xtx[j, j] / n - mean**2
        if not var > 0:
            raise AnalysisInputError(f"covariate column {name!r} does not vary; remove it from the plan")
        sd = math.sqrt(var)
        a[j, j] = 1.0 / sd
        a[wave_idx, j] = -mean / sd
    t = np.zeros((p + 1, p + 1))
    t[:p, :p] = a
    t[:p, p] = -d
    t[p, p] = 1.0 / sb
    std = cross.transformed(t, cols)
    return std, a, d, mb, sb


@dataclass
class _Compiled:
    compiled: Any
    data_names: tuple[str, ...]


_COMPILE_CACHE: dict[tuple, _Compiled] = {}


def _param_layout(spec: DesignSpec, plan: AnalysisPlan) -> dict[str, int]:
    n_w, n_t = len(spec.waves), len(spec.treated)
    n_cov = len(spec.column_names()) - n_w - n_t * n_w - 1
    return {
        "trend": n_w if plan.time_trend == "per_wave" else 2,
        "effect": n_t * n_w if plan.effect_shape == "per_wave" else n_t,
        "coef": 1 + n_cov,
    }


def _build_model(spec: DesignSpec, plan: AnalysisPlan, data: Mapping[str, np.ndarray], intercepts: bool = True):
    import pymc as pm
    import pytensor.tensor as pt

    n_w, n_t = len(spec.waves), len(spec.treated)
    lay = _param_layout(spec, plan)
    with pm.Model() as model:
        d = {k: pm.Data(k, v) for k, v in data.items()}
        months = d["months"]
        if plan.time_trend == "per_wave":
            trend = pm.Normal("trend", 0.0, d["intercept_sd"], shape=lay["trend"])
            mu_w = trend
        else:
            trend = pm.Normal("trend", 0.0, d["intercept_sd"], shape=2)
            mu_w = trend[0] + trend[1] * months
        if plan.effect_shape == "per_wave":
            eff = pm.Normal("effect_std", 0.0, d["effect_sd"], shape=n_t * n_w)
            eff_aw = eff
        elif plan.effect_shape == "constant":
            eff = pm.Normal("effect_std", 0.0, d["effect_sd"], shape=n_t)
            eff_aw = pt.repeat(eff, n_w)
        else:
            plateau = pm.Normal("effect_std", 0.0, d["effect_sd"], shape=n_t)
            rate = pm.LogNormal("rate_months", pt.log(d["rate_mean"]), 1.0, shape=n_t)
            eff_aw = (plateau[:, None] * (1.0 - pt.exp(-months[None, :] / rate[:, None]))).reshape((n_t * n_w,))
        coef = pm.Normal("coef", 0.0, d["coefficient_sd"], shape=lay["coef"])
        sigma = pm.HalfNormal("sigma_std", d["sigma_scale"])
        # with one follow-up row per participant tau is not identified apart from sigma: tau = 0 (ANCOVA)
        if not intercepts:
            beta = pt.concatenate([mu_w, eff_aw, coef])
            q_all = d["yty"] - 2.0 * pt.dot(beta, d["xty"]) + pt.dot(beta, pt.dot(d["xtx"], beta))
            pm.Potential("marginal_loglik", -0.5 * (d["n_obs"] * pt.log(sigma**2) + q_all / sigma**2))
            return model
        tau = pm.HalfNormal("tau_std", d["sigma_scale"])
        beta = pt.concatenate([mu_w, eff_aw, coef])
        s2, t2 = sigma**2, tau**2
        q_all = d["yty"] - 2.0 * pt.dot(beta, d["xty"]) + pt.dot(beta, pt.dot(d["xtx"], beta))
        if plan.random_slopes:
            # random intercepts and slopes on months (see "random intercepts and slopes" above)
            tau1 = pm.HalfNormal("tau_slope_std", d["slope_scale"])
            rho01 = pm.Beta("rho01", 2.0, 2.0)  # (rho + 1) / 2; the LKJ(eta = 2) marginal for 2 x 2
            rho = pm.Deterministic("rho", 2.0 * rho01 - 1.0)
            ga, gb, gc = t2, tau1**2, rho * tau * tau1
            m, st, stt = d["sm"], d["sst"], d["sstt"]
            h00, h01 = s2 + ga * m + gc * st, ga * st + gc * stt
            h10, h11 = gc * m + gb * st, s2 + gc * st + gb * stt
            det_h = h00 * h11 - h01 * h10
            a00 = (h11 * ga - h01 * gc) / det_h
            a01 = (h11 * gc - h01 * gb) / det_h
            a10 = (h00 * gc - h10 * ga) / det_h
            a11 = (h00 * gb - h10 * gc) / det_h
            b = pt.concatenate([-beta, pt.ones(1)])
            bb = pt.outer(b, b).reshape((-1,))  # b'W b = vec(W) . vec(b b'): one matrix-vector product
            q00 = pt.dot(d["w00"], bb)
            q01 = pt.dot(d["w01"], bb)
            q11 = pt.dot(d["w11"], bb)
            logdet = pt.sum(d["sk"] * ((m - 2.0) * pt.log(s2) + pt.log(det_h)))
            quad = (q_all - pt.sum(a00 * q00 + (a01 + a10) * q01 + a11 * q11)) / s2
            pm.Potential("marginal_loglik", -0.5 * (logdet + quad))
            return model
        c_m = t2 / (s2 + d["m"] * t2)
        q_m = d["syy"] - 2.0 * pt.dot(d["sxy"], beta) + pt.dot(pt.dot(d["sxx"], beta), beta)
        logdet = (d["n_obs"] - pt.sum(d["k"])) * pt.log(s2) + pt.sum(d["k"] * pt.log(s2 + d["m"] * t2))
        quad = (q_all - pt.sum(c_m * q_m)) / s2
        pm.Potential("marginal_loglik", -0.5 * (logdet + quad))
    return model


def _model_data(std: CrossProducts, spec: DesignSpec, plan: AnalysisPlan) -> dict[str, np.ndarray]:
    """pm.Data values; groups padded to m = 1..W so array shapes depend on the design only."""
    p, n_w = len(std.columns), len(spec.waves)
    sxx = np.zeros((n_w, p, p))
    sxy = np.zeros((n_w, p))
    syy = np.zeros(n_w)
    k = np.zeros(n_w)
    for g in std.groups:
        if not 1 <= g.rows_per_participant <= n_w:
            raise AnalysisInputError(
                f"{g.n_participants} participants have {g.rows_per_participant} follow-up rows but the design has "
                f"{n_w} waves; each participant may contribute at most one row per wave"
            )
        i = g.rows_per_participant - 1
        sxx[i], sxy[i], syy[i], k[i] = g.sxsx, g.sxsy, g.sysy, g.n_participants
    pr = plan.priors
    slope_data: dict[str, np.ndarray] = {}
    if plan.random_slopes:
        if not std.slope_groups:
            raise AnalysisInputError("the plan has random slopes but the statistics lack slope groups; "
                                     "compute them with slopes=True")
        n_g = len(std.slope_groups)
        n_pad = max(8, 1 << (n_g - 1).bit_length())  # padded so a few more patterns do not recompile
        q = p + 1
        w00, w01, w11 = np.zeros((n_pad, q, q)), np.zeros((n_pad, q, q)), np.zeros((n_pad, q, q))
        sk, sm, sst, sstt = np.zeros(n_pad), np.ones(n_pad), np.zeros(n_pad), np.zeros(n_pad)
        for i, g in enumerate(std.slope_groups):
            w00[i], w01[i], w11[i] = g.w00, g.w01, g.w11
            sk[i], sm[i], sst[i], sstt[i] = g.n_participants, g.rows_per_participant, g.sum_t, g.sum_tt
        flat = lambda w: w.reshape(n_pad, q * q)  # noqa: E731
        slope_data = {"w00": flat(w00), "w01": flat(w01), "w11": flat(w11), "sk": sk, "sm": sm, "sst": sst, "sstt": sstt,
                      # a slope SD of sigma_scale per follow-up span (outcome-SD units per month)
                      "slope_scale": np.array(pr.sigma_scale / max(max(spec.months), 1e-9))}
    return slope_data | {
        "xtx": std.xtx, "xty": std.xty, "yty": np.array(std.yty), "n_obs": np.array(float(std.n_obs)),
        "sxx": sxx, "sxy": sxy, "syy": syy, "k": k, "m": np.arange(1, n_w + 1, dtype=float),
        "months": np.array(spec.months, dtype=float),
        "intercept_sd": np.array(pr.intercept_sd), "effect_sd": np.array(pr.effect_sd),
        "coefficient_sd": np.array(pr.coefficient_sd), "sigma_scale": np.array(pr.sigma_scale),
        "rate_mean": np.array(pr.rate_mean_months),
    }


def _compiled_model(spec: DesignSpec, plan: AnalysisPlan, data: dict[str, np.ndarray], intercepts: bool = True):
    """Compile once per (design shape, plan shape); later fits swap data with ``with_data``
    (numba compilation costs ~10 s, sampling on the statistics ~1 s)."""
    import nutpie

    key = (len(spec.waves), len(spec.treated), len(spec.column_names()), plan.effect_shape, plan.time_trend,
           plan.random_slopes, data["w00"].shape[0] if plan.random_slopes else 0, intercepts)
    hit = _COMPILE_CACHE.get(key)
    if hit is None:
        model = _build_model(spec, plan, data, intercepts)
        hit = _Compiled(nutpie.compile_pymc_model(model), tuple(data))
        _COMPILE_CACHE[key] = hit
        return hit.compiled
    # data the plan does not use (e.g. months for a per-wave model) were pruned from the compiled graph
    return hit.compiled.with_data(**{k: v for k, v in data.items() if k in hit.compiled.shared_data})


def _check_threads() -> None:
    # BLAS threads inside each gradient evaluation slow sampling several-fold on small machines
    # (research/stack.md); they must be limited before numpy loads, so we can only warn here.
    if os.environ.get("OPENBLAS_NUM_THREADS") is None and os.environ.get("OMP_NUM_THREADS") is None:
        import warnings

        warnings.warn(
            "OMP_NUM_THREADS / OPENBLAS_NUM_THREADS are not set; set them to 1 before Python starts for fast sampling",
            RuntimeWarning,
            stacklevel=3,
        )


def fit_from_crossproducts(
    stats: LongitudinalStats,
    plan: AnalysisPlan,
    *,
    outcome: str = "outcome",
    direction: str = "higher_is_better",
    mcid: float | None = None,
    rope: float | None = None,
    progress_bar: bool = False,
) -> LongitudinalResult:
    """Fit the primary model to sufficient statistics (the CLI/warehouse path).

    Returns a result whose diagnostics may have failed; check ``result.confirmatory`` or call
    ``result.require_passed()`` before reporting it as confirmatory."""
    import nutpie

    if direction not in ("higher_is_better", "lower_is_better"):
        raise AnalysisInputError(f"direction must be higher_is_better or lower_is_better, got {direction!r}")
    _check_threads()
    spec = stats.spec
    if plan.random_slopes:
        if len(set(spec.months)) < 2:
            raise AnalysisInputError("random slopes need at least two follow-up waves at different months; "
                                     "set random_slopes: false")
        if not any(g.rows_per_participant >= 3 for g in stats.cross.slope_groups):
            raise AnalysisInputError("random slopes need participants observed at three or more follow-up waves "
                                     "(otherwise slope and residual variance are not separable); set random_slopes: false")
    std, a_map, d_map, mb, sb = _standardise(stats)
    data = _model_data(std, spec, plan)
    intercepts = any(g.rows_per_participant > 1 for g in stats.cross.groups)
    compiled = _compiled_model(spec, plan, data, intercepts)
    t0 = time.perf_counter()
    idata = nutpie.sample(
        compiled, draws=plan.draws, tune=plan.tune, chains=plan.chains, seed=plan.seed,
        progress_bar=progress_bar, cores=min(plan.chains, os.cpu_count() or 1),
    )
    seconds = time.perf_counter() - t0
    return _summarise(idata, stats, plan, std, a_map, d_map, sb, outcome, direction, mcid, rope, seconds)


def _summarise(idata, stats, plan, std, a_map, d_map, sb, outcome, direction, mcid, rope, seconds) -> LongitudinalResult:
    import xarray as xr

    spec = stats.spec
    n_w, n_t = len(spec.waves), len(spec.treated)
    post = idata.posterior
    chains, draws = post.sizes["chain"], post.sizes["draw"]
    flat = lambda v: np.asarray(post[v]).reshape(chains * draws, -1)  # noqa: E731
    trend = flat("trend")
    months = np.array(spec.months)
    mu_w = trend if plan.time_trend == "per_wave" else trend[:, [0]] + trend[:, [1]] * months[None, :]
    eff = flat("effect_std")
    if plan.effect_shape == "per_wave":
        eff_aw = eff
    elif plan.effect_shape == "constant":
        eff_aw = np.repeat(eff, n_w, axis=1)
    else:
        rate = flat("rate_months")
        eff_aw = (eff[:, :, None] * (1 - np.exp(-months[None, None, :] / rate[:, :, None]))).reshape(-1, n_t * n_w)
    coef = flat("coef")
    beta_std = np.concatenate([mu_w, eff_aw, coef], axis=1)
    beta = sb * (beta_std @ a_map.T + d_map[None, :])
    sigma = flat("sigma_std")[:, 0] * sb
    tau = flat("tau_std")[:, 0] * sb if "tau_std" in post else np.zeros(chains * draws)

    # --- diagnostics gate -------------------------------------------------------------------
    var_names = (["trend", "effect_std", "coef", "sigma_std"] + (["tau_std"] if "tau_std" in post else [])
                 + (["rate_months"] if plan.effect_shape == "saturating" else [])
                 + (["tau_slope_std", "rho"] if plan.random_slopes else []))
    diagnostics = Diagnostics.of(idata, var_names, plan, seconds)

    # --- effects in outcome units -------------------------------------------------------------
    level = plan.interval_level
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    sign = 1.0 if direction == "higher_is_better" else -1.0
    effects: list[EffectEstimate] = []
    cols = list(stats.cross.columns)

    def est(arm: str, wave: str, draws_: np.ndarray) -> EffectEstimate:
        good = sign * draws_
        return EffectEstimate(
            outcome=outcome, arm=arm, control=spec.control, wave=wave,
            mean=float(draws_.mean()), sd=float(draws_.std(ddof=1)),
            lower=float(np.quantile(draws_, lo_q)), upper=float(np.quantile(draws_, hi_q)),
            interval_level=level, p_benefit=float((good > 0).mean()),
            p_above_mcid=None if mcid is None else float((good > mcid).mean()),
            p_in_rope=None if rope is None else float((np.abs(draws_) < rope).mean()),
            direction=direction,
            method="bayes_random_slopes_marginal" if plan.random_slopes else "bayes_random_intercept_marginal",
        )

    effect_draws = np.zeros((beta.shape[0], n_t, n_w))
    for ai, a in enumerate(spec.treated):
        for wi, w in enumerate(spec.waves):
            effect_draws[:, ai, wi] = beta[:, cols.index(f"arm[{a}]:wave[{w}]")]
            effects.append(est(a, w, effect_draws[:, ai, wi]))
        effects.append(est(a, LONG_RUN, effect_draws[:, ai, -1]))
        if plan.effect_shape == "saturating":
            effects.append(est(a, PLATEAU, sb * eff[:, ai]))

    def par(name: str, x: np.ndarray) -> ParameterEstimate:
        return ParameterEstimate(name, float(x.mean()), float(x.std(ddof=1)), float(np.quantile(x, lo_q)), float(np.quantile(x, hi_q)))

    fixed = [par(c, beta[:, j]) for j, c in enumerate(cols)]
    if plan.time_trend == "linear_months":
        fixed.append(par("time_months", sb * trend[:, 1]))
    if plan.effect_shape == "constant":
        fixed += [par(f"arm[{a}]", sb * eff[:, i]) for i, a in enumerate(spec.treated)]
    if plan.effect_shape == "saturating":
        rate = flat("rate_months")
        fixed += [par(f"rate_months[{a}]", rate[:, i]) for i, a in enumerate(spec.treated)]
    variances = [par("sigma", sigma), par("tau", tau), par("sigma2", sigma**2), par("tau2", tau**2)]
    if plan.random_slopes:  # slope SD in outcome units per month; correlation of intercept and slope
        tau_slope = flat("tau_slope_std")[:, 0] * sb
        variances += [par("tau_slope", tau_slope), par("tau_slope2", tau_slope**2), par("rho", flat("rho")[:, 0])]

    # --- keep the outcome-unit quantities in the InferenceData too ------------------------------------
    shape = (chains, draws)
    post["effect"] = xr.DataArray(
        effect_draws.reshape(*shape, n_t, n_w), dims=("chain", "draw", "arm", "wave"),
        coords={"arm": list(spec.treated), "wave": list(spec.waves)},
    )
    post["beta"] = xr.DataArray(beta.reshape(*shape, -1), dims=("chain", "draw", "column"), coords={"column": cols})
    post["sigma"] = xr.DataArray(sigma.reshape(shape), dims=("chain", "draw"))
    post["tau"] = xr.DataArray(tau.reshape(shape), dims=("chain", "draw"))

    return LongitudinalResult(
        outcome=outcome, direction=direction, control=spec.control, arms=spec.arms, waves=spec.waves,
        effect_shape=plan.effect_shape, time_trend=plan.time_trend, effects=tuple(effects),
        fixed_effects=tuple(fixed), variance_components=tuple(variances), diagnostics=diagnostics,
        n_participants=stats.cross.n_participants, n_obs=stats.cross.n_obs, idata=idata,
    )


def _resolve_waves(waves: Sequence[Wave] | Mapping[str, float] | None, frame: pd.DataFrame, baseline_wave: str | None) -> dict[str, float]:
    if waves is None:
        vals = pd.unique(frame["wave"])
        try:
            return {str(v): float(v) for v in vals}
        except (TypeError, ValueError):
            raise AnalysisInputError(
                "waves must be given (protocol Waves or a mapping wave -> months) when the wave column is not numeric months"
            ) from None
    if isinstance(waves, Mapping):
        out = {str(k): float(v) for k, v in waves.items()}
    else:
        out = {w.name: w.months for w in waves}
    if baseline_wave is not None:
        out.pop(baseline_wave, None)
    return out


def fit_longitudinal(
    frame: pd.DataFrame,
    plan: AnalysisPlan | StudyProtocol,
    *,
    outcome: str | Outcome | None = None,
    direction: str | None = None,
    mcid: float | None = None,
    rope: float | None = None,
    control: str | None = None,
    waves: Sequence[Wave] | Mapping[str, float] | None = None,
    value: str = "outcome",
    progress_bar: bool = False,
) -> LongitudinalResult:
    """Fit the preregistered primary model to a long frame.

    ``frame`` has one row per participant x follow-up wave with columns ``participant, arm, wave,
    outcome`` (the value; another name via ``value=``), ``baseline`` and the plan's covariates.
    ``plan`` is an :class:`AnalysisPlan`, or a whole :class:`StudyProtocol` (then the primary
    outcome, its direction/MCID/ROPE, the control arm and the waves come from it). ``waves`` gives
    each follow-up wave's months since assignment (protocol Waves or a mapping); the baseline wave
    is excluded. The frame is reduced to cross-products in DuckDB by the same SQL as the warehouse
    path, then :func:`fit_from_crossproducts` runs.
    """
    if isinstance(plan, StudyProtocol):
        protocol = plan
        plan = protocol.analysis
        out_obj = outcome if isinstance(outcome, Outcome) else protocol.outcome(outcome) if outcome else protocol.primary_outcome
        control = control or protocol.control_arm
        waves = waves if waves is not None else [w for w in protocol.waves if w.name != protocol.baseline_wave]
        outcome = out_obj
    if isinstance(outcome, Outcome):
        direction = direction or outcome.direction
        mcid = mcid if mcid is not None else outcome.mcid
        rope = rope if rope is not None else outcome.rope
        outcome = outcome.name
    outcome = outcome or value
    direction = direction or "higher_is_better"
    if control is None:
        raise AnalysisInputError("name the control arm (control=...) or pass the StudyProtocol as the plan")
    wave_months = _resolve_waves(waves, frame, plan.baseline_wave)
    spec = design_spec_from_frame(frame, control=control, waves=wave_months, covariates=plan.covariates)
    stats = crossproducts_from_frame(frame, spec, value=value, slopes=plan.random_slopes)
    return fit_from_crossproducts(stats, plan, outcome=outcome, direction=direction, mcid=mcid, rope=rope, progress_bar=progress_bar)
