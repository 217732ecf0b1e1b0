"""Psychometrics: reliability, item-rest correlations, test-retest ICC, measurement invariance.

Every function takes a DataFrame with one column per item (rows = respondents) and returns a
frozen result; when the statistic cannot be computed honestly it raises
:class:`~instruments.errors.PsychometricsError` rather than returning a default.
Reference values these functions reproduce are in ``tests/instruments/test_instr_psychometrics.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from instruments.cfa import LEVELS, CFAFit, fit_cfa
from instruments.errors import PsychometricsError

# Chen (2007), Struct Equ Modeling 14:464-504: a drop in CFI of at most .010 together with a
# rise in RMSEA of at most .015 supports the more constrained (invariant) model.
CHEN_DELTA_CFI = 0.010
CHEN_DELTA_RMSEA = 0.015


def _numeric_items(items: pd.DataFrame, min_items: int, what: str) -> pd.DataFrame:
    if not isinstance(items, pd.DataFrame):
        raise PsychometricsError(f"{what} needs a DataFrame with one column per item")
    data = items.apply(pd.to_numeric, errors="raise").astype(float)
    data = data.dropna(axis=0, how="all")
    if data.shape[1] < min_items:
        raise PsychometricsError(f"{what} needs at least {min_items} item columns, got {data.shape[1]}")
    return data


# --- Cronbach's alpha ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AlphaResult:
    alpha: float
    ci_lower: float
    ci_upper: float
    ci_level: float
    n_items: int
    n_obs: int
    nan_policy: str


def cronbach_alpha(items: pd.DataFrame, *, ci: float = 0.95, nan_policy: str = "pairwise") -> AlphaResult:
    """Cronbach's (1951) alpha = k/(k-1) (1 - sum var_i / var_total) from the item covariance
    matrix, with Feldt's (1965; Feldt, Woodruff & Salih 1987) F-based confidence interval:
    ``1 - (1 - alpha) F_{a/2}`` .. ``1 - (1 - alpha) F_{1-a/2}`` on (n-1, (n-1)(k-1)) df.

    ``nan_policy="pairwise"`` uses pairwise-complete covariances (psych::alpha
    ``use="pairwise"``, pingouin's default); ``"listwise"`` drops every row with a missing item.
    """
    if nan_policy not in ("pairwise", "listwise"):
        raise PsychometricsError(f"nan_policy must be 'pairwise' or 'listwise', got {nan_policy!r}")
    if not 0 < ci < 1:
        raise PsychometricsError(f"ci must be in (0, 1), got {ci}")
    data = _numeric_items(items, 2, "cronbach_alpha")
    if nan_policy == "listwise":
        data = data.dropna(axis=0, how="any")
    n, k = data.shape
    if n < 3:
        raise PsychometricsError(f"cronbach_alpha needs at least 3 respondents, got {n}")
    cov = data.cov().to_numpy()
    if np.isnan(cov).any():
        raise PsychometricsError("some item pairs share no complete respondents; alpha is undefined")
    total_var = cov.sum()
    if total_var <= 0:
        raise PsychometricsError("the total score has no variance; alpha is undefined")
    alpha = k / (k - 1) * (1 - np.trace(cov) / total_var)
    a = 1 - ci
    df1, df2 = n - 1, (n - 1) * (k - 1)
    lower = 1 - (1 - alpha) * stats.f.isf(a / 2, df1, df2)
    upper = 1 - (1 - alpha) * stats.f.isf(1 - a / 2, df1, df2)
    return AlphaResult(float(alpha), float(lower), float(upper), ci, k, n, nan_policy)


# --- McDonald's omega ---------------------------------------------------------------------------

@dataclass(frozen=True)
class OmegaResult:
    omega: float
    loadings: dict[str, float]              # unstandardized, factor variance fixed at 1
    standardized_loadings: dict[str, float]
    residual_variances: dict[str, float]
    n_items: int
    n_obs: int
    chi2: float
    df: int
    cfi: float
    rmsea: float


def omega_from_loadings(loadings: np.ndarray, residual_variances: np.ndarray, factor_variance: float = 1.0) -> float:
    """omega = (sum lambda)^2 psi / ((sum lambda)^2 psi + sum theta) (McDonald 1999; Raykov 2001)."""
    common = float(np.sum(loadings)) ** 2 * factor_variance
    return common / (common + float(np.sum(residual_variances)))


def mcdonald_omega(items: pd.DataFrame) -> OmegaResult:
    """McDonald's omega total of the unit-weighted sum score from a ONE-factor ML CFA.

    Computed on the covariance (raw-score) scale, as semTools' ``reliability`` / ``compRelSEM``
    does, because Flourish scores are raw sums; rows with any missing item are dropped
    (listwise). Needs at least 3 items (3 items give a just-identified model, chi2 = 0).
    """
    data = _numeric_items(items, 3, "mcdonald_omega").dropna(axis=0, how="any")
    fit = fit_cfa(data)
    lam = fit.loadings[0][:, 0] * np.sqrt(fit.factor_cov[0][0, 0])  # rescale to factor variance 1
    theta = fit.residual_var[0]
    std = fit.standardized_loadings(0)[:, 0]
    names = list(fit.items)
    return OmegaResult(
        omega=omega_from_loadings(lam, theta),
        loadings=dict(zip(names, map(float, lam))),
        standardized_loadings=dict(zip(names, map(float, std))),
        residual_variances=dict(zip(names, map(float, theta))),
        n_items=len(names), n_obs=fit.n_obs[0], chi2=fit.chi2, df=fit.df, cfi=fit.cfi, rmsea=fit.rmsea,
    )


def factor_omegas(fit: CFAFit, group: int = 0) -> dict[str, float]:
    """Omega of each factor's unit-weighted composite in a fitted simple-structure CFA."""
    out = {}
    for f, (name, members) in enumerate(fit.factors):
        idx = [fit.items.index(c) for c in members]
        out[name] = omega_from_loadings(fit.loadings[group][idx, f], fit.residual_var[group][idx],
                                        fit.factor_cov[group][f, f])
    return out


# --- item-rest correlations -------------------------------------------------------------------------

@dataclass(frozen=True)
class ItemRestResult:
    correlations: dict[str, float]
    alpha_if_deleted: dict[str, float]
    n_obs: int


def item_rest_correlations(items: pd.DataFrame) -> ItemRestResult:
    """Correlation of each item with the sum of the other items (corrected item-total
    correlation), and alpha if the item is deleted; listwise complete rows."""
    data = _numeric_items(items, 3, "item_rest_correlations").dropna(axis=0, how="any")
    if len(data) < 3:
        raise PsychometricsError(f"item_rest_correlations needs at least 3 complete respondents, got {len(data)}")
    total = data.sum(axis=1)
    corr, alpha_del = {}, {}
    for col in data.columns:  # loop over items, not rows
        rest = total - data[col]
        if data[col].std() == 0 or rest.std() == 0:
            raise PsychometricsError(f"item {col} or the rest score has no variance; correlation undefined")
        corr[str(col)] = float(np.corrcoef(data[col], rest)[0, 1])
        alpha_del[str(col)] = cronbach_alpha(data.drop(columns=col), nan_policy="listwise").alpha
    return ItemRestResult(corr, alpha_del, len(data))


# --- ICC --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ICCResult:
    """Shrout & Fleiss (1979) single-measure ICCs from the two-way ANOVA of targets x occasions.

    icc2_1: two-way random, absolute agreement (McGraw & Wong ICC(A,1)) - the usual
    test-retest choice, since a shift between waves counts as disagreement.
    icc3_1: two-way mixed, consistency (ICC(C,1)).
    """

    icc1_1: float
    icc2_1: float
    icc2_1_ci: tuple[float, float]
    icc3_1: float
    icc3_1_ci: tuple[float, float]
    f_value: float
    p_value: float
    ci_level: float
    n_targets: int
    n_occasions: int


def icc(ratings: pd.DataFrame, *, ci: float = 0.95) -> ICCResult:
    """ICC(1,1), ICC(2,1), ICC(3,1) (Shrout & Fleiss 1979, Psychol Bull 86:420-428) with the
    McGraw & Wong (1996) confidence intervals. ``ratings``: rows = targets (participants),
    columns = occasions (waves); rows with a missing occasion are dropped."""
    x = _numeric_items(ratings, 2, "icc").dropna(axis=0, how="any").to_numpy()
    n, k = x.shape
    if n < 3:
        raise PsychometricsError(f"icc needs at least 3 complete targets, got {n}")
    grand = x.mean()
    ss_total = ((x - grand) ** 2).sum()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ss_total - ss_rows - ss_cols
    df_rows, df_cols, df_err = n - 1, k - 1, (n - 1) * (k - 1)
    msr, msc, mse = ss_rows / df_rows, ss_cols / df_cols, ss_err / df_err
    msw = (ss_cols + ss_err) / (n * (k - 1))
    if mse <= 0 or msr <= 0:
        raise PsychometricsError("no within- or between-target variance; ICC undefined")
    icc1 = (msr - msw) / (msr + (k - 1) * msw)
    icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    icc3 = (msr - mse) / (msr + (k - 1) * mse)
    a = 1 - ci
    f3 = msr / mse
    f_lb = f3 / stats.f.ppf(1 - a / 2, df_rows, df_err)
    f_ub = f3 * stats.f.ppf(1 - a / 2, df_err, df_rows)
    icc3_ci = ((f_lb - 1) / (f_lb + k - 1), (f_ub - 1) / (f_ub + k - 1))
    fj = msc / mse
    vn = df_err * (k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    vd = df_rows * k**2 * icc2**2 * fj**2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    v = vn / vd
    f2u = stats.f.ppf(1 - a / 2, n - 1, v)
    f2l = stats.f.ppf(1 - a / 2, v, n - 1)
    icc2_ci = (n * (msr - f2u * mse) / (f2u * (k * msc + (k * n - k - n) * mse) + n * msr),
               n * (f2l * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f2l * msr))
    return ICCResult(float(icc1), float(icc2), tuple(map(float, icc2_ci)), float(icc3), tuple(map(float, icc3_ci)),
                     float(f3), float(stats.f.sf(f3, df_rows, df_err)), ci, n, k)


def test_retest_icc(scores: pd.DataFrame, outcome: str, waves: tuple[str, str], *, ci: float = 0.95) -> ICCResult:
    """Test-retest ICC of one outcome between two waves, from a tidy frame returned by
    :func:`instruments.score` (participants present in both waves)."""
    rows = scores[(scores["outcome"] == outcome) & scores["wave"].isin(waves)]
    if rows.empty:
        raise PsychometricsError(f"no {outcome} scores in waves {waves}")
    wide = rows.pivot(index="participant", columns="wave", values="value")
    missing = [w for w in waves if w not in wide.columns]
    if missing:
        raise PsychometricsError(f"no {outcome} scores in wave(s) {missing}")
    return icc(wide[list(waves)], ci=ci)


test_retest_icc.__test__ = False  # not a pytest test despite the name


# --- measurement invariance ---------------------------------------------------------------------------

@dataclass(frozen=True)
class InvarianceStep:
    level: str
    chi2: float
    df: int
    p_value: float
    cfi: float
    rmsea: float
    delta_chi2: float | None = None
    delta_df: int | None = None
    delta_p_value: float | None = None
    delta_cfi: float | None = None      # this level minus the previous (negative = worse)
    delta_rmsea: float | None = None    # this level minus the previous (positive = worse)
    holds: bool | None = None           # Chen 2007 criteria against the previous level


@dataclass(frozen=True)
class InvarianceResult:
    """Configural -> metric -> scalar multi-group CFA (Meredith 1993; Chen 2007 criteria)."""

    factors: tuple[tuple[str, tuple[str, ...]], ...]
    groups: tuple[str, ...]
    n_obs: tuple[int, ...]
    steps: tuple[InvarianceStep, ...]
    supported_level: str | None         # highest level reached with every step holding
    criteria: str

    def step(self, level: str) -> InvarianceStep:
        for s in self.steps:
            if s.level == level:
                return s
        raise KeyError(level)


def invariance(items: pd.DataFrame, group, *, factors: dict[str, list[str]] | None = None) -> InvarianceResult:
    """Measurement invariance across ``group`` (arm, language, wave) by multi-group ML CFA.

    ``factors=None`` fits ONE factor over all item columns: the default for one instrument
    score (WHO-5, SWLS, ...). Pass ``factors`` for a multi-factor instrument (e.g. PERMA
    domains, BPNSFS subscales); the first item of each factor is its marker. ``group`` is a
    column name of ``items`` or a Series/array aligned with its rows. Rows with a missing
    item are dropped. A step holds when CFI drops by at most .010 and RMSEA rises by at most
    .015 (Chen 2007); the chi-square difference test is reported beside it.

    Across waves, pass the wave as ``group`` only as an approximation: it treats the waves as
    independent samples, whereas a proper longitudinal invariance model fits all waves in one
    model with correlated residuals of the same item over time (not implemented here).
    """
    if isinstance(group, str):
        if group not in items.columns:
            raise PsychometricsError(f"group column {group!r} is not in the item frame")
        labels = items[group]
        items = items.drop(columns=group)
    else:
        labels = pd.Series(np.asarray(group), index=items.index)
    if labels.nunique(dropna=True) < 2:
        raise PsychometricsError("invariance needs at least two groups")
    items = _numeric_items(items, 3, "invariance")
    labels = labels.loc[items.index]
    fits = [fit_cfa(items, factors, labels, level) for level in LEVELS]
    steps = []
    supported = None
    chain_ok = True
    for i, fit in enumerate(fits):
        if i == 0:
            steps.append(InvarianceStep(fit.level, fit.chi2, fit.df, fit.p_value, fit.cfi, fit.rmsea))
            supported = fit.level
            continue
        prev = fits[i - 1]
        d_chi2, d_df = fit.chi2 - prev.chi2, fit.df - prev.df
        d_cfi, d_rmsea = fit.cfi - prev.cfi, fit.rmsea - prev.rmsea
        holds = (-d_cfi <= CHEN_DELTA_CFI) and (d_rmsea <= CHEN_DELTA_RMSEA)
        steps.append(InvarianceStep(fit.level, fit.chi2, fit.df, fit.p_value, fit.cfi, fit.rmsea,
                                    d_chi2, d_df, float(stats.chi2.sf(max(d_chi2, 0.0), d_df)), d_cfi, d_rmsea, holds))
        chain_ok = chain_ok and holds
        if chain_ok:
            supported = fit.level
    return InvarianceResult(fits[0].factors, fits[0].groups, fits[0].n_obs, tuple(steps), supported,
                            f"Chen 2007: delta CFI >= -{CHEN_DELTA_CFI:.3f} and delta RMSEA <= {CHEN_DELTA_RMSEA:.3f}")


# --- per instrument x wave x arm table ------------------------------------------------------------

PSYCHOMETRICS_COLUMNS = ["instrument", "instrument_version", "outcome", "wave", "arm", "n_items", "n_obs",
                         "alpha", "alpha_ci_lower", "alpha_ci_upper", "omega", "note"]


def psychometrics_table(instrument, responses: pd.DataFrame, assignments: pd.DataFrame | None = None,
                        *, min_obs: int = 10) -> pd.DataFrame:
    """Alpha (listwise, Feldt CI) and one-factor omega per multi-item score x wave x arm.

    ``responses`` as for :func:`instruments.score`; ``assignments`` (participant, arm) adds the
    arm split (arm "all" pools arms). Cells with fewer than ``min_obs`` complete respondents,
    or whose statistic cannot be computed, get NaN and the reason in ``note`` - never a
    made-up value. Scores with fewer than 3 items get alpha only.
    """
    from instruments.scoring import response_matrix

    m = response_matrix(instrument, responses)
    inst = m.instrument
    keys = m.keys.copy()
    arms = pd.Series("all", index=keys.index)
    if assignments is not None:
        arm_of = assignments.drop_duplicates("participant").set_index("participant")["arm"].astype(str)
        arms = keys["participant"].map(arm_of).fillna("unassigned")
    rows = []
    seen: set[tuple[str, ...]] = set()
    for sd in inst.scores:
        # one row per distinct item set: who5.raw and who5.percent share items, so one reliability
        if len(sd.items) < 2 or tuple(sd.items) in seen:
            continue
        seen.add(tuple(sd.items))
        sub = pd.DataFrame(m.keyed(sd.items), columns=sd.items)
        cells = [(w, "all") for w in pd.unique(keys["wave"])]
        if assignments is not None:
            cells += [(w, a) for w in pd.unique(keys["wave"]) for a in sorted(pd.unique(arms))]
        for wave, arm in cells:
            mask = (keys["wave"] == wave) & ((arms == arm) if arm != "all" else True)
            data = sub[mask.to_numpy()].dropna(axis=0, how="any")
            row = {"instrument": inst.name, "instrument_version": inst.version, "outcome": inst.outcome(sd.name),
                   "wave": wave, "arm": arm, "n_items": len(sd.items), "n_obs": len(data),
                   "alpha": np.nan, "alpha_ci_lower": np.nan, "alpha_ci_upper": np.nan, "omega": np.nan, "note": ""}
            if len(data) < min_obs:
                row["note"] = f"fewer than {min_obs} complete respondents"
                rows.append(row)
                continue
            notes = []
            try:
                a = cronbach_alpha(data, nan_policy="listwise")
                row.update(alpha=a.alpha, alpha_ci_lower=a.ci_lower, alpha_ci_upper=a.ci_upper)
            except PsychometricsError as e:
                notes.append(f"alpha: {e}")
            if len(sd.items) >= 3:
                try:
                    row["omega"] = mcdonald_omega(data).omega
                except PsychometricsError as e:
                    notes.append(f"omega: {e}")
            else:
                notes.append("omega needs at least 3 items")
            row["note"] = "; ".join(notes)
            rows.append(row)
    return pd.DataFrame(rows, columns=PSYCHOMETRICS_COLUMNS)


def study_psychometrics(response_items: pd.DataFrame, assignments: pd.DataFrame | None = None,
                        *, min_obs: int = 10) -> pd.DataFrame:
    """:func:`psychometrics_table` for every (instrument, instrument_version) in a warehouse
    ``response_items`` extract (a loop over instruments, not rows)."""
    from instruments.registry import load

    parts = [psychometrics_table(load(str(name), str(version)), rows, assignments, min_obs=min_obs)
             for (name, version), rows in response_items.groupby(["instrument", "instrument_version"], sort=True)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PSYCHOMETRICS_COLUMNS)
