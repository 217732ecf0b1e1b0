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
- :func:`subgroup_effects_from_moments`: the raw per-subgroup effects: within each subgroup level, the
  final-wave ANCOVA arm difference (outcome ~ arm + baseline) with its classical OLS standard error, from the
  level x arm moments one GROUP BY gives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from schemas.results import LONG_RUN, Effect


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
class PooledSubgroup:
    """One subgroup's partially pooled effect (``effect``: posterior mean and SD, method
    ``ancova_subgroup_partial_pooling``) beside its own ANCOVA effect (``raw``)."""

    effect: Effect
    raw: Effect
    shrinkage: float     # B_j: 0 = no pooling, 1 = complete pooling to the overall effect
    overall: float       # mu_hat
    tau: float           # between-subgroup SD of true effects (DerSimonian-Laird)


def partial_pool(estimates: Sequence[Effect], *, interval_level: float = 0.95) -> list[PooledSubgroup]:
    """Normal-normal empirical-Bayes shrinkage of one arm's subgroup effects (see module docstring)."""
    from scipy.stats import norm

    if len(estimates) < 2:
        raise ValueError("partial pooling needs at least two subgroup levels")
    if not all(e.estimable for e in estimates):
        raise ValueError("every subgroup needs an effect: " + "; ".join(
            f"{e.subgroup}: {e.reason}" for e in estimates if not e.estimable))
    y = np.array([e.estimate for e in estimates], dtype=float)
    s2 = np.array([e.sd for e in estimates], dtype=float) ** 2
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
        pooled = replace(e, method="ancova_subgroup_partial_pooling", estimate=float(post_mean[j]), sd=sd,
                         lower=float(post_mean[j] - z * sd), upper=float(post_mean[j] + z * sd),
                         interval_level=interval_level, p_value=None, p_adjusted=None)
        out.append(PooledSubgroup(effect=pooled, raw=e, shrinkage=float(b[j]), overall=mu, tau=math.sqrt(tau2)))
    return out


def subgroup_effects_from_moments(
    cells: Mapping[str, Mapping[str, object]],
    *,
    subgroup: str,
    control: str,
    outcome: str = "outcome",
    wave: str = LONG_RUN,
    direction: str | None = None,
    interval_level: float = 0.95,
) -> list[Effect]:
    """Per subgroup level and arm: the final-wave ANCOVA (outcome ~ 1 + baseline + arm) within the level, from
    statistics: ``cells[level][arm]`` is a PairedMoments of (baseline, final-wave outcome) over that level's
    completers (one GROUP BY level, arm in SQL). Each effect is labelled ``subgroup="<subgroup>=<level>"``."""
    from analysis.missing import ancova_effects, statistics_from_moments

    out: list[Effect] = []
    for level in sorted(cells):
        stats = statistics_from_moments(cells[level], {}, control=control)  # type: ignore[arg-type]
        out += ancova_effects(stats, outcome=outcome, wave=wave, direction=direction, interval_level=interval_level,
                              method="ancova_subgroup", subgroup=f"{subgroup}={level}")
    return out
