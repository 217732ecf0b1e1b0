"""The PyMC model's likelihood term is the numpy marginal likelihood, at random parameters, for every plan shape.

The sampler only ever sees the PyTensor expression in ``analysis.longitudinal.model``; the published-fit tests
(Beat the Blues, sleepstudy) check the numpy likelihood in ``analysis.longitudinal.likelihood``. This test ties
the two together directly: the model's ``marginal_loglik`` potential, evaluated at a random point of its free
variables, equals the numpy log-likelihood of the same coefficients and variances (up to the constant
N/2 log 2 pi the potential leaves out), on the standardised statistics the model is given.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from analysis.longitudinal import crossproducts_from_frame, marginal_loglik, marginal_loglik_slopes
from analysis.longitudinal.model import build_model, model_data, standardise
from schemas.protocol import AnalysisPlan
from tests.support.longitudinal import SPEC, random_long

PLANS = {
    "per_wave": AnalysisPlan(effect_shape="per_wave", time_trend="per_wave", covariates=["age_z", "sex"]),
    "constant_linear": AnalysisPlan(effect_shape="constant", time_trend="linear_months", covariates=["age_z", "sex"]),
    "saturating": AnalysisPlan(effect_shape="saturating", time_trend="per_wave", covariates=["age_z", "sex"]),
    "random_slopes": AnalysisPlan(random_slopes=True, covariates=["age_z", "sex"]),
}


def _beta_std(plan: AnalysisPlan, point: dict[str, np.ndarray]) -> np.ndarray:
    """The standardised design coefficients the model builds from its parameters (model docstring)."""
    months = np.array(SPEC.months)
    n_w, n_t = len(SPEC.waves), len(SPEC.treated)
    trend = point["trend"]
    mu_w = trend if plan.time_trend == "per_wave" else trend[0] + trend[1] * months
    eff = point["effect_std"]
    if plan.effect_shape == "per_wave":
        eff_aw = eff
    elif plan.effect_shape == "constant":
        eff_aw = np.repeat(eff, n_w)
    else:
        rate = np.exp(point["rate_months_log__"])
        eff_aw = (eff[:, None] * (1 - np.exp(-months[None, :] / rate[:, None]))).reshape(n_t * n_w)
    return np.concatenate([mu_w, eff_aw, point["coef"]])


@pytest.mark.parametrize("name", [*PLANS, "one_row_each"])
def test_model_potential_equals_the_numpy_marginal_likelihood(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # a stable seed per case
    frame = random_long(rng, 40)
    plan = PLANS.get(name, PLANS["per_wave"])
    if name == "one_row_each":  # every participant seen once: the model fixes tau = 0
        frame = frame.drop_duplicates("participant")
    stats = crossproducts_from_frame(frame, SPEC, slopes=plan.random_slopes)
    std = standardise(stats)
    intercepts = any(g.rows_per_participant > 1 for g in stats.cross.groups)
    assert intercepts == (name != "one_row_each")
    model = build_model(SPEC, plan, model_data(std.cross, SPEC, plan), intercepts)
    # the potential in terms of the free variables' (transformed) values, as the sampler evaluates it
    (term,) = model.replace_rvs_by_values([model.potentials[0]])
    potential = model.compile_fn(term, inputs=model.value_vars, mode="FAST_COMPILE")
    n_obs = std.cross.n_obs
    for _ in range(5):
        point = {v.name: rng.normal(0, 0.7, size=model.initial_point()[v.name].shape) for v in model.value_vars}
        beta = _beta_std(plan, point)
        s2 = math.exp(point["sigma_std_log__"]) ** 2
        if not intercepts:
            want = marginal_loglik(std.cross, beta, s2, 0.0)
        elif plan.random_slopes:
            tau0, tau1 = math.exp(point["tau_std_log__"]), math.exp(point["tau_slope_std_log__"])
            rho = 2.0 / (1.0 + math.exp(-float(point["rho01_logodds__"]))) - 1.0
            want = marginal_loglik_slopes(std.cross, beta, s2, tau0, tau1, rho)
        else:
            want = marginal_loglik(std.cross, beta, s2, math.exp(point["tau_std_log__"]) ** 2)
        got = float(potential(point)) - 0.5 * n_obs * math.log(2 * math.pi)  # the potential omits the constant
        assert got == pytest.approx(want, rel=1e-9, abs=1e-8), (name, point)
