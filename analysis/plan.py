"""The preregistered analysis plan, as pure functions of statistics: what each tier publishes.

``flows`` reads the statistics from the warehouse (``flows.statistics.plan_statistics``), hands them to
:func:`run_plan` (or, for the public tier, the DP releases to :func:`run_public_plan`) and stores what comes
back (DESIGN.md: "The analysis plan ... is a pure function in analysis/"). Everything the plan decides is here,
so it can be read in one place and tested without a warehouse (``tests/analysis/test_plan.py``):

1. **Sample ratio.** The arms' counts against the protocol's ratios (Fabijan et al. 2019); a mismatch is a
   note on the run, since every effect is then suspect.
2. **The longitudinal model of each outcome** over the follow-up waves with data so far: the MMRM (REML,
   unstructured covariance over the follow-up waves, arm x wave and baseline x wave; Kenward-Roger intervals and,
   beside them, sandwich ones; Mallinckrodt et al. 2008) when the outcome has two or more follow-up waves and
   the plan estimates an effect per wave (``AnalysisPlan.primary_model``), else the Bayesian random-intercept
   model; the maximum-likelihood random-intercept fit is reported beside either as a cross-check (the form
   published fits such as Beat the Blues use). *Running study*: while
   an outcome's long-run wave has no scores, the model covers the waves observed, the run says ``STUDY
   RUNNING``, and no long-run (or plateau) row is given: without data at that wave it has only its prior.
   *One failure does not sink the run*: an outcome whose model cannot be fitted (its statistics refused, the
   sampler cannot start, the diagnostics fail) is reported failed: its rows carry the reason and no number,
   and a note names it (``PRIMARY OUTCOME FAILED`` first when it is the primary), while the other outcomes
   publish. When every outcome fails there is nothing honest to publish: :class:`AnalysisRefused`.
3. **The final-wave ANCOVA** of each outcome whose long-run wave has closed (complete cases, Vickers & Altman
   2001; adjusted for the baseline and the plan's covariates, as the longitudinal models are), with **Holm** across the secondary outcomes x treated arms (Holm 1979); the primary is tested alone.
   The family is the planned one: a member whose p-value cannot be computed stays in it with p = 1, which
   keeps the family-wise error rate of the others controlled (it can only raise their adjusted p-values); its
   own row is not estimable.
4. **The tipping point** of the primary (delta adjustment, ``analysis.missing``).
5. **Prespecified subgroups** of the primary: the ANCOVA within each level, partially pooled per arm
   (DerSimonian-Laird, Morris 1983).
6. **CUPED** for each telemetry metric (Deng et al. 2013) over its first ``window_days`` after assignment.
7. **The surrogate index** forecast of the primary's long-run effect, when a calibration cohort is given
   (Athey et al. 2019).
8. **The divergence monitor** (``analysis.divergence``): per treated arm, engagement metric, flourishing outcome and
   wave due so far, the intersection-union test of {engagement up} and {flourishing down beyond its margin}, on the
   rows above (the flourishing effect as its model reports it, never adjusted for engagement); a wave whose
   flourishing effect is missing or failed is indeterminate. A divergence is a note (and the pipeline's alert).
9. **The decision rule** (``analysis.decision``) per treated arm: success on the primary, non-inferiority on every
   guardrail, no divergence; ``ship``, ``do_not_ship`` or ``indeterminate`` with its evidence.

No step returns a plausible default: a quantity that could not be estimated is an :class:`Effect` with a
``reason``, or (for a subgroup whose levels could not be formed) a note.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.errors import AnalysisInputError, AnalysisRefused, DiagnosticsFailed, InsufficientData
from analysis.longitudinal import LongitudinalStats
from analysis.longitudinal.summarise import method_of
from schemas.protocol import Outcome, StudyProtocol
from schemas.results import LONG_RUN, PLATEAU, Effect
from schemas.binary_stats import BinaryCountTable, NoisyBinaryCounts
from schemas.mmrm_stats import MMRMStatistics
from schemas.suffstats import CellCrossProducts, NoisyPairedMoments, PairedMoments

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from analysis.decision import ArmDecision
    from analysis.divergence import DivergenceStatus
    from analysis.missing import TippingPoint

__all__ = [
    "FinalWaveCells",
    "OutcomeStatistics",
    "PlanResult",
    "PlanStatistics",
    "ReleasedCells",
    "ReleasedCounts",
    "SurrogateInputs",
    "Unavailable",
    "final_wave",
    "followup_waves",
    "run_plan",
    "run_public_plan",
    "surrogate_forecast",
]

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Waves of an outcome
# ----------------------------------------------------------------------------------------------
def final_wave(protocol: StudyProtocol, outcome: Outcome) -> str:
    """The outcome's wave of interest (its long-run horizon), by default the protocol's last wave."""
    return outcome.wave or protocol.wave_names[-1]


def followup_waves(protocol: StudyProtocol, outcome: Outcome) -> list[str]:
    """Follow-up waves up to the outcome's wave of interest (the long-run horizon for the primary)."""
    names = protocol.wave_names
    last = names.index(outcome.wave) if outcome.wave else len(names) - 1
    return [w for w in names[: last + 1] if w != protocol.baseline_wave]


# ----------------------------------------------------------------------------------------------
# What the plan is handed
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unavailable:
    """A statistic the warehouse could not give, and why (what needed it is reported not estimable)."""

    reason: str


@dataclass(frozen=True)
class FinalWaveCells:
    """Per arm, the final-wave ANCOVA's cross-products of the participant-level design W = (intercept, baseline, the
    plan's covariate columns, :func:`covariate_columns`): over the completers (randomised, with a baseline and a
    final-wave score) with that score as y, and over the dropouts (randomised, with a baseline, no final-wave score;
    also those with no follow-up score at all, whom the tipping point imputes too). ``dropouts_without_covariates``
    counts dropouts whose covariate is not recorded: they are in no cell, and the tipping point says it cannot
    impute them (a completer without one refuses the ANCOVA, ``flows.statistics.require_covariates``)."""

    completers: Mapping[str, CellCrossProducts]
    dropouts: Mapping[str, CellCrossProducts]
    dropouts_without_covariates: int = 0


@dataclass(frozen=True)
class OutcomeStatistics:
    """One outcome's statistics: the follow-up waves with scores so far, the longitudinal model's cross-products
    over them, the final-wave cells (None while the long-run wave has no scores; Unavailable, with why, when the
    warehouse could not give them) and, for the primary, each
    prespecified subgroup's level x arm cells (final wave, completers)."""

    outcome: str
    observed_waves: tuple[str, ...]
    longitudinal: LongitudinalStats | Unavailable
    final_wave: FinalWaveCells | Unavailable | None = None
    subgroups: Mapping[str, Mapping[str, Mapping[str, PairedMoments]] | Unavailable] = field(default_factory=dict)
    mmrm: MMRMStatistics | Unavailable | None = None  # the MMRM's pattern statistics, when the plan fits one
    binary: BinaryCountTable | Unavailable | None = None  # a binary outcome's counts per arm x follow-up wave


@dataclass(frozen=True)
class SurrogateInputs:
    """The surrogate index's rows (``flows.statistics.surrogate_frame`` says why rows): the calibration cohort's
    and this study's, with the early waves used as surrogates."""

    calibration_study: str
    waves: tuple[str, ...]
    calibration: pd.DataFrame = field(repr=False, compare=False)
    study: pd.DataFrame = field(repr=False, compare=False)


@dataclass(frozen=True)
class PlanStatistics:
    """Everything :func:`run_plan` needs, read from the warehouse before any model runs."""

    outcomes: tuple[OutcomeStatistics, ...]
    arm_counts: Mapping[str, int]
    telemetry: Mapping[str, Mapping[str, PairedMoments] | Unavailable] = field(default_factory=dict)
    surrogate: SurrogateInputs | None = None

    def outcome(self, name: str) -> OutcomeStatistics:
        for o in self.outcomes:
            if o.outcome == name:
                return o
        raise KeyError(f"the statistics hold no outcome {name!r}")


@dataclass(frozen=True)
class ReleasedCells:
    """The latest DP release of one outcome's paired moments: per (arm, wave) cells, the waves covered, and the
    earlier waves it covers that cannot be analysed, with why (a suppressed cell)."""

    cells: Mapping[tuple[str, str], NoisyPairedMoments]
    waves: tuple[str, ...]
    unusable: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReleasedCounts:
    """The latest DP release of one binary outcome's counts: per (arm, wave) cells (events and non-events with their
    noise SDs), the follow-up waves it covers, and those of them whose cells cannot be used, with why (a suppressed
    cell)."""

    cells: Mapping[tuple[str, str], NoisyBinaryCounts]
    waves: tuple[str, ...]
    unusable: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanResult:
    """What a plan publishes: its effects, the notes a reader must see, the tipping points (for their
    statements), the outcomes whose model failed, each model's full result (``results``, for saving), the divergence
    monitor's rows and the decision rule's verdict per arm."""

    effects: tuple[Effect, ...]
    notes: tuple[str, ...] = ()
    tipping_points: tuple[TippingPoint, ...] = ()
    failed: tuple[str, ...] = ()
    results: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    divergence: tuple[DivergenceStatus, ...] = ()
    decisions: tuple[ArmDecision, ...] = ()

    @property
    def alerts(self) -> tuple[str, ...]:
        """One sentence per divergence the monitor found (what the pipeline's run record lists)."""
        return tuple(s.alert for s in self.divergence if s.alert is not None)


# ----------------------------------------------------------------------------------------------
# The trusted tier
# ----------------------------------------------------------------------------------------------
def run_plan(
    statistics: PlanStatistics,
    protocol: StudyProtocol,
    *,
    fit: Callable[..., Any] | None = None,
    progress: Progress = lambda _msg: None,
) -> PlanResult:
    """The protocol's plan on the trusted tier's statistics (module docstring). ``fit`` defaults to
    ``analysis.longitudinal.fit_from_crossproducts``; any callable with its signature will do (tests)."""
    if fit is None:
        from analysis import longitudinal

        fit = longitudinal.fit_from_crossproducts
    plan, control = protocol.analysis, protocol.control_arm
    treated = [a for a in protocol.arm_names if a != control]
    effects: list[Effect] = []
    notes: list[str] = _sample_ratio_notes(statistics.arm_counts, protocol)
    failures: dict[str, str] = {}
    results: dict[str, Any] = {}
    methods: dict[str, str] = {}

    binary_family: dict[str, list[Effect]] = {}
    for o in protocol.outcomes:
        s = statistics.outcome(o.name)
        final = final_wave(protocol, o)
        running = final not in s.observed_waves
        if running and s.observed_waves:
            notes.append(
                f"STUDY RUNNING: {o.name} has no scores at its long-run wave {final} yet; per-wave "
                f"effects cover {', '.join(s.observed_waves)} only; no long-run estimate until that wave closes"
                + ("" if statistics.surrogate else " (a surrogate-index forecast needs --calibration-study)"))
        if o.binary:
            progress(f"comparing the arms on the binary outcome {o.name} from its counts")
            result, rows, failure, binary_notes = _binary_outcome(s, o, protocol, treated, running)
            if failure is not None:
                failures[o.name] = failure
                effects += _failed_model_rows(o, s, protocol, treated, running, failure, "binary")
                continue
            results[o.name] = result
            notes += binary_notes
            # the long-run risk difference is the outcome's member of the Holm family (step 3), adjusted there
            binary_family[o.name] = [e for e in rows if e.wave == LONG_RUN and e.method.startswith("risk_difference")]
            effects += [e for e in rows if e not in binary_family[o.name]]
            continue
        model = plan.primary_model(len(s.observed_waves))
        methods[o.name] = mmrm_method(plan) if model == "mmrm" else method_of(plan)
        progress(f"fitting the {model.replace('_', '-')} model of {o.name}")
        if model == "mmrm":
            result, rows, failure = fit_primary_mmrm(s, o, protocol, treated, running)
        else:
            result, failure = _fit_longitudinal(s, o, protocol, fit)
            rows = [] if failure else [e for e in result.effects if not (running and e.wave in (LONG_RUN, PLATEAU))]
        if failure is not None:
            failures[o.name] = failure
            effects += _failed_model_rows(o, s, protocol, treated, running, failure, model)
        else:
            results[o.name] = result
            effects += rows
            methods[o.name] = rows[0].method if rows else methods[o.name]  # e.g. a stand-in fit's own label
        effects += _ml_cross_check(s, o, protocol, treated, running)

    ancova = {o.name: _final_wave_ancova(statistics.outcome(o.name), o, protocol, treated) for o in protocol.outcomes
              if statistics.outcome(o.name).final_wave is not None and not o.binary}
    effects += _holm_across_secondary({**ancova, **binary_family}, protocol)

    primary = protocol.primary_outcome
    tips: list[TippingPoint] = []
    primary_stats = statistics.outcome(primary.name)
    if primary_stats.final_wave is not None:
        tips, tip_rows = _tipping_point(primary_stats, primary, protocol, treated)
        effects += tip_rows
        for sg in plan.subgroups:
            rows, note = _subgroup(primary_stats.subgroups.get(sg, Unavailable("the statistics hold no cells for it")), sg, primary, protocol)
            effects += rows
            notes += [note] if note else []

    for m in protocol.surrogates:
        effects += _cuped(statistics.telemetry.get(m.name, Unavailable("the statistics hold no cells for it")), m.name,
                          f"first_{m.window_days}_days", protocol, treated)

    if statistics.surrogate is not None:
        progress(f"surrogate index calibrated on {statistics.surrogate.calibration_study}")
        forecast = surrogate_forecast(statistics.surrogate, protocol)
        effects += [f.effect for f in forecast]
        results["surrogate_index"] = forecast
        if forecast:
            notes.append("surrogate index assumes " + "; and ".join(forecast[0].assumptions))

    observed = {w for o in statistics.outcomes for w in o.observed_waves}
    due = {o.name: [w for w in followup_waves(protocol, o) if w in observed] for o in protocol.outcomes}
    return _published(effects, notes, tips, failures, results, protocol, monitor=(due, methods, "trusted"))


def _sample_ratio_notes(counts: Mapping[str, int], protocol: StudyProtocol) -> list[str]:
    from analysis.randomization import RandomizationError, srm_test

    try:
        srm = srm_test(counts, {a.name: a.allocation for a in protocol.arms})
    except RandomizationError as exc:
        raise AnalysisRefused(f"sample-ratio check of {protocol.study_id}: {exc}") from None
    if not srm.mismatch:
        return []
    return [f"SAMPLE RATIO MISMATCH: assignments {srm.observed} vs planned ratios (chi-square {srm.chi_square:.2f}, "
            f"p = {srm.p_value:.2g}); randomization or ingest may be broken, interpret every effect with care"]


def _fit_longitudinal(s: OutcomeStatistics, o: Outcome, protocol: StudyProtocol, fit) -> tuple[Any, str | None]:
    """The fitted model, or why it could not be fitted (the reason a failed outcome's rows carry)."""
    if isinstance(s.longitudinal, Unavailable):
        return None, f"the model of {o.name} could not be fitted: {s.longitudinal.reason}"
    try:
        result = fit(s.longitudinal, protocol.analysis, outcome=o.name, direction=o.direction, mcid=o.mcid, rope=o.rope)
        return result.require_passed(), None
    except DiagnosticsFailed as exc:
        return None, str(exc)
    except (AnalysisInputError, InsufficientData) as exc:
        return None, f"the model of {o.name} could not be fitted: {exc}"
    except RuntimeError as exc:  # the sampler could not start or run (e.g. no valid initial point)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"the model of {o.name} could not be fitted ({first})"


def _failed_model_rows(o: Outcome, s: OutcomeStatistics, protocol: StudyProtocol, treated: list[str], running: bool,
                       reason: str, model: str = "random_intercept") -> list[Effect]:
    """The rows the model would have given, each saying why it has no number."""
    plan = protocol.analysis
    waves = list(s.observed_waves)
    if not running or not waves:
        waves.append(LONG_RUN)
    if not running and plan.effect_shape == "saturating" and model not in ("mmrm", "binary"):
        waves.append(PLATEAU)
    method = {"mmrm": mmrm_method(plan), "binary": BINARY_METHOD}.get(model) or method_of(plan)
    return [Effect(outcome=o.name, arm=a, control=protocol.control_arm, wave=w, method=method,
                   interval_level=plan.interval_level, direction=o.direction, reason=reason)
            for a in treated for w in waves]


# ----------------------------------------------------------------------------------------------
# Binary outcomes: counts per arm x wave
# ----------------------------------------------------------------------------------------------
BINARY_METHOD = "risk_difference_newcombe_hybrid_score"
"""The method label of a binary outcome's risk-difference rows (``analysis.binary.BinaryEffect.to_effect``)."""


def _binary_outcome(s: OutcomeStatistics, o: Outcome, protocol: StudyProtocol, treated: list[str],
                    running: bool) -> tuple[Any, list[Effect], str | None, list[str]]:
    """A binary outcome's rows from its counts (``analysis.binary``), at every follow-up wave with data and, once the
    outcome's wave has closed, the long run (its final wave), for each treated arm against control:

    - ``risk_difference_newcombe_hybrid_score``: the risk difference (risk units) with Newcombe's interval;
    - ``risk_ratio_katz_log`` and ``odds_ratio_woolf_logit``: the ratios (treated over control) with their log-scale
      intervals, no SD (their spread is on the log scale); a ratio a zero cell makes undefined says why instead;
    - these three carry the p-value of Pearson's chi-square without continuity correction (the test of equal risks);
    - ``chi_square_pearson_uncorrected`` and ``fisher_exact``: the two tests as rows of their own, the estimate the
      risk difference they test and the p-value the test's;
    - ``beta_binomial_conjugate``: the Bayesian risk difference (uniform Beta priors) with P(benefit).

    The notes give each long-run comparison's counts and the chi-square statistic. Or why there are none."""
    from analysis.binary import ZeroCellRefused, beta_binomial_effects, binary_summary

    plan = protocol.analysis
    if s.binary is None:
        return None, [], f"the binary outcome {o.name} has no counts (they were not read)", []
    if isinstance(s.binary, Unavailable):
        return None, [], f"the binary outcome {o.name} could not be analysed: {s.binary.reason}", []
    waves = list(s.observed_waves)
    try:
        summary = binary_summary(s.binary, outcome=o.name, direction=o.direction, level=plan.interval_level,
                                 waves=waves)
        risk_units = {"mcid": o.mcid if o.mcid is not None and o.mcid < 1 else None,
                      "rope": o.rope if o.rope is not None and o.rope < 1 else None}
        posteriors = beta_binomial_effects(s.binary, outcome=o.name, direction=o.direction, level=plan.interval_level,
                                           seed=plan.seed, waves=waves, **risk_units)
    except (AnalysisInputError, InsufficientData, ZeroCellRefused, ValueError) as exc:
        return None, [], f"the binary outcome {o.name} could not be analysed: {exc}", []
    rows: list[Effect] = []
    notes: list[str] = []
    control = protocol.control_arm
    for c in summary.comparisons:
        if running and c.wave == LONG_RUN:
            continue
        n = {"n_arm": c.treated_counts.n, "n_control": c.control_counts.n}
        base = {"outcome": o.name, "arm": c.arm, "control": control, "wave": c.wave, "direction": o.direction}
        p = c.chi_square.p_value if c.chi_square is not None else None
        rows.append(c.risk_difference.to_effect(o.name, o.direction, p_value=p, **n))
        refused = dict(c.refused)
        for measure, label in (("risk_ratio", "katz_log"), ("odds_ratio", "woolf_logit")):
            e = getattr(c, measure)
            if e is None:
                rows.append(Effect(**base, method=f"{measure}_{label}", interval_level=plan.interval_level,
                                   reason=f"the {measure.replace('_', ' ')} is refused: {refused[measure]}"))
            else:
                rows.append(Effect(**base, method=f"{measure}_{e.method}", estimate=e.estimate, lower=e.lower,
                                   upper=e.upper, interval_level=plan.interval_level, p_value=p, **n))
        rd = c.risk_difference.estimate
        if c.chi_square is None:
            rows.append(Effect(**base, method="chi_square_pearson_uncorrected",
                               reason=f"Pearson's chi-square is refused: {refused['chi_square']}"))
        else:
            rows.append(Effect(**base, method="chi_square_pearson_uncorrected", estimate=rd, p_value=p, **n))
        rows.append(Effect(**base, method="fisher_exact", estimate=rd, p_value=c.fisher.p_value, **n))
        if c.wave == LONG_RUN:
            t, k = c.treated_counts, c.control_counts
            chi = (f"Pearson chi-square {c.chi_square.statistic:.3f} on 1 df without continuity correction, "
                   f"p = {c.chi_square.p_value:.3g}" if c.chi_square is not None else
                   f"Pearson chi-square refused ({refused['chi_square']})")
            notes.append(f"binary outcome {o.name} at {waves[-1]} (long run): {c.arm} {t.events}/{t.n} "
                         f"({100 * t.risk:.1f}%) vs {control} {k.events}/{k.n} ({100 * k.risk:.1f}%); {chi}; "
                         f"Fisher's exact p = {c.fisher.p_value:.3g}")
    rows += [_with_counts(b.to_effect(), s.binary, waves) for b in posteriors if not (running and b.wave == LONG_RUN)]
    notes.append(f"binary outcome {o.name}: {summary.note}")
    return {"summary": summary, "beta_binomial": posteriors}, rows, None, notes


def _with_counts(e: Effect, table: BinaryCountTable, waves: list[str]) -> Effect:
    at = waves[-1] if e.wave == LONG_RUN else e.wave
    return replace(e, n_arm=table.cell(e.arm, at).n, n_control=table.cell(table.control, at).n)


# ----------------------------------------------------------------------------------------------
# The MMRM and the maximum-likelihood random-intercept cross-check
# ----------------------------------------------------------------------------------------------
def mmrm_method(plan) -> str:
    """The method label of the MMRM's rows: ``mmrm_reml_<covariance>`` (Kenward-Roger intervals)."""
    return f"mmrm_reml_{plan.mmrm_covariance or 'us'}"


def covariate_columns(protocol: StudyProtocol, covariates: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The design columns of the plan's covariates, in order: a numeric covariate (an outcome's baseline, or a declared
    numeric baseline covariate) is its own column; a declared categorical one is one treatment-coded dummy per level
    after the reference (the first listed), named ``<covariate>[<level>]`` (``drug[Yes]``, as R's ``drugYes``)."""
    out: list[str] = []
    for c in covariates:
        declared = protocol.baseline_covariate(c)
        if declared is not None and declared.kind == "categorical":
            out += [f"{c}[{level}]" for level in (declared.levels or [])[1:]]
        else:
            out.append(c)
    return tuple(out)


def mmrm_design(protocol: StudyProtocol, waves: tuple[str, ...] | list[str], covariates: tuple[str, ...] | list[str] = ()):
    """The MMRM of a protocol over the follow-up ``waves`` (in protocol order): wave means, arm x wave and baseline x
    wave effects, one slope per covariate column (:func:`covariate_columns`; ``analysis.mmrm.default_design``)."""
    from analysis.mmrm import MMRMDesign

    arms = (protocol.control_arm, *[a for a in protocol.arm_names if a != protocol.control_arm])
    waves = tuple(w for w in protocol.wave_names if w in set(waves))
    months = tuple(protocol.wave(w).months for w in waves)
    return MMRMDesign(arms, waves, covariate_columns(protocol, covariates), True, months)


def _mmrm_counts(stats: MMRMStatistics, design, wave: str) -> dict[str, int]:
    """Participants per arm observed at ``wave``, from the patterns (each pattern's z'z holds its arm counts)."""
    from analysis.mmrm.design import INTERCEPT, arm_column

    t = design.waves.index(wave)
    cols = list(design.z_columns)
    counts = {a: 0 for a in design.arms}
    for pattern in stats.patterns:
        if t not in pattern.observed:
            continue
        treated = 0
        for a in design.arms[1:]:
            n = int(round(pattern.szz[cols.index(INTERCEPT), cols.index(arm_column(a))]))
            counts[a] += n
            treated += n
        counts[design.arms[0]] += pattern.n_participants - treated
    return counts


def fit_primary_mmrm(s: OutcomeStatistics, o: Outcome, protocol: StudyProtocol, treated: list[str],
              running: bool) -> tuple[Any, list[Effect], str | None]:
    """The REML MMRM's rows (Kenward-Roger and sandwich) and, when the plan asks, the Bayesian MMRM's; or why not.

    What :func:`run_plan` fits for an MMRM outcome, and what the design-stage simulation (``analysis.design``) fits
    to its simulated statistics: one function, so the simulated operating characteristics are the plan's."""
    from analysis.mmrm import MMRMFitError, fit_mmrm, fit_mmrm_bayes

    plan = protocol.analysis
    if s.mmrm is None:
        return None, [], f"the MMRM of {o.name} has no statistics (they were not read)"
    if isinstance(s.mmrm, Unavailable):
        return None, [], f"the MMRM of {o.name} could not be fitted: {s.mmrm.reason}"
    design = mmrm_design(protocol, s.observed_waves, plan.covariates)
    try:
        fit = fit_mmrm(s.mmrm, design, structure=plan.mmrm_covariance or "us", method="reml",
                       level=plan.interval_level)
    except (MMRMFitError, AnalysisInputError, InsufficientData, ValueError) as exc:
        return None, [], f"the MMRM of {o.name} could not be fitted: {exc}"
    method = mmrm_method(plan)
    rows: list[Effect] = []
    for e in fit.effects:
        if running and e.wave == LONG_RUN:
            continue
        counts = _mmrm_counts(s.mmrm, design, design.waves[-1] if e.wave == LONG_RUN else e.wave)
        n = {"n_arm": counts[e.arm], "n_control": counts[protocol.control_arm]}
        kr = e.kenward_roger or e.model_based
        for label, inf in ((method, kr), (f"{method}_sandwich", e.sandwich)):
            if inf is None:
                continue
            rows.append(Effect(outcome=o.name, arm=e.arm, control=protocol.control_arm, wave=e.wave, method=label,
                               estimate=e.estimate, sd=inf.se, lower=inf.lower, upper=inf.upper,
                               interval_level=e.interval_level, p_value=inf.p_value, direction=o.direction, **n))
    result: dict[str, Any] = {"reml": fit}
    if plan.mmrm_bayesian:
        try:
            posterior = fit_mmrm_bayes(s.mmrm, design, plan, outcome=o.name, direction=o.direction, mcid=o.mcid,
                                       rope=o.rope)
        except (AnalysisInputError, InsufficientData, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return None, [], f"the Bayesian MMRM of {o.name} could not be fitted ({first})"
        if not posterior.confirmatory:
            return None, [], (f"the Bayesian MMRM of {o.name} failed its diagnostics: "
                              + "; ".join(posterior.diagnostics.reasons))
        rows += [e for e in posterior.effects if not (running and e.wave == LONG_RUN)]
        result["bayes"] = posterior
    return result, rows, None


def _ml_cross_check(s: OutcomeStatistics, o: Outcome, protocol: StudyProtocol, treated: list[str],
                    running: bool) -> list[Effect]:
    """The maximum-likelihood random-intercept fit of the plan's (linear) mean model, from the same cross-products:
    the cross-check of the primary model and the form of published fits (lme4's ``lmer(..., REML = FALSE)``;
    standard errors are the GLS ones at the ML variances, intervals normal). A saturating plan has no linear ML
    form and gets no cross-check row."""
    from analysis.longitudinal import constrain, ml_fit, plan_constraint
    from scipy.stats import norm

    plan = protocol.analysis
    if isinstance(s.longitudinal, Unavailable) or plan.effect_shape == "saturating" or plan.random_slopes:
        return []
    stats = s.longitudinal
    spec = stats.spec
    try:
        m, names = plan_constraint(spec, plan)
        fit = ml_fit(constrain(stats.cross, m, names))
    except (AnalysisInputError, InsufficientData, ValueError, np.linalg.LinAlgError):
        return []
    z = float(norm.ppf(0.5 + plan.interval_level / 2))
    cols = list(stats.cross.columns)

    def n_at(column: str) -> int:  # an indicator column's X'X diagonal counts its rows
        return int(round(stats.cross.xtx[cols.index(column), cols.index(column)]))

    rows = []
    for a in treated:
        targets = ([(w, f"arm[{a}]:wave[{w}]") for w in spec.waves] + [(LONG_RUN, f"arm[{a}]:wave[{spec.waves[-1]}]")]
                   if plan.effect_shape == "per_wave" else [(LONG_RUN, f"arm[{a}]")])
        for wave, column in targets:
            if running and wave == LONG_RUN:
                continue
            est, se = fit.coef(column)
            p_value = float(2 * norm.sf(abs(est) / se)) if se > 0 else None
            at = spec.waves[-1] if wave == LONG_RUN else wave
            n_arm = n_at(f"arm[{a}]:wave[{at}]")
            n_control = n_at(f"wave[{at}]") - sum(n_at(f"arm[{b}]:wave[{at}]") for b in treated)
            rows.append(Effect(outcome=o.name, arm=a, control=protocol.control_arm, wave=wave,
                               method="ml_random_intercept", estimate=est, sd=se, lower=est - z * se,
                               upper=est + z * se, interval_level=plan.interval_level, p_value=p_value,
                               direction=o.direction, n_arm=n_arm, n_control=n_control))
    return rows


def _not_estimable(outcome: str, treated: list[str], protocol: StudyProtocol, wave: str, method: str, reason: str,
                   direction: str | None = None) -> list[Effect]:
    return [Effect(outcome=outcome, arm=a, control=protocol.control_arm, wave=wave, method=method,
                   interval_level=protocol.analysis.interval_level, direction=direction, reason=reason) for a in treated]


def _ancova_statistics(s: OutcomeStatistics, protocol: StudyProtocol):
    """The final-wave ANCOVA's statistics, adjusted for the plan's covariates (:class:`FinalWaveCells`)."""
    from analysis.missing import statistics_from_cells

    fw = s.final_wave
    if isinstance(fw, Unavailable):
        raise AnalysisInputError(fw.reason)
    return statistics_from_cells(fw.completers, fw.dropouts, control=protocol.control_arm,
                                 missing_without_covariates=fw.dropouts_without_covariates)


def _final_wave_ancova(s: OutcomeStatistics, o: Outcome, protocol: StudyProtocol, treated: list[str]) -> list[Effect]:
    """Each treated arm's final-wave ANCOVA effect, or rows saying why there is none."""
    from analysis.missing import ancova_effects

    wave = final_wave(protocol, o)
    try:
        return ancova_effects(_ancova_statistics(s, protocol), outcome=o.name, wave=wave, direction=o.direction,
                              interval_level=protocol.analysis.interval_level)
    except (InsufficientData, ValueError) as exc:
        return _not_estimable(o.name, treated, protocol, wave, "ancova_final_wave",
                              f"the final-wave ANCOVA of {o.name} is not available: {exc}", o.direction)


def _holm_across_secondary(ancova: Mapping[str, list[Effect]], protocol: StudyProtocol) -> list[Effect]:
    """The ANCOVA rows, the secondary outcomes' with their Holm-adjusted p-values (module docstring, step 3)."""
    from analysis.multiplicity import holm

    secondary = {o.name for o in protocol.secondary_outcomes}
    family = {(e.outcome, e.arm): (e.p_value if e.p_value is not None else 1.0)
              for name, rows in ancova.items() if name in secondary for e in rows}
    adjusted = {r.name: r.p_adjusted for r in holm(family)}
    return [replace(e, p_adjusted=adjusted[(e.outcome, e.arm)]) if e.estimable and (e.outcome, e.arm) in adjusted else e
            for o in protocol.outcomes for e in ancova.get(o.name, [])]


def _tipping_point(s: OutcomeStatistics, o: Outcome, protocol: StudyProtocol,
                   treated: list[str]) -> tuple[list[TippingPoint], list[Effect]]:
    from analysis.missing import tipping_point

    wave = final_wave(protocol, o)
    try:
        tips = tipping_point(_ancova_statistics(s, protocol), direction=o.direction, outcome=o.name,
                             interval_level=protocol.analysis.interval_level, wave=wave)
    except (InsufficientData, ValueError) as exc:
        return [], _not_estimable(o.name, treated, protocol, wave, "tipping_point_delta",
                                  f"the tipping point needs the final-wave ANCOVA of {o.name}, which is not available: {exc}",
                                  o.direction)
    return tips, [t.effect for t in tips]


def _subgroup(cells, sg: str, o: Outcome, protocol: StudyProtocol) -> tuple[list[Effect], str | None]:
    """The partially pooled subgroup rows of each arm, or a note saying why the subgroup has none."""
    from analysis.multiplicity import partial_pool, subgroup_effects_from_moments

    if isinstance(cells, Unavailable):
        return [], f"subgroup {sg} of {o.name} not available: {cells.reason}"
    level = protocol.analysis.interval_level
    try:
        raw = subgroup_effects_from_moments(cells, subgroup=sg, control=protocol.control_arm, outcome=o.name,
                                            wave=final_wave(protocol, o), direction=o.direction, interval_level=level)
        rows = []
        for arm in sorted({e.arm for e in raw}):
            rows += [g.effect for g in partial_pool([e for e in raw if e.arm == arm], interval_level=level)]
        return rows, None
    except (InsufficientData, ValueError) as exc:
        return [], f"subgroup {sg} of {o.name} not available: {exc}"


def _cuped(cells, metric: str, wave: str, protocol: StudyProtocol, treated: list[str]) -> list[Effect]:
    """Each arm's CUPED effect of one telemetry metric, or rows saying why there is none."""
    from analysis.cuped import cuped_effects

    if isinstance(cells, Unavailable):
        return _not_estimable(metric, treated, protocol, wave, "cuped", f"telemetry metric {metric}: {cells.reason}")
    try:
        return [c.effect for c in cuped_effects(cells, control=protocol.control_arm, metric=metric, wave=wave,
                                                interval_level=protocol.analysis.interval_level)]
    except (InsufficientData, ValueError) as exc:
        return _not_estimable(metric, treated, protocol, wave, "cuped",
                              f"telemetry metric {metric} is not analysable with CUPED: {exc}")


def surrogate_forecast(inputs: SurrogateInputs, protocol: StudyProtocol) -> list:
    """Surrogate-index forecast of the primary outcome's long-run effect (Athey et al. 2019).

    First stage on the calibration cohort (participants whose long-run outcome is observed), second stage on
    this study's participants with all surrogates observed. Surrogates: the primary outcome at the early
    waves and the protocol's telemetry metrics; covariate: the baseline score."""
    from analysis.surrogate import SurrogateError, fit_surrogate_index, surrogate_index_effects

    o = protocol.primary_outcome
    surrogates = [f"{o.name}@{w}" for w in inputs.waves] + [m.name for m in protocol.surrogates]
    study = inputs.study.dropna(subset=[*surrogates, "baseline"])
    try:
        model = fit_surrogate_index(inputs.calibration, long_run="long_run", surrogates=surrogates,
                                    covariates=["baseline"])
        forecast = surrogate_index_effects(model, study, control=protocol.control_arm,
                                           interval_level=protocol.analysis.interval_level)
    except SurrogateError as exc:
        raise AnalysisRefused(f"surrogate index: {exc}") from None
    # the first stage names the long-run column generically; the forecast is of the primary outcome
    return [replace(f, long_run=o.name, effect=replace(f.effect, outcome=o.name, direction=o.direction))
            for f in forecast]


def _published(effects: list[Effect], notes: list[str], tips: list, failures: Mapping[str, str],
               results: Mapping[str, Any], protocol: StudyProtocol,
               monitor: tuple[Mapping[str, list[str]], Mapping[str, str], str] | None = None) -> PlanResult:
    """The plan's result, or the refusal when no outcome's model could be fitted. ``monitor`` (waves due per outcome,
    each outcome's primary method, the tier) runs the divergence monitor and the decision rule on the effects."""
    from analysis.decision import decision_table
    from analysis.divergence import INDETERMINATE, divergence_monitor

    if failures and len(failures) == len(protocol.outcomes):
        raise AnalysisRefused("; ".join(failures.values()) + "; nothing was published")
    primary = protocol.primary_outcome.name
    failed_notes = [("PRIMARY OUTCOME FAILED: " if name == primary else "OUTCOME FAILED: ") + reason
                    + "; its rows say so and carry no estimate" for name, reason in failures.items()]
    divergence, decisions = (), ()
    if monitor is not None:
        due, methods, tier = monitor
        divergence = divergence_monitor(effects, protocol, waves=due, methods=methods, tier=tier)
        decisions = decision_table(effects, divergence, protocol, methods=dict(methods), tier=tier)
        notes = notes + [s.alert for s in divergence if s.alert is not None]
        unknown = [s for s in divergence if s.status == INDETERMINATE]
        if unknown:
            notes.append(f"DIVERGENCE MONITOR INDETERMINATE ({tier}): {len(unknown)} of {len(divergence)} checks, "
                         f"e.g. {unknown[0].arm} at {unknown[0].wave}: {unknown[0].reason}")
    return PlanResult(tuple(effects), tuple(failed_notes + notes), tuple(tips), tuple(failures), dict(results),
                      tuple(divergence), tuple(decisions))


# ----------------------------------------------------------------------------------------------
# The public tier
# ----------------------------------------------------------------------------------------------
PUBLIC_NOTE = ("public tier: Holm-adjusted ANCOVA, tipping point, subgroups and CUPED need participant-level "
               "statistics and are reported by the trusted tier only; without a released engagement effect (CUPED's) "
               "the public divergence monitor is indeterminate")
PUBLIC_COVARIATES_NOTE = ("public tier: the noise-aware ANCOVA (bayes_ancova_noise_aware) adjusts for each outcome's "
                          "baseline only: the DP release holds per arm x wave moments of baseline and outcome, nothing of "
                          "the plan's covariates ({covariates}), which the trusted tier's ANCOVA and models adjust for; "
                          "the tiers' estimates differ by that adjustment as well as by the noise")
PUBLIC_BINARY_NOTE = ("public tier, binary outcome {outcome}: the noise-aware beta-binomial on its released counts "
                      "(latent counts with the DP noise in the likelihood; analysis.public_binary): risk difference "
                      "with P(benefit), risk ratio and odds ratio, per wave available cases as on the trusted tier; "
                      "the chi-square and exact tests need exact counts and are trusted-tier only")


def _public_binary_outcome(release: ReleasedCounts, o: Outcome, protocol: StudyProtocol
                           ) -> tuple[Any, list[Effect], str | None, bool, list[str]]:
    """A binary outcome's public rows (``analysis.public_binary.fit_public_binary``) from its released counts:
    (result, rows, failure, running, notes). The long-run wave is the outcome's final wave; an interim release that
    stops before it gives per-wave rows only (the trusted tier's rule), and a suppressed cell at the release's last
    wave fails the outcome (a suppressed earlier wave is reported not estimable)."""
    from analysis.public_binary import fit_public_binary

    plan = protocol.analysis
    notes: list[str] = []
    if not release.waves:
        return None, [], f"the public-tier model of {o.name} could not be fitted: its release covers no follow-up wave", \
            False, notes
    final = final_wave(protocol, o)
    running = release.waves[-1] != final
    if running:
        notes.append(f"STUDY RUNNING: the latest DP release of {o.name} covers {', '.join(release.waves)}; "
                     f"no public long-run estimate until a release covers {final}")
    if release.waves[-1] in release.unusable:
        return None, [], (f"the public-tier model of {o.name} could not be fitted: "
                          f"{release.unusable[release.waves[-1]]}"), running, notes
    try:
        res = fit_public_binary(release.cells, control=protocol.control_arm, waves=list(release.waves), outcome=o.name,
                                direction=o.direction, level=plan.interval_level, mcid=o.mcid, rope=o.rope,
                                unusable=release.unusable, seed=plan.seed)
    except (AnalysisInputError, InsufficientData) as exc:
        return None, [], f"the public-tier model of {o.name} could not be fitted: {exc}", running, notes
    notes.append(PUBLIC_BINARY_NOTE.format(outcome=o.name))
    return res, [e for e in res.effects if not (running and e.wave == LONG_RUN)], None, running, notes


def run_public_plan(
    released: Mapping[str, ReleasedCells | ReleasedCounts | Unavailable],
    protocol: StudyProtocol,
    *,
    fit: Callable[..., Any] | None = None,
    progress: Progress = lambda _msg: None,
) -> PlanResult:
    """The noise-aware model (``analysis.public.fit_public``; a binary outcome's ``analysis.public_binary``) of each
    outcome on its DP release only, with the trusted tier's rule for failures: an outcome whose model cannot be
    fitted is reported failed, the others publish, and nothing is published when all fail."""
    from analysis.public_binary import PUBLIC_BINARY_METHOD

    if fit is None:
        from analysis.public import fit_public as fit
    from analysis.public import PublicFitError

    plan = protocol.analysis
    treated = [a for a in protocol.arm_names if a != protocol.control_arm]
    effects: list[Effect] = []
    notes: list[str] = [PUBLIC_NOTE]
    if plan.covariates and any(not o.binary for o in protocol.outcomes):
        notes.append(PUBLIC_COVARIATES_NOTE.format(covariates=", ".join(plan.covariates)))
    failures: dict[str, str] = {}
    results: dict[str, Any] = {}
    released_waves = {w for r in released.values() if isinstance(r, ReleasedCells | ReleasedCounts) for w in r.waves}
    due = {o.name: [w for w in followup_waves(protocol, o) if w in released_waves] for o in protocol.outcomes}
    for o in protocol.outcomes:
        progress(f"fitting the noise-aware model of {o.name} to its DP release")
        release = released[o.name]
        if o.binary:
            why = (release.reason if isinstance(release, Unavailable) else
                   "its release is not of counts (a binary outcome is released as events and non-events)"
                   if not isinstance(release, ReleasedCounts) else None)
            res, rows, failure, running, binary_notes = (
                (None, [], f"the public-tier model of {o.name} could not be fitted: {why}", False, []) if why else
                _public_binary_outcome(release, o, protocol))
            notes += binary_notes
            if failure is not None:
                failures[o.name] = failure
                waves = (list(release.waves) + ([] if running else [LONG_RUN])
                         if isinstance(release, ReleasedCounts) and release.waves else [LONG_RUN])
                effects += [Effect(outcome=o.name, arm=a, control=protocol.control_arm, wave=w,
                                   method=PUBLIC_BINARY_METHOD, tier="public", interval_level=plan.interval_level,
                                   direction=o.direction, reason=failure) for a in treated for w in waves]
                continue
            results[o.name] = res
            effects += rows
            continue
        failure = None
        running = False
        if isinstance(release, Unavailable):
            failure = f"the public-tier model of {o.name} could not be fitted: {release.reason}"
        else:
            final = final_wave(protocol, o)
            running = bool(release.waves) and release.waves[-1] != final
            if running:  # an interim release: its last wave is not the long-run one (the trusted tier's rule)
                notes.append(f"STUDY RUNNING: the latest DP release of {o.name} covers {', '.join(release.waves)}; "
                             f"no public long-run estimate until a release covers {final}")
            try:
                res = fit(release.cells, plan, control=protocol.control_arm, waves=list(release.waves), outcome=o.name,
                          direction=o.direction, mcid=o.mcid, rope=o.rope)
                if not res.diagnostics.passed:
                    failure = (f"the public-tier model of {o.name} failed its diagnostics: "
                               f"{'; '.join(res.diagnostics.reasons)}")
            except PublicFitError as exc:
                failure = str(exc)
            except (AnalysisInputError, InsufficientData) as exc:
                failure = f"the public-tier model of {o.name} could not be fitted: {exc}"
            except RuntimeError as exc:  # the sampler could not start or run (e.g. no valid initial point)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failure = f"the public-tier model of {o.name} could not be fitted to its DP release ({first})"
        if failure is not None:
            failures[o.name] = failure
            waves = ([*release.waves] + ([] if running else [LONG_RUN]) if isinstance(release, ReleasedCells)
                     else [LONG_RUN])
            effects += [Effect(outcome=o.name, arm=a, control=protocol.control_arm, wave=w,
                               method="bayes_ancova_noise_aware", tier="public", interval_level=plan.interval_level,
                               direction=o.direction, reason=failure) for a in treated for w in waves]
            continue
        results[o.name] = res
        effects += [Effect(outcome=o.name, arm=a, control=protocol.control_arm, wave=w, method="bayes_ancova_noise_aware",
                           tier="public", interval_level=plan.interval_level, direction=o.direction, reason=why)
                    for w, why in release.unusable.items() for a in treated]
        effects += [e for e in res.effects if not (running and e.wave == LONG_RUN)]
    # a binary outcome has no primary method in the monitor and the decision rule, as on the trusted tier
    methods = {o.name: "bayes_ancova_noise_aware" for o in protocol.outcomes if not o.binary}
    return _published(effects, notes, [], failures, results, protocol, monitor=(due, methods, "public"))
