"""The posterior of the primary model in outcome units: effects, parameters, diagnostics.

The sampler works on standardised statistics (:mod:`analysis.longitudinal.model`); this module maps its
draws back through the :class:`~analysis.longitudinal.model.Standardisation`, builds the trajectory of each
arm's effect from the plan's parameters (per wave, constant or saturating), and summarises every quantity
by its posterior mean, SD and equal-tailed interval at the plan's level, with the decision probabilities
the outcome asks for (benefit, above the MCID, inside the ROPE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.longitudinal.design import LongitudinalStats
from analysis.longitudinal.model import Standardisation
from analysis.results import Diagnostics, LongitudinalResult, ParameterEstimate
from schemas.protocol import AnalysisPlan
from schemas.results import LONG_RUN, PLATEAU, Effect

__all__ = ["OutcomeTerms", "method_of", "summarise"]


def method_of(plan: AnalysisPlan) -> str:
    """The method label of the plan's longitudinal model (what every row it gives says it is)."""
    return "bayes_random_slopes_marginal" if plan.random_slopes else "bayes_random_intercept_marginal"


@dataclass(frozen=True)
class OutcomeTerms:
    """What the outcome says about reading its effects: its name, which direction is good, the minimum
    clinically important difference and the half-width of the region of practical equivalence (outcome
    units; None when the protocol names none)."""

    name: str = "outcome"
    direction: str = "higher_is_better"
    mcid: float | None = None
    rope: float | None = None


def summarise(
    idata,
    *,
    stats: LongitudinalStats,
    plan: AnalysisPlan,
    standardisation: Standardisation,
    outcome: OutcomeTerms,
    sampling_seconds: float | None = None,
) -> LongitudinalResult:
    """The result of one fit from its InferenceData (the outcome-unit quantities are added to it)."""
    import xarray as xr

    spec = stats.spec
    sb = standardisation.baseline_sd
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
    beta = standardisation.to_outcome_units(np.concatenate([mu_w, eff_aw, coef], axis=1))
    sigma = flat("sigma_std")[:, 0] * sb
    tau = flat("tau_std")[:, 0] * sb if "tau_std" in post else np.zeros(chains * draws)

    # --- diagnostics gate -------------------------------------------------------------------
    var_names = (["trend", "effect_std", "coef", "sigma_std"] + (["tau_std"] if "tau_std" in post else [])
                 + (["rate_months"] if plan.effect_shape == "saturating" else [])
                 + (["tau_slope_std", "rho"] if plan.random_slopes else []))
    diagnostics = Diagnostics.of(idata, var_names, plan, sampling_seconds)

    # --- effects in outcome units -------------------------------------------------------------
    level = plan.interval_level
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    sign = 1.0 if outcome.direction == "higher_is_better" else -1.0
    effects: list[Effect] = []
    cols = list(stats.cross.columns)
    method = method_of(plan)

    def est(arm: str, wave: str, draws_: np.ndarray, n_arm: int, n_control: int) -> Effect:
        good = sign * draws_
        return Effect(
            outcome=outcome.name, arm=arm, control=spec.control, wave=wave, method=method, tier="trusted",
            estimate=float(draws_.mean()), sd=float(draws_.std(ddof=1)),
            lower=float(np.quantile(draws_, lo_q)), upper=float(np.quantile(draws_, hi_q)),
            interval_level=level, p_benefit=float((good > 0).mean()),
            p_above_mcid=None if outcome.mcid is None else float((good > outcome.mcid).mean()),
            p_in_rope=None if outcome.rope is None else float((np.abs(draws_) < outcome.rope).mean()),
            n_arm=n_arm, n_control=n_control, direction=outcome.direction,
        )

    effect_draws = np.zeros((beta.shape[0], n_t, n_w))
    final = spec.waves[-1]
    for ai, a in enumerate(spec.treated):
        for wi, w in enumerate(spec.waves):
            effect_draws[:, ai, wi] = beta[:, cols.index(f"arm[{a}]:wave[{w}]")]
            effects.append(est(a, w, effect_draws[:, ai, wi], stats.n_at(a, w), stats.n_at(spec.control, w)))
        effects.append(est(a, LONG_RUN, effect_draws[:, ai, -1], stats.n_at(a, final), stats.n_at(spec.control, final)))
        if plan.effect_shape == "saturating":
            effects.append(est(a, PLATEAU, sb * eff[:, ai], stats.n_participants(a), stats.n_participants(spec.control)))

    def par(name: str, x: np.ndarray) -> ParameterEstimate:
        return ParameterEstimate(name, float(x.mean()), float(x.std(ddof=1)), float(np.quantile(x, lo_q)),
                                 float(np.quantile(x, hi_q)))

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
        outcome=outcome.name, direction=outcome.direction, control=spec.control, arms=spec.arms, waves=spec.waves,
        effect_shape=plan.effect_shape, time_trend=plan.time_trend, effects=tuple(effects),
        fixed_effects=tuple(fixed), variance_components=tuple(variances), diagnostics=diagnostics,
        n_participants=stats.cross.n_participants, n_obs=stats.cross.n_obs, method=method, idata=idata,
    )
