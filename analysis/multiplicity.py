"""Multiplicity across secondary outcomes, and prespecified subgroup effects with partial pooling.

- :func:`holm`: Holm's step-down adjustment (Holm 1979, "A simple sequentially rejective multiple
  test procedure", Scand J Statist 6:65-70). With m p-values sorted p_(1) <= ... <= p_(m), the
  adjusted value is  p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j));  reject where p~ <= alpha.
  It controls the family-wise error rate under any dependence. It is applied to the frequentist
  cross-check p-values of the secondary outcomes (the primary outcome is tested alone).
- :func:`partial_pool`: normal-normal hierarchical shrinkage of per-subgroup effect estimates
  (y_j ~ N(theta_j, s_j^2), theta_j ~ N(mu, tau^2)), with tau^2 by the DerSimonian-Laird moment
  estimator (DerSimonian & Laird 1986, Control Clin Trials 7:177, eq. 4-5) and the empirical-Bayes
  posterior theta_j | y ~ N(mu + (1 - B_j)(y_j - mu), s_j^2 (1 - B_j) + B_j^2 var(mu_hat)),
  B_j = s_j^2 / (s_j^2 + tau^2) (Morris 1983, JASA 78:47, sec. 3; the second term carries the
  uncertainty of mu_hat). Subgroups with noisy estimates shrink toward the overall effect, so a
  lucky small subgroup is not reported as a discovery.
- :func:`subgroup_ancova`: the raw per-subgroup effects: within each subgroup, the final-wave
  ANCOVA arm difference (outcome ~ arm + baseline) with its classical OLS standard error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class HolmResult:
    name: str
    p_value: float
    p_adjusted: float
    reject: bool


def holm(p_values: Mapping[str, float], *, alpha: float = 0.05) -> list[HolmResult]:
    """Holm (1979) step-down adjusted p-values, returned in the input order."""
    names = list(p_values)
    p = np.array([float(p_values[k]) for k in names], dtype=float)
    if p.size == 0:
        return []
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {dict(p_values)}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj_sorted = np.maximum.accumulate(stepped)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return [HolmResult(n, float(p[i]), float(adj[i]), bool(adj[i] <= alpha)) for i, n in enumerate(names)]


@dataclass(frozen=True)
class SubgroupEstimate:
    """One subgroup's raw effect (arm minus control, outcome units) and its standard error."""

    subgroup: str
    level: str
    arm: str
    estimate: float
    se: float
    n: int


@dataclass(frozen=True)
class PooledSubgroup:
    subgroup: str
    level: str
    arm: str
    raw_estimate: float
    raw_se: float
    estimate: float      # partially pooled (posterior mean)
    sd: float            # posterior SD
    lower: float
    upper: float
    shrinkage: float     # B_j: 0 = no pooling, 1 = complete pooling to the overall effect
    overall: float       # mu_hat
    tau: float           # between-subgroup SD of true effects (DerSimonian-Laird)
    n: int


def partial_pool(estimates: Sequence[SubgroupEstimate], *, interval_level: float = 0.95) -> list[PooledSubgroup]:
    """Normal-normal empirical-Bayes shrinkage of one arm's subgroup effects (see module docstring)."""
    from scipy.stats import norm

    if len(estimates) < 2:
        raise ValueError("partial pooling needs at least two subgroup levels")
    y = np.array([e.estimate for e in estimates], dtype=float)
    s2 = np.array([e.se for e in estimates], dtype=float) ** 2
    if np.any(~np.isfinite(y)) or np.any(~(s2 > 0)):
        raise ValueError("every subgroup needs a finite estimate and a positive standard error")
    k = y.size
    w = 1.0 / s2
    mu_fixed = float((w * y).sum() / w.sum())
    q = float((w * (y - mu_fixed) ** 2).sum())
    tau2 = max(0.0, (q - (k - 1)) / (w.sum() - (w**2).sum() / w.sum()))
    w_star = 1.0 / (s2 + tau2)
    mu = float((w_star * y).sum() / w_star.sum())
    var_mu = 1.0 / float(w_star.sum())
    b = s2 / (s2 + tau2)
    post_mean = mu + (1.0 - b) * (y - mu)
    post_var = s2 * (1.0 - b) + b**2 * var_mu
    z = float(norm.ppf(0.5 + interval_level / 2.0))
    out = []
    for j, e in enumerate(estimates):
        sd = math.sqrt(post_var[j])
        out.append(PooledSubgroup(
            subgroup=e.subgroup, level=e.level, arm=e.arm, raw_estimate=float(y[j]), raw_se=e.se,
            estimate=float(post_mean[j]), sd=sd, lower=float(post_mean[j] - z * sd),
            upper=float(post_mean[j] + z * sd), shrinkage=float(b[j]), overall=mu, tau=math.sqrt(tau2), n=e.n,
        ))
    return out


def baseline_terciles(baseline: pd.Series) -> pd.Series:
    """'T1' (lowest third) .. 'T3' of the baseline outcome; ties broken by rank so groups stay near equal."""
    ranks = baseline.rank(method="first")
    return pd.Series(pd.qcut(ranks, 3, labels=["T1", "T2", "T3"]).astype(str), index=baseline.index)


def subgroup_ancova(
    wide: pd.DataFrame,
    *,
    subgroup: str,
    control: str,
    outcome_col: str = "outcome",
    baseline_col: str = "baseline",
    arm_col: str = "arm",
) -> list[SubgroupEstimate]:
    """Per subgroup level and arm: OLS of outcome on arm dummies + baseline, within the level.

    ``wide`` has one row per participant with the final-wave outcome (NaN rows are dropped:
    complete cases, valid under MAR given baseline and arm).
    """
    d = wide.dropna(subset=[outcome_col, baseline_col])
    arms = [a for a in sorted(d[arm_col].unique()) if a != control]
    out: list[SubgroupEstimate] = []
    for level, g in d.groupby(subgroup, sort=True):
        x_cols = [np.ones(len(g)), g[baseline_col].to_numpy(float)]
        x_cols += [(g[arm_col] == a).to_numpy(float) for a in arms]
        x = np.column_stack(x_cols)
        y = g[outcome_col].to_numpy(float)
        n, p = x.shape
        if n <= p or np.linalg.matrix_rank(x) < p:
            raise ValueError(f"subgroup {subgroup}={level} has too few participants per arm for an ANCOVA")
        xtx_inv = np.linalg.inv(x.T @ x)
        beta = xtx_inv @ x.T @ y
        resid = y - x @ beta
        sigma2 = float(resid @ resid) / (n - p)
        for i, a in enumerate(arms):
            out.append(SubgroupEstimate(subgroup, str(level), a, float(beta[2 + i]),
                                        math.sqrt(sigma2 * xtx_inv[2 + i, 2 + i]), int(n)))
    return out


def subgroup_effects_from_moments(
    cells: Mapping[str, Mapping[str, object]], *, subgroup: str, control: str
) -> list[SubgroupEstimate]:
    """The same per-subgroup ANCOVA from statistics: ``cells[level][arm]`` is a PairedMoments of
    (baseline, final-wave outcome) over that level's completers (one GROUP BY level, arm in SQL)."""
    from analysis.missing import ancova_effects, statistics_from_moments

    out: list[SubgroupEstimate] = []
    for level in sorted(cells):
        stats = statistics_from_moments(cells[level], {}, control=control)  # type: ignore[arg-type]
        for e in ancova_effects(stats):
            out.append(SubgroupEstimate(subgroup, str(level), e.arm, e.estimate, e.se, e.n_observed))
    return out
