"""The public tier's noise-aware ANCOVA (``analysis.public``): on exact statistics it is the OLS ANCOVA (checked
against statsmodels on the raw rows), it does not depend on where the release centres the values, its noise
variance is the variance the noise really adds (Monte Carlo), and a release it cannot carry says why and what to do."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.public import PublicFitError, fit_public, fit_wave, paired_moments_from_frame, width_ratio
from schemas.protocol import AnalysisPlan
from schemas.results import LONG_RUN
from schemas.suffstats import PAIRED_STATISTICS, NoisyPairedMoments

PLAN = AnalysisPlan()


def _frame(seed: int, n: int = 600, arms=("control", "coach", "tutor"), effect=(0.0, 4.0, 1.5)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for wave in ("m1", "m3"):
        arm = rng.choice(len(arms), n)
        x = np.clip(rng.normal(55, 18, n), 0, 100)
        y = np.clip(20 + 0.6 * x + np.asarray(effect)[arm] + rng.normal(0, 14, n), 0, 100)
        rows.append(pd.DataFrame({"arm": np.asarray(arms)[arm], "wave": wave, "outcome": y, "baseline": x}))
    return pd.concat(rows, ignore_index=True)


def _exact(frame, center: float = 0.0) -> dict:
    rng = np.random.default_rng(0)
    return {k: NoisyPairedMoments.with_gaussian_noise(v, {}, rng, center=center)
            for k, v in paired_moments_from_frame(frame).items()}


def test_on_exact_statistics_it_is_the_ols_ancova():
    """Reference: statsmodels OLS y ~ C(arm) + baseline on the raw rows of the wave (an independent implementation)."""
    import statsmodels.formula.api as smf

    frame = _frame(3)
    fit = fit_public(_exact(frame), PLAN, control="control", waves=["m1", "m3"], outcome="who5.percent")
    for wave in ("m1", "m3"):
        ols = smf.ols("outcome ~ C(arm, Treatment('control')) + baseline", frame[frame.wave == wave]).fit()
        for arm in ("coach", "tutor"):
            term = f"C(arm, Treatment('control'))[T.{arm}]"
            e = fit.arm_effect(arm, wave)
            assert e.estimate == pytest.approx(ols.params[term], rel=1e-9)
            assert math.sqrt(e.sampling_var) == pytest.approx(ols.bse[term], rel=1e-9)
            assert e.noise_var == 0.0 and e.width_ratio == 1.0
    lr = fit.effect("coach", LONG_RUN)
    assert lr.tier == "public" and lr.lower < lr.estimate < lr.upper and lr.n_arm > 0
    assert fit.diagnostics.passed and fit.confirmatory


@settings(max_examples=30, deadline=None)
@given(center=st.floats(-200, 200, allow_nan=False))
def test_the_estimate_does_not_depend_on_the_release_centre(center):
    frame = _frame(5, n=200, arms=("control", "coach"), effect=(0.0, 3.0))
    plain = fit_wave({a: c for (a, w), c in _exact(frame).items() if w == "m3"}, control="control", wave="m3")
    moved = fit_wave({a: c for (a, w), c in _exact(frame, center).items() if w == "m3"}, control="control", wave="m3")
    for p, m in zip(plain.effects, moved.effects, strict=True):
        assert m.estimate == pytest.approx(p.estimate, rel=1e-7, abs=1e-7)
        assert m.sampling_var == pytest.approx(p.sampling_var, rel=1e-6)


def test_the_noise_variance_is_what_the_noise_adds():
    """The data fixed, 3,000 noise draws at a release's SDs: the estimates' variance across draws is the model's noise
    variance (delta method), within Monte Carlo error, and the naive model leaves it out."""
    frame = _frame(7, n=6000, arms=("control", "coach"), effect=(0.0, 3.0))
    exact = {k: v for k, v in paired_moments_from_frame(frame).items() if k[1] == "m3"}
    sds = {"n": 20.0, "sum_x": 900.0, "sum_y": 1200.0, "sum_xx": 6e4, "sum_yy": 6e4, "sum_xy": 6e4}
    rng = np.random.default_rng(11)
    estimates, noise_vars = [], []
    for _ in range(3000):
        cells = {a: NoisyPairedMoments.with_gaussian_noise(v, sds, rng, center=50.0) for (a, _), v in exact.items()}
        e = fit_wave(cells, control="control", wave="m3").effects[0]
        estimates.append(e.estimate)
        noise_vars.append(e.noise_var)
    ratio = np.var(estimates, ddof=1) / np.mean(noise_vars)
    assert 0.9 < ratio < 1.1, ratio  # MC SE of a variance from 3,000 draws: about 2.6%
    naive = fit_wave(cells, control="control", wave="m3", noise_aware=False).effects[0]
    assert naive.noise_var == 0.0


def test_a_release_the_model_cannot_carry_says_why_and_what_to_change():
    frame = _frame(9, n=300, arms=("control", "coach"), effect=(0.0, 3.0))
    exact = paired_moments_from_frame(frame)
    swamp = {s: (1e7 if s in ("sum_yy", "sum_xx") else 0.0) for s in PAIRED_STATISTICS}
    rng = np.random.default_rng(2)
    for attempt in range(50):  # a draw where the noise drives a variance below zero
        cells = {k: NoisyPairedMoments.with_gaussian_noise(v, swamp if k[1] == "m1" else {}, rng, center=50.0)
                 for k, v in exact.items()}
        try:
            fit_wave({a: c for (a, w), c in cells.items() if w == "m1"}, control="control", wave="m1")
        except PublicFitError as exc:
            assert "at m1" in str(exc) and "swamps" in str(exc) and "budget" in str(exc) and "bounds" in str(exc)
            break
    else:
        pytest.fail("no draw swamped the variance")
    # with the bounds' half-range stated (as releases do), the variances get their bounded prior and the wave fits
    bounded = {a: NoisyPairedMoments(**{**c.__dict__, "half_range": 50.0}) for (a, w), c in cells.items() if w == "m1"}
    fit = fit_wave(bounded, control="control", wave="m1")
    assert 0 < fit.residual_var <= 2500.0 and fit.effects[0].width_ratio > 1.0
    # an earlier wave that cannot be fitted is reported not estimable; the long-run wave still publishes
    fit = fit_public(cells, PLAN, control="control", waves=["m1", "m3"])
    assert [(e.wave, e.estimable) for e in fit.effects] == [("m1", False), ("m3", True), (LONG_RUN, True)]
    assert "swamps" in fit.effects[0].reason
    # without its long-run wave the outcome cannot be fitted
    with pytest.raises(PublicFitError):
        fit_public(cells, PLAN, control="control", waves=["m3", "m1"])


def test_width_ratio_grows_with_the_noise():
    frame = _frame(13, n=4000, arms=("control", "coach"), effect=(0.0, 3.0))
    exact = paired_moments_from_frame(frame)
    ratios = []
    for scale in (0.0, 1.0, 4.0):
        sds = {"n": 5 * scale, "sum_x": 300 * scale, "sum_y": 600 * scale, "sum_xx": 2e4 * scale,
               "sum_yy": 2e4 * scale, "sum_xy": 2e4 * scale}
        cells = {k: NoisyPairedMoments.with_gaussian_noise(v, sds, np.random.default_rng(1), center=50.0)
                 for k, v in exact.items()}
        ratios.append(width_ratio(cells, control="control", wave="m3")["coach"])
    assert ratios[0] == 1.0 and 1.0 < ratios[1] < ratios[2]
