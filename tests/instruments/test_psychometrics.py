"""Reliability, ICC and CFA against published reference values on real public data that
ships inside PyPI packages (pingouin's bundled data sets, semopy's Holzinger & Swineford 1939).
Every expected number sits beside where it was published."""

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
import semopy.examples

import instruments
from instruments import PsychometricsError

HS_FACTORS = {"visual": ["x1", "x2", "x3"], "textual": ["x4", "x5", "x6"], "speed": ["x7", "x8", "x9"]}


@pytest.fixture(scope="module")
def hs39() -> pd.DataFrame:
    # Holzinger & Swineford (1939), 301 children, the same data as lavaan::HolzingerSwineford1939
    return semopy.examples.holzinger39.get_data()


@pytest.fixture(scope="module")
def hs_three_factor(hs39):
    return instruments.fit_cfa(hs39[[f"x{i}" for i in range(1, 10)]], HS_FACTORS)


# --- Cronbach's alpha: pingouin 0.5.x/0.7 cronbach_alpha docstring, cross-checked there with R psych::alpha

def test_alpha_pairwise_matches_pingouin_and_psych():
    data = pg.read_dataset("cronbach_wide_missing")
    res = instruments.cronbach_alpha(data)
    # docstring: psych::alpha(data, use="pairwise") -> (0.732660835214447, array([0.435, 0.909]))
    assert res.alpha == pytest.approx(0.732660835214447, abs=0.005)
    assert (res.ci_lower, res.ci_upper) == (pytest.approx(0.435, abs=0.005), pytest.approx(0.909, abs=0.005))


def test_alpha_listwise_matches_pingouin_and_psych():
    data = pg.read_dataset("cronbach_wide_missing")
    # docstring: psych::alpha(data, use="complete.obs") -> 0.8016949152542373
    assert instruments.cronbach_alpha(data, nan_policy="listwise").alpha == pytest.approx(0.8016949152542373, abs=0.005)


def test_alpha_likert_long_dataset():
    long = pg.read_dataset("cronbach_alpha")
    wide = long.pivot_table(index="Subj", columns="Items", values="Scores")
    res = instruments.cronbach_alpha(wide)
    # docstring: pg.cronbach_alpha(data, items="Items", scores="Scores", subject="Subj") -> (0.5917188485995826, [0.195, 0.84])
    assert res.alpha == pytest.approx(0.5917188485995826, abs=0.005)
    assert (res.ci_lower, res.ci_upper) == (pytest.approx(0.195, abs=0.005), pytest.approx(0.84, abs=0.005))


def test_alpha_refuses_what_it_cannot_compute():
    with pytest.raises(PsychometricsError, match="at least 2 item"):
        instruments.cronbach_alpha(pd.DataFrame({"a": [1, 2, 3]}))
    with pytest.raises(PsychometricsError, match="no variance"):
        instruments.cronbach_alpha(pd.DataFrame({"a": [1, 1, 1], "b": [2, 2, 2]}))


# --- CFA: lavaan tutorial (lavaan.ugent.be/tutorial/cfa.html and groups.html), reproduced by semopy

def test_hs39_three_factor_cfa_matches_lavaan(hs_three_factor):
    fit = hs_three_factor
    # lavaan tutorial cfa.html: chi-square 85.306, df 24, CFI 0.931, RMSEA 0.092
    assert fit.chi2 == pytest.approx(85.306, rel=0.01)
    assert fit.df == 24
    assert fit.cfi == pytest.approx(0.931, abs=0.001)
    assert fit.rmsea == pytest.approx(0.092, abs=0.001)
    # lavaan tutorial cfa.html, unstandardized loadings x2, x3, x5, x6, x8, x9
    lam = fit.loadings[0]
    got = [lam[1, 0], lam[2, 0], lam[4, 1], lam[5, 1], lam[7, 2], lam[8, 2]]
    assert got == pytest.approx([0.554, 0.729, 1.113, 0.926, 1.180, 1.082], abs=0.001)


def test_factor_omega_matches_omega_from_lavaan_estimates(hs_three_factor):
    # Omega (McDonald 1999; as semTools::compRelSEM computes it) from the lavaan tutorial's published
    # HS39 estimates (cfa.html): loadings visual 1, .554, .729; textual 1, 1.113, .926; speed 1, 1.180, 1.082;
    # residual variances .549 1.134 .844 / .371 .446 .356 / .799 .488 .566; factor variances .809 .979 .384.
    published = {
        "visual": instruments.omega_from_loadings(np.array([1, .554, .729]), np.array([.549, 1.134, .844]), .809),
        "textual": instruments.omega_from_loadings(np.array([1, 1.113, .926]), np.array([.371, .446, .356]), .979),
        "speed": instruments.omega_from_loadings(np.array([1, 1.180, 1.082]), np.array([.799, .488, .566]), .384),
    }
    assert published == pytest.approx({"visual": 0.625, "textual": 0.885, "speed": 0.688}, abs=0.001)
    assert instruments.factor_omegas(hs_three_factor) == pytest.approx(published, abs=0.005)


def test_mcdonald_omega_one_factor_closed_form(hs39):
    # Three indicators make the one-factor model just identified: lambda_1^2 = s12 s13 / s23 etc.,
    # so omega has a closed form to check the ML fit against (and chi-square is 0 on 0 df).
    items = hs39[["x4", "x5", "x6"]]
    s = np.cov(items.to_numpy(), rowvar=False, ddof=0)
    lam = np.sqrt([s[0, 1] * s[0, 2] / s[1, 2], s[0, 1] * s[1, 2] / s[0, 2], s[0, 2] * s[1, 2] / s[0, 1]])
    theta = np.diag(s) - lam**2
    res = instruments.mcdonald_omega(items)
    assert res.omega == pytest.approx(lam.sum() ** 2 / (lam.sum() ** 2 + theta.sum()), abs=1e-4)
    assert res.df == 0 and res.chi2 == pytest.approx(0, abs=1e-6)


def test_mcdonald_omega_agrees_with_semopy_one_factor(hs39):
    # semopy (lavaan-equivalent ML) on a one-factor model of all nine HS39 tests; omega from its estimates
    model = semopy.Model("f =~ " + " + ".join(f"x{i}" for i in range(1, 10)))
    model.fit(hs39[[f"x{i}" for i in range(1, 10)]])
    est = model.inspect()
    lam = est[(est.op == "~") & (est.rval == "f")].set_index("lval").Estimate
    var = est[(est.op == "~~") & (est.lval == est.rval)].set_index("lval").Estimate
    reference = instruments.omega_from_loadings(lam.to_numpy(), var[lam.index].to_numpy(), var["f"])
    res = instruments.mcdonald_omega(hs39[[f"x{i}" for i in range(1, 10)]])
    assert res.omega == pytest.approx(reference, abs=0.005)
    assert res.df == 27


def test_mcdonald_omega_needs_three_items():
    with pytest.raises(PsychometricsError, match="at least 3"):
        instruments.mcdonald_omega(pd.DataFrame({"a": [1, 2, 3, 4], "b": [2, 3, 4, 4]}))


# --- Measurement invariance: lavaan tutorial groups.html (configural 115.851 on 48 df) and the
# semTools measurementInvariance sequence on HS39 by school (metric 124.04 / 54, scalar 164.10 / 60)

def test_invariance_hs39_by_school_matches_lavaan(hs39):
    res = instruments.invariance(hs39[[f"x{i}" for i in range(1, 10)]], hs39["school"], factors=HS_FACTORS)
    configural, metric, scalar = res.steps
    assert (configural.chi2, configural.df) == (pytest.approx(115.851, rel=0.01), 48)
    assert (metric.chi2, metric.df) == (pytest.approx(124.044, rel=0.01), 54)
    assert (scalar.chi2, scalar.df) == (pytest.approx(164.103, rel=0.01), 60)
    assert metric.delta_chi2 == pytest.approx(8.192, abs=0.01)     # lavTestLRT(fit1, fit2): 8.192, p = .2244
    assert metric.delta_p_value == pytest.approx(0.2244, abs=0.001)
    assert metric.holds and not scalar.holds                         # scalar: CFI drops by .038 > .010
    assert res.supported_level == "metric"


def test_invariance_one_factor_default_and_bad_input(hs39):
    res = instruments.invariance(hs39[["x4", "x5", "x6", "school"]], "school")
    assert res.factors == (("f1", ("x4", "x5", "x6")),)
    with pytest.raises(PsychometricsError, match="two groups"):
        instruments.invariance(hs39[["x4", "x5", "x6"]], np.zeros(len(hs39)))


# --- ICC: Shrout & Fleiss (1979) Table 2 data (6 targets x 4 judges) and pingouin's wine data

def test_icc_shrout_fleiss_table():
    ratings = pd.DataFrame([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    res = instruments.icc(ratings)
    # Shrout & Fleiss 1979, Psychol Bull 86:420, Table 4: ICC(1,1) .17, ICC(2,1) .29, ICC(3,1) .71
    assert (res.icc1_1, res.icc2_1, res.icc3_1) == (pytest.approx(0.17, abs=0.005), pytest.approx(0.29, abs=0.005),
                                                     pytest.approx(0.71, abs=0.006))


def test_icc_matches_pingouin_wine_data():
    data = pg.read_dataset("icc")
    res = instruments.icc(data.pivot_table(index="Wine", columns="Judge", values="Scores"))
    # pingouin intraclass_corr docstring: ICC(A,1) 0.728, ICC(C,1) 0.729, F 11.787, CI95 [0.43, 0.93]
    assert res.icc2_1 == pytest.approx(0.728, abs=0.001) and res.icc3_1 == pytest.approx(0.729, abs=0.001)
    assert res.f_value == pytest.approx(11.787, abs=0.001)
    assert res.icc2_1_ci == pytest.approx((0.43, 0.93), abs=0.006)
    assert res.icc3_1_ci == pytest.approx((0.43, 0.93), abs=0.006)


def test_test_retest_icc_from_score_frame():
    scores = pd.DataFrame({"participant": list("abcdef") * 2, "wave": ["w1"] * 6 + ["w2"] * 6,
                           "outcome": "who5.raw", "value": [9, 6, 8, 7, 10, 6, 8, 2, 8, 6, 9, 7]})
    res = instruments.test_retest_icc(scores, "who5.raw", ("w1", "w2"))
    ref = instruments.icc(pd.DataFrame({"w1": [9, 6, 8, 7, 10, 6], "w2": [8, 2, 8, 6, 9, 7]}))
    assert res == ref


def test_item_rest_correlations(hs39):
    items = hs39[["x4", "x5", "x6"]]
    res = instruments.item_rest_correlations(items)
    assert res.correlations["x4"] == pytest.approx(np.corrcoef(items.x4, items.x5 + items.x6)[0, 1])
    assert res.alpha_if_deleted["x6"] == pytest.approx(instruments.cronbach_alpha(items[["x4", "x5"]]).alpha)


def test_psychometrics_table_per_wave_and_arm():
    rng = np.random.default_rng(7)
    n = 120
    trait = rng.normal(size=n)
    rows = [(f"p{p}", w, f"WHO5_{i}", int(np.clip(np.round(2.5 + trait[p] + rng.normal()), 0, 5)))
            for p in range(n) for w in ("w0", "w1") for i in range(1, 6)]
    responses = pd.DataFrame(rows, columns=["participant", "wave", "item_code", "value"])
    arms = pd.DataFrame({"participant": [f"p{p}" for p in range(n)], "arm": np.where(np.arange(n) % 2, "t", "c")})
    table = instruments.psychometrics_table("who5", responses, arms)
    assert set(table.outcome) == {"who5.raw"}  # percent shares the items: one reliability row
    assert len(table) == 2 * 3                   # waves x (all, c, t)
    cell = table[(table.wave == "w0") & (table.arm == "c")].iloc[0]
    items = responses[responses.wave == "w0"].pivot(index="participant", columns="item_code", values="value")
    items = items.loc[arms.participant[arms.arm == "c"]]
    assert cell.n_obs == 60 and cell.alpha == pytest.approx(instruments.cronbach_alpha(items).alpha)
    assert cell.omega == pytest.approx(instruments.mcdonald_omega(items).omega)
    small = instruments.psychometrics_table("who5", responses[responses.participant.isin(["p1", "p2"])])
    assert small.alpha.isna().all() and small.note.str.contains("fewer than 10").all()


def test_safety_counts_per_arm():
    responses = pd.DataFrame({"participant": ["a", "b", "c", "d"], "wave": "w0", "item_code": "PHQ_1",
                              "value": [3, 3, 3, 0]})
    flags = instruments.safety_flags("phq2", responses)
    counts = instruments.safety_counts(flags, pd.DataFrame({"participant": ["a", "b"], "arm": ["t", "c"]}))
    assert counts.set_index("arm").participants_flagged.to_dict() == {"c": 1, "t": 1, "unassigned": 1}
