"""Stratified permuted blocks, SRM chi-square and the balance table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.randomization import balance_table, block_randomize, integer_ratios, srm_test

ratio_sets = st.sampled_from([{"a": 1, "b": 1}, {"a": 2, "b": 1, "c": 1}, {"ctl": 1.5, "t": 1}, {"x": 1, "y": 1, "z": 3}])


def _people(n_per_stratum: list[int]) -> pd.DataFrame:
    rows = [(f"p{s}_{i}", f"site{s}", "f" if i % 2 else "m") for s, n in enumerate(n_per_stratum) for i in range(n)]
    return pd.DataFrame(rows, columns=["participant_id", "site", "sex"])


@given(ratio_sets, st.lists(st.integers(0, 40), min_size=1, max_size=4), st.integers(0, 2**31), st.integers(1, 3))
@settings(max_examples=40, deadline=None)
def test_blocks_are_exactly_balanced_per_stratum(ratios, sizes, seed, mult):
    people = _people(sizes)
    out = block_randomize(people, ratios, seed=seed, strata=["site", "sex"], block_multiplier=mult)
    w = integer_ratios(ratios)
    block_size = sum(w.values()) * mult
    assert len(out) == len(people) and out["participant_id"].tolist() == people["participant_id"].tolist()
    for _, g in out.groupby("stratum"):
        for b, gb in g.groupby("block"):
            counts = gb["arm"].value_counts().to_dict()
            if len(gb) == block_size:  # complete block: exactly the allocation ratio
                assert counts == {a: k * mult for a, k in w.items()}
            else:  # only the stratum's last block may be partial, never overfilling an arm
                assert b == g["block"].max()
                assert all(counts.get(a, 0) <= k * mult for a, k in w.items())
        # allocation ratio honoured: each arm within one block of its expected share
        n = len(g)
        for a, k in w.items():
            assert abs((g["arm"] == a).sum() - n * k / sum(w.values())) <= k * mult


@given(st.integers(0, 2**31))
@settings(max_examples=15, deadline=None)
def test_same_seed_same_allocation_and_strata_are_independent(seed):
    people = _people([25, 13])
    a = block_randomize(people, {"a": 1, "b": 1}, seed=seed, strata=["site"])
    assert a.equals(block_randomize(people, {"a": 1, "b": 1}, seed=seed, strata=["site"]))
    # adding a third site does not move anyone in the first two
    more = block_randomize(_people([25, 13, 7]), {"a": 1, "b": 1}, seed=seed, strata=["site"])
    assert more["arm"].iloc[:38].tolist() == a["arm"].tolist()


def test_different_seeds_differ():
    people = _people([200])
    assert not block_randomize(people, {"a": 1, "b": 1}, seed=1)["arm"].equals(
        block_randomize(people, {"a": 1, "b": 1}, seed=2)["arm"])


def test_integer_ratios():
    assert integer_ratios({"a": 2.0, "b": 1.0, "c": 1.0}) == {"a": 2, "b": 1, "c": 1}
    assert integer_ratios({"a": 1.5, "b": 1.0}) == {"a": 3, "b": 2}
    assert integer_ratios({"a": 4, "b": 2}) == {"a": 2, "b": 1}


def test_srm_matches_hand_chi_square_and_scipy():
    # Hand: N = 1000, ratios 1:1 -> E = 500, 500; chi2 = 2 * (30^2 / 500) = 3.6; df = 1.
    r = srm_test({"control": 530, "coach": 470}, {"control": 1, "coach": 1})
    assert r.chi_square == pytest.approx(3.6)
    assert r.df == 1
    ref = scipy.stats.chisquare([530, 470], [500, 500])  # scipy reference
    assert r.p_value == pytest.approx(ref.pvalue)  # 0.0578
    assert r.p_value == pytest.approx(0.05777957, rel=1e-6)  # chi2.sf(3.6, 1)
    assert not r.mismatch
    # 2:1:1 plan, N = 4000 -> E = 2000, 1000, 1000; O = 2100, 900, 1000 -> chi2 = 5 + 10 + 0 = 15
    r3 = srm_test({"a": 2100, "b": 900, "c": 1000}, {"a": 2, "b": 1, "c": 1})
    assert r3.chi_square == pytest.approx(15.0) and r3.df == 2
    assert r3.p_value == pytest.approx(np.exp(-7.5))  # chi2(2) survival = exp(-x/2) = 5.53e-4
    assert not r3.mismatch  # 5.5e-4 is just above the 5e-4 threshold
    assert srm_test({"a": 2200, "b": 900, "c": 1000}, {"a": 2, "b": 1, "c": 1}).mismatch


def test_balance_table_smd():
    df = pd.DataFrame({"arm": ["c"] * 4 + ["t"] * 4, "who5": [40, 50, 60, 70, 50, 60, 70, 80.0]})
    tab = balance_table(df, variables=["who5"], control="c")
    t = tab[tab.arm == "t"].iloc[0]
    # Hand: means 55 and 65, SD both sqrt(166.67) = 12.91 -> SMD = 10 / 12.91 = 0.7746 (Austin 2009 eq. 1)
    assert t["mean"] == pytest.approx(65) and t["sd"] == pytest.approx(12.9099, rel=1e-4)
    assert t["smd_vs_control"] == pytest.approx(0.774597, rel=1e-5) and t["imbalanced"]
    assert pd.isna(tab[tab.arm == "c"].iloc[0]["smd_vs_control"])


def test_balance_from_moments_equals_raw_table():
    from analysis.randomization import balance_from_moments
    from schemas.suffstats import Moments

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"arm": rng.choice(["c", "t", "u"], 300), "who5": rng.normal(50, 12, 300)})
    raw = balance_table(df, variables=["who5"], control="c")
    cells = {"who5": {a: Moments.from_arrays(g["who5"]) for a, g in df.groupby("arm")}}
    mom = balance_from_moments(cells, control="c")
    assert mom["smd_vs_control"].tolist()[1:] == pytest.approx(raw["smd_vs_control"].tolist()[1:])
    assert mom["sd"].tolist() == pytest.approx(raw["sd"].tolist())
