"""CUPED: telemetry arm differences adjusted by the pre-period value of the same metric.

Deng, Xu, Kohavi & Walker (2013), "Improving the Sensitivity of Online Controlled Experiments by
Utilizing Pre-Experiment Data", WSDM, section 3.2: with X the metric in the pre-period (before
assignment, so independent of arm) and Y the metric during the study,

    theta = cov(Y, X) / var(X)                 (eq. 4; computed on all arms pooled, as in sec. 3.3)
    Y_cv  = Y - theta (X - E[X])               (eq. 3: the control-variate adjusted metric)
    var(mean Y_cv) = var(Y) (1 - rho^2) / n    (eq. 5; rho = corr(X, Y))

so the arm difference of adjusted means keeps its expectation and loses the share rho^2 of its
variance. A metric that does not vary within the arms (a study with no telemetry gives every participant
0 before and after) has no standard error: its effect is reported not estimable, never as a certain zero. Everything here is computed from one :class:`schemas.suffstats.PairedMoments` per arm
(x = pre-period, y = in-study), so it runs on GROUP BY results, never on participant rows.
Intervals are Welch-type normal intervals of the adjusted difference; the within-arm variance of
Y_cv is  var(Y) + theta^2 var(X) - 2 theta cov(X, Y)  (exact for the fixed theta).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.results import Effect
from schemas.suffstats import InsufficientData, PairedMoments


@dataclass(frozen=True)
class CupedEstimate:
    """The CUPED details of one arm's telemetry effect; ``effect`` is the adjusted difference ``arm`` minus
    ``control`` (its ``method`` says whether a pre-period adjusted it)."""

    metric: str
    arm: str
    control: str
    theta: float
    mean_arm_adjusted: float
    mean_control_adjusted: float
    difference_unadjusted: float
    se_unadjusted: float
    variance_reduction: float | None  # 1 - var(adjusted) / var(unadjusted difference); None: nothing varies
    adjusted: bool  # False when the pre-period metric is constant (e.g. no pre-period telemetry)
    effect: Effect


def cuped_theta(pooled: PairedMoments) -> float:
    """theta = cov(Y, X) / var(X) on pooled arms: the OLS slope of Y on X (Deng et al. 2013, eq. 4)."""
    if pooled.x.variance <= 0:
        raise InsufficientData("CUPED's theta (a pre-period metric that varies)", 2, 0, "pooled arms")
    return pooled.slope


def adjusted_variance(cell: PairedMoments, theta: float) -> float:
    """Sample variance of Y - theta X within one cell (theta treated as fixed)."""
    return max(cell.y.variance + theta**2 * cell.x.variance - 2.0 * theta * cell.covariance, 0.0)


def cuped_effects(
    arms: Mapping[str, PairedMoments],
    *,
    control: str,
    metric: str = "metric",
    wave: str = "in_study",
    interval_level: float = 0.95,
) -> list[CupedEstimate]:
    """CUPED-adjusted difference of every non-control arm against ``control``; ``wave`` labels the in-study
    window the metric covers (e.g. ``first_14_days``)."""
    from scipy.stats import norm

    if control not in arms:
        raise ValueError(f"control arm {control!r} has no statistics for metric {metric!r}")
    for a, cell in arms.items():
        if cell.n < 2:
            raise InsufficientData(f"CUPED for metric {metric!r}", 2, cell.n, f"arm {a!r}")
    pooled = PairedMoments.zero()
    for cell in arms.values():
        pooled = pooled + cell
    # A constant pre-period metric (typically: no telemetry before assignment) carries no information;
    # the variance-minimising theta is then 0 and CUPED is the plain difference in means, labelled so.
    adjusted = pooled.x.variance > 0
    theta = cuped_theta(pooled) if adjusted else 0.0
    mean_x = pooled.x.mean
    z = float(norm.ppf(0.5 + interval_level / 2.0))
    c = arms[control]

    def adj_mean(cell: PairedMoments) -> float:
        return cell.y.mean - theta * (cell.x.mean - mean_x)

    out: list[CupedEstimate] = []
    for a, cell in arms.items():
        if a == control:
            continue
        diff = adj_mean(cell) - adj_mean(c)
        var = adjusted_variance(cell, theta) / cell.n + adjusted_variance(c, theta) / c.n
        var_raw = cell.y.variance / cell.n + c.y.variance / c.n
        se = math.sqrt(var)
        where = dict(outcome=metric, arm=a, control=control, wave=wave, interval_level=interval_level,
                     method="cuped" if adjusted else "difference_in_means_no_pre_period", n_arm=cell.n, n_control=c.n)
        if se > 0:
            effect = Effect(**where, estimate=diff, sd=se, lower=diff - z * se, upper=diff + z * se)
        elif var_raw == 0:
            effect = Effect(**where, reason=(
                f"{metric} does not vary: every participant in {a} has {cell.y.mean:g} and every one in {control} "
                f"{c.y.mean:g} over the window (no telemetry?), so the difference has no standard error"))
        else:
            effect = Effect(**where, reason=(
                f"the pre-period predicts {metric} exactly within {a} and {control}: the adjusted metric does not "
                "vary, so the difference has no standard error"))
        out.append(CupedEstimate(
            metric=metric, arm=a, control=control, theta=theta,
            mean_arm_adjusted=adj_mean(cell), mean_control_adjusted=adj_mean(c),
            difference_unadjusted=cell.y.mean - c.y.mean, se_unadjusted=math.sqrt(var_raw),
            variance_reduction=1.0 - var / var_raw if var_raw > 0 else None, adjusted=adjusted, effect=effect,
        ))
    return out
