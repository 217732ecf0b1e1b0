"""The realistic process: deterministic, bounded and lumpy like real scores, not compound-symmetric, MAR drop-out
on the last observed score, effects that rise then partly decay, a truth the samples agree with, and landing
files that a warehouse scores back to exactly the in-memory values."""

from __future__ import annotations

import json
from dataclasses import replace

import duckdb
import numpy as np
import pytest
from scipy import stats

from analysis.mmrm import MMRMDesign, pattern_statistics
from flows.simulation.realistic import (
    DEFAULT_ARMS,
    OUTCOMES,
    RealisticParams,
    simulate_realistic,
    truth,
)
from schemas.mmrm_stats import MMRMStatistics

BIG = RealisticParams(n_participants=30_000)


@pytest.fixture(scope="module")
def big():
    return simulate_realistic(BIG, seed=3)


def test_same_seed_same_study_and_streams_are_independent():
    p = RealisticParams(n_participants=300)
    a, b, c = simulate_realistic(p, 5), simulate_realistic(p, 5), simulate_realistic(p, 6)
    for o in OUTCOMES:
        assert np.array_equal(a.scores[o], b.scores[o], equal_nan=True)
        assert not np.array_equal(a.scores[o], c.scores[o], equal_nan=True)
    assert np.array_equal(a.arm_index, b.arm_index) and a.frame().equals(b.frame())
    assert not a.scores["who5.percent"].flags.writeable  # frozen arrays
    # changing the drop-out leaves every score where both studies observed it unchanged (separate random streams)
    d = simulate_realistic(replace(p, dropout_strength=0.0, skip_probability=0.2), 5)
    both = a.observed & d.observed
    assert not np.array_equal(a.observed, d.observed)
    assert np.array_equal(a.scores["swls.total"][both], d.scores["swls.total"][both])


def test_scores_are_bounded_and_lumpy_like_the_instruments(big):
    who5 = big.scores["who5.percent"]
    values = np.unique(who5[~np.isnan(who5)])
    assert set(values) <= set(range(0, 101, 4)) and values.min() == 0 and values.max() == 100  # raw 0..25 x 4
    for outcome, (lo, hi) in {"swls.total": (5, 35), "flourishing_scale.total": (8, 56), "phq2.total": (0, 6)}.items():
        v = big.scores[outcome][~np.isnan(big.scores[outcome])]
        assert np.all(v == np.round(v)) and lo <= v.min() and v.max() == hi, outcome  # integer sums, at the ceiling
    assert np.mean(who5[:, 0] == 100) > 0.003  # a ceiling (0.5% at 100%)
    # a struggling minority: a longer left tail than the same process without it
    flat = simulate_realistic(replace(BIG, struggling_fraction=0.0), seed=3).scores["who5.percent"][:, 0]
    assert stats.skew(who5[:, 0]) < stats.skew(flat) - 0.1
    assert np.percentile(who5[:, 0], 1) < np.percentile(flat, 1)


def _residual_sd(y: np.ndarray, t: int) -> float:
    ok = ~np.isnan(y[:, t])
    slope, icept = np.polyfit(y[ok, 0], y[ok, t], 1)
    return float(np.std(y[ok, t] - (icept + slope * y[ok, 0])))


def test_covariance_is_not_compound_symmetric(big):
    y = big.scores["who5.percent"][big.arm_index == 0]
    sd = [_residual_sd(y, t) for t in range(1, 6)]
    assert all(np.diff(sd) > 0) and sd[-1] > 1.2 * sd[0]  # variance grows over waves (15.2 -> 19.3)
    corr = np.ma.corrcoef(np.ma.masked_invalid(y.T)).data
    assert corr[0, 1] > corr[0, 5] + 0.15  # correlation decays with the lag (.61 at two weeks, .35 at a year)
    assert corr[4, 5] > corr[1, 5] + 0.1
    t = truth(BIG)
    sds = dict(t.sd_by_wave)["who5.percent"]
    assert sds[-1] > 1.05 * sds[0]  # the population SD grows too


def test_drop_out_is_monotone_mar_on_the_last_observed_score_plus_skips(big):
    miss = big.missing_fraction()
    assert miss["baseline"] == 0
    assert list(miss.values()) == sorted(miss.values())
    assert 0.08 <= miss["m1"] <= 0.20 and 0.22 <= miss["m12"] <= 0.36  # instruments.md: ~18% to 8 weeks, ~22%+ overall
    obs, y = big.observed, big.scores["who5.percent"]
    seen_m3 = obs[:, 3]
    q1, q3 = np.quantile(y[seen_m3, 3], [0.25, 0.75])
    low_missing = 1 - obs[seen_m3 & (y[:, 3] <= q1), 4].mean()
    high_missing = 1 - obs[seen_m3 & (y[:, 3] >= q3), 4].mean()
    assert low_missing > 1.4 * high_missing  # lower last score, more drop-out
    returns = sum(((~obs[:, t]) & obs[:, t + 1:].any(axis=1)).sum() for t in range(1, 5)) / obs[:, 1:5].size
    assert 0.015 < returns < 0.04  # intermittent skips (4% of the still-enrolled)
    for o in OUTCOMES:  # secondary outcomes are answered at the same visits
        assert np.array_equal(np.isnan(big.scores[o]), ~obs)
    # drop-out is MAR: with the same latent draws, the unobserved values are not what decides it. Here the last
    # observed score explains it: among participants with the same m3 score, the m6 score does not predict drop-out.
    mid = seen_m3 & (y[:, 3] >= 56) & (y[:, 3] <= 64) & obs[:, 2]
    full = simulate_realistic(replace(BIG, dropout_hazards=(0.0,) * 5, skip_probability=0.0), seed=3)
    y6 = full.scores["who5.percent"][:, 4]
    gone = mid & ~obs[:, 4]
    stay = mid & obs[:, 4]
    assert abs(y6[gone].mean() - y6[stay].mean()) < 2.0  # (the m6 SD is about 20)


def test_secondary_outcomes_correlate_with_the_primary(big):
    base = {o: big.scores[o][:, 0] for o in OUTCOMES}
    who5 = base["who5.percent"]
    assert 0.5 < np.corrcoef(who5, base["swls.total"])[0, 1] < 0.8
    assert 0.5 < np.corrcoef(who5, base["flourishing_scale.total"])[0, 1] < 0.8
    assert -0.7 < np.corrcoef(who5, base["phq2.total"])[0, 1] < -0.3


def test_the_effect_rises_then_partly_decays_and_is_in_the_published_range():
    p = RealisticParams()
    t = truth(p)
    for arm in ("guidance", "candor"):
        path = [t.effect("who5.percent", arm, w) for w in p.follow_up_waves]
        peak = int(np.argmax(path))
        assert 0 < peak < len(path) - 1 and path[0] < path[peak] and 0 < path[-1] < path[peak]
        assert t.effect("who5.percent", arm) == path[-1]  # the long run is the final wave
        for o in OUTCOMES:
            d = t.effect_d(o, arm)
            assert 0 < abs(d) <= 0.3, (o, arm, d)  # instruments.md: chatbot RCT effects d ~ 0 to 0.3
            assert t.row(o, arm).mc_se < 0.01 * abs(t.effect(o, arm)) + 1e-3
        assert t.effect("phq2.total", arm) < 0  # PHQ-2: lower is better
    shape = p.effect_shape(np.array([0.0, 3.0, 12.0, 120.0]))
    assert shape[0] == 0 and shape[1] == pytest.approx(1.0, abs=0.01) and shape[3] == pytest.approx(0.6 / 0.76, abs=0.02)
    # the truth is the population's: it does not depend on the study size or the drop-out
    assert truth(replace(p, n_participants=500, dropout_strength=2.0)).effects == t.effects


def test_a_large_sample_without_drop_out_agrees_with_the_truth():
    p = RealisticParams(n_participants=60_000, dropout_hazards=(0.0,) * 5, skip_probability=0.0)
    s = simulate_realistic(p, seed=9)
    t = truth(p)
    for o in ("who5.percent", "phq2.total"):
        y = s.scores[o][:, -1]
        for k, arm in enumerate(p.arm_names[1:], start=1):
            a, c = y[s.arm_index == k], y[s.arm_index == 0]
            se = np.sqrt(a.var() / a.size + c.var() / c.size)
            assert abs(a.mean() - c.mean() - t.effect(o, arm)) < 4 * se, (o, arm)


def test_the_frame_is_the_statistics_contract():
    p = RealisticParams(n_participants=800, arms=DEFAULT_ARMS[:2])
    s = simulate_realistic(p, 1)
    f = s.frame()
    assert list(f.columns) == ["participant", "arm", "site", "age", "wave", "months", "y", "baseline"]
    assert set(f["wave"]) == set(p.follow_up_waves) and f["y"].notna().all()
    assert len(f) == int(s.observed[:, 1:].sum())
    assert len(s.frame("swls.total", include_missing=True)) == 800 * 5
    design = MMRMDesign(p.arm_names, p.follow_up_waves)
    con = duckdb.connect()
    s.register(con, "obs")
    got = pattern_statistics(con, "obs", design)
    y = s.scores["who5.percent"]
    z = np.column_stack([np.ones(800), s.arm_index == 1, y[:, 0]])
    ref = MMRMStatistics.from_arrays(z, y[:, 1:], design.z_columns, design.waves)
    assert got.allclose(ref, rtol=1e-10)


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="one probability per follow-up wave"):
        RealisticParams(dropout_hazards=(0.1,))
    with pytest.raises(ValueError, match="control"):
        RealisticParams(arms=(DEFAULT_ARMS[1], DEFAULT_ARMS[0]))
    with pytest.raises(ValueError, match="too far out"):
        RealisticParams(struggling_fraction=0.4, struggling_shift=-3.0)
    with pytest.raises(ValueError, match="ar_rho"):
        RealisticParams(ar_rho=1.0)
    with pytest.raises(ValueError, match="effect_retained"):
        RealisticParams(effect_retained=1.2)
    with pytest.raises(ValueError, match="icc"):
        RealisticParams(icc=0.0)
    assert RealisticParams().with_(n_participants=10).n_participants == 10
    assert hash(RealisticParams()) == hash(RealisticParams())


@pytest.mark.slow
def test_landing_files_ingest_and_score_to_the_in_memory_values(tmp_path):
    from flows.ingest import ingest_batch
    from flows.scoring import score_responses
    from flows.warehouse import open_warehouse
    from privacy.pseudonym import pseudonymize
    from schemas.protocol import load_protocol
    from schemas.warehouse.relations import study_arms, study_scores
    from tests.support.spine import KEY

    p = RealisticParams(n_participants=60)
    s = simulate_realistic(p, 4)
    summary = s.write_landing(tmp_path, truth_draws=20_000)
    protocol = load_protocol(tmp_path / "study.yaml")
    assert protocol.primary_outcome.name == "who5.percent" and protocol.wave_names == list(p.wave_names)
    rec = ingest_batch(tmp_path / "landing", protocol, tmp_path / "w.duckdb", KEY)
    assert rec.quarantined == {} and rec.stored["responses"] == summary["responses"]
    score_responses.fn(tmp_path / "w.duckdb", protocol.study_id)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        rows = con.execute(f"SELECT s.participant, a.arm, s.wave, s.outcome, s.value FROM {study_scores(protocol.study_id)} s "
                           f"JOIN {study_arms(protocol.study_id)} a USING (participant)").fetchall()
    index = {pseudonymize(str(raw), KEY): k for k, raw in enumerate(s.participant_ids)}
    waves = {w: t for t, w in enumerate(p.wave_names)}
    seen = 0
    for pseudonym, arm, wave, outcome, value in rows:
        if outcome not in OUTCOMES:
            continue  # who5.raw and the like
        k = index[pseudonym]
        assert arm == s.arm[k] and value == s.scores[outcome][k, waves[wave]], (outcome, wave)
        seen += 1
    assert seen == int(s.observed.sum()) * len(OUTCOMES)
    t = json.loads((tmp_path / "truth.json").read_text())
    assert t["long_run_wave"] == "m12" and set(t["arms"]) == {"guidance", "candor"}
    assert t["missing_fraction_by_wave"] == s.missing_fraction()
