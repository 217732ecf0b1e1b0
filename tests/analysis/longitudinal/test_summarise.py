"""The posterior summary on a posterior made by hand (no sampler): labels, units and counts of what it reports."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest

from analysis.longitudinal import crossproducts_from_frame
from analysis.longitudinal.model import param_layout, standardise
from analysis.longitudinal.summarise import OutcomeTerms, summarise
from schemas.protocol import AnalysisPlan
from schemas.results import LONG_RUN
from tests.support.longitudinal import SPEC, random_long


def _posterior(plan: AnalysisPlan, rng: np.random.Generator, chains: int = 2, draws: int = 60):
    lay = param_layout(SPEC, plan)
    post = {"trend": rng.normal(size=(chains, draws, lay["trend"])),
            "effect_std": rng.normal(0.2, 0.05, size=(chains, draws, lay["effect"])),
            "coef": rng.normal(size=(chains, draws, lay["coef"])),
            "sigma_std": np.abs(rng.normal(1, 0.1, size=(chains, draws))),
            "tau_std": np.abs(rng.normal(0.5, 0.1, size=(chains, draws)))}
    if plan.random_slopes:
        post["tau_slope_std"] = np.abs(rng.normal(0.1, 0.02, size=(chains, draws)))
        post["rho"] = rng.uniform(-0.5, 0.5, size=(chains, draws))
    return az.from_dict(posterior=post, sample_stats={"diverging": np.zeros((chains, draws), dtype=bool)})


@pytest.mark.parametrize("slopes", [False, True])
def test_the_result_says_which_model_it_is_and_maps_draws_to_outcome_units(slopes):
    """Issue 20: a random-slopes fit was labelled random-intercept in LongitudinalResult.method."""
    rng = np.random.default_rng(1)
    plan = AnalysisPlan(random_slopes=slopes, covariates=["age_z", "sex"])
    stats = crossproducts_from_frame(random_long(rng, 60), SPEC, slopes=slopes)
    std = standardise(stats)
    idata = _posterior(plan, rng)
    result = summarise(idata, stats=stats, plan=plan, standardisation=std,
                       outcome=OutcomeTerms("who5.percent", "higher_is_better", mcid=1.0, rope=0.5))
    want = "bayes_random_slopes_marginal" if slopes else "bayes_random_intercept_marginal"
    assert result.method == want and {e.method for e in result.effects} == {want}
    # the coach effect at w2 is the standardised coefficient times the baseline SD (effects have no offset)
    col = list(stats.cross.columns).index("arm[coach]:wave[w2]")
    draws = std.baseline_sd * (np.asarray(idata.posterior["effect_std"]).reshape(-1, 6)[:, col - 3])
    coach = result.effect("coach", "w2")
    assert coach.estimate == pytest.approx(draws.mean()) and coach.sd == pytest.approx(draws.std(ddof=1))
    assert coach.n_arm == stats.n_at("coach", "w2") and coach.n_control == stats.n_at("control", "w2")
    assert result.effect("coach", LONG_RUN).n_arm == stats.n_at("coach", "w3")
    assert coach.interval_level == 0.95 and coach.p_above_mcid is not None and coach.tier == "trusted"
