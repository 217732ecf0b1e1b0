"""CUPED from per-arm PairedMoments, checked against statsmodels OLS and numpy on raw rows."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from analysis.cuped import cuped_effects
from schemas.suffstats import PairedMoments


def _sim(seed=7, n=4000, effect=0.5, rho=0.7):
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, n)
    x = rng.normal(10, 3, n)  # pre-period sessions per week
    y = 10 + rho * (x - 10) + rng.normal(0, 3 * np.sqrt(1 - rho**2), n) + effect * arm
    return arm, x, y


def test_theta_is_the_pooled_ols_slope_and_adjustment_matches_raw_rows():
    arm, x, y = _sim()
    cells = {"control": PairedMoments.from_arrays(x[arm == 0], y[arm == 0]),
             "coach": PairedMoments.from_arrays(x[arm == 1], y[arm == 1])}
    (est,) = cuped_effects(cells, control="control", metric="sessions_per_week")
    ols = sm.OLS(y, sm.add_constant(x)).fit()  # reference: statsmodels OLS of Y on X, arms pooled
    assert est.theta == pytest.approx(ols.params[1], rel=1e-10)
    # Y_cv = Y - theta (X - mean X) on raw rows (Deng et al. 2013, eq. 3)
    y_cv = y - est.theta * (x - x.mean())
    diff = y_cv[arm == 1].mean() - y_cv[arm == 0].mean()
    se = np.sqrt(y_cv[arm == 1].var(ddof=1) / (arm == 1).sum() + y_cv[arm == 0].var(ddof=1) / (arm == 0).sum())
    assert est.effect.estimate == pytest.approx(diff, rel=1e-10)
    assert est.effect.sd == pytest.approx(se, rel=1e-10)
    assert est.difference_unadjusted == pytest.approx(y[arm == 1].mean() - y[arm == 0].mean(), rel=1e-10)
    assert est.effect.lower < 0.5 < est.effect.upper
    assert (est.effect.outcome, est.effect.n_arm + est.effect.n_control) == ("sessions_per_week", 4000)


def test_variance_reduction_is_rho_squared():
    arm, x, y = _sim(seed=3, n=20000, effect=0.0, rho=0.7)
    cells = {"c": PairedMoments.from_arrays(x[arm == 0], y[arm == 0]),
             "t": PairedMoments.from_arrays(x[arm == 1], y[arm == 1])}
    (est,) = cuped_effects(cells, control="c")
    rho2 = np.corrcoef(x, y)[0, 1] ** 2  # Deng et al. 2013 eq. 5: var reduced by the factor 1 - rho^2
    assert est.variance_reduction == pytest.approx(rho2, abs=0.01)
    assert est.variance_reduction == pytest.approx(0.49, abs=0.02)  # the simulation's rho = 0.7


def test_cuped_difference_agrees_with_ancova_with_common_slope():
    # With theta from pooled arms the CUPED difference is close to OLS y ~ arm + x (regression adjustment)
    arm, x, y = _sim(seed=11, n=6000)
    cells = {"c": PairedMoments.from_arrays(x[arm == 0], y[arm == 0]),
             "t": PairedMoments.from_arrays(x[arm == 1], y[arm == 1])}
    (est,) = cuped_effects(cells, control="c")
    ancova = sm.OLS(y, sm.add_constant(np.column_stack([arm, x]))).fit()
    assert est.effect.estimate == pytest.approx(ancova.params[1], abs=0.02)
    assert est.effect.sd == pytest.approx(ancova.bse[1], rel=0.05)


def test_constant_pre_period_falls_back_to_labelled_difference_in_means():
    rng = np.random.default_rng(2)
    y0, y1 = rng.normal(5, 2, 500), rng.normal(5.5, 2, 500)
    cells = {"c": PairedMoments.from_arrays(np.zeros(500), y0), "t": PairedMoments.from_arrays(np.zeros(500), y1)}
    (est,) = cuped_effects(cells, control="c")
    assert not est.adjusted and est.effect.method == "difference_in_means_no_pre_period" and est.theta == 0.0
    assert est.effect.estimate == pytest.approx(y1.mean() - y0.mean())
    assert est.effect.sd == pytest.approx(np.sqrt(y1.var(ddof=1) / 500 + y0.var(ddof=1) / 500))
    assert est.variance_reduction == pytest.approx(0.0)


def test_a_metric_without_telemetry_is_not_estimable_never_a_certain_zero():
    """A study with no telemetry gives every participant 0 sessions before and after assignment. The difference
    0 - 0 has no spread to estimate a standard error from; it used to be published as 0.0 with interval [0, 0]."""
    zeros = PairedMoments.from_arrays(np.zeros(300), np.zeros(300))
    (est,) = cuped_effects({"c": zeros, "t": zeros}, control="c", metric="sessions_per_week", wave="first_14_days")
    e = est.effect
    assert not e.estimable and (e.estimate, e.sd, e.lower, e.upper) == (None, None, None, None)
    assert "sessions_per_week does not vary" in e.reason and "no standard error" in e.reason
    assert (e.n_arm, e.n_control, e.wave) == (300, 300, "first_14_days")
    assert est.variance_reduction is None  # no variance to reduce: not a reduction of 0
