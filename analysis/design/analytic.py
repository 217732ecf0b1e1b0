r"""Closed-form power of the MMRM's final-wave contrast when the covariance is known.

With Sigma known, the MMRM's estimator of beta is generalised least squares, whose covariance is the inverse of the
information I = sum_i X_i' V_i^{-1} X_i (Diggle, Heagerty, Liang & Zeger 2002, *Analysis of Longitudinal Data*, 2nd
ed., §4.3 and §2.4, the sample-size formulas longpower implements; Lu, Luo & Chen 2008, Stat Biopharm Res
1:19 for the MMRM under drop-out: the information of each drop-out pattern adds). The model conditions on the
baseline, so V is the conditional covariance of the follow-ups given the baseline,
Sigma_c = Sigma_ff - Sigma_f0 Sigma_0f / Sigma_00, and each follow-up wave has its own baseline slope. Taking the
expectation of z z' over the baseline (z = (1, arm dummies, baseline), baseline ~ N(0, Sigma_00)) and of the
pattern counts (N_a P(pattern)):

    I = sum_a sum_S N_a P(S) E[z z' | a] (x) E_S' Sigma_c,SS^{-1} E_S          (vec(B) stacked by z-column)

and the SE of the arm's effect at the final wave is the square root of that entry of I^{-1}. Power of the
two-sided test at level alpha in the effect's direction, with a t reference on the completers' degrees of freedom
(the KR df of a final-wave contrast are close to them): P(T_{df, delta/SE} > t_{1 - alpha/2, df}), T noncentral t.
This is written here from the formulas, sharing no code with the estimator (``analysis.mmrm``), so the simulation
is checked against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["analytic_power", "analytic_se"]


def analytic_se(n_per_arm: Mapping[str, float], arms: Sequence[str], sigma: np.ndarray, pattern_p: np.ndarray,
                arm: str) -> float:
    """SE of ``arm``'s final-wave effect (known covariance, expected information). ``sigma`` over (baseline,
    follow-ups); ``pattern_p`` from ``analysis.design.statistics.pattern_probabilities``."""
    n_follow = sigma.shape[0] - 1
    treated = list(arms[1:])
    p = 2 + len(treated)
    s00, s0f, sff = sigma[0, 0], sigma[0, 1:], sigma[1:, 1:]
    cond = sff - np.outer(s0f, s0f) / s00
    info = np.zeros((p * n_follow, p * n_follow))
    for a in arms:
        d = np.array([1.0 if t == a else 0.0 for t in treated])
        head = np.concatenate([[1.0], d])
        ezz = np.zeros((p, p))
        ezz[:-1, :-1] = np.outer(head, head)
        ezz[-1, -1] = s00
        for k in range(1, n_follow + 1):
            psel = np.zeros((n_follow, n_follow))
            psel[:k, :k] = np.linalg.inv(cond[:k, :k])
            info += n_per_arm[a] * pattern_p[k] * np.kron(ezz, psel)
    cov = np.linalg.inv(info)
    j = 1 + treated.index(arm)
    idx = j * n_follow + n_follow - 1
    return float(np.sqrt(cov[idx, idx]))


def analytic_power(effect: float, se: float, alpha: float, df: float) -> float:
    """Power of the two-sided level-``alpha`` t test to reject in the effect's direction (a zero effect: the
    two-sided size, alpha)."""
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    ncp = abs(effect) / se
    if ncp == 0:
        return float(alpha)
    return float(stats.nct.sf(crit, df, ncp))
