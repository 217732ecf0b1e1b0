r"""Bayesian MMRM on pattern statistics (PyMC model, sampled by nutpie).

Same likelihood as the frequentist fit (``analysis/mmrm/likelihood.py``), written for PyTensor with every
pattern padded to T waves (V*_S = D_S Sigma D_S + I - D_S, so det V*_S = det Sigma_SS and the padded
residual cross-products meet only Sigma_SS^{-1}):

    log p(y | beta, Sigma) = -1/2 sum_S [ n_S log det Sigma_SS + tr( V*_S^{-1} R_S(B) ) ] + const,
    R_S(B) = Syy_S - D_S B Szy_S - (D_S B Szy_S)' + D_S B Szz_S B' D_S,      vec(B) = M beta.

Priors, on the outcome and covariates standardised as ``analysis.longitudinal._standardise`` does (outcome
and baseline by the baseline's mean and SD over the analysed participants; numeric covariates by their own
mean and SD; arm dummies as they are), from ``plan.priors`` (``schemas.protocol.Priors``, baseline-SD units):

    beta_j ~ Normal(0, intercept_sd | effect_sd | coefficient_sd)   (intercept terms | arm terms | the rest)
    Sigma = diag(s) Omega diag(s),  s_t ~ HalfNormal(sigma_scale),  Omega ~ LKJ(eta)      (LKJCholeskyCov;
    Lewandowski, Kurowicka & Joe 2009, J Multivar Anal 100:1989)

Draws are mapped back to outcome units exactly (the standardisation is linear in beta because z holds the
intercept). With no baseline in the design the outcome's own mean and SD over all observed values are used.

**Compile cache.** The model's graph depends on the design shape only (T, p, q, the mean map M, eta and
the number of padded patterns, a power of two >= 8); the data and prior scales are ``pm.Data``. The first
fit of a shape in a process compiles; later fits call ``compiled.with_data`` and compile nothing.
Across processes (measured on this 2-core machine with 6 waves, under a load average of about 5):
with an empty PyTensor cache the compile took 205 s; a second process took 41-45 s, because PyTensor's
numba backend caches the kernels it generates on disk (``pytensor.config.numba__cache``, under
``<base_compiledir>/numba``, 12 MB here). The rest cannot be kept: nutpie wraps the logp in a
``numba.cfunc`` that closes over the model's data ("uses dynamic globals", so numba will not cache it),
and the ``CompiledModel`` does not pickle (pickle: a local function; cloudpickle: a generator). A
long-lived worker that fits many outcomes of one design is therefore the way to pay the compile once.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.errors import AnalysisInputError
from analysis.longitudinal import _check_threads
from analysis.mmrm.design import BASELINE, INTERCEPT, MMRMDesign, arm_column
from analysis.mmrm.likelihood import PaddedPatterns
from analysis.mmrm.results import MMRMPosterior
from analysis.results import Diagnostics
from schemas.results import LONG_RUN, Effect
from schemas.mmrm_stats import MMRMStatistics
from schemas.protocol import AnalysisPlan
from schemas.suffstats import InsufficientData


@dataclass(frozen=True, eq=False)
class Standardisation:
    """z* = A z, y* = c y + d'z, and the exact map back beta = scale_map @ beta* + shift (outcome units)."""

    z_map: np.ndarray
    y_scale: float
    y_from_z: np.ndarray
    outcome_mean: float
    outcome_sd: float
    beta_map: np.ndarray
    beta_shift: np.ndarray


def standardisation(stats: MMRMStatistics, design: MMRMDesign) -> Standardisation:
    """Centre and scale baseline and numeric covariates, centre and scale the outcome by the baseline's
    mean and SD (or the outcome's own without a baseline). A column is centred only when the intercept's
    term can absorb the shift (e.g. per-wave intercept), so that beta stays in the model's space."""
    zz = stats.z_crossproducts()
    n = zz[0, 0]
    cols = design.z_columns
    p = len(cols)
    if n < 2:
        raise InsufficientData("a standardised Bayesian MMRM", 2, n, "participants")
    if design.baseline:
        j = cols.index(BASELINE)
        mean = zz[0, j] / n
        var = (zz[j, j] - n * mean * mean) / (n - 1)
    else:  # the outcome's own moments over every observed value
        n_y = stats.n_obs
        s1 = sum(float(pat.szy[0].sum()) for pat in stats.patterns)
        s2 = sum(float(np.trace(pat.syy)) for pat in stats.patterns)
        mean = s1 / n_y
        var = (s2 - n_y * mean * mean) / (n_y - 1)
    if not var > 0:
        raise InsufficientData("an outcome scale (baseline SD) above zero", 2, n)
    sd = math.sqrt(var)
    m = design.mean_map()
    n_w = design.n_waves
    basis = lambda j: m[j * n_w:(j + 1) * n_w]  # noqa: E731  (T x q rows of column j)
    intercept_span = basis(0)[:, np.any(basis(0) != 0, axis=0)]

    def absorbable(j: int) -> bool:
        g = basis(j)[:, np.any(basis(j) != 0, axis=0)]
        resid = g - intercept_span @ np.linalg.lstsq(intercept_span, g, rcond=None)[0]
        return bool(np.allclose(resid, 0.0, atol=1e-10))

    a = np.eye(p)
    for j, col in enumerate(cols):
        if col == INTERCEPT or col.startswith("arm["):
            continue
        mu = zz[0, j] / n
        v = (zz[j, j] - n * mu * mu) / (n - 1)
        if not v > 0:
            raise AnalysisInputError(f"z-column {col!r} does not vary across participants; remove it from the design")
        a[j, j] = 1.0 / math.sqrt(v)
        if absorbable(j):
            a[j, 0] = -mu / math.sqrt(v)
    d = np.zeros(p)
    d[0] = -mean / sd
    # mean(y) = sd * B* A z + mean e0'z  =>  vec(B) = sd (A' (x) I) vec(B*) + mean vec(1 e0')
    lift = np.kron(a.T, np.eye(n_w))
    pinv = np.linalg.pinv(m)
    beta_map = sd * pinv @ lift @ m
    shift_vec = np.zeros(p * n_w)
    shift_vec[:n_w] = mean
    beta_shift = pinv @ shift_vec
    if not (np.allclose(m @ beta_map, sd * lift @ m, atol=1e-9 * sd) and np.allclose(m @ beta_shift, shift_vec, atol=1e-9 * max(1.0, abs(mean)))):
        raise AnalysisInputError("the standardisation does not map into the design's parameter space; give the "
                                 "intercept a per-wave or linear_time term")
    return Standardisation(a, 1.0 / sd, d, mean, sd, beta_map, beta_shift)


def _prior_sds(design: MMRMDesign, plan: AnalysisPlan) -> np.ndarray:
    pr = plan.priors
    arms = {arm_column(a) for a in design.treated}
    return np.array([pr.intercept_sd if col == INTERCEPT else pr.effect_sd if col in arms else pr.coefficient_sd
                     for col in design.coefficient_columns])


def _padded_data(std: MMRMStatistics, n_pad: int) -> dict[str, np.ndarray]:
    d = PaddedPatterns.of(std, fourth_order=False)
    k, n_w = d.mask.shape
    p = d.szz.shape[1]
    pad = n_pad - k
    return {  # padding patterns: no participants, every wave "observed", zero sums: they add nothing
        "n_participants": np.concatenate([d.n, np.zeros(pad)]),
        "mask": np.concatenate([d.mask, np.ones((pad, n_w))]),
        "szz": np.concatenate([d.szz, np.zeros((pad, p, p))]),
        "szy": np.concatenate([d.szy, np.zeros((pad, p, n_w))]),
        "syy": np.concatenate([d.syy, np.zeros((pad, n_w, n_w))]),
    }


def pattern_loglik(beta, sigma, data: dict[str, Any], mean_map: np.ndarray, n_z: int):
    """log p(y | beta, Sigma) up to its 2 pi constant, as a PyTensor expression of ``beta`` (q), ``sigma``
    (T x T) and the padded pattern data (module docstring)."""
    import pytensor.tensor as pt

    n_w = mean_map.shape[0] // n_z
    b = pt.dot(pt.as_tensor_variable(mean_map), beta).reshape((n_z, n_w)).T       # B, T x p
    mask = data["mask"]
    outer = mask[:, :, None] * mask[:, None, :]
    vstar = outer * sigma[None] + pt.eye(n_w)[None] * (1.0 - mask)[:, None, :]
    bszy = pt.einsum("tp,kps->kts", b, data["szy"]) * mask[:, :, None]
    resid = (data["syy"] - bszy - bszy.transpose(0, 2, 1)
             + pt.einsum("ta,kab,sb->kts", b, data["szz"], b) * outer)
    lv = pt.linalg.cholesky(vstar)
    logdet = 2.0 * pt.log(pt.diagonal(lv, axis1=1, axis2=2)).sum(axis=1)
    # tr(V^{-1} R) = tr(L^{-1} R L^{-T}) = sum((L^{-1} R) * L^{-1}) with L^{-1} from a triangular solve:
    # measured twice as fast per gradient as a general inverse (and its gradient) of V
    linv = pt.linalg.solve_triangular(lv, pt.broadcast_to(pt.eye(n_w), vstar.shape), lower=True)
    quad = pt.sum((linv @ resid) * linv, axis=(1, 2))
    return -0.5 * (pt.dot(data["n_participants"], logdet) + pt.sum(quad))


def _build_model(design: MMRMDesign, data: dict[str, np.ndarray], eta: float):
    import pymc as pm

    n_w = design.n_waves
    coords = {"coefficient": list(design.coefficient_names), "wave": list(design.waves)}
    with pm.Model(coords=coords) as model:
        dd = {k: pm.Data(k, v) for k, v in data.items()}
        beta = pm.Normal("beta_std", 0.0, dd["prior_sd"], dims="coefficient")
        chol, _, _ = pm.LKJCholeskyCov("chol", n=n_w, eta=eta,
                                       sd_dist=pm.HalfNormal.dist(dd["sigma_scale"], shape=n_w), compute_corr=True)
        pm.Potential("loglik", pattern_loglik(beta, chol @ chol.T, dd, design.mean_map(), len(design.z_columns)))
    return model


@dataclass
class _Compiled:
    compiled: Any
    compile_seconds: float


_COMPILE_CACHE: dict[tuple, _Compiled] = {}


def _compiled_model(design: MMRMDesign, data: dict[str, np.ndarray], eta: float) -> tuple[Any, float]:
    """Compile once per design shape; later fits swap the data (``with_data``)."""
    import nutpie

    m_hash = hashlib.sha256(design.mean_map().tobytes()).hexdigest()[:16]
    key = (design.n_waves, len(design.z_columns), len(design.coefficient_names), m_hash,
           data["mask"].shape[0], float(eta))
    hit = _COMPILE_CACHE.get(key)
    if hit is None:
        t0 = time.perf_counter()
        compiled = nutpie.compile_pymc_model(_build_model(design, data, eta))
        hit = _Compiled(compiled, time.perf_counter() - t0)
        _COMPILE_CACHE[key] = hit
        return hit.compiled, hit.compile_seconds
    return hit.compiled.with_data(**{k: v for k, v in data.items() if k in hit.compiled.shared_data}), 0.0


def fit_mmrm_bayes(stats: MMRMStatistics, design: MMRMDesign, plan: AnalysisPlan | None = None, *,
                   outcome: str = "outcome", direction: str = "higher_is_better", mcid: float | None = None,
                   rope: float | None = None, eta: float = 2.0, progress_bar: bool = False) -> MMRMPosterior:
    """Sample the Bayesian MMRM (module docstring) and summarise each arm-vs-control difference.

    ``plan`` supplies the priors, chains/draws/tune/seed, the interval level and the diagnostics gate
    (``schemas.protocol.AnalysisPlan``). ``direction`` (higher_is_better / lower_is_better) defines
    P(benefit); with an ``mcid`` (outcome units) each row also has P(benefit > MCID) and with a ``rope``
    half-width P(|effect| < rope). The result's ``diagnostics`` may have failed: check ``result.confirmatory``.
    """
    import nutpie

    plan = plan or AnalysisPlan()
    if direction not in ("higher_is_better", "lower_is_better"):
        raise AnalysisInputError(f"direction must be higher_is_better or lower_is_better, got {direction!r}")
    if (stats.z_columns, stats.waves) != (design.z_columns, design.waves):
        raise AnalysisInputError("the statistics do not belong to this design")
    _check_threads()
    std_map = standardisation(stats, design)
    std = stats.second_order().transformed(std_map.z_map, std_map.y_scale, std_map.y_from_z)
    n_pad = max(8, 1 << (len(std.patterns) - 1).bit_length())
    data = _padded_data(std, n_pad) | {"prior_sd": _prior_sds(design, plan),
                                       "sigma_scale": np.array(plan.priors.sigma_scale)}
    compiled, compile_seconds = _compiled_model(design, data, eta)
    t0 = time.perf_counter()
    # the low-rank modified mass matrix (nutpie) learns the posterior correlations between waves and between
    # beta and Sigma that a diagonal one cannot: measured ~7 leapfrog steps per draw instead of ~15
    idata = nutpie.sample(compiled, draws=plan.draws, tune=plan.tune, chains=plan.chains, seed=plan.seed,
                          progress_bar=progress_bar, cores=min(plan.chains, os.cpu_count() or 1),
                          low_rank_modified_mass_matrix=True)
    seconds = time.perf_counter() - t0
    diagnostics = Diagnostics.of(idata, ["beta_std", "chol"], plan, seconds)  # "chol": the packed free factor

    post = idata.posterior
    n_draw = post.sizes["chain"] * post.sizes["draw"]
    beta_std = np.asarray(post["beta_std"]).reshape(n_draw, -1)
    beta = beta_std @ std_map.beta_map.T + std_map.beta_shift[None, :]
    stds = np.asarray(post["chol_stds"]).reshape(n_draw, design.n_waves)
    corr = np.asarray(post["chol_corr"]).reshape(n_draw, design.n_waves, design.n_waves)
    sigma = std_map.outcome_sd**2 * stds[:, :, None] * corr * stds[:, None, :]

    level = plan.interval_level
    sign = 1.0 if direction == "higher_is_better" else -1.0
    effects = []
    for arm in design.treated:
        for wave, label in [*((w, w) for w in design.waves), (design.waves[-1], LONG_RUN)]:
            draws = beta @ design.arm_effect_weights(arm, wave)
            good = sign * draws
            effects.append(Effect(
                outcome=outcome, arm=arm, control=design.control, wave=label, estimate=float(draws.mean()),
                sd=float(draws.std(ddof=1)), lower=float(np.quantile(draws, (1 - level) / 2)),
                upper=float(np.quantile(draws, (1 + level) / 2)), interval_level=level,
                p_benefit=float(np.mean(good > 0)),
                p_above_mcid=None if mcid is None else float(np.mean(good > mcid)),
                p_in_rope=None if rope is None else float(np.mean(np.abs(draws) < rope)),
                direction=direction, method="bayes_mmrm_unstructured"))
    return MMRMPosterior(
        coefficient_names=design.coefficient_names, waves=design.waves, beta_mean=beta.mean(axis=0),
        beta_sd=beta.std(axis=0, ddof=1), sigma_mean=sigma.mean(axis=0), effects=tuple(effects),
        diagnostics=diagnostics, n_participants=stats.n_participants, n_obs=stats.n_obs,
        compile_seconds=compile_seconds, sampling_seconds=seconds, idata=idata)


__all__ = ["Standardisation", "fit_mmrm_bayes", "pattern_loglik", "standardisation"]
