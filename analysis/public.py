r"""Public tier: the noise-aware Bayesian ANCOVA fitted only to DP-released statistics.

Following Bernstein & Sheldon (2018, "Differentially private Bayesian inference for exponential
families", NeurIPS; 2019, "Differentially private Bayesian linear regression", NeurIPS), the
released statistics are noisy observations of the true sufficient statistics, and the model
puts both sources of randomness in the likelihood.

Per arm a and wave w, participants' (baseline x, follow-up y) pairs are modelled as

    x ~ N(mx_aw, vx_aw),    y | x ~ N(alpha_aw + b_w x, s2_w)

so the effect of arm a at wave w (ANCOVA-adjusted, common slope) is alpha_aw - alpha_cw. The cell's
true statistics T = sum_i t(x_i, y_i) with t = (x, y, x^2, y^2, x y) are a sum of n iid vectors,
so by the central limit theorem (Bernstein & Sheldon's approximation)

    T ~ N(n mu_t, n Sigma_t)

where mu_t and Sigma_t are the mean and covariance of t under the bivariate normal above, in
closed form by Isserlis' theorem: E z_i z_j = S_ij + m_i m_j,
Cov(z_i, z_j z_k) = m_j S_ik + m_k S_ij, and
Cov(z_i z_j, z_k z_l) = S_ik S_jl + S_il S_jk + m_i m_k S_jl + m_i m_l S_jk + m_j m_k S_il + m_j m_l S_ik.

The release adds independent Gaussian noise, O = T + eta, eta ~ N(0, D), D = diag(noise_sd^2), so,
marginalising T exactly (Gaussians add),

    O ~ N(n mu_t, n Sigma_t + D + sd_n^2 mu_t mu_t')

where the last term accounts (delta method) for using the released count n_hat for the true n,
whose noise SD is sd_n. As epsilon shrinks, D grows and the intervals widen; that is the whole
point. The *naive* model (``noise_aware=False``) sets D = 0 and sd_n = 0: it treats the noisy
statistics as exact and under-covers (demonstrated in the calibration test).

For numerics the statistics are rescaled by a constant ``scale`` (x/s, y/s; sums of squares by
s^2); by default it is computed from the pooled released statistics themselves, which is
post-processing of DP output and costs no privacy. Priors (``plan.priors``) are in SD units of that
scale: arm differences Normal(0, effect_sd), intercepts and cell means Normal(0, intercept_sd),
the slope Normal(0, coefficient_sd), SDs HalfNormal(sigma_scale * 2).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.errors import AnalysisInputError, InsufficientData
from analysis.results import Diagnostics
from schemas.protocol import AnalysisPlan
from schemas.results import LONG_RUN, Effect
from schemas.suffstats import NoisyPairedMoments, PairedMoments

__all__ = ["PublicResult", "fit_public", "gaussian_mechanism_sd", "paired_moments_from_frame"]


def gaussian_mechanism_sd(l2_sensitivity: float, epsilon: float, delta: float) -> float:
    """Noise SD of the classic Gaussian mechanism (Dwork & Roth 2014, Thm A.1):
    sigma = Delta_2 sqrt(2 ln(1.25 / delta)) / epsilon (stated for epsilon < 1; used here as the
    calibration reference at epsilon <= 1)."""
    if not (epsilon > 0 and 0 < delta < 1 and l2_sensitivity > 0):
        raise ValueError("need epsilon > 0, 0 < delta < 1, sensitivity > 0")
    return l2_sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


@dataclass(frozen=True)
class PublicResult:
    outcome: str
    control: str
    arms: tuple[str, ...]
    waves: tuple[str, ...]
    effects: tuple[Effect, ...]
    diagnostics: Diagnostics
    noise_aware: bool
    idata: Any = field(default=None, compare=False, repr=False)

    @property
    def confirmatory(self) -> bool:
        return self.diagnostics.passed and self.noise_aware

    def effect(self, arm: str, wave: str = LONG_RUN) -> Effect:
        for e in self.effects:
            if e.arm == arm and e.wave == wave:
                return e
        raise KeyError(f"no effect for arm {arm!r} at wave {wave!r}")


_CACHE: dict[tuple, Any] = {}


# t = (x, y, x^2, y^2, xy) as products z~_i z~_j of z~ = (1, x, y): one Isserlis formula (the constant
# component has zero covariance) gives every mean and covariance. Written entry by entry over cell
# vectors: only elementwise operations (a gather/batched-matmul version hit a numba gradient shape error).
_ITEMS = ((0, 1), (0, 2), (1, 1), (2, 2), (1, 2))


def _t_moments(mx, vx, alpha, b, s2):
    """Mean (C,5) and covariance (C,5,5) of t = (x, y, x^2, y^2, xy) under the bivariate normal."""
    import pytensor.tensor as pt

    zero, one = pt.zeros_like(mx), pt.ones_like(mx)
    m = [one, mx, alpha + b * mx]
    s_xy = b * vx
    S = [[zero, zero, zero], [zero, vx, s_xy], [zero, s_xy, b * b * vx + s2]]
    mu = pt.stack([S[i][j] + m[i] * m[j] for i, j in _ITEMS], axis=-1)

    def cov(i, j, k, l):
        return (S[i][k] * S[j][l] + S[i][l] * S[j][k] + m[i] * m[k] * S[j][l] + m[i] * m[l] * S[j][k]
                + m[j] * m[k] * S[i][l] + m[j] * m[l] * S[i][k])

    sig = pt.stack([pt.stack([cov(i, j, k, l) for k, l in _ITEMS], axis=-1) for i, j in _ITEMS], axis=-2)
    return mu, sig


def _mvn_logp_batched(resid, cov):
    """Sum over cells of the Gaussian log-density of ``resid`` (C, k) with covariance ``cov`` (C, k, k).

    The Cholesky factor and the forward substitution are unrolled over the k = 5 statistics and
    vectorised over cells: only elementwise operations, which compile quickly and whose gradients the
    numba backend handles (the batched ``MvNormal`` gradient raised a shape error there)."""
    import pytensor.tensor as pt

    k = 5
    chol: dict[tuple[int, int], Any] = {}
    for j in range(k):
        diag = cov[:, j, j] - sum((chol[(j, q)] ** 2 for q in range(j)), pt.zeros_like(cov[:, 0, 0]))
        chol[(j, j)] = pt.sqrt(diag)
        for i in range(j + 1, k):
            off = cov[:, i, j] - sum((chol[(i, q)] * chol[(j, q)] for q in range(j)), pt.zeros_like(cov[:, 0, 0]))
            chol[(i, j)] = off / chol[(j, j)]
    z = []
    for i in range(k):
        acc = resid[:, i] - sum((chol[(i, q)] * z[q] for q in range(i)), pt.zeros_like(resid[:, 0]))
        z.append(acc / chol[(i, i)])
    logdet = 2.0 * sum(pt.log(chol[(j, j)]) for j in range(k))
    quad = sum(zi**2 for zi in z)
    return pt.sum(-0.5 * (k * np.log(2 * np.pi) + logdet + quad))


def _build(n_arms: int, n_waves: int, data: Mapping[str, np.ndarray]):
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as model:
        d = {k: pm.Data(k, v) for k, v in data.items()}
        alpha_c = pm.Normal("alpha_control", 0.0, d["intercept_sd"], shape=n_waves)
        # free variables are kept 1-D (a 2-D free variable's gradient hit a shape error in the numba backend)
        effect = pm.Normal("effect_std", 0.0, d["effect_sd"], shape=(n_arms - 1) * n_waves).reshape((n_arms - 1, n_waves))
        alpha = pt.concatenate([alpha_c[None, :], alpha_c[None, :] + effect], axis=0)  # (A, W)
        b = pm.Normal("slope", 0.0, d["coefficient_sd"], shape=n_waves)
        sigma = pm.HalfNormal("sigma", 2.0 * d["sigma_scale"], shape=n_waves)
        mx = pm.Normal("mx", 0.0, d["intercept_sd"], shape=n_arms * n_waves)
        sx = pm.HalfNormal("sx", 2.0 * d["sigma_scale"], shape=n_arms * n_waves)
        widx = np.tile(np.arange(n_waves), n_arms)  # cell (arm-major) -> wave
        bb = b[widx]
        s2 = (sigma**2)[widx]
        mu_t, sig_t = _t_moments(mx, sx**2, alpha.reshape((-1,)), bb, s2)
        n = d["n"][:, None]
        mean = n * mu_t
        cov = (d["n"][:, None, None] * sig_t
               + d["noise_var"]  # (C,5,5): noise covariance of the rescaled sums
               + (d["sd_n"] ** 2)[:, None, None] * mu_t[:, :, None] * mu_t[:, None, :])
        pm.Potential("released", _mvn_logp_batched(d["sums"] - mean, cov))
    return model


def fit_public(
    cells: Mapping[tuple[str, str], NoisyPairedMoments],
    plan: AnalysisPlan,
    *,
    control: str,
    waves: Sequence[str],
    outcome: str = "outcome",
    direction: str = "higher_is_better",
    mcid: float | None = None,
    rope: float | None = None,
    noise_aware: bool = True,
    scale: float | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
) -> PublicResult:
    """Fit the noise-aware (or, with ``noise_aware=False``, the naive) ANCOVA to released cells.

    ``cells`` maps (arm, wave) -> :class:`NoisyPairedMoments`; every arm must have a cell at every
    wave listed. The long-run effect is the effect at the last wave in ``waves``."""
    import nutpie

    arms = [control] + sorted({a for a, _ in cells} - {control})
    if len(arms) < 2:
        raise AnalysisInputError(f"need the control arm {control!r} and at least one other arm in the cells")
    missing = [(a, w) for a in arms for w in waves if (a, w) not in cells]
    if missing:
        raise AnalysisInputError(f"released cells missing for {missing}")
    order = [(a, w) for a in arms for w in waves]
    vals = np.array([cells[k].values for k in order])  # (C, 6): n, sx, sy, sxx, syy, sxy
    sds = np.array([cells[k].noise_sds for k in order])
    if np.any(vals[:, 0] < 3):
        raise InsufficientData("a noise-aware cell", 3, float(vals[:, 0].min()), "the released counts")
    if scale is None:
        tot = vals.sum(axis=0)
        scale = math.sqrt(max(tot[3] / tot[0], 1e-12))  # root mean square of x, a public post-processing
    s = float(scale)
    # rescale: x/s, y/s → sums / s, squares / s^2 (no centring, so the count does not mix in)
    factors = np.array([1 / s, 1 / s, 1 / s**2, 1 / s**2, 1 / s**2])
    reorder = [1, 2, 3, 4, 5]  # (sx, sy, sxx, syy, sxy) -> t = (x, y, x^2, y^2, xy)
    sums = vals[:, reorder] * factors
    if noise_aware:
        noise_var = np.stack([np.diag((sds[c, reorder] * factors) ** 2) for c in range(len(order))])
        sd_n = sds[:, 0]
    else:
        noise_var = np.zeros((len(order), 5, 5))
        sd_n = np.zeros(len(order))
    pr = plan.priors
    data = {
        "n": vals[:, 0].astype(float), "sums": sums, "noise_var": noise_var, "sd_n": sd_n.astype(float),
        "intercept_sd": np.array(pr.intercept_sd), "effect_sd": np.array(pr.effect_sd),
        "coefficient_sd": np.array(pr.coefficient_sd), "sigma_scale": np.array(pr.sigma_scale),
    }
    key = (len(arms), len(waves))
    if key not in _CACHE:
        _CACHE[key] = nutpie.compile_pymc_model(_build(len(arms), len(waves), data))
        compiled = _CACHE[key]
    else:
        compiled = _CACHE[key].with_data(**{k: v for k, v in data.items() if k in _CACHE[key].shared_data})
    t0 = time.perf_counter()
    n_chains = chains or plan.chains
    # The released sums identify the cell means much better than the spreads, so the posterior is strongly
    # correlated and curved: on a real release (3,000 participants, epsilon 4 over 15 queries, Flourishing
    # Scale) the default sampler gave 867 divergences and R-hat 2.03; a low-rank mass matrix with
    # target_accept 0.95 gave none, R-hat 1.01, bulk ESS 643, in 19 s.
    idata = nutpie.sample(compiled, draws=draws or plan.draws, tune=tune or plan.tune, chains=n_chains,
                          seed=plan.seed, progress_bar=False, cores=min(n_chains, os.cpu_count() or 1),
                          low_rank_modified_mass_matrix=True, target_accept=0.95)
    seconds = time.perf_counter() - t0
    # the released counts are noisy (DP); rounding them for the rows is post-processing and costs no privacy
    released_n = {k: max(0, int(round(cells[k].n))) for k in order}
    return _summarise(idata, plan, arms, list(waves), s, outcome, direction, mcid, rope, noise_aware, seconds,
                      released_n)


def _summarise(idata, plan, arms, waves, s, outcome, direction, mcid, rope, noise_aware, seconds,
               released_n) -> PublicResult:
    post = idata.posterior
    ch, dr = post.sizes["chain"], post.sizes["draw"]
    eff = np.asarray(post["effect_std"]).reshape(ch * dr, len(arms) - 1, len(waves)) * s
    diagnostics = Diagnostics.of(idata, ["alpha_control", "effect_std", "slope", "sigma", "mx", "sx"], plan, seconds)
    level = plan.interval_level
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    sign = 1.0 if direction == "higher_is_better" else -1.0
    method = "bayes_ancova_noise_aware" if noise_aware else "bayes_ancova_naive"
    effects = []
    for ai, a in enumerate(arms[1:]):
        for wi, w in enumerate(waves):
            x = eff[:, ai, wi]
            good = sign * x
            for label in ([w, LONG_RUN] if wi == len(waves) - 1 else [w]):
                effects.append(Effect(
                    outcome=outcome, arm=a, control=arms[0], wave=label, method=method, tier="public",
                    estimate=float(x.mean()), sd=float(x.std(ddof=1)),
                    lower=float(np.quantile(x, lo_q)), upper=float(np.quantile(x, hi_q)), interval_level=level,
                    p_benefit=float((good > 0).mean()),
                    p_above_mcid=None if mcid is None else float((good > mcid).mean()),
                    p_in_rope=None if rope is None else float((np.abs(x) < rope).mean()),
                    n_arm=released_n[(a, w)], n_control=released_n[(arms[0], w)], direction=direction,
                ))
    return PublicResult(outcome, arms[0], tuple(arms), tuple(waves), tuple(effects),
                        diagnostics, noise_aware, idata)


def paired_moments_from_frame(frame, *, value: str = "outcome") -> dict[tuple[str, str], PairedMoments]:
    """Per (arm, wave), sorted, the paired moments (x = ``baseline``, y = ``value``) of a long frame's rows with
    an outcome: the cells the privacy tier releases, for simulations and tests (the warehouse's reader is
    ``flows.statistics.paired_moments``)."""
    f = frame[["arm", "wave", value, "baseline"]]
    f = f[f[value].notna()].astype({"arm": str, "wave": str})
    return {(str(arm), str(wave)): PairedMoments.from_arrays(g["baseline"], g[value])
            for (arm, wave), g in sorted(f.groupby(["arm", "wave"], sort=True), key=lambda kv: kv[0])}
