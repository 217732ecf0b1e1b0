"""Surrogate index (Athey, Chetty, Imbens & Kang 2019) on a simulation with a known long-run effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.surrogate import SURROGACY_ASSUMPTIONS, fit_surrogate_index, surrogate_index_effects


def _world(rng, n, treat_effect_on_s, arm=None):
    """Surrogacy holds by construction: Y depends on the arm only through S1 (week-4 score) and S2 (usage)."""
    x = rng.normal(50, 10, n)  # baseline WHO-5
    t = np.zeros(n) if arm is None else arm
    s1 = 0.7 * x + 15 + treat_effect_on_s[0] * t + rng.normal(0, 6, n)
    s2 = rng.gamma(4, 1.0, n) + treat_effect_on_s[1] * t
    y = 5 + 0.8 * s1 + 1.5 * s2 + 0.1 * x + rng.normal(0, 5, n)
    return pd.DataFrame({"baseline": x, "who5_w4": s1, "sessions_per_week": s2, "who5_w52": y, "t": t})


def test_recovers_known_long_run_effect_with_first_stage_uncertainty():
    rng = np.random.default_rng(2019)
    calib = _world(rng, 3000, (0, 0))
    model = fit_surrogate_index(calib, long_run="who5_w52", surrogates=["who5_w4", "sessions_per_week"],
                                covariates=["baseline"])
    arm = rng.integers(0, 2, 4000).astype(float)
    study = _world(rng, 4000, (4.0, 1.0), arm)
    study["arm"] = np.where(arm == 1, "coach", "control")
    (eff,) = surrogate_index_effects(model, study, control="control")
    truth = 0.8 * 4.0 + 1.5 * 1.0  # = 4.7 WHO-5 points, by construction
    assert eff.effect.lower < truth < eff.effect.upper
    assert abs(eff.effect.estimate - truth) < 3 * eff.effect.sd
    assert eff.se_first_stage > 0 and eff.effect.sd > eff.se_second_stage
    assert (eff.effect.wave, eff.effect.n_arm + eff.effect.n_control) == ("long_run", 4000)
    assert eff.assumptions == SURROGACY_ASSUMPTIONS and "surrogacy" in eff.assumptions[0]
    # the bootstrap over both samples agrees with the delta method
    (boot,) = surrogate_index_effects(model, study, control="control", method="bootstrap", calibration=calib,
                                      n_boot=300, seed=1)
    assert boot.effect.sd == pytest.approx(eff.effect.sd, rel=0.2)
    assert boot.effect.estimate == eff.effect.estimate


def test_coverage_over_repeated_studies():
    """400 independent calibration + study pairs: the 95% intervals cover the truth as often as a binomial(400,
    0.95) count allows (central 99.9% range from scipy.stats.binom: 364..393): too few hits means intervals
    too narrow, too many means too wide (the bound is two-sided)."""
    from scipy.stats import binom

    n_studies = 400
    lowest, highest = binom.ppf(0.0005, n_studies, 0.95), binom.isf(0.0005, n_studies, 0.95)
    rng = np.random.default_rng(7)
    truth, hits = 0.8 * 2.0 + 1.5 * 0.5, 0
    for _ in range(n_studies):
        calib = _world(rng, 400, (0, 0))
        model = fit_surrogate_index(calib, long_run="who5_w52", surrogates=["who5_w4", "sessions_per_week"],
                                    covariates=["baseline"])
        arm = rng.integers(0, 2, 600).astype(float)
        study = _world(rng, 600, (2.0, 0.5), arm)
        study["arm"] = np.where(arm == 1, "t", "c")
        (e,) = surrogate_index_effects(model, study, control="c")
        hits += e.effect.lower < truth < e.effect.upper
    assert lowest <= hits <= highest, (hits, lowest, highest)
