"""Empirical privacy audit: a statistical lower bound on epsilon from many releases on neighbouring data.

Two data sets differ by one participant who sits at the clipping bounds (plus duplicate rows and out-of-range
values that contribution bounding must neutralize). The release's production path (bounded aggregates in
DuckDB, ``calibrate``, ``draw``) runs many times on each; a threshold test on the projection of the noisy
vector onto the direction of the difference (the Neyman-Pearson test for Gaussian noise) gives a true and
a false positive rate, Clopper-Pearson intervals make them conservative, and
``eps_lb = ln((TPR_low - delta) / FPR_high)`` is a valid lower bound on the epsilon actually achieved
(DP-Sniper, Bichsel et al. 2021; Jagielski et al. 2020). It must not exceed the declared epsilon; a
deliberately broken mechanism (noise 20x too small) must be caught, which shows the audit has power.
"""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import beta

from tests.support.privacy import fill, make_protocol
from privacy.budget import epsilon_to_rho, rho_to_epsilon
from privacy.release import Calibrated, calibrate, draw, exact_values, plan_telemetry
from schemas.privacy_values import PrivacyLoss
from tests.support.privacy import add_extreme_participant

RUNS = 2000
ALPHA = 0.05


def _cp(k: int, n: int) -> tuple[float, float]:
    lo = 0.0 if k == 0 else beta.ppf(ALPHA / 2, k, n - k + 1)
    hi = 1.0 if k == n else beta.ppf(1 - ALPHA / 2, k + 1, n - k)
    return lo, hi


def epsilon_lower_bound(scores_d: list[float], scores_d1: list[float], delta: float, thresholds: int = 15) -> float:
    """Max over thresholds (Bonferroni over the thresholds) of the Clopper-Pearson epsilon lower bound."""
    global ALPHA
    pooled = sorted(scores_d + scores_d1)
    cands = [pooled[int(len(pooled) * q)] for q in [i / (thresholds + 1) for i in range(1, thresholds + 1)]]
    old, ALPHA = ALPHA, ALPHA / thresholds
    try:
        best = 0.0
        n0, n1 = len(scores_d), len(scores_d1)
        for c in cands:
            fp = sum(s > c for s in scores_d)
            tp = sum(s > c for s in scores_d1)
            tpr_lo, _ = _cp(tp, n1)
            _, fpr_hi = _cp(fp, n0)
            if tpr_lo - delta > 0 and fpr_hi > 0:
                best = max(best, math.log((tpr_lo - delta) / fpr_hi))
            # the mirrored test (output <= c)
            tnr_lo, _ = _cp(n0 - fp, n0)
            _, fnr_hi = _cp(n1 - tp, n1)
            if tnr_lo - delta > 0 and fnr_hi > 0:
                best = max(best, math.log((tnr_lo - delta) / fnr_hi))
        return best
    finally:
        ALPHA = old


@pytest.fixture(scope="module")
def neighbours(tmp_path_factory):
    """Exact bounded aggregates of D and D' (= D plus one participant at the bounds) for one query."""
    from flows.warehouse import connect

    protocol = make_protocol()
    con = connect(tmp_path_factory.mktemp("audit") / "w.duckdb")
    fill(con, 30, seed=3)
    # the telemetry query (4 coordinates) keeps the audit fast: OpenDP's exact sampler costs ~0.2 ms a value here
    q = plan_telemetry(protocol, protocol.surrogates[0])
    d = exact_values(con, protocol, q)
    add_extreme_participant(con, "audit-target", "coach", random.Random(5), n_events=300)
    d1 = exact_values(con, protocol, q)
    con.close()
    assert d1[q.keys.index(next(k for k in q.keys if k.arm == "coach" and k.statistic == "sum"))] - \
        d[q.keys.index(next(k for k in q.keys if k.arm == "coach" and k.statistic == "sum"))] == q.value_bounds.upper
    return q, d, d1


def _scores(cal: Calibrated, exact: list[float], base: list[float], direction: list[float]) -> list[float]:
    out = []
    for _ in range(RUNS):
        noisy = draw(cal, exact)
        out.append(sum((y - x) / b * u for y, x, b, u in zip(noisy, base, cal.query.bounds, direction, strict=True)))
    return out


def _audit(cal: Calibrated, d, d1, delta: float) -> float:
    direction = [(y - x) / b for x, y, b in zip(d, d1, cal.query.bounds, strict=True)]
    assert any(direction), "the neighbour must change the release"
    return epsilon_lower_bound(_scores(cal, d, d, direction), _scores(cal, d1, d, direction), delta)


def test_gaussian_release_audit_stays_below_declared_epsilon(neighbours):
    q, d, d1 = neighbours
    declared_eps, delta = 1.0, 1e-6
    cal = calibrate(q, "gaussian", PrivacyLoss(rho=epsilon_to_rho(declared_eps, delta)))
    eps_lb = _audit(cal, d, d1, delta)
    print(f"gaussian: declared epsilon {rho_to_epsilon(cal.loss.rho, delta):.3f}, audited lower bound {eps_lb:.3f}")
    assert eps_lb <= rho_to_epsilon(cal.loss.rho, delta)


def test_laplace_release_audit_stays_below_declared_epsilon(neighbours):
    q, d, d1 = neighbours
    cal = calibrate(q, "laplace", PrivacyLoss(epsilon=1.0))
    eps_lb = _audit(cal, d, d1, 0.0)
    print(f"laplace: declared epsilon {cal.loss.epsilon:.3f}, audited lower bound {eps_lb:.3f}")
    assert eps_lb <= cal.loss.epsilon


def test_audit_catches_a_mechanism_with_too_little_noise(neighbours):
    """Power check: the same audit on noise 20x too small must exceed the (wrongly) declared epsilon."""
    import dataclasses

    import opendp.prelude as dp

    q, d, d1 = neighbours
    cal = calibrate(q, "gaussian", PrivacyLoss(rho=epsilon_to_rho(1.0, 1e-6)))
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    broken = dataclasses.replace(cal, measurement=dp.m.make_gaussian(domain, dp.l2_distance(T=float), scale=cal.scale / 20))
    eps_lb = _audit(broken, d, d1, 1e-6)
    print(f"broken gaussian: declared 1.0, audited lower bound {eps_lb:.3f}")
    assert eps_lb > 1.0
