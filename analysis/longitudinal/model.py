r"""The PyMC model of the primary analysis, on standardised cross-products, and its compile cache.

The model is the marginal likelihood of :mod:`analysis.longitudinal.likelihood` written in PyTensor (a
``pm.Potential``), so PyMC (sampled with nutpie) sees only cross-product matrices. Priors come from
``plan.priors`` in units of the outcome's baseline SD: the model works on the outcome and baseline
standardised by the baseline's mean and SD (participant level) and covariates standardised by their row
mean and SD — an affine map of the columns, hence a linear map of the augmented cross-products
(:meth:`CrossProducts.transformed`, :func:`standardise`). Estimates are mapped back to outcome units
(:mod:`analysis.longitudinal.summarise`).

- time trend ``per_wave``: mu_w free; ``linear_months``: mu_w = alpha + slope * months_w;
- effect shape ``per_wave``: effect_{a,w} free; ``constant``: effect_{a,w} = delta_a;
  ``saturating``: effect_{a,w} = plateau_a (1 - exp(-months_w / rate_a)).

When every participant has a single follow-up row (e.g. a study whose second follow-up has not happened
yet) tau is not identified apart from sigma, and the model is fitted with tau = 0 (the ANCOVA); the result
reports tau as 0. With ``plan.random_slopes`` each participant also has a random slope on months (intercept
and slope correlated, G unstructured), on statistics grouped by time pattern
(:func:`analysis.longitudinal.likelihood.marginal_loglik_slopes`). Priors: slope SD
HalfNormal(sigma_scale / longest follow-up in months), (rho + 1) / 2 ~ Beta(2, 2), the LKJ(2) marginal.

Compiling the model with numba costs about 10-25 s and sampling it about 1 s, so one compiled model per
design and plan shape is kept (:func:`compiled_model`) and later fits swap their data in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.errors import AnalysisInputError, InsufficientData
from analysis.longitudinal.design import DesignSpec, LongitudinalStats
from schemas.protocol import AnalysisPlan
from schemas.suffstats import CrossProducts

__all__ = ["COMPILE_CACHE", "Standardisation", "build_model", "compiled_model", "model_data", "standardise"]


@dataclass(frozen=True)
class Standardisation:
    """Standardised cross-products and the map back to outcome units: beta = baseline_sd * (A beta_std + d).

    ``cross`` are the statistics of the standardised design and outcome; ``a_map`` (p x p) and ``d_map`` (p)
    give the original coefficients from the standardised ones; ``baseline_mean`` and ``baseline_sd`` are the
    participants' baseline moments (the outcome's unit of the priors)."""

    cross: CrossProducts
    a_map: np.ndarray = field(repr=False)
    d_map: np.ndarray = field(repr=False)
    baseline_mean: float
    baseline_sd: float

    def to_outcome_units(self, beta_std: np.ndarray) -> np.ndarray:
        """Draws (rows) of standardised coefficients as coefficients of the original design."""
        return self.baseline_sd * (beta_std @ self.a_map.T + self.d_map[None, :])


def standardise(stats: LongitudinalStats) -> Standardisation:
    """Centre and scale the baseline and covariates, scale the outcome by the baseline SD."""
    cross, spec = stats.cross, stats.spec
    cols = list(cross.columns)
    p = len(cols)
    mb, sb = stats.baseline.mean, stats.baseline.sd
    if not sb > 0:
        raise InsufficientData("a baseline SD above zero", 2, stats.baseline.n)
    wave_idx = [cols.index(f"wave[{w}]") for w in spec.waves]
    ones = np.zeros(p)
    ones[wave_idx] = 1.0  # X @ ones = 1 (the wave indicators sum to the intercept)
    col_sum = cross.xtx @ ones
    n = cross.n_obs
    # new X = X A, new y = y / sb - X d  (all as a (p+1) x (p+1) map of [X, y])
    a = np.eye(p)
    d = np.zeros(p)
    d[wave_idx] = mb / sb
    j_base = cols.index("baseline")
    a[j_base, j_base] = 1.0 / sb
    a[wave_idx, j_base] = -mb / sb
    for j, name in enumerate(cols):
        if name.startswith(("wave[", "arm[")) or name == "baseline":
            continue
        mean = col_sum[j] / n
        var = cross.xtx[j, j] / n - mean**2
        if not var > 0:
            raise AnalysisInputError(f"covariate column {name!r} does not vary; remove it from the plan")
        sd = math.sqrt(var)
        a[j, j] = 1.0 / sd
        a[wave_idx, j] = -mean / sd
    t = np.zeros((p + 1, p + 1))
    t[:p, :p] = a
    t[:p, p] = -d
    t[p, p] = 1.0 / sb
    return Standardisation(cross.transformed(t, cols), a, d, mb, sb)


@dataclass
class _Compiled:
    compiled: Any
    data_names: tuple[str, ...]


COMPILE_CACHE: dict[tuple, _Compiled] = {}
"""One compiled model per (design shape, plan shape, intercepts); the process's, never persisted."""


def param_layout(spec: DesignSpec, plan: AnalysisPlan) -> dict[str, int]:
    """How many trend, effect and other coefficients the plan's parameters have."""
    n_w, n_t = len(spec.waves), len(spec.treated)
    n_cov = len(spec.column_names()) - n_w - n_t * n_w - 1
    return {
        "trend": n_w if plan.time_trend == "per_wave" else 2,
        "effect": n_t * n_w if plan.effect_shape == "per_wave" else n_t,
        "coef": 1 + n_cov,
    }


def build_model(spec: DesignSpec, plan: AnalysisPlan, data: Mapping[str, np.ndarray], intercepts: bool = True):
    """The PyMC model over ``data`` (:func:`model_data`); ``intercepts=False`` fixes tau = 0."""
    import pymc as pm
    import pytensor.tensor as pt

    n_w, n_t = len(spec.waves), len(spec.treated)
    lay = param_layout(spec, plan)
    with pm.Model() as model:
        d = {k: pm.Data(k, v) for k, v in data.items()}
        months = d["months"]
        if plan.time_trend == "per_wave":
            trend = pm.Normal("trend", 0.0, d["intercept_sd"], shape=lay["trend"])
            mu_w = trend
        else:
            trend = pm.Normal("trend", 0.0, d["intercept_sd"], shape=2)
            mu_w = trend[0] + trend[1] * months
        if plan.effect_shape == "per_wave":
            eff = pm.Normal("effect_std", 0.0, d["effect_sd"], shape=n_t * n_w)
            eff_aw = eff
        elif plan.effect_shape == "constant":
            eff = pm.Normal("effect_std", 0.0, d["effect_sd"], shape=n_t)
            eff_aw = pt.repeat(eff, n_w)
        else:
            plateau = pm.Normal("effect_std", 0.0, d["effect_sd"], shape=n_t)
            rate = pm.LogNormal("rate_months", pt.log(d["rate_mean"]), 1.0, shape=n_t)
            eff_aw = (plateau[:, None] * (1.0 - pt.exp(-months[None, :] / rate[:, None]))).reshape((n_t * n_w,))
        coef = pm.Normal("coef", 0.0, d["coefficient_sd"], shape=lay["coef"])
        sigma = pm.HalfNormal("sigma_std", d["sigma_scale"])
        # with one follow-up row per participant tau is not identified apart from sigma: tau = 0 (ANCOVA)
        if not intercepts:
            beta = pt.concatenate([mu_w, eff_aw, coef])
            q_all = d["yty"] - 2.0 * pt.dot(beta, d["xty"]) + pt.dot(beta, pt.dot(d["xtx"], beta))
            pm.Potential("marginal_loglik", -0.5 * (d["n_obs"] * pt.log(sigma**2) + q_all / sigma**2))
            return model
        tau = pm.HalfNormal("tau_std", d["sigma_scale"])
        beta = pt.concatenate([mu_w, eff_aw, coef])
        s2, t2 = sigma**2, tau**2
        q_all = d["yty"] - 2.0 * pt.dot(beta, d["xty"]) + pt.dot(beta, pt.dot(d["xtx"], beta))
        if plan.random_slopes:
            # random intercepts and slopes on months (analysis.longitudinal.likelihood, "random intercepts and slopes")
            tau1 = pm.HalfNormal("tau_slope_std", d["slope_scale"])
            rho01 = pm.Beta("rho01", 2.0, 2.0)  # (rho + 1) / 2; the LKJ(eta = 2) marginal for 2 x 2
            rho = pm.Deterministic("rho", 2.0 * rho01 - 1.0)
            ga, gb, gc = t2, tau1**2, rho * tau * tau1
            m, st, stt = d["sm"], d["sst"], d["sstt"]
            h00, h01 = s2 + ga * m + gc * st, ga * st + gc * stt
            h10, h11 = gc * m + gb * st, s2 + gc * st + gb * stt
            det_h = h00 * h11 - h01 * h10
            a00 = (h11 * ga - h01 * gc) / det_h
            a01 = (h11 * gc - h01 * gb) / det_h
            a10 = (h00 * gc - h10 * ga) / det_h
            a11 = (h00 * gb - h10 * gc) / det_h
            b = pt.concatenate([-beta, pt.ones(1)])
            bb = pt.outer(b, b).reshape((-1,))  # b'W b = vec(W) . vec(b b'): one matrix-vector product
            q00 = pt.dot(d["w00"], bb)
            q01 = pt.dot(d["w01"], bb)
            q11 = pt.dot(d["w11"], bb)
            logdet = pt.sum(d["sk"] * ((m - 2.0) * pt.log(s2) + pt.log(det_h)))
            quad = (q_all - pt.sum(a00 * q00 + (a01 + a10) * q01 + a11 * q11)) / s2
            pm.Potential("marginal_loglik", -0.5 * (logdet + quad))
            return model
        c_m = t2 / (s2 + d["m"] * t2)
        q_m = d["syy"] - 2.0 * pt.dot(d["sxy"], beta) + pt.dot(pt.dot(d["sxx"], beta), beta)
        logdet = (d["n_obs"] - pt.sum(d["k"])) * pt.log(s2) + pt.sum(d["k"] * pt.log(s2 + d["m"] * t2))
        quad = (q_all - pt.sum(c_m * q_m)) / s2
        pm.Potential("marginal_loglik", -0.5 * (logdet + quad))
    return model


def model_data(std: CrossProducts, spec: DesignSpec, plan: AnalysisPlan) -> dict[str, np.ndarray]:
    """pm.Data values; groups padded to m = 1..W so array shapes depend on the design only."""
    p, n_w = len(std.columns), len(spec.waves)
    sxx = np.zeros((n_w, p, p))
    sxy = np.zeros((n_w, p))
    syy = np.zeros(n_w)
    k = np.zeros(n_w)
    for g in std.groups:
        if not 1 <= g.rows_per_participant <= n_w:
            raise AnalysisInputError(
                f"{g.n_participants} participants have {g.rows_per_participant} follow-up rows but the design has "
                f"{n_w} waves; each participant may contribute at most one row per wave"
            )
        i = g.rows_per_participant - 1
        sxx[i], sxy[i], syy[i], k[i] = g.sxsx, g.sxsy, g.sysy, g.n_participants
    pr = plan.priors
    slope_data: dict[str, np.ndarray] = {}
    if plan.random_slopes:
        if not std.slope_groups:
            raise AnalysisInputError("the plan has random slopes but the statistics lack slope groups; "
                                     "compute them with slopes=True")
        n_g = len(std.slope_groups)
        n_pad = max(8, 1 << (n_g - 1).bit_length())  # padded so a few more patterns do not recompile
        q = p + 1
        w00, w01, w11 = np.zeros((n_pad, q, q)), np.zeros((n_pad, q, q)), np.zeros((n_pad, q, q))
        sk, sm, sst, sstt = np.zeros(n_pad), np.ones(n_pad), np.zeros(n_pad), np.zeros(n_pad)
        for i, g in enumerate(std.slope_groups):
            w00[i], w01[i], w11[i] = g.w00, g.w01, g.w11
            sk[i], sm[i], sst[i], sstt[i] = g.n_participants, g.rows_per_participant, g.sum_t, g.sum_tt
        flat = lambda w: w.reshape(n_pad, q * q)  # noqa: E731
        slope_data = {"w00": flat(w00), "w01": flat(w01), "w11": flat(w11), "sk": sk, "sm": sm, "sst": sst, "sstt": sstt,
                      # a slope SD of sigma_scale per follow-up span (outcome-SD units per month)
                      "slope_scale": np.array(pr.sigma_scale / max(max(spec.months), 1e-9))}
    return slope_data | {
        "xtx": std.xtx, "xty": std.xty, "yty": np.array(std.yty), "n_obs": np.array(float(std.n_obs)),
        "sxx": sxx, "sxy": sxy, "syy": syy, "k": k, "m": np.arange(1, n_w + 1, dtype=float),
        "months": np.array(spec.months, dtype=float),
        "intercept_sd": np.array(pr.intercept_sd), "effect_sd": np.array(pr.effect_sd),
        "coefficient_sd": np.array(pr.coefficient_sd), "sigma_scale": np.array(pr.sigma_scale),
        "rate_mean": np.array(pr.rate_mean_months),
    }


def compiled_model(spec: DesignSpec, plan: AnalysisPlan, data: dict[str, np.ndarray], intercepts: bool = True):
    """Compile once per (design shape, plan shape); later fits swap data with ``with_data``
    (numba compilation costs ~10 s, sampling on the statistics ~1 s)."""
    import nutpie

    key = (len(spec.waves), len(spec.treated), len(spec.column_names()), plan.effect_shape, plan.time_trend,
           plan.random_slopes, data["w00"].shape[0] if plan.random_slopes else 0, intercepts)
    hit = COMPILE_CACHE.get(key)
    if hit is None:
        model = build_model(spec, plan, data, intercepts)
        hit = _Compiled(nutpie.compile_pymc_model(model), tuple(data))
        COMPILE_CACHE[key] = hit
        return hit.compiled
    # data the plan does not use (e.g. months for a per-wave model) were pruned from the compiled graph
    return hit.compiled.with_data(**{k: v for k, v in data.items() if k in hit.compiled.shared_data})
