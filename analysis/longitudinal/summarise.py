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
    post = idata.posterior
    beta, trend, eff = _coefficient_draws(post, stats, plan, standardisation)
    var_names = (["trend", "effect_std", "coef", "sigma_std"] + (["tau_std"] if "tau_std" in post else [])
                 + (["rate_months"] if plan.effect_shape == "saturating" else [])
                 + (["tau_slope_std", "rho"] if plan.random_slopes else []))
    diagnostics = Diagnostics.of(idata, var_names, plan, sampling_seconds)
    effects, effect_draws = _effects(beta, eff * standardisation.baseline_sd, stats, plan, outcome)
    fixed, variances, sigma, tau = _parameters(post, beta, trend, eff, stats, plan, standardisation.baseline_sd)
    _keep_outcome_units(post, stats, effect_draws, beta, sigma, tau)
    return LongitudinalResult(
        outcome=outcome.name, direction=outcome.direction, control=stats.spec.control, arms=stats.spec.arms,
        waves=stats.spec.waves, effect_shape=plan.effect_shape, time_trend=plan.time_trend, effects=tuple(effects),
        fixed_effects=tuple(fixed), variance_components=tuple(variances), diagnostics=diagnostics,
        n_participants=stats.cross.n_participants, n_obs=stats.cross.n_obs, method=method_of(plan), idata=idata,
    )


def _flat(post, name: str) -> np.ndarray:
    """A variable's draws, chains stacked: (chains x draws, size)."""
    return np.asarray(post[name]).reshape(post.sizes["chain"] * post.sizes["draw"], -1)


def _coefficient_draws(post, stats: LongitudinalStats, plan: AnalysisPlan,
                       standardisation: Standardisation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws of the design's coefficients in outcome units (the plan's parameters mapped to every column:
    trend per wave or linear in months, effects per wave, constant or saturating), and of the standardised
    trend and effect parameters themselves."""
    spec = stats.spec
    n_w, n_t = len(spec.waves), len(spec.treated)
    months = np.array(spec.months)
    trend = _flat(post, "trend")
    mu_w = trend if plan.time_trend == "per_wave" else trend[:, [0]] + trend[:, [1]] * months[None, :]
    eff = _flat(post, "effect_std")
    if plan.effect_shape == "per_wave":
        eff_aw = eff
    elif plan.effect_shape == "constant":
        eff_aw = np.repeat(eff, n_w, axis=1)
    else:
        rate = _flat(post, "rate_months")
        eff_aw = (eff[:, :, None] * (1 - np.exp(-months[None, None, :] / rate[:, :, None]))).reshape(-1, n_t * n_w)
    beta = standardisation.to_outcome_units(np.concatenate([mu_w, eff_aw, _flat(post, "coef")], axis=1))
    return beta, trend, eff


def _effects(beta: np.ndarray, plateau: np.ndarray, stats: LongitudinalStats, plan: AnalysisPlan,
             outcome: OutcomeTerms) -> tuple[list[Effect], np.ndarray]:
    """Each treated arm's effect at each wave, in the long run (the final wave) and, for a saturating shape, at
    its plateau (``plateau``: its draws in outcome units); and the (draw, arm, wave) array of effect draws."""
    spec = stats.spec
    level = plan.interval_level
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    sign = 1.0 if outcome.direction == "higher_is_better" else -1.0
    cols = list(stats.cross.columns)

    def est(arm: str, wave: str, draws: np.ndarray, n_arm: int, n_control: int) -> Effect:
        good = sign * draws
        return Effect(
            outcome=outcome.name, arm=arm, control=spec.control, wave=wave, method=method_of(plan), tier="trusted",
            estimate=float(draws.mean()), sd=float(draws.std(ddof=1)),
            lower=float(np.quantile(draws, lo_q)), upper=float(np.quantile(draws, hi_q)),
            interval_level=level, p_benefit=float((good > 0).mean()),
            p_above_mcid=None if outcome.mcid is None else float((good > outcome.mcid).mean()),
            p_in_rope=None if outcome.rope is None else float((np.abs(draws) < outcome.rope).mean()),
            n_arm=n_arm, n_control=n_control, direction=outcome.direction,
        )

    effects: list[Effect] = []
    effect_draws = np.zeros((beta.shape[0], len(spec.treated), len(spec.waves)))
    final = spec.waves[-1]
    for ai, a in enumerate(spec.treated):
        for wi, w in enumerate(spec.waves):
            effect_draws[:, ai, wi] = beta[:, cols.index(f"arm[{a}]:wave[{w}]")]
            effects.append(est(a, w, effect_draws[:, ai, wi], stats.n_at(a, w), stats.n_at(spec.control, w)))
        effects.append(est(a, LONG_RUN, effect_draws[:, ai, -1], stats.n_at(a, final), stats.n_at(spec.control, final)))
        if plan.effect_shape == "saturating":
            effects.append(est(a, PLATEAU, plateau[:, ai], stats.n_participants(a), stats.n_participants(spec.control)))
    return effects, effect_draws


def _parameters(post, beta: np.ndarray, trend: np.ndarray, eff: np.ndarray, stats: LongitudinalStats,
                plan: AnalysisPlan, sb: float) -> tuple[list[ParameterEstimate], list[ParameterEstimate], np.ndarray,
                                                        np.ndarray]:
    """The fixed effects (every design column, and the plan's own parameters) and the variance components in
    outcome units; with the residual and intercept SD draws."""
    level = plan.interval_level
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    spec = stats.spec

    def par(name: str, x: np.ndarray) -> ParameterEstimate:
        return ParameterEstimate(name, float(x.mean()), float(x.std(ddof=1)), float(np.quantile(x, lo_q)),
                                 float(np.quantile(x, hi_q)))

    fixed = [par(c, beta[:, j]) for j, c in enumerate(stats.cross.columns)]
    if plan.time_trend == "linear_months":
        fixed.append(par("time_months", sb * trend[:, 1]))
    if plan.effect_shape == "constant":
        fixed += [par(f"arm[{a}]", sb * eff[:, i]) for i, a in enumerate(spec.treated)]
    if plan.effect_shape == "saturating":
        rate = _flat(post, "rate_months")
        fixed += [par(f"rate_months[{a}]", rate[:, i]) for i, a in enumerate(spec.treated)]
    sigma = _flat(post, "sigma_std")[:, 0] * sb
    # with one follow-up row per participant the model fixes tau = 0 (the ANCOVA, analysis.longitudinal.model)
    tau = _flat(post, "tau_std")[:, 0] * sb if "tau_std" in post else np.zeros(sigma.size)
    variances = [par("sigma", sigma), par("tau", tau), par("sigma2", sigma**2), par("tau2", tau**2)]
    if plan.random_slopes:  # slope SD in outcome units per month; correlation of intercept and slope
        tau_slope = _flat(post, "tau_slope_std")[:, 0] * sb
        variances += [par("tau_slope", tau_slope), par("tau_slope2", tau_slope**2), par("rho", _flat(post, "rho")[:, 0])]
    return fixed, variances, sigma, tau


def _keep_outcome_units(post, stats: LongitudinalStats, effect_draws: np.ndarray, beta: np.ndarray,
                        sigma: np.ndarray, tau: np.ndarray) -> None:
    """Add the outcome-unit quantities to the posterior, so a saved InferenceData holds them too."""
    import xarray as xr

    spec = stats.spec
    shape = (post.sizes["chain"], post.sizes["draw"])
    post["effect"] = xr.DataArray(
        effect_draws.reshape(*shape, len(spec.treated), len(spec.waves)), dims=("chain", "draw", "arm", "wave"),
        coords={"arm": list(spec.treated), "wave": list(spec.waves)},
    )
    post["beta"] = xr.DataArray(beta.reshape(*shape, -1), dims=("chain", "draw", "column"),
                                coords={"column": list(stats.cross.columns)})
    post["sigma"] = xr.DataArray(sigma.reshape(shape), dims=("chain", "draw"))
    post["tau"] = xr.DataArray(tau.reshape(shape), dims=("chain", "draw"))
