r"""The generative model of a design-stage trial, drawn directly as the MMRM's pattern statistics.

**Outcome model** (the assumptions of the protocol's ``design`` section, ``schemas.protocol.DesignSettings``).
Participant i's outcome at wave t (t = 0 the baseline, months m_t since assignment) is

    y_it = mu_a(t) + u_i + e_it,     u_i ~ N(0, icc s^2),
    e_it ~ N(0, (1 - icc) s^2 (1 + g m_t / 12)),     corr(e_is, e_it) = rho^|s - t|   (AR(1) over waves),

so the baseline SD is s, a share ``icc`` of it is stable, the occasion variance grows by a factor 1 + g per year
and consecutive waves' occasion noise correlates rho (the realistic simulator's sources, flows/simulation). The arm
mean mu_a(t) is 0 at baseline and the arm's effect at follow-up (0 for the control).

**Drop-out**: monotone and completely at random, the same hazard h at every follow-up wave with (1 - h)^T = 1 -
attrition, so a participant is seen at the first k follow-up waves with probability (1 - h)^k h (k < T) or
(1 - h)^T (k = T); a participant seen at none adds nothing to the MMRM's likelihood.

**Statistics.** Per arm and pattern S (n participants, w = (baseline, y_S) of dimension d = 1 + |S|):
n ~ Multinomial; sum w ~ N(n mu, n Sigma_w); the centred scatter sum (w - wbar)(w - wbar)' ~ Wishart(n - 1,
Sigma_w), independent of the sum (Anderson 2003, Thm 3.3.2); then sum w w' = scatter + (sum w)(sum w)'/n. With
z = (1, arm dummies, baseline) these give n_S, Szz_S, Szy_S and Syy_S exactly as the warehouse's GROUP BY would
(``schemas.mmrm_stats.PatternStatistics``). When n <= d the Wishart is singular and the n rows are drawn instead.
The Wishart draw is Bartlett's decomposition (Bartlett 1933; Anderson 2003, Cor. 7.2.1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from schemas.mmrm_stats import MMRMStatistics, PatternStatistics

__all__ = ["covariance", "draw_mmrm_statistics", "pattern_probabilities", "wishart"]


def covariance(sd: float, icc: float, growth_per_year: float, serial_correlation: float,
               months: Sequence[float]) -> np.ndarray:
    """Sigma over (baseline, follow-up waves) at ``months`` (the first 0): stable share plus AR(1) occasion noise."""
    m = np.asarray(months, dtype=float)
    occ_sd = np.sqrt((1.0 - icc) * sd**2 * (1.0 + growth_per_year * m / 12.0))
    lag = np.abs(np.subtract.outer(np.arange(m.size), np.arange(m.size)))
    return icc * sd**2 + np.outer(occ_sd, occ_sd) * serial_correlation**lag


def pattern_probabilities(n_followup: int, attrition: float) -> np.ndarray:
    """P(seen at exactly the first k follow-up waves), k = 0..T (monotone drop-out, constant hazard)."""
    keep = (1.0 - attrition) ** (1.0 / n_followup)
    k = np.arange(n_followup + 1)
    p = keep**k * (1.0 - keep)
    p[-1] = keep**n_followup
    return p


def wishart(rng: np.random.Generator, df: int, chol: np.ndarray) -> np.ndarray:
    """One draw of Wishart(df, L L') by Bartlett's decomposition (df >= dimension)."""
    d = chol.shape[0]
    a = np.tril(rng.standard_normal((d, d)), -1)
    a[np.diag_indices(d)] = np.sqrt(rng.chisquare(df - np.arange(d)))
    la = chol @ a
    return la @ la.T


def draw_mmrm_statistics(rng: np.random.Generator, n_per_arm: Mapping[str, int], arms: Sequence[str],
                         means: Mapping[str, np.ndarray], sigma: np.ndarray, pattern_p: np.ndarray,
                         waves: Sequence[str], z_columns: Sequence[str]) -> MMRMStatistics:
    """One trial's pattern statistics. ``arms``: control first (the z-columns are intercept, one dummy per treated
    arm, baseline: ``analysis.mmrm.MMRMDesign.z_columns``); ``means[arm]``: the (baseline, follow-up) mean vector."""
    n_follow = len(waves)
    treated = list(arms[1:])
    p = 2 + len(treated)
    chols = {k: np.linalg.cholesky(sigma[: k + 1, : k + 1]) for k in range(1, n_follow + 1)}
    patterns: list[PatternStatistics] = []
    for arm in arms:
        counts = rng.multinomial(int(n_per_arm[arm]), pattern_p)
        dummy = np.array([1.0 if a == arm else 0.0 for a in treated])
        for k in range(1, n_follow + 1):  # k = 0 (no follow-up) adds nothing to the likelihood
            n = int(counts[k])
            if n == 0:
                continue
            mu, d = means[arm][: k + 1], k + 1
            if n > d:
                s1 = n * mu + np.sqrt(n) * chols[k] @ rng.standard_normal(d)
                s2 = wishart(rng, n - 1, chols[k]) + np.outer(s1, s1) / n
            else:
                w = mu + rng.standard_normal((n, d)) @ chols[k].T
                s1, s2 = w.sum(axis=0), w.T @ w
            zsum = np.concatenate([[n], n * dummy, [s1[0]]])
            szz = np.empty((p, p))
            szz[: p - 1, : p - 1] = n * np.outer(np.concatenate([[1.0], dummy]), np.concatenate([[1.0], dummy]))
            szz[-1, :-1] = szz[:-1, -1] = s1[0] * np.concatenate([[1.0], dummy])
            szz[-1, -1] = s2[0, 0]
            szy = np.vstack([np.outer(zsum[:-1] / n, s1[1:]), s2[0, 1:]])
            patterns.append(PatternStatistics(tuple(range(k)), n, szz, szy, s2[1:, 1:]))
    return MMRMStatistics(tuple(z_columns), tuple(waves), tuple(patterns))
