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
from schemas.suffstats import PairedMoments

__all__ = ["covariance", "draw_arm_sums", "draw_mmrm_statistics", "mmrm_statistics", "paired_moments",
           "pattern_probabilities", "wishart"]


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


def draw_arm_sums(rng: np.random.Generator, n_per_arm: Mapping[str, int], arms: Sequence[str],
                  means: Mapping[str, np.ndarray], sigma: np.ndarray, pattern_p: np.ndarray
                  ) -> list[tuple[str, int, int, np.ndarray, np.ndarray]]:
    """Per arm and drop-out pattern k (seen at the first k follow-up waves, k >= 1): (arm, k, n, sum w, sum w w')
    with w = (baseline, first k follow-ups); ``means[arm]`` is the (baseline, follow-up) mean vector."""
    n_follow = sigma.shape[0] - 1
    chols = {k: np.linalg.cholesky(sigma[: k + 1, : k + 1]) for k in range(1, n_follow + 1)}
    out = []
    for arm in arms:
        counts = rng.multinomial(int(n_per_arm[arm]), pattern_p)
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
            out.append((arm, k, n, s1, s2))
    return out


def mmrm_statistics(sums: Sequence[tuple[str, int, int, np.ndarray, np.ndarray]], arms: Sequence[str],
                    waves: Sequence[str], z_columns: Sequence[str]) -> MMRMStatistics:
    """The MMRM's pattern statistics of :func:`draw_arm_sums`' output, z = (1, treated-arm dummies, baseline) (the
    z-columns of ``analysis.mmrm.MMRMDesign``); patterns of several arms add."""
    treated = list(arms[1:])
    p = 2 + len(treated)
    patterns = []
    for arm, k, n, s1, s2 in sums:
        head = np.concatenate([[1.0], [1.0 if a == arm else 0.0 for a in treated]])
        szz = np.empty((p, p))
        szz[:-1, :-1] = n * np.outer(head, head)
        szz[-1, :-1] = szz[:-1, -1] = s1[0] * head
        szz[-1, -1] = s2[0, 0]
        szy = np.vstack([np.outer(head, s1[1:]), s2[0, 1:]])
        patterns.append(PatternStatistics(tuple(range(k)), n, szz, szy, s2[1:, 1:]))
    return MMRMStatistics(tuple(z_columns), tuple(waves), tuple(patterns))


def paired_moments(sums: Sequence[tuple[str, int, int, np.ndarray, np.ndarray]], arms: Sequence[str],
                   waves: Sequence[str]) -> dict[tuple[str, str], PairedMoments]:
    """Per (arm, follow-up wave): the (baseline, wave) moments of the participants seen at that wave, what the DP
    release's paired-moments query holds (``privacy.release.plan_paired``) before its noise."""
    out = {(a, w): PairedMoments.zero() for a in arms for w in waves}
    for arm, k, n, s1, s2 in sums:
        for t in range(k):
            out[(arm, waves[t])] = out[(arm, waves[t])] + PairedMoments(
                n, float(s1[0]), float(s1[1 + t]), float(s2[0, 0]), float(s2[1 + t, 1 + t]), float(s2[0, 1 + t]))
    return out


def draw_mmrm_statistics(rng: np.random.Generator, n_per_arm: Mapping[str, int], arms: Sequence[str],
                         means: Mapping[str, np.ndarray], sigma: np.ndarray, pattern_p: np.ndarray,
                         waves: Sequence[str], z_columns: Sequence[str]) -> MMRMStatistics:
    """One trial's pattern statistics (:func:`draw_arm_sums` then :func:`mmrm_statistics`)."""
    return mmrm_statistics(draw_arm_sums(rng, n_per_arm, arms, means, sigma, pattern_p), arms, waves, z_columns)
