"""The public tier on the realistic simulator, at the CI size (``benchmarks/calibration.py`` with the public methods).

120 two-arm studies of 2,000 participants from ``flows.simulation.realistic`` (the same process the trusted tier's
calibration uses: random slopes, growing variance, MAR drop-out on the last observed score, rise-and-decay effects,
bounded item scores), fixed seeds. Each study's primary paired moments are noised as a release of the whole budget
would noise them at epsilon 1 and 0.5 (the house's plan, budget split and OpenDP calibration give the SDs), and the
noise-aware ANCOVA (``analysis.public``) gives the 95% interval of the long-run effect. One interval per study, so
the indicators are independent: coverage must lie in the two-sided 99% binomial band of 0.95, and no study may fail
to fit. The full run (200 studies x 4,000, three arms; and 10,000 participants for the width) is the
script's, with its figures in the README.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from benchmarks.calibration import (  # noqa: E402
    LONG_RUN,
    CalibrationConfig,
    coverage,
    report,
    run_calibration,
    width_ratio,
)
from flows.simulation.realistic import DEFAULT_ARMS, RealisticParams  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    params = RealisticParams(n_participants=2_000, arms=DEFAULT_ARMS[:2])
    cfg = CalibrationConfig(studies=120, params=params, methods=("mmrm", "public_eps1", "public_eps0.5"),
                            truth_draws=200_000)
    return run_calibration(cfg)


def _band(n: int, level: float = 0.95, confidence: float = 0.99) -> tuple[float, float]:
    lo, hi = stats.binom.ppf([(1 - confidence) / 2, (1 + confidence) / 2], n, level)
    return lo / n, hi / n


@pytest.mark.parametrize("method", ["public_eps1", "public_eps0.5"])
def test_public_intervals_cover_the_long_run_effect(result, method):
    print(report(result))
    cov = coverage(result.intervals, method, LONG_RUN)
    assert cov.intervals == cov.studies == 120  # one interval per study, none failed
    lo, hi = _band(cov.intervals)
    assert lo <= cov.coverage <= hi, cov
    assert 0.85 < cov.z_sd < 1.15 and abs(cov.mean_error) < 3 * cov.mean_error_se, cov


def test_the_public_interval_widens_as_epsilon_shrinks_and_never_beats_the_trusted_one(result):
    eps1, _, _ = width_ratio(result.intervals, "public_eps1")
    eps05, lo05, _ = width_ratio(result.intervals, "public_eps0.5")
    assert 1.0 < eps1 < eps05 and lo05 > 1.0, (eps1, eps05)
