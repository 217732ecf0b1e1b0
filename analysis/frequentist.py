"""Frequentist cross-checks of the primary model (statsmodels), and the side-by-side table.

- :func:`fit_mixedlm`: linear mixed model by maximum likelihood with a random intercept per
  participant (statsmodels ``MixedLM``, Lindstrom & Bates 1988 as implemented there), the same
  fixed-effect design as the Bayesian model's plan (trend per wave or linear in months, arm
  effect per wave or constant, baseline and covariates). Reproduces the published Beat the Blues
  fit (Everitt & Hothorn, *A Handbook of Statistical Analyses Using R*, 3rd ed., longitudinal chapter).
- :func:`fit_ancova`: the final wave regressed on arm, baseline and covariates by OLS with
  cluster-robust (participant) standard errors (one row per participant at a single wave, so this is
  the CR/HC sandwich; it stays valid if several rows per participant are passed).
- :func:`compare`: one row per arm at the long-run horizon (and per wave where both have one), flagging sign
  disagreement or disjoint intervals between the Bayesian and a frequentist estimate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.errors import AnalysisInputError
from analysis.results import Comparison, LongitudinalResult
from schemas.protocol import AnalysisPlan
from schemas.results import LONG_RUN, Effect

__all__ = ["FrequentistFit", "compare", "fit_ancova", "fit_mixedlm"]


@dataclass(frozen=True)
class FrequentistFit:
    """Fixed effects (estimate, SE) by name, variance components, log-likelihood and the effects."""

    method: str
    params: Mapping[str, float]
    bse: Mapping[str, float]
    effects: tuple[Effect, ...]
    loglik: float | None = None
    subject_variance: float | None = None
    residual_variance: float | None = None
    n_obs: int = 0
    n_participants: int = 0
    summary_text: str = field(default="", repr=False, compare=False)


def _safe(name: str) -> str:
    return "v_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _prepare(frame: pd.DataFrame, value: str, control: str, covariates: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    need = ["participant", "arm", "wave", value, "baseline", *covariates]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise AnalysisInputError(f"the frame lacks columns {missing}")
    f = frame[need].copy()
    f = f[f[value].notna()]
    f["arm"] = f["arm"].astype(str)
    f["wave"] = f["wave"].astype(str)
    arms = sorted(f["arm"].unique())
    if control not in arms:
        raise AnalysisInputError(f"control arm {control!r} is not in the data; arms present: {arms}")
    f["arm"] = pd.Categorical(f["arm"], [control] + [a for a in arms if a != control])
    terms = []
    for c in covariates:
        s = _safe(c)
        f[s] = f[c]
        if pd.api.types.is_bool_dtype(f[c]) or not pd.api.types.is_numeric_dtype(f[c]):
            levels = sorted(map(str, f[c].unique()))
            f[s] = pd.Categorical(f[c].astype(str), levels)
        terms.append(s)
    f = f.rename(columns={value: "y"})
    return f, terms


def fit_mixedlm(
    frame: pd.DataFrame,
    plan: AnalysisPlan,
    *,
    control: str,
    waves: Mapping[str, float],
    value: str = "outcome",
    outcome: str = "outcome",
    direction: str = "higher_is_better",
) -> FrequentistFit:
    """ML random-intercept model (statsmodels MixedLM, ``reml=False``) with the plan's fixed effects
    (and random slopes on months when ``plan.random_slopes``).

    ``waves`` maps follow-up wave -> months; for a ``linear_months`` trend the time term is months.
    The effect rows (per arm, per wave, long-run = final wave) are Wald intervals at the plan's level.
    """
    import statsmodels.formula.api as smf

    f, cov_terms = _prepare(frame, value, control, plan.covariates)
    f = f[f["wave"].isin(list(waves))]
    order = [w for w, _ in sorted(waves.items(), key=lambda kv: kv[1])]
    f["wave"] = pd.Categorical(f["wave"], order)
    f["months"] = f["wave"].astype(str).map({k: float(v) for k, v in waves.items()}).astype(float)
    trend = "months" if plan.time_trend == "linear_months" else "C(wave) - 1"
    terms = [trend]
    if plan.effect_shape == "constant":
        terms.append("arm")
    elif plan.effect_shape == "per_wave":
        # explicit (arm, wave) indicators for non-control arms, as in the Bayesian design
        for a in f["arm"].cat.categories[1:]:
            for w in order:
                col = f"eff_{_safe(a)}_{_safe(w)}"
                f[col] = ((f["arm"] == a) & (f["wave"] == w)).astype(float)
                terms.append(col)
    else:
        raise AnalysisInputError("the frequentist cross-check fits per_wave or constant effects, not saturating")
    rhs = " + ".join([*terms, "baseline", *cov_terms])
    # random slopes on months when the plan has them (as the Bayesian model)
    model = smf.mixedlm(f"y ~ {rhs}", f, groups=f["participant"], re_formula="~months" if plan.random_slopes else None)
    # BFGS first: at 50,000 participants L-BFGS reported convergence at tau^2 = 0 with an infinite
    # log-likelihood (statsmodels 0.15), where BFGS finds the maximum the cross-product ML fit finds.
    res = model.fit(reml=False, method=["bfgs", "lbfgs", "powell"])
    if not np.isfinite(res.llf) or not res.converged:
        raise RuntimeError(f"statsmodels MixedLM did not converge for {outcome} (log-likelihood {res.llf})")
    params, bse = res.fe_params, res.bse_fe
    z = float(sps.norm.ppf(1 - (1 - plan.interval_level) / 2))
    effects: list[Effect] = []
    n_at = f.groupby(["arm", "wave"], observed=True).size()  # rows per arm x wave: participants at that wave

    def row(arm: str, wave: str, label: str, name: str) -> Effect:
        m, s = float(params[name]), float(bse[name])
        return Effect(outcome=outcome, arm=arm, control=control, wave=label, method="mixedlm_ml",
                      estimate=m, sd=s, lower=m - z * s, upper=m + z * s, interval_level=plan.interval_level,
                      p_value=float(2 * sps.norm.sf(abs(m / s))) if s > 0 else None,
                      n_arm=int(n_at.get((arm, wave), 0)), n_control=int(n_at.get((control, wave), 0)),
                      direction=direction)

    for a in f["arm"].cat.categories[1:]:
        names = [f"arm[T.{a}]" if plan.effect_shape == "constant" else f"eff_{_safe(a)}_{_safe(w)}" for w in order]
        for w, name in zip(order, names, strict=True):
            effects.append(row(a, w, w, name))
        effects.append(row(a, order[-1], LONG_RUN, names[-1]))
    return FrequentistFit(
        "mixedlm_ml", dict(params), dict(bse), tuple(effects), float(res.llf),
        float(res.cov_re.iloc[0, 0]), float(res.scale), int(res.nobs), int(f["participant"].nunique()),
        str(res.summary()),
    )


def fit_ancova(
    frame: pd.DataFrame,
    plan: AnalysisPlan,
    *,
    control: str,
    final_wave: str,
    value: str = "outcome",
    outcome: str = "outcome",
    direction: str = "higher_is_better",
) -> FrequentistFit:
    """ANCOVA of the final wave: y ~ arm + baseline + covariates, OLS, cluster-robust SE by participant."""
    import statsmodels.formula.api as smf

    f, cov_terms = _prepare(frame, value, control, plan.covariates)
    f = f[f["wave"] == str(final_wave)]
    if f.empty:
        raise AnalysisInputError(f"no rows at the final wave {final_wave!r}")
    codes = pd.factorize(f["participant"])[0]
    res = smf.ols(" + ".join(["y ~ arm", "baseline", *cov_terms]), f).fit(cov_type="cluster", cov_kwds={"groups": codes})
    z = float(sps.norm.ppf(1 - (1 - plan.interval_level) / 2))
    effects = []
    n_of = f.groupby("arm", observed=True)["participant"].nunique()
    for a in f["arm"].cat.categories[1:]:
        m, s = float(res.params[f"arm[T.{a}]"]), float(res.bse[f"arm[T.{a}]"])
        effects.append(Effect(outcome=outcome, arm=a, control=control, wave=LONG_RUN,
                              method="ancova_final_wave_cluster_robust", estimate=m, sd=s, lower=m - z * s,
                              upper=m + z * s, interval_level=plan.interval_level,
                              p_value=float(res.pvalues[f"arm[T.{a}]"]), n_arm=int(n_of.get(a, 0)),
                              n_control=int(n_of.get(control, 0)), direction=direction))
    return FrequentistFit("ancova_final_wave_cluster_robust", dict(res.params), dict(res.bse), tuple(effects),
                          float(res.llf), None, float(res.scale), int(res.nobs), int(f["participant"].nunique()),
                          str(res.summary()))


def compare(bayes: LongitudinalResult, *freq: FrequentistFit) -> tuple[Comparison, ...]:
    """Side-by-side long-run (and per-wave, where both have them) effects; a row is flagged when the
    point estimates have opposite signs or the intervals do not overlap."""
    rows = []
    for fit in freq:
        for fe in fit.effects:
            try:
                be = bayes.effect(fe.arm, fe.wave)
            except KeyError:
                continue
            rows.append(Comparison(
                bayes.outcome, fe.arm, fe.wave, be.estimate, be.lower, be.upper, fit.method, fe.estimate, fe.lower,
                fe.upper, sign_disagrees=bool(np.sign(be.estimate) != np.sign(fe.estimate)),
                intervals_disjoint=bool(be.upper < fe.lower or fe.upper < be.lower),
            ))
    return tuple(rows)
