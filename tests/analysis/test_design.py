"""flourish design's engine (analysis.design): the simulated statistics have the distribution of a sample's sums,
each trial is analysed by the plan's own MMRM function, failures are counted apart, the known-covariance formula
agrees with the fitted SEs, and (slow) the operating characteristics are calibrated: type I error at alpha, power at
the analytic value, coverage at the interval level."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from analysis import plan
from analysis.design import DesignAssumptions, pattern_probabilities, simulate_cell, simulate_monitor
from analysis.design.statistics import covariance, draw_mmrm_statistics
from flows.simulation.field_study import protocol as demo_protocol
from schemas.mmrm_stats import MMRMStatistics

SD = 20.0  # WHO-5 percent: a fifth of its 0..100 range, what flows.design assumes without design.outcome_sd


@pytest.fixture(scope="module")
def demo() -> DesignAssumptions:
    return DesignAssumptions.of(demo_protocol(), SD)


def test_pattern_probabilities_give_the_attrition_at_the_final_wave():
    p = pattern_probabilities(5, 0.25)
    assert p.sum() == pytest.approx(1.0) and p[-1] == pytest.approx(0.75)
    assert np.all(np.diff(p[:-1]) < 0)  # a constant hazard: fewer drop out at each later wave


def test_drawn_statistics_have_the_moments_of_a_samples_sums():
    """E[sum w w'] = n (Sigma + mu mu') and E[sum w] = n mu for each arm's complete-case pattern, the Wishart path
    (n > d) and the row path (n <= d) alike; checked against the Monte Carlo mean within 4 SE."""
    rng = np.random.default_rng(1)
    sigma = covariance(2.0, 0.6, 1.0, 0.5, [0, 1, 3])
    means = {"c": np.array([0.0, 0.0, 0.0]), "t": np.array([0.0, 1.0, 2.0])}
    for n in (40, 2):
        draws = [draw_mmrm_statistics(rng, {"c": n, "t": n}, ("c", "t"), means, sigma, np.array([0, 0, 1.0]),
                                      ("w1", "w2"), ("intercept", "arm[t]", "baseline")) for _ in range(3000)]
        syy = np.array([d.patterns[0].syy for d in draws])  # both arms pooled: 2n participants
        expected = n * (sigma[1:, 1:] + np.outer(means["c"][1:], means["c"][1:])) + n * (
            sigma[1:, 1:] + np.outer(means["t"][1:], means["t"][1:]))
        se = syy.std(axis=0) / math.sqrt(len(draws))
        assert np.all(np.abs(syy.mean(axis=0) - expected) < 4 * se)
        baseline_y = np.array([d.patterns[0].szy[-1] for d in draws])  # sum baseline x y
        assert np.all(np.abs(baseline_y.mean(axis=0) - 2 * n * sigma[0, 1:]) < 4 * baseline_y.std(axis=0) / math.sqrt(3000))
        arm_sum = np.array([d.patterns[0].szy[1] for d in draws])  # sum over the treated arm of y
        assert np.all(np.abs(arm_sum.mean(axis=0) - n * means["t"][1:]) < 4 * arm_sum.std(axis=0) / math.sqrt(3000))


def test_drawn_statistics_fit_like_the_same_participants_rows(demo):
    """The statistics the engine builds from sums equal MMRMStatistics.from_arrays on rows with those sums: drawing
    participants (n <= d path) and reducing them gives the statistics of those participants exactly."""
    rng = np.random.default_rng(3)
    sigma = demo.sigma()[:3, :3]
    mu = {a: np.zeros(3) for a in ("c", "t")}
    stats = draw_mmrm_statistics(rng, {"c": 2, "t": 2}, ("c", "t"), mu, sigma, np.array([0, 0, 1.0]), ("a", "b"),
                                 ("intercept", "arm[t]", "baseline"))
    rng = np.random.default_rng(3)
    rng.multinomial(2, [0, 0, 1.0])
    w_c = mu["c"] + rng.standard_normal((2, 3)) @ np.linalg.cholesky(sigma).T
    rng.multinomial(2, [0, 0, 1.0])
    w_t = mu["t"] + rng.standard_normal((2, 3)) @ np.linalg.cholesky(sigma).T
    w = np.vstack([w_c, w_t])
    z = np.column_stack([np.ones(4), [0, 0, 1, 1], w[:, 0]])
    rows = MMRMStatistics.from_arrays(z, w[:, 1:], ("intercept", "arm[t]", "baseline"), ("a", "b"))
    for f in ("szz", "szy", "syy"):
        np.testing.assert_allclose(getattr(stats.patterns[0], f), getattr(rows.patterns[0], f), rtol=1e-12)


def test_each_trial_is_analysed_by_the_plans_own_mmrm_function(demo, monkeypatch):
    """The engine calls analysis.plan.fit_primary_mmrm, the function run_plan calls for an MMRM outcome, which calls
    analysis.mmrm.fit_mmrm with the plan's design: spies on both see every simulated trial."""
    calls = {"primary": 0, "fit": []}
    original_primary = plan.fit_primary_mmrm
    import analysis.mmrm as mmrm

    real_fit = mmrm.fit_mmrm

    def primary(*args, **kwargs):
        calls["primary"] += 1
        return original_primary(*args, **kwargs)

    def fit(stats, design, **kwargs):
        calls["fit"].append((design, kwargs))
        return real_fit(stats, design, **kwargs)

    monkeypatch.setattr(plan, "fit_primary_mmrm", primary)
    monkeypatch.setattr(mmrm, "fit_mmrm", fit)
    cell = simulate_cell(demo, 40, 0.25, 1.0, 3, seed=5)
    assert calls["primary"] == 3 and len(calls["fit"]) == 3 and cell.n_failed == 0
    design, kwargs = calls["fit"][0]
    assert design == plan.mmrm_design(demo.protocol, demo.waves)
    assert kwargs == {"structure": "us", "method": "reml", "level": demo.protocol.analysis.interval_level}
    assert "fit_primary_mmrm(s, o, protocol, treated, running)" in inspect.getsource(plan.run_plan)


def test_a_failed_fit_is_counted_apart_and_never_as_a_non_rejection(demo, monkeypatch):
    real = plan.fit_primary_mmrm
    state = {"i": 0}

    def every_other(*args, **kwargs):
        state["i"] += 1
        return (None, [], "the MMRM could not be fitted: stand-in failure") if state["i"] % 2 else real(*args, **kwargs)

    monkeypatch.setattr(plan, "fit_primary_mmrm", every_other)
    cell = simulate_cell(demo, 200, 0.25, 3.0, 6, seed=2)  # 3 MCID at N = 200: every fitted trial rejects
    assert cell.n_failed == 3 and cell.failure_rate == 0.5
    assert cell.power == 1.0 and cell.rejection_rate == 1.0  # over the 3 fitted trials, not diluted by the failures
    assert cell.failures == ("the MMRM could not be fitted: stand-in failure",)


def test_the_analytic_se_is_the_fitted_se(demo):
    """Known-covariance GLS (analysis.design.analytic, written from Diggle et al.'s formulas) against the mean
    Kenward-Roger SE of the fitted trials: within 5% at N = 85 per arm (estimating Sigma costs a little)."""
    cell = simulate_cell(demo, 85, 0.25, 1.0, 20, seed=9)
    assert cell.mean_se == pytest.approx(cell.analytic_se, rel=0.05)


def test_a_suppressed_final_wave_leaves_the_monitor_indeterminate():
    protocol = demo_protocol()
    primary = protocol.primary_outcome.model_copy(update={"ni_margin": 2.0})
    a = DesignAssumptions.of(protocol.model_copy(update={"primary_outcome": primary}), SD)
    m = simulate_monitor(a, "suppressed", 85, 0.25, 0.3, -0.2, 4, seed=1, suppress_final=True)
    assert m.indeterminate_rate_final == 1.0 and m.divergence_rate_final == 0.0


@pytest.mark.slow
def test_type_one_error_power_and_coverage_are_calibrated(demo):
    """nsim = 200 per cell in CI (benchmarks/design.py runs 1,000): under the null the rejection rate is alpha within
    3 Monte Carlo SEs of alpha; at 1 MCID the power is the analytic power within 3 SEs; coverage is 0.95 within 3
    SEs. About 1 to 2 minutes."""
    n = demo.planned_n(0.25)
    null = simulate_cell(demo, n, 0.25, 0.0, 200, seed=11)
    alt = simulate_cell(demo, n, 0.25, 1.0, 200, seed=12)
    alpha_se = math.sqrt(0.05 * 0.95 / 200)
    assert abs(null.rejection_rate - 0.05) < 3 * alpha_se and null.n_failed == 0
    assert abs(alt.power - alt.analytic_power) < 3 * math.sqrt(alt.analytic_power * (1 - alt.analytic_power) / 200)
    for cell in (null, alt):
        assert abs(cell.coverage - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 200)
        assert abs(cell.bias) < 3 * cell.bias_mcse


@pytest.mark.slow
def test_the_monitor_detects_the_divergence_it_is_powered_for_and_rarely_raises_a_false_alarm():
    """Engagement +0.3 SD with WHO-5 -0.2 SD against a margin of 2 points (0.1 SD, the demo's ROPE), at the N the
    analytic detection reaches 80%: the simulated detection agrees with it within 3 MC SEs; with WHO-5 unchanged the
    false-alarm rate at the final wave is at most 5%. nsim 100 each in CI (benchmarks/design.py runs 1,000)."""
    protocol = demo_protocol()
    primary = protocol.primary_outcome.model_copy(update={"ni_margin": 2.0})
    a = DesignAssumptions.of(protocol.model_copy(update={"primary_outcome": primary}), SD, 50.0)
    n = a.monitor_n(0.25)
    hit = simulate_monitor(a, "divergence", n, 0.25, 0.3, -0.2, 100, seed=3)
    quiet = simulate_monitor(a, "unchanged", n, 0.25, 0.3, 0.0, 100, seed=4)
    assert abs(hit.divergence_rate_final - hit.analytic_detection_final) < 3 * math.sqrt(0.8 * 0.2 / 100)
    assert quiet.divergence_rate_final <= 0.05 and hit.n_failed == quiet.n_failed == 0
