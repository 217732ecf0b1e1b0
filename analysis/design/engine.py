r"""The design grid: simulated trials through the plan's primary analysis, summarised with Monte Carlo errors.

Performance measures and their Monte Carlo SEs follow Morris, White & Crowther 2019 (Stat Med 38:2074, Table 6):
for n_ok fitted trials with estimates theta_hat_i of the true theta,

    power / type I error / coverage  p            SE sqrt(p (1 - p) / n_ok)
    bias = mean(theta_hat) - theta                SE sd(theta_hat) / sqrt(n_ok)
    RMSE = sqrt(mean((theta_hat - theta)^2))      SE sqrt(var((theta_hat - theta)^2) / (4 n_ok MSE))   (delta method)

Failures (the plan's fit returned a failure, e.g. not converged) are counted apart and left out of every rate: a
failed analysis is neither a rejection nor a non-rejection (what simr's users ask for, simr #161: its power counts
a failed fit as a non-rejection).

The divergence-monitor scenarios (:func:`simulate_monitor`) simulate the primary outcome's MMRM rows (the same
``fit_primary_mmrm``) and an engagement metric's CUPED rows (``analysis.cuped.cuped_effects``, what the plan calls)
and hand both to ``analysis.divergence.divergence_monitor``, the monitor ``run_plan`` runs.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from analysis.design.analytic import analytic_power, analytic_se
from analysis.design.statistics import covariance, draw_mmrm_statistics, pattern_probabilities, wishart
from analysis.errors import AnalysisInputError
from schemas.protocol import DesignSettings, StudyProtocol
from schemas.results import LONG_RUN

__all__ = ["CellSummary", "DesignAssumptions", "DesignResult", "MonitorSummary", "PublicCellSummary", "run_design",
           "simulate_cell", "simulate_monitor", "simulate_public"]


@dataclass(frozen=True)
class DesignAssumptions:
    """What a simulated trial is drawn from: the protocol's primary outcome, its baseline SD (outcome units) and the
    design section's covariance and effect shape. Built by :meth:`of`."""

    protocol: StudyProtocol = field(repr=False)
    outcome_sd: float
    settings: DesignSettings
    arms: tuple[str, ...]
    waves: tuple[str, ...]
    months: tuple[float, ...]  # baseline first
    notes: tuple[str, ...] = ()
    outcome_mean: float = 0.0  # the baseline mean (the MMRM does not depend on it; the DP release's clipping does)

    @classmethod
    def of(cls, protocol: StudyProtocol, outcome_sd: float, outcome_mean: float = 0.0) -> DesignAssumptions:
        from analysis.plan import followup_waves

        settings = protocol.design or DesignSettings()
        o = protocol.primary_outcome
        if o.mcid is None:
            raise AnalysisInputError(f"the primary outcome {o.name} has no mcid: the design's effects are multiples "
                                     "of the preregistered minimal important difference")
        waves = tuple(followup_waves(protocol, o))
        if len(waves) < 2 or protocol.analysis.primary_model(len(waves)) != "mmrm":
            raise AnalysisInputError("flourish design simulates the MMRM primary analysis: the plan must fit an MMRM "
                                     f"(per-wave effects and trend, two or more follow-up waves); it has {list(waves)}")
        notes = []
        plan = protocol.analysis
        update = {}
        if plan.covariates:
            notes.append(f"the plan's covariates {plan.covariates} are not simulated (the design adjusts for the "
                         "baseline only)")
            update["covariates"] = []
        if plan.mmrm_bayesian:
            notes.append("the Bayesian MMRM is not simulated (a sampler per trial); the REML Kenward-Roger rows are")
            update["mmrm_bayesian"] = False
        if update:
            protocol = protocol.model_copy(update={"analysis": plan.model_copy(update=update)})
        control = protocol.control_arm
        arms = (control, *[a for a in protocol.arm_names if a != control])
        months = (protocol.wave(protocol.baseline_wave).months, *[protocol.wave(w).months for w in waves])
        return cls(protocol, float(outcome_sd), settings, arms, waves, months, tuple(notes), float(outcome_mean))

    @property
    def alpha(self) -> float:
        return 1.0 - self.protocol.analysis.interval_level

    @property
    def sign(self) -> float:
        return 1.0 if self.protocol.primary_outcome.direction == "higher_is_better" else -1.0

    def sigma(self) -> np.ndarray:
        s = self.settings
        rel = np.asarray(self.months) - self.months[0]
        return covariance(self.outcome_sd, s.icc, s.variance_growth_per_year, s.serial_correlation, rel)

    def effect_path(self, effect: float) -> np.ndarray:
        """The arm's mean over (baseline, follow-ups) for a long-run effect ``effect`` (outcome units)."""
        rel = np.asarray(self.months[1:]) - self.months[0]
        rise = self.settings.effect_rise_months
        shape = 1.0 - np.exp(-rel / rise) if rise > 0 else np.ones_like(rel)
        return self.outcome_mean + np.concatenate([[0.0], effect * shape / shape[-1]])

    def n_per_arm(self, n: int) -> dict[str, int]:
        alloc = {a.name: a.allocation for a in self.protocol.arms}
        base = alloc[self.arms[0]]
        return {a: int(round(n * alloc[a] / base)) for a in self.arms}

    def analytic(self, n: int, attrition: float, effect: float) -> tuple[float, float, float]:
        """(SE, df, power) of the first treated arm's long-run effect, covariance known (:mod:`.analytic`)."""
        pp = pattern_probabilities(len(self.waves), attrition)
        counts = self.n_per_arm(n)
        se = analytic_se(counts, self.arms, self.sigma(), pp, self.arms[1])
        df = sum(counts.values()) * pp[-1] - 2 - (len(self.arms) - 1)
        return se, df, analytic_power(effect, se, self.alpha, df)

    def analytic_detection(self, n: int, attrition: float, engagement_sd: float, flourishing_sd: float) -> float:
        """The divergence IUT's detection probability with known SEs, normal reference: the product of the two
        one-sided powers (the engagement and flourishing estimates are independent: separate models, separate
        data), engagement by CUPED (variance (1 - r^2) per participant, r the pre-period correlation)."""
        from scipy import stats as st

        counts = self.n_per_arm(n)
        margin = float(self.protocol.primary_outcome.margin)
        harm = -flourishing_sd * self.outcome_sd  # against the good direction
        se = self.analytic(n, attrition, 0.0)[0]
        z = st.norm.ppf(1 - self.alpha)
        r = self.settings.engagement_pre_correlation
        eng_se = math.sqrt((1 - r**2) * (1 / counts[self.arms[0]] + 1 / counts[self.arms[1]]))
        return float(st.norm.sf(z - engagement_sd / eng_se) * st.norm.sf(z - (harm - margin) / se))

    def monitor_n(self, attrition: float, target: float = 0.8) -> int:
        """The smallest N per arm at which the monitor detects the design's divergence scenario with ``target``
        probability (analytic), or 10,000,000 when the harm is within the margin (it never will)."""
        s = self.settings
        n = 4
        while self.analytic_detection(n, attrition, s.engagement_effect_sd, -s.harm_effect_sd) < target:
            if n >= 10_000_000:
                return n
            n = n + max(1, n // 20)
        return n

    def planned_n(self, attrition: float) -> int:
        """The planned N per arm: the design section's, else the smallest with analytic power >= target at 1 MCID."""
        if self.settings.planned_participants_per_arm:
            return self.settings.planned_participants_per_arm
        effect, n = self.protocol.primary_outcome.mcid, 4
        while self.analytic(n, attrition, effect)[2] < self.settings.target_power and n < 10_000_000:
            n = n + max(1, n // 20)
        return n


def _fit_rows(a: DesignAssumptions, stats) -> tuple[list, str | None]:
    """The plan's MMRM rows of one simulated trial (``analysis.plan.fit_primary_mmrm``), or its failure."""
    from analysis import plan

    o = a.protocol.primary_outcome
    s = plan.OutcomeStatistics(outcome=o.name, observed_waves=a.waves, longitudinal=plan.Unavailable("design"),
                               mmrm=stats)
    _, rows, failure = plan.fit_primary_mmrm(s, o, a.protocol, list(a.arms[1:]), False)
    return rows, failure


def _seed(seed: int, *key: float) -> np.random.Generator:
    """A generator per grid cell from the design seed and the cell's coordinates: a cell's draws do not depend on
    which other cells the grid holds."""
    digest = hashlib.sha256(repr([float(k) for k in key]).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence([int(seed), int.from_bytes(digest[:8], "little")]))


@dataclass(frozen=True)
class CellSummary:
    """One grid cell's operating characteristics (first treated arm, long-run wave, the plan's primary rows)."""

    participants_per_arm: int
    attrition: float
    effect_mcid_multiple: float
    true_effect: float
    nsim: int
    n_failed: int
    failure_rate: float
    rejection_rate: float           # any rejection at alpha (two-sided): the type I error when the effect is 0
    rejection_rate_mcse: float
    power: float                    # rejection in the good direction
    power_mcse: float
    bias: float
    bias_mcse: float
    rmse: float
    rmse_mcse: float
    coverage: float
    coverage_mcse: float
    mean_se: float
    analytic_se: float
    analytic_power: float
    trials_per_second: float
    failures: tuple[str, ...] = ()  # up to three distinct reasons

    def record(self) -> dict:
        return asdict(self)


def simulate_cell(a: DesignAssumptions, n: int, attrition: float, multiple: float, nsim: int, seed: int,
                  on_trial: Callable[[], None] | None = None) -> CellSummary:
    from analysis.plan import mmrm_method

    o = a.protocol.primary_outcome
    effect = a.sign * multiple * float(o.mcid)
    rng = _seed(seed, n, attrition, multiple)
    sigma, pp = a.sigma(), pattern_probabilities(len(a.waves), attrition)
    means = {arm: a.effect_path(effect if arm != a.arms[0] else 0.0) for arm in a.arms}
    counts = a.n_per_arm(n)
    from analysis.plan import mmrm_design

    z_columns = mmrm_design(a.protocol, a.waves).z_columns
    method, arm = mmrm_method(a.protocol.analysis), a.arms[1]
    est, lo, hi, pv, se = [], [], [], [], []
    failures: list[str] = []
    t0 = time.perf_counter()
    for _ in range(nsim):
        stats = draw_mmrm_statistics(rng, counts, a.arms, means, sigma, pp, a.waves, z_columns)
        rows, failure = _fit_rows(a, stats)
        if on_trial:
            on_trial()
        if failure is not None:
            failures.append(failure)
            continue
        r = next(r for r in rows if r.arm == arm and r.wave == LONG_RUN and r.method == method)
        est.append(r.estimate), lo.append(r.lower), hi.append(r.upper), pv.append(r.p_value), se.append(r.sd)
    seconds = time.perf_counter() - t0
    e, p = np.asarray(est), np.asarray(pv)
    k = e.size
    nan = float("nan")

    def rate(x: np.ndarray) -> tuple[float, float]:
        m = float(x.mean()) if k else nan
        return m, math.sqrt(m * (1 - m) / k) if k else nan

    rej, rej_se = rate(p < a.alpha)
    pw, pw_se = rate((p < a.alpha) & (a.sign * e > 0))
    cov, cov_se = rate((np.asarray(lo) <= effect) & (effect <= np.asarray(hi)))
    err = e - effect
    mse = float(np.mean(err**2)) if k else nan
    an_se, _, an_power = a.analytic(n, attrition, effect)
    return CellSummary(
        participants_per_arm=n, attrition=attrition, effect_mcid_multiple=multiple, true_effect=effect, nsim=nsim,
        n_failed=len(failures), failure_rate=len(failures) / nsim, rejection_rate=rej, rejection_rate_mcse=rej_se,
        power=pw, power_mcse=pw_se, bias=float(err.mean()) if k else nan,
        bias_mcse=float(e.std(ddof=1) / math.sqrt(k)) if k > 1 else nan, rmse=math.sqrt(mse),
        rmse_mcse=float(math.sqrt(np.var(err**2, ddof=1) / (4 * k * mse))) if k > 1 and mse > 0 else nan,
        coverage=cov, coverage_mcse=cov_se, mean_se=float(np.mean(se)) if k else nan, analytic_se=an_se,
        analytic_power=an_power, trials_per_second=nsim / seconds if seconds > 0 else nan,
        failures=tuple(dict.fromkeys(failures))[:3])


# ----------------------------------------------------------------------------------------------
# The divergence monitor in simulation
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MonitorSummary:
    """How often the divergence monitor (``analysis.divergence``) flags a scenario, at the final wave and at any
    wave, with Monte Carlo SEs; indeterminate checks and failed fits are counted apart."""

    scenario: str
    participants_per_arm: int
    attrition: float
    engagement_effect_sd: float
    flourishing_effect_sd: float      # in the outcome's good direction (negative: harm)
    margin_sd: float                  # the outcome's non-inferiority margin in baseline SD units
    suppressed_final_wave: bool
    nsim: int
    n_failed: int
    divergence_rate_final: float
    divergence_rate_final_mcse: float
    divergence_rate_any_wave: float
    indeterminate_rate_final: float
    analytic_detection_final: float   # (1 - beta_E)(1 - beta_H) with the known-covariance SE, normal reference

    def record(self) -> dict:
        return asdict(self)


def _cuped_cells(rng: np.random.Generator, counts: dict[str, int], shift: dict[str, float], corr: float):
    """Per arm, the (pre-period, in-study) moments of an engagement metric with unit SD: bivariate normal sums."""
    from schemas.suffstats import PairedMoments

    chol = np.linalg.cholesky(np.array([[1.0, corr], [corr, 1.0]]))
    cells = {}
    for arm, n in counts.items():
        mu = np.array([0.0, shift[arm]])
        s1 = n * mu + math.sqrt(n) * chol @ rng.standard_normal(2)
        s2 = wishart(rng, n - 1, chol) + np.outer(s1, s1) / n
        cells[arm] = PairedMoments(n, float(s1[0]), float(s1[1]), float(s2[0, 0]), float(s2[1, 1]), float(s2[0, 1]))
    return cells


def simulate_monitor(a: DesignAssumptions, scenario: str, n: int, attrition: float, engagement_sd: float,
                     flourishing_sd: float, nsim: int, seed: int, *, suppress_final: bool = False) -> MonitorSummary:
    """The monitor's verdicts on ``nsim`` simulated trials: every treated arm raises engagement by ``engagement_sd``
    and moves the primary outcome by ``flourishing_sd`` baseline SDs in its good direction (negative: harm) at
    every follow-up wave; ``suppress_final`` drops the final wave's flourishing rows (a suppressed release)."""
    from analysis.cuped import cuped_effects
    from analysis.divergence import DIVERGENCE, INDETERMINATE, divergence_monitor
    from analysis.plan import mmrm_design, mmrm_method
    from scipy import stats as st

    protocol = a.protocol.model_copy(update={"secondary_outcomes": []})  # the primary outcome is simulated
    metrics = protocol.engagement_metrics()
    if not metrics:
        raise AnalysisInputError("the divergence monitor needs an engagement metric (a telemetry surrogate)")
    o = protocol.primary_outcome
    margin = float(o.margin)
    effect = a.sign * flourishing_sd * a.outcome_sd
    rng = _seed(seed, n, attrition, engagement_sd, flourishing_sd, float(suppress_final))
    sigma, pp = a.sigma(), pattern_probabilities(len(a.waves), attrition)
    means = {arm: a.outcome_mean + (np.concatenate([[0.0], np.full(len(a.waves), effect)]) if arm != a.arms[0]
                                    else np.zeros(len(a.months))) for arm in a.arms}
    counts = a.n_per_arm(n)
    z_columns = mmrm_design(protocol, a.waves).z_columns
    method = mmrm_method(protocol.analysis)
    shift = {arm: (engagement_sd if arm != a.arms[0] else 0.0) for arm in a.arms}
    final, arm = a.waves[-1], a.arms[1]
    n_div_final = n_div_any = n_ind = failed = 0
    for _ in range(nsim):
        stats = draw_mmrm_statistics(rng, counts, a.arms, means, sigma, pp, a.waves, z_columns)
        rows, failure = _fit_rows(a, stats)
        if failure is not None:
            failed += 1
            continue
        if suppress_final:
            rows = [r for r in rows if r.wave not in (final, LONG_RUN)]
        cells = _cuped_cells(rng, counts, shift, a.settings.engagement_pre_correlation)
        eng = []
        for m in metrics:
            eng += [c.effect for c in cuped_effects(cells, control=a.arms[0], metric=m.name,
                                                    wave=f"first_{m.window_days}_days",
                                                    interval_level=protocol.analysis.interval_level)]
        status = divergence_monitor(rows + eng, protocol, waves={o.name: list(a.waves)}, methods={o.name: method})
        mine = [s for s in status if s.arm == arm and s.metric == metrics[0].name]
        n_div_final += any(s.status == DIVERGENCE for s in mine if s.wave == final)
        n_div_any += any(s.status == DIVERGENCE for s in mine)
        n_ind += any(s.status == INDETERMINATE for s in mine if s.wave == final)
    k = nsim - failed
    rate = n_div_final / k if k else float("nan")
    detect = 0.0 if suppress_final else a.analytic_detection(n, attrition, engagement_sd, flourishing_sd)
    return MonitorSummary(
        scenario=scenario, participants_per_arm=n, attrition=attrition, engagement_effect_sd=engagement_sd,
        flourishing_effect_sd=flourishing_sd, margin_sd=margin / a.outcome_sd, suppressed_final_wave=suppress_final,
        nsim=nsim, n_failed=failed, divergence_rate_final=rate,
        divergence_rate_final_mcse=math.sqrt(rate * (1 - rate) / k) if k else float("nan"),
        divergence_rate_any_wave=n_div_any / k if k else float("nan"),
        indeterminate_rate_final=n_ind / k if k else float("nan"), analytic_detection_final=detect)


# ----------------------------------------------------------------------------------------------
# The public tier: the noise-aware model on DP-noised statistics
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicCellSummary:
    """The public tier's long-run row (``analysis.plan.run_public_plan``: the noise-aware model on the DP release)
    at one epsilon: power (the interval excludes 0 in the good direction), coverage, bias, RMSE, mean interval
    width, with Monte Carlo SEs; failures (refused or failed diagnostics) apart."""

    epsilon: float
    release_share: float
    participants_per_arm: int
    attrition: float
    effect_mcid_multiple: float
    true_effect: float
    nsim: int
    n_failed: int
    failure_rate: float
    power: float
    power_mcse: float
    coverage: float
    coverage_mcse: float
    bias: float
    bias_mcse: float
    rmse: float
    mean_interval_width: float
    noise_sd_sum_y: float  # the noise SD of one cell's sum of the outcome, for scale
    failures: tuple[str, ...] = ()

    def record(self) -> dict:
        return asdict(self)


def simulate_public(a: DesignAssumptions, epsilon: float, release_share: float,
                    noise_sd: Callable[[str, str, str], float], n: int, attrition: float, multiple: float, nsim: int,
                    seed: int, *, center: float = 0.0, half_range: float | None = None,
                    fit: Callable[..., Any] | None = None) -> PublicCellSummary:
    """``nsim`` trials whose per-arm x wave paired moments get the DP release's Gaussian noise (``noise_sd(arm, wave,
    statistic)``, computed by the caller with the release code, ``privacy.release``; the moments centred at the
    release's ``center``, as it releases them) and are analysed by
    ``analysis.plan.run_public_plan``, the public tier's plan (``fit``: its model, ``analysis.public.fit_public`` by
    default; tests pass a stand-in)."""
    from analysis.errors import AnalysisRefused
    from analysis.plan import ReleasedCells, run_public_plan
    from schemas.suffstats import PAIRED_STATISTICS, NoisyPairedMoments

    from analysis.design.statistics import draw_arm_sums, paired_moments

    protocol = a.protocol.model_copy(update={"secondary_outcomes": []})
    o = protocol.primary_outcome
    effect = a.sign * multiple * float(o.mcid)
    rng = _seed(seed, n, attrition, multiple, epsilon, 1.0)
    sigma, pp = a.sigma(), pattern_probabilities(len(a.waves), attrition)
    means = {arm: a.effect_path(effect if arm != a.arms[0] else 0.0) for arm in a.arms}
    counts = a.n_per_arm(n)
    arm = a.arms[1]
    est, lo, hi, failures = [], [], [], []
    for _ in range(nsim):
        exact = paired_moments(draw_arm_sums(rng, counts, a.arms, means, sigma, pp), a.arms, a.waves)
        cells = {key: NoisyPairedMoments.with_gaussian_noise(
                     m, {st: noise_sd(key[0], key[1], st) for st in PAIRED_STATISTICS}, rng, center=center,
                     half_range=half_range) for key, m in exact.items()}
        try:
            result = run_public_plan({o.name: ReleasedCells(cells, a.waves)}, protocol, fit=fit)
        except AnalysisRefused as exc:
            failures.append(str(exc))
            continue
        row = next(r for r in result.effects if r.arm == arm and r.wave == LONG_RUN)
        est.append(row.estimate), lo.append(row.lower), hi.append(row.upper)
    e, low, high = np.asarray(est), np.asarray(lo), np.asarray(hi)
    k = e.size
    nan = float("nan")

    def rate(x: np.ndarray) -> tuple[float, float]:
        m = float(x.mean()) if k else nan
        return m, math.sqrt(m * (1 - m) / k) if k else nan

    good = (low > 0) if a.sign > 0 else (high < 0)
    pw, pw_se = rate(good)
    cov, cov_se = rate((low <= effect) & (effect <= high))
    err = e - effect
    return PublicCellSummary(
        epsilon=epsilon, release_share=release_share, participants_per_arm=n, attrition=attrition,
        effect_mcid_multiple=multiple, true_effect=effect, nsim=nsim, n_failed=len(failures),
        failure_rate=len(failures) / nsim, power=pw, power_mcse=pw_se, coverage=cov, coverage_mcse=cov_se,
        bias=float(err.mean()) if k else nan, bias_mcse=float(e.std(ddof=1) / math.sqrt(k)) if k > 1 else nan,
        rmse=float(math.sqrt(np.mean(err**2))) if k else nan,
        mean_interval_width=float(np.mean(high - low)) if k else nan,
        noise_sd_sum_y=noise_sd(arm, a.waves[-1], "sum_y"), failures=tuple(dict.fromkeys(failures))[:3])


# ----------------------------------------------------------------------------------------------
# The whole design
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DesignResult:
    planned_participants_per_arm: int
    cells: tuple[CellSummary, ...]
    monitor: tuple[MonitorSummary, ...]
    notes: tuple[str, ...]
    seconds: float
    trials: int
    public: tuple[PublicCellSummary, ...] = ()

    @property
    def trials_per_second(self) -> float:
        return self.trials / self.seconds if self.seconds > 0 else float("nan")


def run_design(a: DesignAssumptions, *, nsim: int | None = None, monitor_nsim: int | None = None,
               monitor: bool = True, public_noise: Sequence[tuple[float, float, Callable[[str, str, str], float],
                                                                  float, float]] = (),
               public_nsim: int | None = None, public_fit: Callable[..., Any] | None = None,
               progress: Callable[[str], None] = lambda _m: None) -> DesignResult:
    """Every grid cell (N per arm x attrition x effect) and, with ``monitor``, the three monitor scenarios at the
    planned N and the first attrition: divergence (engagement up, flourishing down ``harm_effect_sd``), flourishing
    unchanged, and the final wave suppressed. ``public_noise``: (epsilon, release share, noise SD of a cell's
    statistic, the release's centre, the bounds' half-range) per epsilon of the public tier's curve, simulated at the
    planned N and effect 1 MCID."""
    s = a.settings
    nsim = nsim or s.nsim
    planned = a.planned_n(s.attrition[0])
    grid_n = sorted(set(s.participants_per_arm)) or sorted({max(4, round(planned * f)) for f in (0.5, 1.0, 1.5)})
    cells, t0, trials = [], time.perf_counter(), 0
    for n in grid_n:
        for att in s.attrition:
            for mult in s.effect_mcid_multiples:
                progress(f"N = {n} per arm, attrition {att:.0%}, effect {mult:g} MCID: {nsim} trials")
                cells.append(simulate_cell(a, n, att, mult, nsim, s.seed))
                trials += nsim
    mons = []
    if monitor and a.protocol.engagement_metrics():
        m_nsim = monitor_nsim or nsim
        att = s.attrition[0]
        for name, eng, fl, sup in (("divergence", s.engagement_effect_sd, -s.harm_effect_sd, False),
                                   ("flourishing unchanged", s.engagement_effect_sd, 0.0, False),
                                   ("final wave suppressed", s.engagement_effect_sd, -s.harm_effect_sd, True)):
            progress(f"divergence monitor, {name}: {m_nsim} trials at N = {planned} per arm")
            mons.append(simulate_monitor(a, name, planned, att, eng, fl, m_nsim, s.seed, suppress_final=sup))
            trials += m_nsim
    pubs = []
    p_nsim = public_nsim if public_nsim is not None else (s.public_nsim if s.public_nsim is not None else nsim)
    notes = list(a.notes)
    if public_noise and p_nsim == 0:
        notes.append("the public tier's power and coverage per epsilon were not simulated (public_nsim 0)")
    if p_nsim > 0:
        for eps, share, noise, center, half_range in public_noise:
            progress(f"public tier at epsilon {eps:g}: {p_nsim} noise-aware fits at N = {planned} per arm")
            pubs.append(simulate_public(a, eps, share, noise, planned, s.attrition[0], 1.0, p_nsim, s.seed,
                                        center=center, half_range=half_range, fit=public_fit))
            trials += p_nsim
    return DesignResult(planned, tuple(cells), tuple(mons), tuple(notes), time.perf_counter() - t0, trials,
                        tuple(pubs))
