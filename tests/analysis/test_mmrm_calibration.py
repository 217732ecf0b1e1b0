"""Calibration: 95% intervals of the long-run (final-wave) effect cover the truth as often as they claim.

Simulated trials that break compound symmetry the way wellbeing data do (DESIGN.md, "Honest covariance"):
the residual SD grows from 1 to 2 over four follow-up waves, the correlation decays as 0.6^|s-t|, and
participants drop out at random *given what was observed* (MAR: the chance of leaving after wave t rises
with the observed y_t). 200 trials of 200 participants, fixed seeds. The unstructured REML MMRM's
model-based (Satterthwaite) and sandwich intervals must cover within the two-sided 99% binomial band of
200 trials at 95% (a calibrated method fails this check one time in a hundred; the seed is fixed, so the
test is deterministic). The compound-symmetric fit of the same data, the shape of today's random-intercept
model, serves as the check that the band can fail: its model-based intervals are too narrow here.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from analysis.mmrm import MMRMDesign, fit_mmrm  # noqa: E402
from schemas.mmrm_stats import MMRMStatistics  # noqa: E402

N_TRIALS, N_PARTICIPANTS, LONG_RUN_EFFECT = 200, 200, 0.5
WAVES = ("w1", "w2", "w3", "w4")
DESIGN = MMRMDesign(("control", "treated"), WAVES)


def simulate_trial(rng: np.random.Generator) -> MMRMStatistics:
    n, n_w = N_PARTICIPANTS, len(WAVES)
    arm = rng.integers(0, 2, n).astype(float)
    baseline = rng.normal(0.0, 1.0, n)
    sd = np.linspace(1.0, 2.0, n_w)
    corr = 0.6 ** np.abs(np.subtract.outer(np.arange(n_w), np.arange(n_w)))
    noise = rng.multivariate_normal(np.zeros(n_w), sd[:, None] * corr * sd[None, :], size=n)
    effect = LONG_RUN_EFFECT * np.linspace(0.25, 1.0, n_w)  # the effect builds up to its long-run value
    mean = 0.3 * np.arange(1, n_w + 1)[None, :] + 0.5 * baseline[:, None] + arm[:, None] * effect[None, :]
    y = mean + noise
    seen = np.ones((n, n_w), dtype=bool)
    for t in range(1, n_w):  # MAR drop-out: leaving after wave t depends on the observed y_t
        leave = rng.random(n) < 1.0 / (1.0 + np.exp(2.0 - 0.8 * (y[:, t - 1] - mean[:, t - 1].mean())))
        seen[:, t] = seen[:, t - 1] & ~leave
    z = np.column_stack([np.ones(n), arm, baseline])
    return MMRMStatistics.from_arrays(z, np.where(seen, y, np.nan), DESIGN.z_columns, DESIGN.waves, fourth_order=True)


@pytest.fixture(scope="module")
def coverage() -> dict[str, float]:
    rng = np.random.default_rng(20261206)
    hits = {"us_model_based": 0, "us_sandwich": 0, "cs_model_based": 0}
    final_wave_observed = []
    for _ in range(N_TRIALS):
        trial = simulate_trial(rng)
        final_wave_observed.append(trial.participants_at()[-1] / N_PARTICIPANTS)
        us = fit_mmrm(trial, DESIGN, kenward_roger=None).effect("treated")
        cs = fit_mmrm(trial, DESIGN, structure="cs", kenward_roger=None).effect("treated")
        hits["us_model_based"] += us.model_based.lower < LONG_RUN_EFFECT < us.model_based.upper
        hits["us_sandwich"] += us.sandwich.lower < LONG_RUN_EFFECT < us.sandwich.upper
        hits["cs_model_based"] += cs.model_based.lower < LONG_RUN_EFFECT < cs.model_based.upper
    out = {k: v / N_TRIALS for k, v in hits.items()}
    out["final_wave_observed"] = float(np.mean(final_wave_observed))
    return out


def _band(level: float = 0.95, confidence: float = 0.99) -> tuple[float, float]:
    lo, hi = stats.binom.ppf([(1 - confidence) / 2, (1 + confidence) / 2], N_TRIALS, level)
    return lo / N_TRIALS, hi / N_TRIALS


def test_the_simulation_has_real_drop_out(coverage):
    assert 0.4 < coverage["final_wave_observed"] < 0.85


@pytest.mark.parametrize("interval", ["us_model_based", "us_sandwich"])
def test_unstructured_mmrm_intervals_cover_the_long_run_effect(coverage, interval):
    lo, hi = _band()
    assert lo <= coverage[interval] <= hi, (interval, coverage)


def test_a_compound_symmetric_fit_of_the_same_trials_undercovers(coverage):
    """The same check fails the wrong covariance: the band is tight enough to mean something."""
    assert coverage["cs_model_based"] < _band()[0], coverage
