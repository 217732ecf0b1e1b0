"""Delta-adjusted tipping point: closed form vs brute-force imputation and refit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from analysis.missing import statistics_from_frame, statistics_from_moments, tipping_point
from schemas.suffstats import Moments, PairedMoments


def _trial(seed=1, n=1200, effect=-3.0, drop=(0.25, 0.15)):
    """Lower-is-better (a BDI-like score): treatment lowers it by 3 points; more dropout in treatment."""
    rng = np.random.default_rng(seed)
    arm = np.where(rng.random(n) < 0.5, "cbt", "usual")
    base = rng.normal(22, 8, n)
    y = 5 + 0.6 * base + np.where(arm == "cbt", effect, 0) + rng.normal(0, 7, n)
    miss = rng.random(n) < np.where(arm == "cbt", drop[0], drop[1])
    y[miss] = np.nan
    return pd.DataFrame({"arm": arm, "baseline": base, "outcome": y})


def _brute_force(wide, delta):
    """Impute by completers' ANCOVA, worsen cbt imputations by delta (lower is better: add), refit by OLS."""
    d = wide.copy()
    x = sm.add_constant(np.column_stack([d["baseline"], (d["arm"] == "cbt").astype(float)]))
    obs = d["outcome"].notna().to_numpy()
    fit = sm.OLS(d["outcome"][obs].to_numpy(), x[obs]).fit()
    y = d["outcome"].to_numpy().copy()
    y[~obs] = x[~obs] @ fit.params + np.where(d["arm"][~obs] == "cbt", delta, 0.0)
    return sm.OLS(y, x).fit().params[2], fit


def test_closed_form_matches_imputation_and_refit():
    wide = _trial()
    (tp,) = tipping_point(statistics_from_frame(wide, control="usual"), direction="lower_is_better",
                          outcome="bdi", deltas=[0.0, 2.0, 5.0])
    for delta, est, lo, hi in tp.grid:
        ref, completers = _brute_force(wide, delta)
        assert est == pytest.approx(ref, rel=1e-9)  # statsmodels OLS refit on imputed data
    # MAR estimate and SE are the completers' ANCOVA (statsmodels reference)
    assert tp.estimate_mar == pytest.approx(completers.params[2], rel=1e-9)
    assert tp.se == pytest.approx(completers.bse[2], rel=1e-9)
    assert tp.benefit_shown_mar
    # at the tipping delta the interval's benefit-side bound (upper, lower is better) is exactly 0
    (at_tip,) = tipping_point(statistics_from_frame(wide, control="usual"), direction="lower_is_better",
                              deltas=[tp.tipping_delta])
    assert at_tip.grid[0][3] == pytest.approx(0.0, abs=1e-9)
    assert tp.tipping_delta > 0 and "stays shown unless" in tp.statement
    # slope ~ share of cbt participants whose outcome is missing
    share = wide[(wide.arm == "cbt")]["outcome"].isna().mean()
    assert -tp.effect_per_delta == pytest.approx(share, abs=0.05)


def test_moments_path_equals_frame_path():
    wide = _trial(seed=4)
    obs, miss = {}, {}
    for a, g in wide.groupby("arm"):
        o = g.dropna(subset=["outcome"])
        obs[a] = PairedMoments.from_arrays(o["baseline"], o["outcome"])
        miss[a] = Moments.from_arrays(g[g["outcome"].isna()]["baseline"])
    a = tipping_point(statistics_from_moments(obs, miss, control="usual"), direction="lower_is_better")[0]
    b = tipping_point(statistics_from_frame(wide, control="usual"), direction="lower_is_better")[0]
    assert a.tipping_delta == pytest.approx(b.tipping_delta, rel=1e-9)
    assert a.se == pytest.approx(b.se, rel=1e-9)


def test_inconclusive_result_reports_how_much_better_missing_would_need_to_be():
    wide = _trial(seed=2, effect=0.0)
    (tp,) = tipping_point(statistics_from_frame(wide, control="usual"), direction="lower_is_better")
    assert not tp.benefit_shown_mar and tp.tipping_delta < 0 and "not shown" in tp.statement


def test_ancova_effects_match_statsmodels_complete_cases():
    from analysis.missing import ancova_effects

    wide = _trial(seed=9)
    (eff,) = ancova_effects(statistics_from_frame(wide, control="usual"))
    d = wide.dropna()
    ref = sm.OLS(d["outcome"], sm.add_constant(np.column_stack([d["baseline"], (d["arm"] == "cbt").astype(float)]))).fit()
    assert eff.estimate == pytest.approx(ref.params.iloc[2], rel=1e-9)  # statsmodels OLS reference
    assert eff.p_value == pytest.approx(ref.pvalues.iloc[2], rel=1e-6)
    assert (eff.lower, eff.upper) == pytest.approx(tuple(ref.conf_int().iloc[2]), rel=1e-9)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.integers(0, 10_000), st.floats(-5, 5), st.floats(-5, 5))
@settings(max_examples=20, deadline=None)
def test_effect_is_linear_in_delta_and_se_does_not_change(seed, d1, d2):
    """The delta-adjusted effect moves linearly with delta (slope = effect_per_delta); the SE is fixed."""
    wide = _trial(seed=seed, n=300)
    (tp,) = tipping_point(statistics_from_frame(wide, control="usual"), direction="higher_is_better",
                          deltas=[0.0, d1, d2])
    (_, e0, l0, u0), (_, e1, l1, u1), (_, e2, l2, u2) = tp.grid
    assert e1 - e0 == pytest.approx(tp.effect_per_delta * d1, abs=1e-8)
    assert e2 - e0 == pytest.approx(tp.effect_per_delta * d2, abs=1e-8)
    assert (u1 - l1) == pytest.approx(u0 - l0) == pytest.approx(u2 - l2)


def test_what_cannot_be_estimated_says_why():
    """An ANCOVA whose completers fit exactly has no standard error, and with no treatment outcome missing
    nothing can tip: both effects say why and carry no number (never a NaN p-value or a made-up delta)."""
    from analysis.missing import ancova_effects

    x = np.arange(20.0)
    exact = {"c": PairedMoments.from_arrays(x[:10], 2 * x[:10]), "t": PairedMoments.from_arrays(x[10:], 2 * x[10:] + 3)}
    (eff,) = ancova_effects(statistics_from_moments(exact, {}, control="c"), outcome="o", wave="w3")
    assert not eff.estimable and eff.p_value is None and "no residual variance" in eff.reason
    assert (eff.n_arm, eff.n_control, eff.wave) == (10, 10, "w3")
    (exact_tip,) = tipping_point(statistics_from_moments(exact, {"t": Moments.from_arrays([1.0])}, control="c"),
                                 direction="higher_is_better", outcome="o")
    assert not exact_tip.effect.estimable and "not defined" in exact_tip.effect.reason
    wide = _trial(seed=3, drop=(0.0, 0.2))
    (tp,) = tipping_point(statistics_from_frame(wide, control="usual"), direction="lower_is_better", outcome="bdi")
    assert tp.tipping_delta is None and not tp.effect.estimable and tp.effect.reason == tp.statement
    assert "no cbt outcome is missing" in tp.statement


def test_a_covariate_constant_among_the_completers_is_refused_by_name():
    """With covariates, a singular design is no longer only an arm without completers: say which design it is."""
    from analysis.errors import AnalysisInputError
    from analysis.missing import ancova_effects, statistics_from_cells
    from schemas.suffstats import CellCrossProducts

    rng = np.random.default_rng(2)
    cols = ("intercept", "baseline", "site[B]")
    cells = {a: CellCrossProducts.from_arrays(np.column_stack([np.ones(20), rng.normal(50, 10, 20), np.zeros(20)]),
                                              rng.normal(50, 10, 20), cols) for a in ("c", "t")}
    with pytest.raises(AnalysisInputError, match=r"design \(intercept, baseline, site\[B\], arm\[t\]\) is singular"):
        ancova_effects(statistics_from_cells(cells, {}, control="c"))
