"""The public tier of a binary outcome (``analysis.public_binary``): the noise-aware beta-binomial on released counts.

Reference points: with no noise the model is the trusted tier's conjugate beta-binomial (uniform priors) on the same
counts; with noise its interval widens as the delta method says; negative noisy counts and events > n are handled
by the model, and ratios the release cannot support are refused with a reason. Calibration: 400 simulated studies
per setting (``benchmarks.calibration.binary_public_calibration``, vectorised, about a second each).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.binary import beta_binomial
from analysis.public_binary import (
    PUBLIC_BINARY_METHOD,
    binary_width_ratio,
    count_below_one,
    fit_public_binary,
    latent_count_draws,
)
from schemas.binary_stats import BinaryCounts, NoisyBinaryCounts
from schemas.results import LONG_RUN

INDO = {"indomethacin": BinaryCounts(295, 27), "placebo": BinaryCounts(307, 52)}  # Elmunzer et al. 2012


def _fit(cells, **kw):
    return fit_public_binary(cells, control="placebo", waves=["followup"], outcome="pancreatitis", **kw)


def test_without_noise_the_public_model_is_the_trusted_beta_binomial():
    cells = {(a, "followup"): NoisyBinaryCounts.exact(c) for a, c in INDO.items()}
    rd = _fit(cells).effect("indomethacin")
    ref = beta_binomial(INDO["indomethacin"], INDO["placebo"])
    assert rd.estimate == pytest.approx(ref.risk_difference.mean, abs=5e-4)
    assert rd.sd == pytest.approx(ref.risk_difference.sd, rel=0.01)
    assert (rd.lower, rd.upper) == pytest.approx((ref.risk_difference.lower, ref.risk_difference.upper), abs=1.5e-3)
    assert rd.p_benefit == pytest.approx(ref.p_benefit, abs=2e-3)
    assert rd.tier == "public" and rd.method == PUBLIC_BINARY_METHOD and (rd.n_arm, rd.n_control) == (295, 307)


def test_noise_widens_the_interval_as_the_delta_method_says():
    sd = 5.64  # the noise SD of a release of epsilon 1 (benchmarks.calibration.binary_noise_sd)
    cells = {(a, "followup"): NoisyBinaryCounts(c.events, c.non_events, sd, sd) for a, c in INDO.items()}
    noisy, exact = _fit(cells).effect("indomethacin"), _fit(
        {k: NoisyBinaryCounts(v.events, v.non_events) for k, v in cells.items()}).effect("indomethacin")
    ratio = binary_width_ratio(cells[("indomethacin", "followup")], cells[("placebo", "followup")])
    assert 1.2 < ratio < 1.5
    assert (noisy.upper - noisy.lower) / (exact.upper - exact.lower) == pytest.approx(ratio, rel=0.05)
    assert noisy.sd == pytest.approx(exact.sd * ratio, rel=0.05)


def test_every_measure_per_wave_and_long_run_with_ratios_from_the_same_draws():
    sd = 3.0
    cells = {(a, w): NoisyBinaryCounts(c.events + d, c.non_events - d, sd, sd) for a, c in INDO.items()
             for w, d in (("m1", 4), ("followup", 0))}
    res = fit_public_binary(cells, control="placebo", waves=["m1", "followup"], outcome="pancreatitis")
    got = {(e.wave, e.method) for e in res.effects}
    assert got == {(w, m) for w in ("m1", "followup", LONG_RUN)
                   for m in (PUBLIC_BINARY_METHOD, "risk_ratio_noise_aware", "odds_ratio_noise_aware")}
    assert all(e.estimable and e.tier == "public" for e in res.effects)
    rr = res.effect("indomethacin", LONG_RUN, "risk_ratio_noise_aware")
    odds = res.effect("indomethacin", LONG_RUN, "odds_ratio_noise_aware")
    assert rr.lower < 27 / 295 / (52 / 307) < rr.upper and odds.lower < odds.estimate < odds.upper < 1
    # the long-run rows are the final wave's
    assert res.effect("indomethacin", LONG_RUN).estimate == res.effect("indomethacin", "followup").estimate


def test_negative_counts_and_events_above_n_are_handled_by_the_model_not_clamped_away():
    sd = 11.0  # epsilon 0.5
    # treated: noisy events -6 (true small); control: noisy non-events -3 (events > noisy n)
    cells = {("indomethacin", "followup"): NoisyBinaryCounts(-6.0, 300.0, sd, sd),
             ("placebo", "followup"): NoisyBinaryCounts(40.0, -3.0, sd, sd)}
    res = _fit(cells)
    rd = res.effect("indomethacin")
    assert rd.estimable and -1 <= rd.lower < rd.estimate < rd.upper <= 1
    # treated risk near 0, control near 1: the risk difference is large and negative, with an honest interval
    assert rd.estimate < -0.5 and rd.upper - rd.lower > 0.05
    for m in ("risk_ratio_noise_aware", "odds_ratio_noise_aware"):
        e = res.effect("indomethacin", LONG_RUN, m)
        assert not e.estimable and e.estimate is None and "consistent with zero" in e.reason
    assert (rd.n_arm, rd.n_control) == (294, 37)


def test_latent_counts_are_non_negative_even_far_below_zero():
    rng = np.random.default_rng(3)
    x = latent_count_draws(np.array([-400.0, -5.0, 50.0]), np.array([5.0, 5.0, 5.0]), 20_000, rng)
    assert np.all(np.isfinite(x)) and np.all(x >= 0)
    assert x[0].mean() < 0.1 and x[1].mean() == pytest.approx(5 * 0.0 + 5 * (math.exp(-0.5) / math.sqrt(2 * math.pi))
                                                                  / (1 - 0.8413447) - 5.0, abs=0.1)
    assert x[2].mean() == pytest.approx(50.0, abs=0.1)
    # P(count < 1): negligible for 27 released events at epsilon 1's noise; 0.22 for -4 (truncated normal at 0)
    assert count_below_one(27, 5.64) < 1e-5 and count_below_one(-4, 5.64) == pytest.approx(0.215, abs=0.001)
    assert count_below_one(0.5, 0.0) == 1.0 and count_below_one(3, 0.0) == 0.0


def test_a_suppressed_wave_is_not_estimable_with_its_reason_and_a_cell_without_n_too():
    cells = {(a, "followup"): NoisyBinaryCounts.exact(c) for a, c in INDO.items()}
    res = fit_public_binary(cells, control="placebo", waves=["m1", "followup"], outcome="pancreatitis",
                            unusable={"m1": "the DP release suppressed a cell of pancreatitis at m1"})
    m1 = [e for e in res.effects if e.wave == "m1"]
    assert len(m1) == 3 and all(not e.estimable and "suppressed" in e.reason for e in m1)
    assert res.effect("indomethacin").estimable
    empty = {("indomethacin", "followup"): NoisyBinaryCounts(0.2, 0.3, 5, 5),
             ("placebo", "followup"): NoisyBinaryCounts.exact(INDO["placebo"])}
    rows = _fit(empty).effects
    assert all(not e.estimable and "noisy n" in e.reason for e in rows)


def test_the_naive_model_ignores_the_noise():
    cells = {(a, "followup"): NoisyBinaryCounts(c.events, c.non_events, 11.0, 11.0) for a, c in INDO.items()}
    aware, naive = _fit(cells).effect("indomethacin"), _fit(cells, noise_aware=False).effect("indomethacin")
    assert naive.sd < 0.7 * aware.sd


@pytest.mark.parametrize("n_per_arm", [300, 1_000])
@pytest.mark.parametrize("epsilon", [1.0, 0.5])
def test_the_public_risk_difference_interval_covers_the_truth(n_per_arm, epsilon):
    """400 two-arm studies (risks 0.09 vs 0.17, as the indomethacin trial), counts noised as a release of the whole
    budget would noise them (the house's plan and OpenDP calibration give the SD), 95% interval of p1 - p2."""
    from benchmarks.calibration import binary_public_calibration

    r = binary_public_calibration(n_per_arm, epsilon, studies=400)
    assert 0.92 <= r.coverage <= 0.98, (f"coverage {r.coverage:.3f} +/- {r.mc_se:.3f} (Monte Carlo SE, 400 studies) "
                                        f"outside [0.92, 0.98]: {r.line()}")
    # the noise matters where it is large against the sampling error: leaving it out under-covers
    if n_per_arm == 300 and epsilon == 0.5:
        assert r.naive_coverage < 0.8, r.line()
