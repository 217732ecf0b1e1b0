r"""Public tier: the noise-aware ANCOVA fitted only to DP-released statistics, in closed form.

The release publishes, per arm a and follow-up wave w, the paired moments of the participants with a baseline x and
a score y at w (centred at the public midpoint c of the outcome's bounds): T = (n, Sx, Sy, Sxx, Syy, Sxy), each with
independent Gaussian noise of a known SD (``privacy/release.py``). These are the sufficient statistics of the
per-wave ANCOVA with a common slope (Vickers & Altman 2001), so the public model is that ANCOVA on the released
statistics, with the noise in its variance (Bernstein & Sheldon 2018, "Differentially private Bayesian inference
for exponential families", NeurIPS: the noise is part of the likelihood of the released statistics; here its
Gaussian approximation, which at the study sizes Flourish releases is exact to the interval's precision):

    within-arm sums of squares, unbiased for the noise:  Wxx_a = Sxx_a - (Sx_a^2 - sd(Sx_a)^2) / n_a
                                                          Wyy_a = Syy_a - (Sy_a^2 - sd(Sy_a)^2) / n_a
                                                          Wxy_a = Sxy_a - Sx_a Sy_a / n_a
    pooled over arms, slope and residual variance:        b = Wxy / Wxx,  s^2 = (Wyy - b Wxy) / (sum n - A - 1)
    effect of arm a at w:                                 d_a = (ybar_a - ybar_c) - b (xbar_a - xbar_c)
    sampling variance (the trusted tier's ANCOVA):        V_s = s^2 (1/n_a + 1/n_c + (xbar_a - xbar_c)^2 / Wxx)
    noise variance (delta method, known noise SDs):       V_n = sum_j (d d_a / d T_j)^2 sd(T_j)^2
        d/dSy_g = +-1/n_g,  d/dSx_g = -+b/n_g,  d/dn_g = -+(ybar_g - b xbar_g)/n_g  (g = a, c),
        and through the slope, (xbar_a - xbar_c)^2 sum_k (sd(Sxy_k)^2 + b^2 sd(Sxx_k)^2) / Wxx^2.

Priors on the noise-inflated variances: the released second moments give unbiased estimates of the within-arm
baseline variance and of the residual variance, each with a known noise variance (Var(Wxx) = sum sd(Sxx_a)^2, and
Var(Wyy - b Wxy) = sum sd(Syy_a)^2 + b^2 sd(Sxy_a)^2, over the degrees of freedom squared). A score clipped to c +- h
has variance at most h^2, so each variance gets a uniform prior on (0, h^2] (h is public: the release states it) and
the model uses its posterior mean, the mean of the normal truncated to that range. With a well-determined variance
this is the estimate; when noise drives it below zero (small releases, small epsilon) it stays positive and
honest about how little is known, where a plug-in would fail (8 of 120 studies of 2,000 participants at epsilon 0.5
did, before). A release without its half-range (made before it was stated) keeps the plug-in and fails there.

The estimate's variance is V = V_s + V_n. The Bayesian rows are the conjugate normal posterior of d_a under the plan's
Normal(0, effect_sd) prior in baseline-SD units (``plan.priors``; with thousands of participants it barely moves the
estimate): posterior precision 1/V + 1/tau^2. No sampler runs, so there is nothing to diverge: the model that failed
its diagnostics on 12 of 12 realistic studies (issue 20) sampled 30 latent moments per outcome from a curved
likelihood; this one is the same ANCOVA in closed form. Only a cell with fewer than 3 released participants, or
(for a release that does not state its half-range) a variance the noise drives <= 0, cannot be fitted; the error
says which wave and what to change (a larger share of the budget, or narrower bounds).

The *naive* model (``noise_aware=False``) leaves V_n out: it treats the noisy statistics as exact and under-covers
(``tests/analysis/longitudinal/test_calibration.py``). :func:`width_ratio` gives sqrt(V / V_s), how much wider the
public interval is than the same ANCOVA's on the exact statistics; computed from released values only, it is
post-processing and costs no privacy (the release command prints it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from analysis.errors import AnalysisInputError, InsufficientData
from analysis.results import Diagnostics
from schemas.protocol import AnalysisPlan
from schemas.results import LONG_RUN, Effect
from schemas.suffstats import NoisyPairedMoments, PairedMoments

__all__ = ["PublicFitError", "PublicResult", "WaveFit", "fit_public", "fit_wave", "gaussian_mechanism_sd",
           "paired_moments_from_frame", "width_ratio"]


class PublicFitError(AnalysisInputError):
    """The released statistics cannot carry the public model (noise swamps a variance); the message says what to
    change."""


def gaussian_mechanism_sd(l2_sensitivity: float, epsilon: float, delta: float) -> float:
    """Noise SD of the classic Gaussian mechanism (Dwork & Roth 2014, Thm A.1):
    sigma = Delta_2 sqrt(2 ln(1.25 / delta)) / epsilon (stated for epsilon < 1; used here as the
    calibration reference at epsilon <= 1)."""
    if not (epsilon > 0 and 0 < delta < 1 and l2_sensitivity > 0):
        raise ValueError("need epsilon > 0, 0 < delta < 1, sensitivity > 0")
    return l2_sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


@dataclass(frozen=True)
class ArmEffect:
    """One arm's effect at one wave: the estimate, its sampling and noise variances (module docstring)."""

    arm: str
    wave: str
    estimate: float
    sampling_var: float
    noise_var: float
    n_arm: float
    n_control: float

    @property
    def se(self) -> float:
        return math.sqrt(self.sampling_var + self.noise_var)

    @property
    def width_ratio(self) -> float:
        """sqrt(V / V_s): the public interval's width over the same ANCOVA's on the exact statistics."""
        return math.sqrt((self.sampling_var + self.noise_var) / self.sampling_var)


@dataclass(frozen=True)
class WaveFit:
    """The ANCOVA of one wave on released cells: slope, residual variance, baseline SD and each arm's effect."""

    wave: str
    slope: float
    residual_var: float
    baseline_sd: float
    effects: tuple[ArmEffect, ...]


def fit_wave(cells: Mapping[str, NoisyPairedMoments], *, control: str, wave: str, outcome: str = "outcome",
             noise_aware: bool = True) -> WaveFit:
    """The noise-aware ANCOVA of one wave (module docstring). ``cells`` maps arm -> released cell at ``wave``."""
    if control not in cells or len(cells) < 2:
        raise AnalysisInputError(f"need the control arm {control!r} and at least one other arm at wave {wave}")
    arms = [control] + sorted(a for a in cells if a != control)
    c = {a: cells[a] for a in arms}
    small = [a for a in arms if not c[a].n >= 3]
    if small:
        raise InsufficientData(f"the released cells of {outcome} at {wave}", 3,
                               float(min(c[a].n for a in small)), "the released counts")
    n = {a: float(c[a].n) for a in arms}
    xbar = {a: c[a].sum_x / n[a] for a in arms}
    ybar = {a: c[a].sum_y / n[a] for a in arms}
    wxx = math.fsum(c[a].sum_xx - (c[a].sum_x ** 2 - c[a].noise_sd_sum_x ** 2) / n[a] for a in arms)
    wyy = math.fsum(c[a].sum_yy - (c[a].sum_y ** 2 - c[a].noise_sd_sum_y ** 2) / n[a] for a in arms)
    wxy = math.fsum(c[a].sum_xy - c[a].sum_x * c[a].sum_y / n[a] for a in arms)
    df = sum(n.values()) - len(arms) - 1
    fix = ("spend a larger share of the budget on this outcome's paired moments (a larger release, or a study with "
           "more participants) or declare narrower bounds for it")
    halves = {c[a].half_range for a in arms}
    h = halves.pop() if len(halves) == 1 else None
    vx_hat = wxx / (df + 1)  # the within-arm baseline variance
    vx_noise = math.fsum(c[a].noise_sd_sum_xx ** 2 for a in arms) / (df + 1) ** 2
    if h is not None:
        vx = _bounded_variance(vx_hat, vx_noise, h * h)
    elif vx_hat > 0:
        vx = vx_hat
    else:
        raise PublicFitError(f"the public model of {outcome} cannot be fitted at {wave}: the DP noise swamps the "
                             f"released baseline variance (within-arm sum of squares {wxx:.3g} <= 0); {fix}")
    wxx = vx * (df + 1)
    b = wxy / wxx
    s2_hat = (wyy - b * wxy) / df
    s2_noise = math.fsum(c[a].noise_sd_sum_yy ** 2 + b * b * c[a].noise_sd_sum_xy ** 2 for a in arms) / df ** 2
    if h is not None:
        s2 = _bounded_variance(s2_hat, s2_noise, h * h)
    elif s2_hat > 0:
        s2 = s2_hat
    else:
        raise PublicFitError(f"the public model of {outcome} cannot be fitted at {wave}: the DP noise swamps the "
                             f"released residual variance ({s2_hat:.3g} <= 0); {fix}")
    slope_noise_var = math.fsum(c[a].noise_sd_sum_xy ** 2 + b * b * c[a].noise_sd_sum_xx ** 2 for a in arms) / wxx ** 2
    effects = []
    for a in arms[1:]:
        dx = xbar[a] - xbar[control]
        est = (ybar[a] - ybar[control]) - b * dx
        v_s = s2 * (1 / n[a] + 1 / n[control] + dx * dx / wxx)
        v_n = 0.0
        if noise_aware:
            for g in (a, control):
                v_n += (c[g].noise_sd_sum_y ** 2 + b * b * c[g].noise_sd_sum_x ** 2
                        + (ybar[g] - b * xbar[g]) ** 2 * c[g].noise_sd_n ** 2) / n[g] ** 2
            v_n += dx * dx * slope_noise_var
        effects.append(ArmEffect(a, wave, est, v_s, v_n, n[a], n[control]))
    baseline_sd = math.sqrt(wxx / (sum(n.values()) - len(arms)))
    return WaveFit(wave, b, s2, baseline_sd, tuple(effects))


def _bounded_variance(estimate: float, noise_var: float, upper: float) -> float:
    """Posterior mean of a variance v under a uniform prior on (0, upper] (a value within c +- h has variance at most
    h^2) given an unbiased released estimate ~ N(v, noise_var): the mean of that normal truncated to the prior's
    support. With little noise it is the estimate; when the noise drives the estimate below zero, a positive value
    that says how little the release knows."""
    from scipy.stats import truncnorm

    if noise_var <= 0:
        return min(max(estimate, 1e-12 * upper), upper)
    sd = math.sqrt(noise_var)
    return float(truncnorm.mean((0.0 - estimate) / sd, (upper - estimate) / sd, loc=estimate, scale=sd))


def width_ratio(cells: Mapping[tuple[str, str], NoisyPairedMoments], *, control: str, wave: str) -> dict[str, float]:
    """Per treated arm, the public interval's width at ``wave`` over the same ANCOVA's on exact statistics
    (sqrt(V / V_s)), from released cells only (post-processing: no privacy cost). Raises PublicFitError or
    InsufficientData when the wave cannot be fitted."""
    fit = fit_wave({a: v for (a, w), v in cells.items() if w == wave}, control=control, wave=wave)
    return {e.arm: e.width_ratio for e in fit.effects}


@dataclass(frozen=True)
class PublicResult:
    outcome: str
    control: str
    arms: tuple[str, ...]
    waves: tuple[str, ...]
    effects: tuple[Effect, ...]
    diagnostics: Diagnostics
    noise_aware: bool
    fits: tuple[WaveFit, ...] = ()

    @property
    def confirmatory(self) -> bool:
        return self.diagnostics.passed and self.noise_aware

    def effect(self, arm: str, wave: str = LONG_RUN) -> Effect:
        for e in self.effects:
            if e.arm == arm and e.wave == wave:
                return e
        raise KeyError(f"no effect for arm {arm!r} at wave {wave!r}")

    def arm_effect(self, arm: str, wave: str = LONG_RUN) -> ArmEffect:
        """The frequentist estimate with its sampling and noise variances (``wave`` LONG_RUN: the last wave)."""
        wave = self.waves[-1] if wave == LONG_RUN else wave
        for f in self.fits:
            for e in f.effects:
                if e.arm == arm and e.wave == wave:
                    return e
        raise KeyError(f"no effect for arm {arm!r} at wave {wave!r}")


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
) -> PublicResult:
    """Fit the noise-aware (or, with ``noise_aware=False``, the naive) ANCOVA to released cells, wave by wave.

    ``cells`` maps (arm, wave) -> :class:`NoisyPairedMoments`; every arm must have a cell at every wave listed.
    The long-run effect is the effect at the last wave in ``waves``."""
    from scipy.stats import norm

    started = time.perf_counter()
    arms = [control] + sorted({a for a, _ in cells} - {control})
    if len(arms) < 2:
        raise AnalysisInputError(f"need the control arm {control!r} and at least one other arm in the cells")
    missing = [(a, w) for a in arms for w in waves if (a, w) not in cells]
    if missing:
        raise AnalysisInputError(f"released cells missing for {missing}")
    if not waves:
        raise AnalysisInputError(f"the release of {outcome} covers no follow-up wave")
    level = plan.interval_level
    method = "bayes_ancova_noise_aware" if noise_aware else "bayes_ancova_naive"
    fits, effects = [], []
    for w in waves:
        try:
            fits.append(fit_wave({a: cells[(a, w)] for a in arms}, control=control, wave=w, outcome=outcome,
                                 noise_aware=noise_aware))
        except (PublicFitError, InsufficientData) as exc:
            if w == waves[-1]:  # the long-run wave is the plan's estimand: without it the outcome fails
                raise
            # an earlier wave gets a small share of the budget (privacy/release.py): it may not be estimable alone
            effects += [Effect(outcome=outcome, arm=a, control=control, wave=w, method=method, tier="public",
                               interval_level=level, direction=direction, reason=str(exc)) for a in arms[1:]]
    z = float(norm.ppf(0.5 + level / 2))
    sign = 1.0 if direction == "higher_is_better" else -1.0
    for f in fits:
        tau = plan.priors.effect_sd * f.baseline_sd  # the prior's SD in outcome units (priors are in baseline SDs)
        for e in f.effects:
            v = e.sampling_var + e.noise_var
            precision = 1 / v + 1 / tau ** 2
            mean, sd = (e.estimate / v) / precision, 1 / math.sqrt(precision)
            good = sign * mean
            for label in ([f.wave, LONG_RUN] if f.wave == waves[-1] else [f.wave]):
                effects.append(Effect(
                    outcome=outcome, arm=e.arm, control=control, wave=label, method=method, tier="public",
                    estimate=mean, sd=sd, lower=mean - z * sd, upper=mean + z * sd, interval_level=level,
                    p_benefit=float(norm.cdf(good / sd)),
                    p_above_mcid=None if mcid is None else float(norm.cdf((good - mcid) / sd)),
                    p_in_rope=None if rope is None else float(norm.cdf((rope - mean) / sd) - norm.cdf((-rope - mean) / sd)),
                    # the released counts are noisy (DP); rounding them for the rows is post-processing
                    n_arm=max(0, int(round(e.n_arm))), n_control=max(0, int(round(e.n_control))), direction=direction,
                ))
    seconds = time.perf_counter() - started
    # closed form: no chains, so no R-hat, ESS or divergences to gate on
    diagnostics = Diagnostics(True, float("nan"), float("inf"), 0, (), seconds)
    return PublicResult(outcome, control, tuple(arms), tuple(waves), tuple(effects), diagnostics, noise_aware,
                        tuple(fits))


def paired_moments_from_frame(frame, *, value: str = "outcome") -> dict[tuple[str, str], PairedMoments]:
    """Per (arm, wave), sorted, the paired moments (x = ``baseline``, y = ``value``) of a long frame's rows with
    an outcome: the cells the privacy tier releases, for simulations and tests (the warehouse's reader is
    ``flows.statistics.paired_moments``)."""
    f = frame[["arm", "wave", value, "baseline"]]
    f = f[f[value].notna()].astype({"arm": str, "wave": str})
    return {(str(arm), str(wave)): PairedMoments.from_arrays(g["baseline"], g[value])
            for (arm, wave), g in sorted(f.groupby(["arm", "wave"], sort=True), key=lambda kv: kv[0])}

