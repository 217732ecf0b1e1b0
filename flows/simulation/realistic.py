r"""A realistic generative process for longitudinal wellbeing trials (issue 20, "Realistic simulation in tests").

``flows/simulation/field_study.py`` draws wellbeing as trait + independent occasion noise: compound symmetry,
no slopes, so a random-intercept model is exactly right for it and its tests cannot see what real data do to
the intervals. This process breaks each of those assumptions the way wellbeing panels do, and is cheap enough
to run hundreds of studies (pure numpy, deterministic for a seed, no files unless asked).

**Latent wellbeing** of participant i at wave t (months m_t since assignment, years y_t = m_t / 12), in units
of the baseline latent SD:

    eta_it = mu(m_t) + b0_i + b1_i y_t + e_it + h_i Delta_arm(m_t)

- b0_i, the stable level, has variance ``icc``, the share of baseline variance that is stable. It is *not*
  normal: a struggling minority (``struggling_fraction`` of participants, mean ``struggling_shift`` and SD
  ``struggling_sd`` in units of the standardised intercept) and a majority whose mean and SD are solved for so
  that the mixture has mean 0 and variance 1 before scaling by sqrt(icc): a long left tail, as in wellbeing
  samples where a minority screens positive for depression. ``age_loading`` of the standardised intercept is
  carried by age (a prognostic covariate, shown in the frames).
- b1_i, a random slope per year with SD ``slope_sd_per_year``, correlated ``intercept_slope_corr`` with the
  standardised intercept (negative: low starters improve more, the usual regression toward the person's level
  in growth models of wellbeing). Slopes make the covariance over waves grow and the correlation decay.
- e_it, occasion noise: AR(1) over *waves* with correlation ``ar_rho`` between consecutive waves, SD
  sqrt(1 - icc) sqrt(1 + ``noise_growth_per_year`` y_t): variance growing over time, the heteroscedasticity the
  compound-symmetric model cannot represent.
- mu(m) = ``trend_sd_units`` (1 - exp(-m / 3)): everyone drifts up a little after enrolment (regression to the
  mean of people who enrol when low; the same in every arm).
- Delta_arm(m) = peak x s(m) / max s, s(m) = (1 - exp(-m / rise)) (r + (1 - r) exp(-m / decay)): the effect
  rises over ``effect_rise_months``, peaks, then decays over ``effect_decay_months`` toward the share
  ``effect_retained`` of s's long-run value, so the long-run (final-wave) effect is below the peak.
  Peaks in latent SD units: guidance 0.25, candor 0.12 (instruments.md: effects of chatbot RCTs on wellbeing
  d about 0 to 0.3; the meta-analytic g = .32 for wellbeing was not significant, so the defaults sit inside
  the range rather than at its top).
- h_i >= 0, the person's responsiveness: max(0, 1 + ``effect_heterogeneity_sd`` Z) / E[.], mean 1 (the
  field-study simulator's multiplier, with Z independent of everything else here).

**Instruments** (as in ``field_study.py``: WHO-5 0..5 x 5 -> percent = 4 x raw, SWLS 1..7 x 5, Flourishing
Scale 1..7 x 8, PHQ-2 0..3 x 2). Each instrument's factor is f = c eta + sqrt(1 - c^2) v with c its correlation
with wellbeing (WHO-5 .9, SWLS .85, FS .85, PHQ-2 -.75) and v instrument-specific (half stable, half
occasion); each item loads .75 on f and is rounded and clipped to its response scale, so the scores are
bounded, lumpy and have floors and ceilings (and an internal consistency near the published alpha .85-.87).

**Missing data.** Everybody answers at baseline. Between waves a participant leaves for good (monotone drop-out)
with probability logit^-1(logit(h_t) - ``dropout_strength`` z + ``dropout_treated_log_odds`` [treated]) where z
is the participant's *last observed* primary score standardised by its population baseline mean and SD: MAR
(it depends on observed values and arm only). Still-enrolled participants skip a wave with probability
``skip_probability`` (intermittent, MCAR). Secondary outcomes are answered at the same visits, so their
missingness follows the primary's: MAR given the primary, which a secondary-only model does not condition on
(as in real trials; a known cause of bias in secondary analyses, not a feature to hide). Defaults give about
14% missing at one month and 29% at twelve (instruments.md: attrition about 18% in studies up to 8 weeks and
22% overall in a meta-analysis of 41 RCTs, rising with study length; this study runs a year).

**Truth** (:func:`truth`): the population intention-to-treat effect of each arm on each outcome at each wave,
E[score(arm) - score(control)] over participants, by Monte Carlo with common random numbers (one draw of every
latent and item variable, scored under every arm), with its Monte Carlo SE; the long-run effect is the final
wave's. It is a property of the parameters, not of a sample, and is cached.

**Outputs.** :func:`simulate_realistic` returns a :class:`RealisticStudy` held in memory: ``frame(outcome)``
is the long relation the MMRM and random-intercept statistics read (participant, arm, wave, y, baseline,
site, age), ``register`` puts it in a DuckDB connection, and ``write_landing`` writes consents, assignments and
responses in the landing contract of ``field_study.py`` (plus ``study.yaml`` and ``truth.json``) so the CLI can
ingest them. There are no withdrawals, telemetry or item-level skips here: the field-study simulator exercises
those; here the scores a warehouse computes from the landing files equal the in-memory ones exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flows.simulation.field_study import INSTRUMENTS, LOADING, InstrumentModel
from schemas.protocol import StudyProtocol, dump_protocol

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import pandas as pd

DAYS_PER_MONTH = 30.4375
OUTCOMES: dict[str, tuple[str, float, str]] = {  # outcome -> (instrument, multiplier of the item sum, direction)
    "who5.percent": ("who5", 4.0, "higher_is_better"),
    "swls.total": ("swls", 1.0, "higher_is_better"),
    "flourishing_scale.total": ("flourishing_scale", 1.0, "higher_is_better"),
    "phq2.total": ("phq2", 1.0, "lower_is_better"),
}
START = datetime(2026, 1, 5, tzinfo=timezone.utc)


@dataclass(frozen=True)
class ArmSpec:
    """An arm and its peak effect on latent wellbeing (baseline latent SD units; 0 for the control)."""

    name: str
    peak_sd_units: float = 0.0
    feature: str | None = None


@dataclass(frozen=True)
class WaveSpec:
    """A wave: its name, day since assignment and response window (days), as in the protocol."""

    name: str
    day: int
    window_days: int = 7

    @property
    def months(self) -> float:
        return self.day / DAYS_PER_MONTH


DEFAULT_ARMS = (ArmSpec("control"), ArmSpec("guidance", 0.25, "consented_guidance"),
                ArmSpec("candor", 0.12, "anti_sycophancy"))
DEFAULT_WAVES = (WaveSpec("baseline", 0, 7), WaveSpec("w2", 14, 4), WaveSpec("m1", 30, 7), WaveSpec("m3", 91, 10),
                 WaveSpec("m6", 182, 14), WaveSpec("m12", 365, 21))


@dataclass(frozen=True)
class RealisticParams:
    """Every knob of the process (module docstring for the model). Frozen and hashable: the truth is cached on it.

    Defaults and where they come from:

    - ``n_participants`` 4,000: the size of the studies in the issue's measurement.
    - ``arms``: control, guidance (peak 0.25), candor (peak 0.12): instruments.md, chatbot RCT effects d ~ 0-0.3.
      Allocation 1:1:1 in permuted blocks within ``sites``.
    - ``waves``: baseline, 2 weeks, 1, 3, 6, 12 months (the field-study protocol).
    - ``icc`` 0.6: share of baseline latent variance that is stable. Below WHO-5's two-week retest ICC .82 and
      SWLS's two-month retest .82 (instruments.md), which also hold two weeks' occasion variance as stable;
      over a year, stability is lower (the process gives a baseline-to-12-month correlation near .45).
    - ``slope_sd_per_year`` 0.35, ``intercept_slope_corr`` -0.3: chosen so that slopes matter at a year (their
      variance 0.12 vs the intercept's 0.6) without dominating; negative correlation: low starters improve more.
    - ``ar_rho`` 0.5 between consecutive waves; ``noise_growth_per_year`` 1.0 (occasion variance doubles over
      a year). Measured (WHO-5 percent, control arm, 30,000 participants): the residual SD given baseline grows
      from 15.2 at two weeks to 19.3 at twelve months (+27%), the population SD from 19.5 at baseline to 21.2
      (the 0..100 bounds hold it in), and the correlation with baseline falls from .61 at two weeks to .35.
    - ``struggling_fraction`` 0.12 at ``struggling_shift`` -2.2 (SD 0.5): a minority whose stable level sits near
      or below WHO-5's poor-wellbeing screen (<= 50%, Topp et al. 2015). Measured on 20,000 participants: the
      baseline WHO-5 percent has skewness -0.38 (-0.18 without the minority: the 0..100 bounds alone give some),
      1st percentile 8 (12 without), 32% at or below 50 and 9% at or below 28 ("likely depression").
    - ``effect_rise_months`` 1, ``effect_decay_months`` 4, ``effect_retained`` 0.6: peak near 3 months, 12-month
      effect about 0.8 x the peak.
    - ``effect_heterogeneity_sd`` 0.5: the field-study simulator's responsiveness spread.
    - ``trend_sd_units`` 0.1: a small common drift upward after enrolment.
    - ``dropout_hazards`` (per follow-up wave, at an average last score, control arm): 6%, 5%, 7%, 6%, 7%, with
      ``skip_probability`` 4%: about 14% missing at 1 month and 29% at 12 months (instruments.md: ~18% up to 8
      weeks, ~22% overall, rising with length). ``dropout_strength`` 0.5 log-odds per SD lower last observed
      score (a participant 2 SD below the mean leaves at about 2.7x the odds); ``dropout_treated_log_odds``
      -0.15 (treated participants stay slightly more, as in the field-study simulator).
    - ``age_loading`` 0.2: age (18-70, uniform) carries 4% of the stable level's variance (older, slightly higher).
    """

    n_participants: int = 4_000
    arms: tuple[ArmSpec, ...] = DEFAULT_ARMS
    waves: tuple[WaveSpec, ...] = DEFAULT_WAVES
    sites: tuple[str, ...] = ("north", "south")
    icc: float = 0.6
    slope_sd_per_year: float = 0.35
    intercept_slope_corr: float = -0.3
    ar_rho: float = 0.5
    noise_growth_per_year: float = 1.0
    trend_sd_units: float = 0.1
    struggling_fraction: float = 0.12
    struggling_shift: float = -2.2
    struggling_sd: float = 0.5
    age_loading: float = 0.2
    effect_rise_months: float = 1.0
    effect_decay_months: float = 4.0
    effect_retained: float = 0.6
    effect_heterogeneity_sd: float = 0.5
    dropout_hazards: tuple[float, ...] = (0.06, 0.05, 0.07, 0.06, 0.07)
    dropout_strength: float = 0.5
    dropout_treated_log_odds: float = -0.15
    skip_probability: float = 0.04
    specific_stable_share: float = 0.5
    instruments: tuple[InstrumentModel, ...] = tuple(INSTRUMENTS)
    item_loading: float = LOADING
    primary: str = "who5.percent"
    study_id: str = "flourish-realistic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", tuple(self.arms))
        object.__setattr__(self, "waves", tuple(self.waves))
        object.__setattr__(self, "dropout_hazards", tuple(float(h) for h in self.dropout_hazards))
        object.__setattr__(self, "instruments", tuple(self.instruments))
        if self.n_participants < 2 * len(self.arms):
            raise ValueError(f"n_participants must be at least {2 * len(self.arms)} (one block per arm pair)")
        if len(self.arms) < 2 or len({a.name for a in self.arms}) != len(self.arms):
            raise ValueError("the study needs a control and at least one other arm, with distinct names")
        if self.arms[0].peak_sd_units != 0:
            raise ValueError("the first arm is the control; its peak effect must be 0")
        days = [w.day for w in self.waves]
        if len(self.waves) < 2 or days[0] != 0 or days != sorted(set(days)):
            raise ValueError(f"waves need a baseline at day 0 and increasing days, got {days}")
        if len({w.name for w in self.waves}) != len(self.waves):
            raise ValueError("wave names must be distinct")
        if len(self.dropout_hazards) != len(self.waves) - 1:
            raise ValueError(f"dropout_hazards needs one probability per follow-up wave ({len(self.waves) - 1})")
        if not all(0 <= h < 1 for h in self.dropout_hazards) or not 0 <= self.skip_probability < 1:
            raise ValueError("drop-out hazards and the skip probability must be in [0, 1)")
        for name in ("icc", "item_loading"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0 <= self.struggling_fraction < 1:
            raise ValueError(f"struggling_fraction must be in [0, 1), got {self.struggling_fraction}")
        for name in ("effect_retained", "specific_stable_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("intercept_slope_corr", "ar_rho", "age_loading"):
            if not -1 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (-1, 1), got {getattr(self, name)}")
        for name in ("slope_sd_per_year", "noise_growth_per_year", "struggling_sd", "effect_heterogeneity_sd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.effect_rise_months <= 0 or self.effect_decay_months <= 0:
            raise ValueError("effect_rise_months and effect_decay_months must be > 0")
        _mixture(self)  # refuses a minority that cannot be balanced
        names = {i.name for i in self.instruments}
        missing = {inst for inst, _, _ in OUTCOMES.values()} - names
        if missing:
            raise ValueError(f"instruments {sorted(missing)} are needed for the outcomes {list(OUTCOMES)}")
        if self.primary not in OUTCOMES:
            raise ValueError(f"primary must be one of {list(OUTCOMES)}, got {self.primary!r}")

    # -- derived ----------------------------------------------------------------------------------
    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arms)

    @property
    def control(self) -> str:
        return self.arms[0].name

    @property
    def wave_names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.waves)

    @property
    def follow_up_waves(self) -> tuple[str, ...]:
        return self.wave_names[1:]

    @property
    def months(self) -> np.ndarray:
        return np.array([w.months for w in self.waves])

    def effect_shape(self, months: np.ndarray | float) -> np.ndarray:
        """s(m) / max s: 0 at assignment, 1 at the peak, ``effect_retained``-ish in the long run."""
        return _shape(np.asarray(months, dtype=float), self.effect_rise_months, self.effect_decay_months,
                      self.effect_retained)

    def with_(self, **changes: object) -> RealisticParams:
        """A copy with some parameters changed (e.g. ``params.with_(n_participants=1000)``)."""
        return replace(self, **changes)


def _shape(months: np.ndarray, rise: float, decay: float, retained: float) -> np.ndarray:
    def s(m: np.ndarray) -> np.ndarray:
        return (1 - np.exp(-m / rise)) * (retained + (1 - retained) * np.exp(-m / decay))

    grid = np.linspace(0.0, 120.0, 24_001)  # ten years at 0.15-day steps: the peak of s
    return s(months) / float(s(grid).max())


def _mixture(p: RealisticParams) -> tuple[float, float, float, float]:
    """(minority mean, minority SD, majority mean, majority SD) of the standardised intercept: mean 0, variance 1."""
    f, m_s, sd_s = p.struggling_fraction, p.struggling_shift, p.struggling_sd
    if f == 0:
        return 0.0, 1.0, 0.0, 1.0
    m_w = -f * m_s / (1 - f)
    within_w = (1 - f * (m_s**2 + sd_s**2) - (1 - f) * m_w**2) / (1 - f)
    if within_w <= 0.01:
        raise ValueError("the struggling minority is too far out or too wide for a unit-variance intercept; "
                         "reduce struggling_shift, struggling_sd or struggling_fraction")
    return m_s, sd_s, m_w, math.sqrt(within_w)


def _responsiveness_mean(h: float) -> float:
    """E[max(0, 1 + h Z)] for Z ~ N(0, 1) = Phi(1/h) + h phi(1/h) (1 when h = 0)."""
    if h == 0:
        return 1.0
    x = 1.0 / h
    return 0.5 * (1 + math.erf(x / math.sqrt(2))) + h * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


# ==============================================================================================
# The latent process and the instruments (shared by the studies and the truth)
# ==============================================================================================


@dataclass
class _Latent:
    """eta without arm effects (n x W), the responsiveness h (n), age (n) and the instruments' specific traits."""

    eta0: np.ndarray
    responsiveness: np.ndarray
    age: np.ndarray
    specific_trait: dict[str, np.ndarray]


def _draw_latent(p: RealisticParams, n: int, rng: np.random.Generator) -> _Latent:
    years = p.months / 12.0
    n_w = len(p.waves)
    m_s, sd_s, m_w, sd_w = _mixture(p)
    minority = rng.random(n) < p.struggling_fraction
    mix = np.where(minority, m_s + sd_s * rng.standard_normal(n), m_w + sd_w * rng.standard_normal(n))
    age = rng.uniform(18.0, 70.0, n)
    age_z = (age - 44.0) / (52.0 / math.sqrt(12.0))  # uniform(18, 70): mean 44, SD 15.0
    z0 = math.sqrt(1 - p.age_loading**2) * mix + p.age_loading * age_z  # standardised stable level
    b0 = math.sqrt(p.icc) * z0
    b1 = p.slope_sd_per_year * (p.intercept_slope_corr * z0
                                + math.sqrt(1 - p.intercept_slope_corr**2) * rng.standard_normal(n))
    sd_e = math.sqrt(1 - p.icc) * np.sqrt(1 + p.noise_growth_per_year * years)
    e = np.empty((n, n_w))
    e[:, 0] = sd_e[0] * rng.standard_normal(n)
    for t in range(1, n_w):  # AR(1) over waves with wave-specific SD: corr(e_s, e_t) = rho^|s - t|
        e[:, t] = p.ar_rho * sd_e[t] / sd_e[t - 1] * e[:, t - 1] + sd_e[t] * math.sqrt(1 - p.ar_rho**2) * rng.standard_normal(n)
    mu = p.trend_sd_units * (1 - np.exp(-p.months / 3.0))
    eta0 = mu[None, :] + b0[:, None] + b1[:, None] * years[None, :] + e
    h = np.clip(1 + p.effect_heterogeneity_sd * rng.standard_normal(n), 0, None) / _responsiveness_mean(p.effect_heterogeneity_sd)
    specific = {inst.name: rng.standard_normal(n) for inst in p.instruments}
    return _Latent(eta0, h, age, specific)


def _arm_effects(p: RealisticParams) -> np.ndarray:
    """Delta (arms x W) in latent SD units."""
    shape = p.effect_shape(p.months)
    return np.array([a.peak_sd_units * shape for a in p.arms])


@dataclass
class _ItemNoise:
    """The random draws of one instrument at one wave, kept so that several arms can be scored with them (CRN)."""

    occasion: np.ndarray  # n: the specific factor's occasion part
    items: np.ndarray  # n x k: item-specific noise


def _item_noise(inst: InstrumentModel, n: int, rng: np.random.Generator) -> _ItemNoise:
    return _ItemNoise(rng.standard_normal(n), rng.standard_normal((n, len(inst.items))))


def _answers(p: RealisticParams, inst: InstrumentModel, eta: np.ndarray, trait: np.ndarray, noise: _ItemNoise) -> np.ndarray:
    """Integer item answers (n x k) for latent wellbeing ``eta`` at one wave."""
    s = p.specific_stable_share
    v = math.sqrt(s) * trait + math.sqrt(1 - s) * noise.occasion
    f = inst.factor_corr * eta + math.sqrt(1 - inst.factor_corr**2) * v
    lam = p.item_loading
    cont = inst.center + inst.spread * (lam * f[:, None] + math.sqrt(1 - lam**2) * noise.items)
    return np.clip(np.rint(cont), inst.lo, inst.hi).astype(np.int8)


def _instrument(p: RealisticParams, name: str) -> InstrumentModel:
    return next(i for i in p.instruments if i.name == name)


# ==============================================================================================
# Truth by Monte Carlo with common random numbers
# ==============================================================================================


@dataclass(frozen=True)
class EffectTruth:
    """The population ITT effect of ``arm`` vs control on ``outcome`` at ``wave`` (outcome units) and its MC SE."""

    outcome: str
    arm: str
    wave: str
    effect: float
    mc_se: float


@dataclass(frozen=True)
class RealisticTruth:
    """True effects of a parameter set (see :func:`truth`); ``long_run`` rows are the final wave's."""

    params: RealisticParams = field(repr=False)
    draws: int
    seed: int
    effects: tuple[EffectTruth, ...]
    baseline_mean: tuple[tuple[str, float], ...]
    baseline_sd: tuple[tuple[str, float], ...]
    sd_by_wave: tuple[tuple[str, tuple[float, ...]], ...]  # control-arm population SD of each outcome at each wave

    def effect(self, outcome: str, arm: str, wave: str = "long_run") -> float:
        return self.row(outcome, arm, wave).effect

    def row(self, outcome: str, arm: str, wave: str = "long_run") -> EffectTruth:
        target = self.params.wave_names[-1] if wave == "long_run" else wave
        for e in self.effects:
            if (e.outcome, e.arm, e.wave) == (outcome, arm, target):
                return e
        raise KeyError(f"no true effect for {outcome!r}, arm {arm!r}, wave {wave!r}")

    def effect_d(self, outcome: str, arm: str, wave: str = "long_run") -> float:
        """The effect in baseline-SD units of the outcome (Cohen's d against the baseline SD)."""
        return self.effect(outcome, arm, wave) / dict(self.baseline_sd)[outcome]

    def as_json(self) -> dict:
        """What ``truth.json`` holds: effects per arm, outcome and wave, long-run effects, baseline SDs."""
        arms: dict[str, dict] = {}
        for a in self.params.arms[1:]:
            per = {o: {w: self.effect(o, a.name, w) for w in self.params.follow_up_waves} for o in OUTCOMES}
            arms[a.name] = {"feature": a.feature, "latent_peak_sd_units": a.peak_sd_units, "effects": per,
                            "long_run": {o: self.effect(o, a.name) for o in OUTCOMES},
                            "long_run_d": {o: self.effect_d(o, a.name) for o in OUTCOMES},
                            "mc_se_long_run": {o: self.row(o, a.name).mc_se for o in OUTCOMES}}
        return {"process": "flows.simulation.realistic", "control": self.params.control,
                "long_run_wave": self.params.wave_names[-1], "draws": self.draws, "seed": self.seed, "arms": arms,
                "baseline_mean": dict(self.baseline_mean), "baseline_sd": dict(self.baseline_sd),
                "sd_by_wave": {o: dict(zip(self.params.wave_names, sds, strict=True)) for o, sds in self.sd_by_wave},
                "note": "population ITT effects in outcome units by Monte Carlo with common random numbers; "
                        "d = effect / SD of the outcome at baseline"}


def truth(params: RealisticParams = RealisticParams(), draws: int = 400_000, seed: int = 7) -> RealisticTruth:
    """True ITT effects per outcome x arm x follow-up wave, by Monte Carlo with common random numbers.

    One population of ``draws`` participants (in chunks of 100,000) is drawn once; every arm's scores are computed
    from the same latent and item draws, so the difference of arm means has only the variance of the
    participant-level differences (small: the arms differ only through the effect), which gives the MC SE.
    Cached per parameter set (the study size and drop-out do not enter: the truth is the full population's)."""
    key = replace(params, n_participants=RealisticParams.n_participants, dropout_hazards=(0.0,) * len(params.dropout_hazards),
                  dropout_strength=0.0, dropout_treated_log_odds=0.0, skip_probability=0.0, study_id="truth")
    return replace(_truth(key, draws, seed), params=params)


@lru_cache(maxsize=16)
def _truth(params: RealisticParams, draws: int, seed: int) -> RealisticTruth:
    chunk = 100_000
    n_w, n_a = len(params.waves), len(params.arms)
    delta = _arm_effects(params)
    sums = {o: np.zeros((n_a, n_w)) for o in OUTCOMES}
    sq = {o: np.zeros((n_a, n_w)) for o in OUTCOMES}
    base = {o: np.zeros(n_w) for o in OUTCOMES}
    base_sq = {o: np.zeros(n_w) for o in OUTCOMES}
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20261206]))
    done = 0
    while done < draws:
        n = min(chunk, draws - done)
        lat = _draw_latent(params, n, rng)
        for t in range(n_w):
            noise = {inst.name: _item_noise(inst, n, rng) for inst in params.instruments}
            scores: dict[str, list[np.ndarray]] = {o: [] for o in OUTCOMES}
            for a in range(n_a):
                eta = lat.eta0[:, t] + lat.responsiveness * delta[a, t]
                answered = {name: _answers(params, _instrument(params, name), eta, lat.specific_trait[name], noise[name])
                            for name in noise}
                for o, (inst, mult, _) in OUTCOMES.items():
                    scores[o].append(mult * answered[inst].sum(axis=1, dtype=np.int64).astype(float))
            for o in OUTCOMES:
                ctrl = scores[o][0]
                base[o][t] += ctrl.sum()
                base_sq[o][t] += ctrl @ ctrl
                for a in range(1, n_a):
                    diff = scores[o][a] - ctrl
                    sums[o][a, t] += diff.sum()
                    sq[o][a, t] += diff @ diff
        done += n
    effects = []
    for o in OUTCOMES:
        for a in range(1, n_a):
            for t in range(1, n_w):
                mean = sums[o][a, t] / draws
                var = max(sq[o][a, t] / draws - mean**2, 0.0)
                effects.append(EffectTruth(o, params.arms[a].name, params.wave_names[t], float(mean),
                                           math.sqrt(var / draws)))
    mean_w = {o: base[o] / draws for o in OUTCOMES}
    sd_w = {o: np.sqrt(np.maximum(base_sq[o] / draws - mean_w[o] ** 2, 0.0) * draws / (draws - 1)) for o in OUTCOMES}
    return RealisticTruth(params, draws, seed, tuple(effects),
                          tuple((o, float(mean_w[o][0])) for o in OUTCOMES), tuple((o, float(sd_w[o][0])) for o in OUTCOMES),
                          tuple((o, tuple(float(s) for s in sd_w[o])) for o in OUTCOMES))


# ==============================================================================================
# One study
# ==============================================================================================


def _freeze(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class RealisticStudy:
    """One simulated study, in memory. Arrays are read-only; rows are participants, columns waves.

    ``scores[outcome]`` holds every participant's score at every wave with NaN where the wave was not observed
    (``observed``); ``answers[instrument]`` the item answers (participants x waves x items, also at unobserved
    waves, where nobody sees them). ``participant`` is 0..n-1; :attr:`participant_ids` are the raw ids written to
    landing files.
    """

    params: RealisticParams
    seed: int
    participant: np.ndarray
    arm_index: np.ndarray
    site: np.ndarray
    age: np.ndarray
    observed: np.ndarray
    scores: Mapping[str, np.ndarray]
    answers: Mapping[str, np.ndarray] = field(repr=False)

    @property
    def n_participants(self) -> int:
        return int(self.participant.size)

    @property
    def arm(self) -> np.ndarray:
        return np.array(self.params.arm_names)[self.arm_index]

    @property
    def participant_ids(self) -> np.ndarray:
        """Raw participant ids as a partner would send them (deterministic in the seed)."""
        return np.char.add(f"p{self.seed:x}-", np.char.zfill(self.participant.astype(str), 6))

    def missing_fraction(self) -> dict[str, float]:
        """Share of participants not observed at each wave."""
        return {w: float(1 - self.observed[:, t].mean()) for t, w in enumerate(self.params.wave_names)}

    def frame(self, outcome: str | None = None, *, include_missing: bool = False) -> pd.DataFrame:
        """The long relation of one outcome (default: the primary) at the follow-up waves: participant, arm, site,
        age, wave, months, y, baseline, one row per observed participant x follow-up wave (``include_missing``:
        every wave, y NaN where not observed). The baseline is the participant's own baseline score of the same
        outcome (observed for everyone). This is the contract of ``analysis.mmrm.pattern_statistics_sql`` and
        ``analysis.longitudinal.crossproducts_from_frame``."""
        import pandas as pd

        name = outcome or self.params.primary
        if name not in self.scores:
            raise KeyError(f"unknown outcome {name!r}; one of {list(self.scores)}")
        y = self.scores[name]
        n, n_w = y.shape
        follow = np.arange(1, n_w)
        rows_p = np.repeat(np.arange(n), n_w - 1)
        rows_t = np.tile(follow, n)
        keep = np.ones(rows_p.size, dtype=bool) if include_missing else self.observed[rows_p, rows_t]
        rows_p, rows_t = rows_p[keep], rows_t[keep]
        waves = np.array(self.params.wave_names)
        return pd.DataFrame({
            "participant": self.participant[rows_p],
            "arm": self.arm[rows_p],
            "site": self.site[rows_p],
            "age": self.age[rows_p],
            "wave": waves[rows_t],
            "months": self.params.months[rows_t],
            "y": y[rows_p, rows_t],
            "baseline": y[rows_p, 0],
        })

    def register(self, con: duckdb.DuckDBPyConnection, name: str, outcome: str | None = None) -> str:
        """Register :meth:`frame` of ``outcome`` in an open DuckDB connection as the view ``name``; returns the name."""
        con.register(name, self.frame(outcome))
        return name

    def write_landing(self, out: str | Path, *, truth_draws: int = 400_000) -> dict[str, object]:
        """Write ``landing/`` (consents, assignments, responses per wave), ``study.yaml`` and ``truth.json``
        under ``out``, in the landing contract of ``flows/simulation/field_study.py``; return a summary."""
        return _write_landing(self, Path(out), truth_draws)


def simulate_realistic(params: RealisticParams = RealisticParams(), seed: int = 0) -> RealisticStudy:
    """Draw one study of ``params`` (deterministic in ``seed``; independent streams for the design, the latent
    process, the items and the drop-out, so changing drop-out parameters leaves the scores unchanged)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 20261206, 1]).spawn(4)]
    design_rng, latent_rng, item_rng, dropout_rng = streams
    n, n_w, n_a = params.n_participants, len(params.waves), len(params.arms)
    # randomisation: permuted blocks of 2 x arms within site
    site_idx = design_rng.integers(0, len(params.sites), n)
    arm_idx = np.empty(n, dtype=np.int64)
    for s in range(len(params.sites)):
        idx = np.flatnonzero(site_idx == s)
        blocks = -(-idx.size // (2 * n_a))
        seq = np.concatenate([design_rng.permutation(np.repeat(np.arange(n_a), 2)) for _ in range(blocks)]) if blocks else np.array([], int)
        arm_idx[idx] = seq[: idx.size]
    lat = _draw_latent(params, n, latent_rng)
    eta = lat.eta0 + lat.responsiveness[:, None] * _arm_effects(params)[arm_idx]
    answers = {inst.name: np.empty((n, n_w, len(inst.items)), dtype=np.int8) for inst in params.instruments}
    for t in range(n_w):
        for inst in params.instruments:
            noise = _item_noise(inst, n, item_rng)
            answers[inst.name][:, t, :] = _answers(params, inst, eta[:, t], lat.specific_trait[inst.name], noise)
    full = {o: mult * answers[inst].sum(axis=2, dtype=np.int64).astype(float) for o, (inst, mult, _) in OUTCOMES.items()}
    observed = _response_pattern(params, full[params.primary], arm_idx, dropout_rng)
    scores = {o: _freeze(np.where(observed, s, np.nan)) for o, s in full.items()}
    return RealisticStudy(params, seed, _freeze(np.arange(n)), _freeze(arm_idx), _freeze(np.array(params.sites)[site_idx]),
                          _freeze(np.round(lat.age, 1)), _freeze(observed), scores,
                          {k: _freeze(v) for k, v in answers.items()})


@lru_cache(maxsize=64)
def _baseline_moments(p: RealisticParams, draws: int = 200_000, seed: int = 11) -> tuple[float, float]:
    """Population mean and SD of the primary score at baseline (Monte Carlo; the drop-out model's standardisation)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20261206, 3]))
    lat = _draw_latent(p, draws, rng)
    inst_name, mult, _ = OUTCOMES[p.primary]
    inst = _instrument(p, inst_name)
    score = mult * _answers(p, inst, lat.eta0[:, 0], lat.specific_trait[inst_name], _item_noise(inst, draws, rng)).sum(
        axis=1, dtype=np.int64)
    return float(score.mean()), float(score.std(ddof=1))


def _response_pattern(p: RealisticParams, primary: np.ndarray, arm_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Monotone MAR drop-out on the last observed primary score, plus MCAR intermittent skips."""
    n, n_w = primary.shape
    mean0, sd0 = _baseline_moments(p)  # the population's, fixed: a participant's drop-out depends on their own data only
    sign = 1.0 if OUTCOMES[p.primary][2] == "higher_is_better" else -1.0  # "lower" wellbeing = worse, whatever the scale
    observed = np.zeros((n, n_w), dtype=bool)
    observed[:, 0] = True
    enrolled = np.ones(n, dtype=bool)
    last = primary[:, 0].copy()
    treated = arm_idx > 0
    for t in range(1, n_w):
        z = sign * (last - mean0) / sd0
        h = p.dropout_hazards[t - 1]
        logit = math.log(h / (1 - h)) if h > 0 else -np.inf
        hazard = 1 / (1 + np.exp(-(logit - p.dropout_strength * z + p.dropout_treated_log_odds * treated)))
        enrolled &= rng.random(n) >= hazard
        observed[:, t] = enrolled & (rng.random(n) >= p.skip_probability)
        last = np.where(observed[:, t], primary[:, t], last)
    return observed


# ==============================================================================================
# Landing files
# ==============================================================================================


def protocol(params: RealisticParams = RealisticParams(), epsilon: float = 4.0) -> StudyProtocol:
    """The study protocol of a realistic study: its arms and waves, every instrument at every wave, the primary
    outcome at the final wave."""
    final = params.wave_names[-1]
    mcid = {"who5.percent": 10.0, "swls.total": 3.0, "flourishing_scale.total": 3.0, "phq2.total": 1.0}
    outcomes = [{"name": o, "instrument": inst, "wave": final, "direction": direction, "mcid": mcid[o]}
                for o, (inst, _, direction) in OUTCOMES.items()]
    primary = next(o for o in outcomes if o["name"] == params.primary)
    return StudyProtocol.model_validate({
        "study_id": params.study_id,
        "title": "Simulated realistic field study (flows.simulation.realistic)",
        "intended_use": "research",
        "arms": [{"name": a.name, "allocation": 1, "control": k == 0,
                  **({"features": {a.feature: True}} if a.feature else {}),
                  "description": "control" if k == 0 else f"peak latent effect {a.peak_sd_units} SD"}
                 for k, a in enumerate(params.arms)],
        "waves": [{"name": w.name, "day": w.day, "window_days": w.window_days,
                   "instruments": [i.name for i in params.instruments]} for w in params.waves],
        "primary_outcome": {**primary, "rope": 2.0} if params.primary == "who5.percent" else primary,
        "secondary_outcomes": [o for o in outcomes if o["name"] != params.primary],
        "privacy": {"epsilon": epsilon, "delta": 1e-6, "unit": "participant", "min_cell_size": 10,
                    "mechanism": "gaussian"},
        "analysis": {"effect_shape": "per_wave", "time_trend": "per_wave"},
        "strata": ["site"],
    })


def _write_landing(study: RealisticStudy, out: Path, truth_draws: int) -> dict[str, object]:
    # the landing line formats are defined once, in the field-study simulator
    from flows.simulation.field_study import OFFSETS, _consent_lines, _iso, _items_json, _prompts

    p = study.params
    land = out / "landing"
    land.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([study.seed, 20261206, 2]))
    n = study.n_participants
    pid = study.participant_ids
    offset = rng.choice(np.array([-300, 0, 60, 330]), size=n)  # participants' UTC offsets in minutes
    assigned = (np.datetime64(START.replace(tzinfo=None), "s")
                + rng.uniform(0, 60 * 86400, n).astype("timedelta64[s]"))
    granted = assigned - rng.uniform(600, 3 * 86400, n).astype("timedelta64[s]")
    consents = {"participant_id": pid, "consent_version": np.full(n, "2026.1"),
                "scopes_json": np.full(n, '["surveys","aggregate_release"]'), "granted_at": _iso(granted, offset),
                "withdrawn_at": np.full(n, None, dtype=object)}
    files: dict[str, list[str]] = {"consents.jsonl": _consent_lines(consents)}
    files["assignments.jsonl"] = [
        json.dumps({"participant_id": q, "study_id": p.study_id, "arm": a, "assigned_at": t, "stratum": s})
        for q, a, t, s in zip(pid, study.arm, _iso(assigned, offset), study.site, strict=True)]
    n_responses = 0
    # prompts (one per participant and wave; non-responders' expire) draw from a stream of their own, so the other
    # files of a seed are what they were; nobody answers late here and the protocol declares no window, so the
    # warehouse route analyses exactly the in-memory frames
    prng = np.random.default_rng(np.random.SeedSequence([study.seed, 20261206, 3]))
    zone_idx = np.searchsorted(OFFSETS, offset)
    never = np.zeros(n, dtype=bool)
    prompts: dict[str, list[str]] = {}
    for t, wave in enumerate(p.waves):
        who = np.flatnonzero(study.observed[:, t])
        jitter = rng.uniform(-wave.window_days / 2 if wave.day else 0, wave.window_days / 2 if wave.day else 1, who.size)
        instants = assigned[who] + ((wave.day + jitter) * 86400).astype("timedelta64[s]")
        when = _iso(instants, offset[who])
        answered_at = assigned.copy()
        answered_at[who] = instants
        _prompts(prng, prompts, wave.name, t, wave.day, wave.window_days, pid, offset, assigned, answered_at,
                 study.observed[:, t], never, assigned, zone_idx, late_share=0.0, study_id=p.study_id)
        files[f"prompts-{wave.name}.jsonl"] = prompts[wave.name]
        lines = []
        for inst in p.instruments:
            items = _items_json(inst.items, study.answers[inst.name][who, t, :].astype(np.int64), np.zeros((who.size, len(inst.items)), bool))
            # the response id is the partner's own (wave, instrument, row), never built from the raw participant id
            for k, q, ts, it in zip(who, pid[who], when, items, strict=True):
                lines.append('{"response_id":"r-%s-%s-%d","participant_id":"%s","study_id":"%s","instrument":"%s",'
                             '"instrument_version":"1","wave":"%s","submitted_at":"%s","items":%s}'
                             % (wave.name, inst.name, k, q, p.study_id, inst.name, wave.name, ts, it))
        files[f"responses-{wave.name}.jsonl"] = lines
        n_responses += len(lines)
    for name, lines in files.items():
        (land / name).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    (out / "study.yaml").write_text(dump_protocol(protocol(p)), encoding="utf-8")
    t_json = truth(p, draws=truth_draws).as_json()
    t_json |= {"seed": study.seed, "participants": n, "missing_fraction_by_wave": study.missing_fraction(),
               "parameters": _params_json(p)}
    (out / "truth.json").write_text(json.dumps(t_json, indent=2), encoding="utf-8")
    return {"participants": n, "responses": n_responses, "landing": str(land)}


def _params_json(p: RealisticParams) -> dict:
    d = asdict(p)
    d["instruments"] = [i.name for i in p.instruments]
    return d


__all__ = [
    "DEFAULT_ARMS",
    "DEFAULT_WAVES",
    "OUTCOMES",
    "ArmSpec",
    "EffectTruth",
    "RealisticParams",
    "RealisticStudy",
    "RealisticTruth",
    "WaveSpec",
    "protocol",
    "simulate_realistic",
    "truth",
]
