"""Missing final-wave outcomes: a delta-adjusted tipping-point analysis on ANCOVA sufficient statistics.

The primary model is likelihood-based and valid if outcomes are missing at random (MAR). The
tipping point asks how far from MAR the truth must be to change the conclusion (National Research
Council 2010, *The Prevention and Treatment of Missing Data in Clinical Trials*, ch. 5;
Ratitch, O'Kelly & Tosiello 2013, Pharm Stat 12:337, "Missing data in clinical trials: from clinical
assumptions to statistical analysis using pattern mixture models", delta adjustment):

1. MAR: impute each missing final-wave outcome by the ANCOVA prediction fitted to completers,
   y_mis = X_mis beta_hat, with X = [1, baseline, covariates, arm dummies].
2. MNAR shift: make the imputed outcomes of every *treatment* arm worse by delta (outcome units;
   subtract for higher-is-better, add for lower-is-better), control imputations stay at MAR.
3. Refit the ANCOVA to observed + imputed outcomes and read the arm effect and its interval.

Because OLS is linear in y, step 3 has a closed form. With X'X over all rows and beta_hat from
completers, the refit is  beta(delta) = beta_hat - sign * delta * (X'X)^-1 X_mis' s,  where s marks
the treatment arms' missing rows (residuals of MAR imputations are zero, so X_o'X_o beta_hat +
X_mis'X_mis beta_hat = X'X beta_hat). The effect is thus linear in delta with slope k_a =
[(X'X)^-1 X_mis' s]_a (about the arm's missing share) and the tipping delta solves a linear equation.
Uncertainty: delta is a fixed sensitivity parameter, so the variance is that of beta_hat,
sigma^2 [(X_o'X_o)^-1]_aa, the variance the imputations carry (Rubin's rules with infinitely many
proper imputations give the same first-order variance under this linear model). Everything comes
from X'X, X'y, y'y of completers and X'X, X'1 of dropouts: per-arm GROUP BY statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from schemas.results import LONG_RUN, Effect
from schemas.suffstats import CellCrossProducts, InsufficientData, Moments, PairedMoments


@dataclass(frozen=True)
class AncovaStatistics:
    """Sufficient statistics of the final-wave ANCOVA with a missing-outcome split.

    ``columns`` name the design; ``arm_columns`` maps each non-control arm to its dummy column; ``control``
    names the reference arm.
    ``*_observed`` are over completers; ``xtx_missing`` over participants missing the outcome;
    ``missing_sums[arm]`` is the column sum of the design rows of that arm's missing participants.
    ``missing_without_covariates`` counts participants missing the outcome whose covariates are unknown: they are in
    no ``*_missing`` sum, so :func:`tipping_point`, which must impute every one of them, refuses.
    """

    columns: tuple[str, ...]
    arm_columns: dict[str, int]
    n_observed: int
    xtx_observed: np.ndarray
    xty_observed: np.ndarray
    yty_observed: float
    xtx_missing: np.ndarray
    missing_sums: dict[str, np.ndarray]
    n_missing: dict[str, int]
    control: str
    missing_without_covariates: int = 0

    def n_observed_in(self, arm: str) -> int:
        """Completers of ``arm``: the diagonal of X'X at its dummy (the control arm's: all the others' rest)."""
        if arm != self.control:
            j = self.arm_columns[arm]
            return int(round(self.xtx_observed[j, j]))
        return self.n_observed - sum(self.n_observed_in(a) for a in self.arm_columns)


def statistics_from_cells(
    completers: Mapping[str, CellCrossProducts],
    missing: Mapping[str, CellCrossProducts],
    *,
    control: str,
    missing_without_covariates: int = 0,
) -> AncovaStatistics:
    """ANCOVA statistics (outcome ~ W + arm dummies) from per-arm cross-products of the participant-level design
    W = (intercept, baseline, covariate columns), all cells with the same W.

    ``completers[arm]``: W'W, W'y, y'y over the arm's completers; ``missing[arm]``: W'W over the arm's participants
    missing the final-wave outcome (its column sums are its intercept row). A participant's arm dummy is 1 in its own
    arm's cells only, so its blocks are the cell's n and W's column sums: X'X = sum over arms of
    [[W'W, W'1 e_a'], [e_a 1'W, n e_a e_a']], X'y = sum of [W'y, e_a 1'y] (e_a: the arm's dummy, none for control).
    ``missing_without_covariates``: participants missing the outcome whose covariates are unknown, so not in
    ``missing``; the tipping point cannot impute them and says so."""
    arms = sorted(set(completers) | set(missing))
    if control not in arms:
        raise ValueError(f"control arm {control!r} has no statistics")
    designs = {c.columns for c in (*completers.values(), *missing.values())}
    if len(designs) != 1:
        raise ValueError(f"the arms' cells have different designs: {sorted(designs)}")
    w_cols = designs.pop()
    treat = [a for a in arms if a != control]
    k = len(w_cols)
    cols = (*w_cols, *[f"arm[{a}]" for a in treat])
    p = len(cols)
    xtx_o, xty_o, xtx_m = np.zeros((p, p)), np.zeros(p), np.zeros((p, p))
    yty, n_o = 0.0, 0
    sums: dict[str, np.ndarray] = {}
    n_missing: dict[str, int] = {}

    def block(c: CellCrossProducts, j: int | None) -> np.ndarray:
        m = np.zeros((p, p))
        m[:k, :k] = c.wtw
        if j is not None:
            m[j, j] = c.n
            m[:k, j] = m[j, :k] = c.wtw[0]
        return m

    zero = CellCrossProducts.zero(w_cols)
    for a in arms:
        j = None if a == control else k + treat.index(a)
        o = completers.get(a, zero)
        xtx_o += block(o, j)
        xty_o[:k] += o.wty
        if j is not None:
            xty_o[j] += o.wty[0]
        yty += o.yty
        n_o += o.n
        m = missing.get(a, zero)
        xtx_m += block(m, j)
        v = np.zeros(p)
        v[:k] = m.wtw[0]
        if j is not None:
            v[j] = m.n
        sums[a] = v
        n_missing[a] = m.n
    return AncovaStatistics(cols, {a: k + i for i, a in enumerate(treat)}, n_o, xtx_o, xty_o, yty, xtx_m, sums,
                            n_missing, control, int(missing_without_covariates))


def statistics_from_moments(
    observed: Mapping[str, PairedMoments],
    missing_baseline: Mapping[str, Moments],
    *,
    control: str,
) -> AncovaStatistics:
    """ANCOVA statistics (outcome ~ 1 + baseline + arm) from per-arm moments (:func:`statistics_from_cells` with
    W = (intercept, baseline)).

    ``observed[arm]``: PairedMoments with x = baseline, y = final-wave outcome, over completers.
    ``missing_baseline[arm]``: Moments of the baseline of participants whose outcome is missing.
    """
    arms = set(observed) | set(missing_baseline)
    return statistics_from_cells(
        {a: CellCrossProducts.from_paired(observed.get(a, PairedMoments.zero())) for a in arms},
        {a: CellCrossProducts.from_paired(missing_baseline.get(a, Moments.zero())) for a in arms},
        control=control)


def statistics_from_frame(
    wide: pd.DataFrame,
    *,
    control: str,
    covariates: Sequence[str] = (),
    outcome_col: str = "outcome",
    baseline_col: str = "baseline",
    arm_col: str = "arm",
) -> AncovaStatistics:
    """ANCOVA statistics from one row per participant (``outcome`` NaN = missing at the final wave)."""
    needed = [arm_col, baseline_col, outcome_col, *covariates]
    absent = [c for c in needed if c not in wide.columns]
    if absent:
        raise ValueError(f"the tipping-point frame lacks column(s) {absent}")
    d = wide.dropna(subset=[baseline_col, *covariates])
    arms = sorted(d[arm_col].unique())
    if control not in arms:
        raise ValueError(f"control arm {control!r} has no participants")
    treat = [a for a in arms if a != control]
    cols = ("intercept", "baseline", *covariates, *[f"arm[{a}]" for a in treat])
    x = np.column_stack(
        [np.ones(len(d)), d[baseline_col].to_numpy(float), *[d[c].to_numpy(float) for c in covariates],
         *[(d[arm_col] == a).to_numpy(float) for a in treat]]
    )
    y = d[outcome_col].to_numpy(float)
    obs = ~np.isnan(y)
    xo, xm = x[obs], x[~obs]
    arm_vals = d[arm_col].to_numpy()[~obs]
    sums = {a: xm[arm_vals == a].sum(axis=0) for a in arms}
    n_missing = {a: int((arm_vals == a).sum()) for a in arms}
    k0 = 2 + len(covariates)
    return AncovaStatistics(cols, {a: k0 + i for i, a in enumerate(treat)}, int(obs.sum()), xo.T @ xo,
                            xo.T @ y[obs], float(y[obs] @ y[obs]), xm.T @ xm, sums, n_missing, control)


def _completers_ols(stats: AncovaStatistics) -> tuple[np.ndarray, np.ndarray, float, int]:
    p = len(stats.columns)
    df = stats.n_observed - p
    arms = [stats.control, *stats.arm_columns]
    if df < 1 or any(stats.n_observed_in(a) < 1 for a in arms):
        raise InsufficientData("the final-wave ANCOVA", p + 1, stats.n_observed, "completers of each arm")
    if np.linalg.matrix_rank(stats.xtx_observed) < p:
        # every arm has completers, so a covariate column is constant, or a combination of others, among them
        raise AnalysisInputError(
            f"the final-wave ANCOVA's design ({', '.join(stats.columns)}) is singular on its {stats.n_observed} "
            "completers: a covariate column is constant or a combination of the others among them")
    xtx_o_inv = np.linalg.inv(stats.xtx_observed)
    beta = xtx_o_inv @ stats.xty_observed
    rss = stats.yty_observed - float(beta @ stats.xty_observed)
    # From sums, RSS = y'y - beta'X'y is a difference of two large numbers: within a few ulps of y'y it is rounding,
    # not residual variance (an exact fit, or a residual below the precision of the sums). It is then 0, and the
    # callers report no standard error rather than a spurious, tiny one.
    if rss <= 64 * np.finfo(float).eps * stats.yty_observed:
        rss = 0.0
    return beta, xtx_o_inv, rss / df, df


def ancova_effects(
    stats: AncovaStatistics,
    *,
    outcome: str = "outcome",
    wave: str = LONG_RUN,
    direction: str | None = None,
    interval_level: float = 0.95,
    method: str = "ancova_final_wave",
    subgroup: str | None = None,
) -> list[Effect]:
    """OLS of the final-wave outcome on 1 + baseline (+ covariates) + arm dummies, completers only
    (valid under MAR given those; Vickers & Altman 2001, BMJ 323:1123 on ANCOVA over change scores).

    Each arm's effect carries the classical OLS standard error (``sd``), a t interval and the two-sided t-test
    p-value. When the residual variance is zero (the outcome is an exact function of baseline and arm, so the
    data hold no error to measure) there is no interval or p-value to give: the effect says so."""
    from scipy.stats import t as student_t

    beta, xtx_o_inv, sigma2, df = _completers_ols(stats)
    tq = float(student_t.ppf(0.5 + interval_level / 2.0, df))
    out = []
    for a, j in stats.arm_columns.items():
        est, se = float(beta[j]), math.sqrt(sigma2 * xtx_o_inv[j, j])
        where = dict(outcome=outcome, arm=a, control=stats.control, wave=wave, method=method, subgroup=subgroup,
                     n_arm=stats.n_observed_in(a), n_control=stats.n_observed_in(stats.control), direction=direction)
        if not se > 0:
            out.append(Effect(**where, interval_level=interval_level,
                              reason=f"the completers' ANCOVA has no residual variance ({stats.n_observed} completers "
                                     "fit exactly, within the precision of the sums), so it gives no standard error"))
            continue
        p = float(2 * student_t.sf(abs(est / se), df))
        out.append(Effect(**where, estimate=est, sd=se, lower=est - tq * se, upper=est + tq * se,
                          interval_level=interval_level, p_value=p))
    return out


@dataclass(frozen=True)
class TippingPoint:
    """Delta-adjusted sensitivity of one arm's final-wave effect (arm minus control, outcome units).

    ``tipping_delta``: the shift (outcome units; positive = the treatment arms' missing outcomes are
    worse than MAR predicts) at which the interval's benefit-side bound crosses 0, i.e. where "benefit
    shown" and "benefit not shown" trade places. Negative when benefit is not shown under MAR: it is
    then how much *better* the missing outcomes would need to be. None when no treatment outcome is
    missing (nothing can tip).
    """

    outcome: str
    arm: str
    direction: str
    estimate_mar: float
    se: float
    lower_mar: float
    upper_mar: float
    benefit_shown_mar: bool
    effect_per_delta: float  # d effect / d delta on the benefit scale (negative: worse imputations hurt)
    tipping_delta: float | None
    n_observed: int
    n_missing_arm: int
    n_missing_control: int
    interval_level: float
    grid: tuple[tuple[float, float, float, float], ...]  # (delta, estimate, lower, upper)
    statement: str
    effect: Effect  # the summary row: estimate = the tipping delta, or not estimable (nothing can tip)


def tipping_point(
    stats: AncovaStatistics,
    *,
    direction: str,
    outcome: str = "outcome",
    interval_level: float = 0.95,
    wave: str = LONG_RUN,
    deltas: Sequence[float] | None = None,
) -> list[TippingPoint]:
    """Tipping point per treatment arm; see the module docstring for the algebra."""
    from scipy.stats import t as student_t

    if direction not in ("higher_is_better", "lower_is_better"):
        raise ValueError(f"direction must be higher_is_better or lower_is_better, got {direction!r}")
    if stats.missing_without_covariates:
        raise AnalysisInputError(
            f"{stats.missing_without_covariates} participant(s) missing the final-wave {outcome} lack a covariate of "
            "the plan, so their outcomes cannot be imputed from the covariate-adjusted ANCOVA; send their values "
            "(the ANCOVA of the completers does not need them)")
    sign = 1.0 if direction == "higher_is_better" else -1.0
    p = len(stats.columns)
    beta, xtx_o_inv, sigma2, df = _completers_ols(stats)
    xtx_all_inv = np.linalg.inv(stats.xtx_observed + stats.xtx_missing)
    treat_arms = list(stats.arm_columns)
    s_vec = sum((stats.missing_sums[a] for a in treat_arms), np.zeros(p))
    shift = xtx_all_inv @ s_vec  # d beta / d(raw shift of treatment imputations)
    tq = float(student_t.ppf(0.5 + interval_level / 2.0, df))
    ctl = stats.control
    out = []
    for a, j in stats.arm_columns.items():
        est = float(beta[j])
        se = math.sqrt(sigma2 * xtx_o_inv[j, j])
        k = float(shift[j])  # raw effect moves by -sign * delta * k
        benefit_lower = sign * est - tq * se
        shown = benefit_lower > 0
        tip = benefit_lower / k if k > 1e-12 else None
        if deltas is None:
            span = abs(tip) * 1.5 if tip is not None and tip != 0 else 3.0 * se / max(k, 1e-3)
            grid_d = np.linspace(0.0, span, 7) if (tip is None or tip >= 0) else np.linspace(-span, 0.0, 7)
        else:
            grid_d = np.asarray(deltas, dtype=float)
        grid = tuple(
            (float(d), float(est - sign * d * k), float(est - sign * d * k - tq * se), float(est - sign * d * k + tq * se))
            for d in grid_d
        )
        lo, hi = est - tq * se, est + tq * se
        if tip is None:
            statement = f"no {a} outcome is missing, so the conclusion does not depend on the missing-data assumption"
        elif shown:
            statement = (f"benefit of {a} is shown under MAR and stays shown unless {a}'s missing outcomes are worse "
                         f"than MAR predicts by more than {tip:.3g} {outcome} units")
        else:
            statement = (f"benefit of {a} is not shown under MAR; it would be shown only if {a}'s missing outcomes were "
                         f"better than MAR predicts by more than {-tip:.3g} {outcome} units")
        n_missing_arm, n_missing_control = int(stats.n_missing.get(a, 0)), int(stats.n_missing.get(ctl, 0))
        row = dict(outcome=outcome, arm=a, control=ctl, wave=wave, method="tipping_point_delta",
                   n_arm=stats.n_observed_in(a) + n_missing_arm, n_control=stats.n_observed_in(ctl) + n_missing_control,
                   direction=direction)
        if not se > 0:  # no interval, so no bound to cross 0
            effect = Effect(**row, reason=f"the final-wave ANCOVA of {outcome} has no residual variance, so its "
                                          "interval, and the delta at which it crosses 0, are not defined")
        elif tip is None:
            effect = Effect(**row, reason=statement)
        else:
            effect = Effect(**row, estimate=tip)
        out.append(TippingPoint(
            outcome=outcome, arm=a, direction=direction, estimate_mar=est, se=se, lower_mar=lo, upper_mar=hi,
            benefit_shown_mar=bool(shown), effect_per_delta=-k, tipping_delta=tip, n_observed=stats.n_observed,
            n_missing_arm=n_missing_arm, n_missing_control=n_missing_control,
            interval_level=interval_level, grid=grid, statement=statement, effect=effect,
        ))
    return out
