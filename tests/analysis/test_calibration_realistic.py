"""Calibration on the realistic simulator, at the CI size (``benchmarks/calibration.py --small``).

150 two-arm studies of 1,000 participants from ``flows.simulation.realistic`` (random slopes, AR(1) noise with
growing variance, a struggling minority, MAR drop-out on the last observed score, rise-and-decay effects,
bounded item scores), fixed seeds, so the test is deterministic. One interval per study (guidance vs control at
the final wave), so the 150 coverage indicators are independent: the unstructured REML MMRM's model-based and
sandwich 95% intervals must cover within the two-sided 99% binomial band of 150 trials at 0.95 (a calibrated
method fails this one time in a hundred). The random-intercept ML fit of the same studies must show the
overconfidence the issue measured: its z = (estimate - truth) / SE spreads wider than the MMRM's, and its SEs
are smaller than its estimates' spread. The full run (200 studies x 4,000, three arms) is the script's default.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from benchmarks.calibration import LONG_RUN, CalibrationConfig, coverage, report, run_calibration  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    return run_calibration(CalibrationConfig.small())


def _band(n: int, level: float = 0.95, confidence: float = 0.99) -> tuple[float, float]:
    lo, hi = stats.binom.ppf([(1 - confidence) / 2, (1 + confidence) / 2], n, level)
    return lo / n, hi / n


def test_the_small_run_is_what_ci_runs(result):
    cfg = result.config
    assert (cfg.studies, cfg.params.n_participants, cfg.params.arm_names) == (150, 1_000, ("control", "guidance"))
    assert result.failures == []
    assert 0.62 < result.final_wave_observed < 0.78  # real drop-out: about 29% missing at 12 months
    print(report(result))


@pytest.mark.parametrize("method", ["mmrm_model_based", "mmrm_sandwich"])
def test_mmrm_intervals_cover_the_long_run_effect(result, method):
    cov = coverage(result.intervals, method, LONG_RUN)
    assert cov.intervals == cov.studies == 150  # one independent interval per study
    lo, hi = _band(cov.intervals)
    assert lo <= cov.coverage <= hi, cov
    assert 0.85 < cov.z_sd < 1.15 and abs(cov.mean_error) < 3 * cov.mean_error_se, cov


def test_the_random_intercept_fit_of_the_same_studies_is_overconfident(result):
    mmrm = coverage(result.intervals, "mmrm_model_based", LONG_RUN)
    ri = coverage(result.intervals, "random_intercept_ml", LONG_RUN)
    assert ri.z_sd > mmrm.z_sd + 0.08, (ri, mmrm)
    assert ri.se_ratio < 0.92, ri  # its SEs are smaller than its estimates' spread
    assert ri.coverage < mmrm.coverage, (ri, mmrm)
