"""Holm adjustment and partial pooling of subgroup effects."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from analysis.multiplicity import holm, partial_pool, subgroup_effects_from_moments
from schemas.results import Effect
from schemas.suffstats import PairedMoments


def _subgroup(level: str, arm: str, estimate: float, se: float, n: int, subgroup: str = "baseline_tercile") -> Effect:
    return Effect(outcome="o", arm=arm, control="c", wave="w", method="ancova_subgroup", estimate=estimate, sd=se,
                  subgroup=f"{subgroup}={level}", n_arm=n // 2, n_control=n - n // 2)


def _terciles(baseline: pd.Series) -> pd.Series:
    """'T1' (lowest third) .. 'T3' of the baseline, ties by position: three near-equal groups."""
    ranks = baseline.rank(method="first")
    return pd.Series(pd.qcut(ranks, 3, labels=["T1", "T2", "T3"]).astype(str), index=baseline.index)


def _ols_by_level(wide: pd.DataFrame, *, subgroup: str, control: str) -> list[tuple[str, str, float, float]]:
    """Reference: within each level, OLS of outcome on 1 + baseline + arm dummies on the rows themselves
    (level, arm, estimate, classical SE)."""
    arms = [a for a in sorted(wide["arm"].unique()) if a != control]
    out = []
    for level, g in wide.groupby(subgroup, sort=True):
        x = np.column_stack([np.ones(len(g)), g["baseline"].to_numpy(float), *[(g["arm"] == a).to_numpy(float) for a in arms]])
        y = g["outcome"].to_numpy(float)
        xtx_inv = np.linalg.inv(x.T @ x)
        beta = xtx_inv @ x.T @ y
        resid = y - x @ beta
        sigma2 = float(resid @ resid) / (len(y) - x.shape[1])
        out += [(str(level), a, float(beta[2 + i]), math.sqrt(sigma2 * xtx_inv[2 + i, 2 + i])) for i, a in enumerate(arms)]
    return out


def _cells(wide: pd.DataFrame, subgroup: str) -> dict:
    return {lev: {a: PairedMoments.from_arrays(g2["baseline"], g2["outcome"]) for a, g2 in g.groupby("arm")}
            for lev, g in wide.groupby(subgroup)}


def test_holm_published_example():
    # Wikipedia, "Holm-Bonferroni method", example: four p-values 0.01, 0.04, 0.03, 0.005 at alpha 0.05;
    # Holm rejects H1 and H4 only. By hand: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005 = 0.02,
    # 3*0.01 = 0.03, 2*0.03 = 0.06, max(1*0.04, 0.06) = 0.06.
    res = holm({"H1": 0.01, "H2": 0.04, "H3": 0.03, "H4": 0.005})
    assert [r.name for r in res] == ["H1", "H2", "H3", "H4"]
    assert [r.p_adjusted for r in res] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [r.reject for r in res] == [True, False, False, True]


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.uniform(0, 0.2, rng.integers(1, 9))
        ours = [r.p_adjusted for r in holm({f"o{i}": v for i, v in enumerate(p)})]
        ref = multipletests(p, alpha=0.05, method="holm")[1]  # statsmodels reference
        assert ours == pytest.approx(ref)


def test_partial_pooling_hand_example():
    # Three subgroups, equal SE 1: y = 0, 1, 5. DerSimonian-Laird: w = 1, mu = 2, Q = 4 + 1 + 9 = 14,
    # tau^2 = (14 - 2) / (3 - 3/3) = 6; B = 1/7; posterior mean = 2 + (6/7)(y - 2) -> 2/7, 8/7, 32/7;
    # var(mu) = 7/3; posterior var = 6/7 + (1/49)(7/3) = 0.9048.
    est = [_subgroup(f"T{i + 1}", "coach", y, 1.0, 50) for i, y in enumerate([0.0, 1.0, 5.0])]
    res = partial_pool(est)
    assert res[0].tau == pytest.approx(np.sqrt(6))
    assert [r.effect.estimate for r in res] == pytest.approx([2 / 7, 8 / 7, 32 / 7])
    assert res[0].effect.sd == pytest.approx(np.sqrt(6 / 7 + 1 / 21))
    assert res[0].shrinkage == pytest.approx(1 / 7)
    assert res[0].raw == est[0] and res[0].effect.method == "ancova_subgroup_partial_pooling"
    assert res[0].effect.subgroup == "baseline_tercile=T1" and res[0].effect.n_arm == 25
    # homogeneous effects pool completely (tau = 0): every subgroup gets the overall estimate
    flat = partial_pool([_subgroup(str(i), "t", v, 1.0, 10, "g") for i, v in enumerate([1.0, 1.1, 0.9])])
    assert flat[0].tau == 0 and all(r.effect.estimate == pytest.approx(1.0) for r in flat)


def test_subgroup_ancova_by_tercile_recovers_effects():
    rng = np.random.default_rng(5)
    n = 3000
    base = rng.normal(50, 10, n)
    arm = np.where(rng.random(n) < 0.5, "coach", "control")
    wide = pd.DataFrame({"arm": arm, "baseline": base})
    wide["tercile"] = _terciles(wide["baseline"])
    true = wide["tercile"].map({"T1": 6.0, "T2": 3.0, "T3": 0.0})
    wide["outcome"] = 10 + 0.6 * base + np.where(arm == "coach", true, 0) + rng.normal(0, 5, n)
    est = subgroup_effects_from_moments(_cells(wide, "tercile"), subgroup="tercile", control="control")
    assert [e.subgroup for e in est] == ["tercile=T1", "tercile=T2", "tercile=T3"]
    for e, t in zip(est, [6.0, 3.0, 0.0]):
        assert abs(e.estimate - t) < 3.5 * e.sd
    pooled = partial_pool(est)
    assert pooled[0].shrinkage < 0.2  # real heterogeneity: little shrinkage


def test_subgroup_effects_from_moments_equal_ols_on_the_rows():
    rng = np.random.default_rng(8)
    n = 900
    wide = pd.DataFrame({"arm": np.where(rng.random(n) < 0.5, "t", "c"), "baseline": rng.normal(50, 10, n)})
    wide["outcome"] = 0.5 * wide["baseline"] + (wide["arm"] == "t") * 2 + rng.normal(0, 4, n)
    wide["tercile"] = _terciles(wide["baseline"])
    a = subgroup_effects_from_moments(_cells(wide, "tercile"), subgroup="tercile", control="c")
    b = _ols_by_level(wide, subgroup="tercile", control="c")
    assert [x.estimate for x in a] == pytest.approx([x[2] for x in b], rel=1e-9)
    assert [x.sd for x in a] == pytest.approx([x[3] for x in b], rel=1e-9)
    assert [x.n_arm + x.n_control for x in a] == wide.groupby("tercile").size().tolist()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None)
def test_holm_invariants(ps):
    """Holm p-values: never below the raw p, never above Bonferroni (m p), and order-preserving."""
    res = holm({f"h{i}": p for i, p in enumerate(ps)})
    m = len(ps)
    for r in res:
        assert r.p_value <= r.p_adjusted + 1e-15 and r.p_adjusted <= min(1.0, m * r.p_value) + 1e-12
    by_raw = sorted(res, key=lambda r: r.p_value)
    assert all(a.p_adjusted <= b.p_adjusted + 1e-15 for a, b in zip(by_raw, by_raw[1:]))
