"""Effect shapes other than the Beat the Blues plan: a saturating trajectory is recovered from a
simulated study with known plateau, and its long-run and plateau rows are reported."""

import numpy as np
import pandas as pd
import pytest

from analysis.longitudinal import fit_longitudinal
from analysis.results import LONG_RUN, PLATEAU
from schemas.protocol import AnalysisPlan

MONTHS = {"m1": 1.0, "m2": 2.0, "m4": 4.0, "m8": 8.0}
PLATEAU_TRUTH, RATE_TRUTH = 4.0, 2.0  # outcome units, months


def _saturating_study(rng: np.random.Generator, n_per_arm: int = 400) -> pd.DataFrame:
    n = 2 * n_per_arm
    arm = np.repeat(np.array(["control", "feature"]), n_per_arm)
    x = rng.normal(50, 10, n)
    u = rng.normal(0, 4, n)
    frames = []
    for w, t in MONTHS.items():
        eff = PLATEAU_TRUTH * (1 - np.exp(-t / RATE_TRUTH))
        y = 10 + 0.8 * x + 0.2 * t + eff * (arm == "feature") + u + rng.normal(0, 5, n)
        keep = rng.random(n) > 0.1
        frames.append(pd.DataFrame({"participant": np.arange(n)[keep], "arm": arm[keep], "wave": w,
                                    "outcome": y[keep], "baseline": x[keep]}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.slow
def test_saturating_shape_recovers_the_plateau():
    frame = _saturating_study(np.random.default_rng(3))
    plan = AnalysisPlan(effect_shape="saturating", time_trend="per_wave")
    result = fit_longitudinal(frame, plan, control="control", waves=MONTHS)
    assert result.diagnostics.passed, result.diagnostics.reasons
    plateau = result.effect("feature", PLATEAU)
    assert plateau.lower < PLATEAU_TRUTH < plateau.upper
    long_run = result.effect("feature", LONG_RUN)
    assert long_run.estimate == pytest.approx(result.effect("feature", "m8").estimate)
    truth_m8 = PLATEAU_TRUTH * (1 - np.exp(-8 / RATE_TRUTH))
    assert long_run.lower < truth_m8 < long_run.upper
    # the trajectory rises toward the plateau
    means = [result.effect("feature", w).estimate for w in MONTHS]
    assert means == sorted(means)
