"""The Bayesian MMRM: same likelihood as REML, so with many participants (the prior no longer matters) its
posterior of the long-run effect agrees with the REML estimate and standard error (Bernstein-von Mises);
a second fit of the same design shape reuses the compiled model and only swaps the data.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from analysis.mmrm import MMRMDesign, fit_mmrm, fit_mmrm_bayes  # noqa: E402
from analysis.mmrm.bayes import standardisation  # noqa: E402
from schemas.mmrm_stats import MMRMStatistics  # noqa: E402
from schemas.protocol import AnalysisPlan  # noqa: E402

DESIGN = MMRMDesign(("control", "coach"), ("w1", "w2", "w3", "w4"), ("age",))


def simulate(seed: int, n: int, effect: float) -> MMRMStatistics:
    """WHO-5-like percent scores: baseline ~ N(50, 15), SD growing over waves, AR(1)-like correlation,
    monotone drop-out."""
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, n).astype(float)
    baseline = rng.normal(50, 15, n)
    age = rng.normal(40, 10, n)
    sd = np.array([8.0, 10.0, 12.0, 14.0])
    corr = 0.7 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    y = (10 + 0.8 * baseline[:, None] + 0.05 * age[:, None] + effect * arm[:, None] * np.array([0.3, 0.6, 0.9, 1.0])
         + rng.multivariate_normal(np.zeros(4), sd[:, None] * corr * sd[None, :], size=n))
    last = rng.choice(4, size=n, p=[0.1, 0.1, 0.2, 0.6])
    y[np.arange(4)[None, :] > last[:, None]] = np.nan
    return MMRMStatistics.from_arrays(np.column_stack([np.ones(n), arm, baseline, age]), y, DESIGN.z_columns, DESIGN.waves)


def test_the_standardisation_maps_back_exactly():
    stats = simulate(1, 500, 3.0)
    std = standardisation(stats, DESIGN)
    reml_raw = fit_mmrm(stats, DESIGN, kenward_roger=None)
    reml_std = fit_mmrm(stats.transformed(std.z_map, std.y_scale, std.y_from_z), DESIGN, kenward_roger=None)
    np.testing.assert_allclose(std.beta_map @ reml_std.beta + std.beta_shift, reml_raw.beta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std.outcome_sd**2 * reml_std.sigma, reml_raw.sigma, rtol=1e-6)


@pytest.mark.slow
def test_posterior_agrees_with_reml_and_a_second_fit_only_swaps_data():
    plan = AnalysisPlan()
    first = simulate(2, 4000, 3.0)
    post = fit_mmrm_bayes(first, DESIGN, plan, outcome="who5_percent", mcid=2.0, rope=0.5)
    assert post.diagnostics.passed, post.diagnostics.reasons
    reml = fit_mmrm(first, DESIGN, kenward_roger=None)
    for wave in (*DESIGN.waves, "long_run"):
        b, f = post.effect("coach", wave), reml.effect("coach", wave)
        assert abs(b.estimate - f.estimate) < 0.15 * f.model_based.se, wave
        assert 0.9 < b.sd / f.model_based.se < 1.1, wave
    np.testing.assert_allclose(post.sigma_mean, reml.sigma, rtol=0.1)
    long_run = post.effect("coach")
    assert long_run.p_benefit > 0.99 and long_run.lower < long_run.estimate < long_run.upper
    assert 0 <= long_run.p_above_mcid <= long_run.p_benefit and long_run.p_in_rope is not None
    assert (long_run.outcome, long_run.method) == ("who5_percent", "bayes_mmrm_unstructured")

    # same design shape, other data: no compilation, and the result follows the new data
    second = simulate(3, 3000, -3.0)
    again = fit_mmrm_bayes(second, DESIGN, plan, direction="lower_is_better")
    assert again.compile_seconds == 0.0 and post.compile_seconds > 0
    assert again.diagnostics.passed, again.diagnostics.reasons
    reml2 = fit_mmrm(second, DESIGN, kenward_roger=None).effect("coach")
    assert abs(again.effect("coach").estimate - reml2.estimate) < 0.15 * reml2.model_based.se
    assert again.effect("coach").p_benefit > 0.99  # lower is better and the effect is negative


def test_the_pytensor_likelihood_equals_the_numpy_pattern_likelihood():
    """The sampled model's likelihood is the frequentist one (ML, without its 2 pi constant)."""
    import pytensor
    import pytensor.tensor as pt

    from analysis.mmrm.bayes import _padded_data, pattern_loglik
    from analysis.mmrm.covariance import CovarianceStructure
    from analysis.mmrm.likelihood import LOG_2PI, PatternLikelihood

    stats = simulate(4, 300, 2.0)
    rng = np.random.default_rng(5)
    cov = CovarianceStructure("us", 4)
    theta = cov.start(np.diag([60.0, 80.0, 100.0, 150.0]) + 30.0) + rng.normal(0, 0.1, cov.n_theta)
    beta = rng.normal(0, 1, len(DESIGN.coefficient_names))
    beta_var, sigma_var = pt.vector("beta"), pt.matrix("sigma")
    data = {k: pt.as_tensor_variable(v) for k, v in _padded_data(stats, 8).items()}
    fn = pytensor.function([beta_var, sigma_var], pattern_loglik(beta_var, sigma_var, data, DESIGN.mean_map(), 4))
    lik = PatternLikelihood(stats, DESIGN, cov, reml=False)
    sigma = cov.sigma(theta)
    # the numpy likelihood profiles beta out; evaluate its quadratic form at this beta from the pieces
    w, logdet = lik.weights(sigma)
    want = -0.5 * (lik.data.n @ logdet + np.einsum("kts,kst->", w, lik.residual_crossproducts(beta)))
    assert float(fn(beta, sigma)) == pytest.approx(want, rel=1e-10)
    # and at the profiled beta it is the ML log-likelihood plus N log(2 pi) / 2
    ev = lik.evaluate(theta)
    assert float(fn(ev.beta, sigma)) == pytest.approx(-0.5 * (ev.neg2_loglik - lik.n_obs * LOG_2PI), rel=1e-10)
