"""The study protocol: the one file a trial team writes, validated before anything runs.

A protocol names the arms (one marked control), the waves and the instruments given at each,
the primary outcome at the long-run horizon, secondary outcomes, surrogate telemetry metrics,
the privacy settings and the preregistered analysis plan. Every model here refuses unknown
fields and is frozen: a typo in a protocol is an error, never a silently ignored key.
"""

from __future__ import annotations

import re
from datetime import date, time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_serializer, model_validator

from schemas.errors import FlourishError

IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
LenientDate = Annotated[date, Strict(False)]  # YAML may quote a date; "2026-01-05" is still that date
LenientTime = Annotated[time, Strict(False)]


class Contract(BaseModel):
    """Base for every contract: unknown fields refused, values frozen, types strict (``true`` is not a number and
    ``1e30`` is not an integer) and numbers finite (``.inf`` cannot be hashed into a preregistration or released)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter and use only letters, digits, '_', '.', '-' (at most 64)"
        )
    return value


class Arm(Contract):
    name: str
    allocation: float = Field(1.0, gt=0, le=1000, description="Allocation ratio weight (e.g. 1, 1, 1 or 2, 1, 1).")
    control: bool = False
    features: dict[str, bool] = Field(default_factory=dict, description="Feature flags switched on in this arm.")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _identifier(v, "arm name")


class ResponseWindow(Contract):
    """When a wave's answers count as on time, in the participant's own clock (issue 17 item 4).

    The window opens ``opens_day`` days after the participant's assignment, on their local calendar, at ``opens_at``
    local time, in the IANA time zone of their prompt for the wave (a participant who moves has their windows in the
    zone they were in; without a prompt, the study's ``schedule.timezone``, else UTC). It closes
    ``expires_after_hours`` elapsed hours after its anchor (the prompt's ``scheduled_at``, or its ``sent_at`` with
    ``expires_from: sent``; without a prompt, or a prompt never sent, the window's opening), and an answer up to
    ``grace_hours`` later still counts as in the window. An answer before the opening or after the grace is *late*:
    kept, flagged (``relations.response_windows``) and left out of the primary analysis when the plan says so
    (``analysis.late_responses``). Local clock time across a daylight-saving change: 09:00 is 09:00 on both sides of
    it, while the expiry counts real hours."""

    opens_day: int | None = Field(None, ge=0, le=36_500, description="Days after the assignment (the participant's "
                                  "local date) the window opens. Absent: the wave's day.")
    opens_at: LenientTime = Field(time(0, 0), description="Local time of day the window opens (default midnight).")
    expires_after_hours: float = Field(gt=0, le=24 * 3_650, description="Elapsed hours from the anchor to expiry.")
    expires_from: Literal["scheduled", "sent"] = Field(
        "scheduled", description="The expiry counts from the prompt's scheduled time, or from when it was sent.")
    grace_hours: float = Field(0.0, ge=0, le=24 * 365, description="Hours after expiry an answer still counts as on "
                               "time (a prompt answered in the grace period is answered in window).")


class Wave(Contract):
    name: str
    day: int = Field(ge=0, le=36_500, description="Day offset from the participant's assignment (at most 100 years).")
    window_days: int = Field(7, ge=0, le=3_650, description="Responses within day +/- window count for this wave.")
    instruments: list[str] = Field(default_factory=list, description="Library instruments administered at this wave; "
                                   "none when the wave's outcomes are scored outside Flourish.")
    # Added after plans were locked: absent by default, so a locked protocol's hash does not change.
    response_window: ResponseWindow | None = Field(
        None, description="The wave's prompt window in the participant's local time (ResponseWindow). Absent: "
        "answers are not judged late and the compliance table counts no expiry for the wave.")

    def opens_day(self) -> int:
        """The day the wave's response window opens (its declared ``opens_day``, else the wave's day)."""
        w = self.response_window
        return self.day if w is None or w.opens_day is None else w.opens_day

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _identifier(v, "wave name")

    @property
    def months(self) -> float:
        """Time since assignment in months (30.4375 days, the mean Gregorian month)."""
        return self.day / 30.4375


Direction = Literal["higher_is_better", "lower_is_better"]

SUPPORTED_SUBGROUPS = ("baseline_tercile", "stratum")
"""Prespecified subgroup variables the analysis can form: terciles of the outcome's baseline, the randomisation stratum."""


class Outcome(Contract):
    """An outcome is a score of an instrument (``who5.percent``) or a score delivered from outside."""

    name: str = Field(description="Outcome id as stored in the scores table, e.g. 'who5.percent'.")
    instrument: str | None = Field(None, description="Instrument that produces it; null for an external score.")
    source: Literal["flourish", "external"] = "flourish"
    wave: str | None = Field(None, description="Wave of interest; for the primary outcome the long-run horizon.")
    direction: Direction = "higher_is_better"
    mcid: float | None = Field(None, gt=0, description="Minimum clinically important difference, outcome units.")
    rope: float | None = Field(None, gt=0, description="Half-width of the region of practical equivalence.")
    lower_bound: float | None = Field(None, description="Smallest possible value (for DP clipping of external scores).")
    upper_bound: float | None = Field(None, description="Largest possible value (for DP clipping of external scores).")
    # Added after plans were locked: absent (None) keeps a locked plan's hash (analysis.prereg leaves it out).
    ni_margin: float | None = Field(None, gt=0, description="Non-inferiority margin, outcome units: the largest "
                                    "harm the decision rule's guardrail test and the divergence monitor tolerate. "
                                    "Absent: the outcome's mcid.")
    guardrail: bool | None = Field(None, description="Whether the decision rule requires non-inferiority on this "
                                   "outcome. Absent: yes for a secondary outcome with a margin (ni_margin or mcid), "
                                   "never for the primary (the success metric).")

    @property
    def margin(self) -> float | None:
        """The non-inferiority margin in outcome units: ``ni_margin``, else the MCID, else None (no margin)."""
        return self.ni_margin if self.ni_margin is not None else self.mcid

    # Fields added after plans were locked default to None ("absent"), so a locked plan's hash does not change.
    kind: Literal["continuous", "binary"] | None = Field(
        None, description="binary: an event per participant x wave (responder, remission, pancreatitis), analysed from "
        "counts per arm x wave (risk difference, risk ratio, odds ratio, Pearson and exact tests, beta-binomial). "
        "Without a cut-off its scores are 0 or 1; with one the event is the score at or above (or at or below) it. "
        "Absent: continuous.")
    event_at_or_above: float | None = Field(None, description="Binary from a score: the event is score >= this "
                                            "(e.g. PHQ-9 total >= 10).")
    event_at_or_below: float | None = Field(None, description="Binary from a score: the event is score <= this "
                                            "(e.g. WHO-5 percent <= 50).")

    @property
    def binary(self) -> bool:
        return self.kind == "binary"

    @property
    def cutoff(self) -> tuple[float, bool] | None:
        """(cut-off, event at or above it) of a binary outcome read from a score; None for 0/1 scores or continuous."""
        if self.event_at_or_above is not None:
            return self.event_at_or_above, True
        if self.event_at_or_below is not None:
            return self.event_at_or_below, False
        return None

    @model_validator(mode="after")
    def _source_matches(self) -> Outcome:
        if self.source == "flourish" and not self.instrument:
            raise ValueError(f"outcome {self.name!r} is scored by Flourish, so it must name its instrument")
        if self.lower_bound is not None and self.upper_bound is not None and self.lower_bound >= self.upper_bound:
            raise ValueError(f"outcome {self.name!r}: lower_bound must be below upper_bound")
        if self.guardrail and self.margin is None:
            raise ValueError(f"outcome {self.name!r} is a guardrail, so it needs a non-inferiority margin (ni_margin "
                             "or mcid)")
        if self.event_at_or_above is not None and self.event_at_or_below is not None:
            raise ValueError(f"outcome {self.name!r}: give event_at_or_above or event_at_or_below, not both")
        if self.cutoff is not None and not self.binary:
            raise ValueError(f"outcome {self.name!r} has a cut-off, so it must say kind: binary")
        if self.binary and self.cutoff is None and self.source == "flourish":
            raise ValueError(f"outcome {self.name!r} is binary and scored by Flourish, so it needs a cut-off "
                             "(event_at_or_above or event_at_or_below) on its instrument's score")
        return self


class BaselineCovariate(Contract):
    """A participant characteristic measured before randomisation (age band, antidepressant use, episode length),
    that the plan may adjust for or form subgroups by. Declared here so a plan cannot name one that does not exist."""

    name: str
    kind: Literal["numeric", "categorical"] = "numeric"
    description: str = ""
    levels: list[str] | None = Field(None, description="The levels a categorical covariate takes, the reference level "
                                     "first (its coefficients are each other level against it); none for a numeric one.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _identifier(v, "baseline covariate name")

    @model_validator(mode="after")
    def _levels(self) -> BaselineCovariate:
        if self.kind == "categorical":
            if not self.levels or len(self.levels) < 2:
                raise ValueError(f"baseline covariate {self.name!r} is categorical, so it must list at least two levels "
                                 "(the reference level first)")
            if len(set(self.levels)) != len(self.levels) or any(not lv or len(lv) > 1024 for lv in self.levels):
                raise ValueError(f"the levels of baseline covariate {self.name!r} must be distinct texts of 1..1024 "
                                 "characters")
        elif self.levels is not None:
            raise ValueError(f"baseline covariate {self.name!r} is numeric and takes no levels")
        return self


class SurrogateMetric(Contract):
    """A telemetry summary per participant over an early window, used as a short-run surrogate."""

    name: str
    event_type: Literal["session_start", "message", "feature_exposure", "feature_opt_in", "feature_opt_out", "session_end"]
    feature: str | None = None
    statistic: Literal["count", "count_per_week", "sum_value", "mean_value"] = "count_per_week"
    window_days: int = Field(28, gt=0, le=3_650)
    lower_bound: float = 0.0
    upper_bound: float = Field(100.0, description="Clip bound per participant (public information for DP).")
    engagement: bool | None = Field(None, description="Whether the divergence monitor reads this metric as "
                                    "engagement (more is more use). Absent: yes.")


class ReleasePlan(Contract):
    """One planned DP release: made once, when its wave has closed, spending a fixed share of the study's budget
    (privacy.md: plan continual releases in the protocol rather than ad hoc). The pipeline keys the release on the
    study, the plan and this entry, so a rerun never spends the budget twice."""

    after_wave: str = Field(description="The release is made once this wave has closed.")
    share: float = Field(gt=0, le=1, description="Share of the study's total budget this release spends (as "
                         "`flourish release --fraction` counts it).")


class PrivacySettings(Contract):
    epsilon: float = Field(gt=0, le=100, description="Total privacy budget of the study (epsilon); above 100 a DP "
                           "guarantee says nothing, so a larger value is a typo.")
    delta: float = Field(1e-6, ge=0, lt=1)
    unit: Literal["participant"] = "participant"
    min_cell_size: int = Field(10, ge=1, le=100_000)
    mechanism: Literal["gaussian", "laplace"] = "gaussian"
    releases: list[ReleasePlan] = Field(default_factory=list, description="Planned releases; none declared means one "
                                        "release of the whole budget once the last wave has closed.")


class Priors(Contract):
    """Weakly informative priors, in units of the outcome's baseline standard deviation."""

    effect_sd: float = Field(1.0, gt=0, description="Normal(0, effect_sd) on every arm effect (SD units).")
    intercept_sd: float = Field(10.0, gt=0, description="Normal(0, intercept_sd) on intercept and trend terms.")
    coefficient_sd: float = Field(2.5, gt=0, description="Normal(0, .) on covariate slopes (standardized).")
    sigma_scale: float = Field(1.0, gt=0, description="HalfNormal scale of residual and random-effect SDs.")
    rate_mean_months: float = Field(2.0, gt=0, description="Prior mean time constant of a saturating effect.")


class AnalysisPlan(Contract):
    effect_shape: Literal["per_wave", "constant", "saturating"] = "per_wave"
    time_trend: Literal["per_wave", "linear_months"] = "per_wave"
    covariates: list[str] = Field(default_factory=list)
    random_slopes: bool = Field(False, description="Random slope on months since assignment per participant, "
                                "correlated with the random intercept (needs >= 2 follow-up times).")
    baseline_wave: str | None = Field(None, description="Wave whose value is the baseline covariate; default: first wave.")
    interval_level: float = Field(0.95, gt=0.5, lt=1)
    priors: Priors = Field(default_factory=Priors)
    subgroups: list[str] = Field(default_factory=list, description="Prespecified subgroup variables, e.g. baseline_tercile.")
    chains: int = Field(4, ge=1, le=64)
    draws: int = Field(1000, ge=100, le=100_000)
    tune: int = Field(1000, ge=100, le=100_000)
    seed: int = Field(20261122, ge=0, lt=2**63)
    rhat_max: float = Field(1.01, gt=1.0, le=1.2, description="Largest R-hat a confirmatory fit may have.")
    ess_bulk_min: float = Field(400.0, gt=0, le=1e6, description="Smallest bulk effective sample size.")
    # Fields added after plans were locked default to None ("absent"), so a locked plan's hash does not change
    # (analysis.prereg.canonical_protocol leaves absent fields out); the defaults they stand for are stated here.
    model: Literal["mmrm", "random_intercept"] | None = Field(
        None, description="The primary longitudinal model. Absent: the MMRM (unstructured covariance over the "
        "follow-up waves; Mallinckrodt et al. 2008) when an outcome has two or more follow-up waves and the plan "
        "estimates an effect per wave; the random-intercept model for one follow-up wave (the ANCOVA), a constant "
        "or saturating effect, a linear time trend or random slopes.")
    mmrm_covariance: Literal["us", "toeph", "toep", "ar1h", "ar1", "csh", "cs"] | None = Field(
        None, description="The MMRM's covariance over the follow-up waves (mmrm's names). Absent: us (unstructured).")
    mmrm_bayesian: bool | None = Field(
        None, description="Also fit the Bayesian MMRM (LKJ prior, nutpie) beside the REML fit, for P(benefit) and "
        "P(> MCID). Absent: no (its model compiles for about a minute per design).")
    late_responses: Literal["exclude", "include"] | None = Field(
        None, description="Answers outside their wave's response window (waves.response_window) in the primary "
        "analysis: left out, or kept. Absent: left out at the waves that declare a window (so a protocol without "
        "windows analyses what it always did). Late answers are kept in the warehouse and counted either way.")

    def excludes_late(self) -> bool:
        """Whether the primary analysis leaves out answers outside a declared response window."""
        return self.late_responses != "include"

    def primary_model(self, n_followup_waves: int) -> Literal["mmrm", "random_intercept"]:
        """The model the plan fits to an outcome with ``n_followup_waves`` follow-up waves with data."""
        if self.model is not None:
            return self.model
        per_wave = self.effect_shape == "per_wave" and self.time_trend == "per_wave" and not self.random_slopes
        return "mmrm" if n_followup_waves >= 2 and per_wave else "random_intercept"


class DesignSettings(Contract):
    """The inputs of the design-stage simulation (``flourish design``, ``analysis.design``): what the team assumes
    before any data exist. Every number is an assumption, stated here so it is preregistered with the plan.

    The expected effect is never a pilot's observed effect (simr #91, #257: "observed power" is a function of the
    p-value): it is a multiple of the preregistered minimal important difference (``Outcome.mcid``), 0 for the null.
    The covariance defaults follow the realistic simulator's sources (``flows/simulation/realistic.py``): a stable
    share of 0.6 of the baseline variance, occasion variance doubling over a year, correlation 0.5 between
    consecutive waves' occasion noise; attrition 25% by the final wave (about 22% overall in a meta-analysis of 41
    RCTs, rising with length: instruments.md)."""

    participants_per_arm: list[Annotated[int, Field(ge=4, le=10_000_000)]] = Field(
        default_factory=list, description="The grid of participants per arm (arms with allocation weights other than 1 "
        "scale it). Empty: half, one and one and a half times the planned number.")
    planned_participants_per_arm: int | None = Field(
        None, ge=4, le=10_000_000, description="The planned number per arm, where the decision rule and the divergence "
        "monitor are simulated. Absent: the analytic number for target_power at the planned effect.")
    attrition: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=lambda: [0.25], min_length=1, description="Share of participants without the final wave "
        "(monotone drop-out completely at random, the same hazard at every follow-up wave); a grid.")
    icc: float = Field(0.6, gt=0, lt=1, description="Share of the baseline variance that is stable (participant level).")
    variance_growth_per_year: float = Field(1.0, ge=0, le=20, description="Growth of the occasion variance per year "
                                            "since assignment (1: it doubles over a year).")
    serial_correlation: float = Field(0.5, ge=0, lt=1, description="Correlation of the occasion noise between "
                                      "consecutive waves (AR(1) over waves).")
    effect_mcid_multiples: list[Annotated[float, Field(ge=0, le=20)]] = Field(
        default_factory=lambda: [0.0, 1.0], min_length=1, description="The effect grid, in multiples of the primary "
        "outcome's MCID in its good direction: 0 is the null (type I error), 1 the planned effect.")
    effect_rise_months: float = Field(0.0, ge=0, le=120, description="Time constant of the effect's rise, months; 0: "
                                      "the same effect at every follow-up wave.")
    outcome_sd: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="Baseline SD per outcome, outcome units. Absent for an outcome: a fifth of "
        "its score range, stated as an assumption in the output.")
    epsilon: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=list, description="Grid of the study's total privacy budget for the public tier's curves. "
        "Empty: half, one and two times privacy.epsilon (none without a privacy section).")
    engagement_effect_sd: float = Field(0.3, ge=0, le=5, description="Engagement effect of every treated arm, SD "
                                        "units, in the decision-rule and monitor scenarios (features raise use).")
    harm_effect_sd: float = Field(0.2, gt=0, le=5, description="Decline of the primary outcome, SD units, in the "
                                  "scenario the divergence monitor must detect.")
    engagement_pre_correlation: float = Field(0.5, ge=0, lt=1, description="Correlation of an engagement metric "
                                              "with its pre-period value (what CUPED uses).")
    target_power: float = Field(0.8, gt=0.5, lt=1, description="Power the decision rule should have (Spotify's "
                                "rule: each test it needs is powered at 1 - (1 - target_power) / tests).")
    nsim: int = Field(200, ge=2, le=1_000_000, description="Simulated trials per grid cell (trusted tier).")
    public_nsim: int | None = Field(None, ge=0, le=100_000, description="Simulated trials per epsilon (public tier: "
                                    "the noise-aware model on DP-noised statistics). Absent: nsim; 0 skips the public "
                                    "tier's curve.")
    seed: int = Field(20261207, ge=0, lt=2**63)


_CRON = re.compile(r"^\S+(\s+\S+){4}$")


class Schedule(Contract):
    """When the study runs itself (``flourish serve``): cron schedules read in the study's IANA time zone, so a
    01:30 job runs once on the days clocks change (Prefect runs a cron with a time zone in local time)."""

    timezone: str = Field(description="IANA time zone of the study, e.g. Europe/London.")
    enrolment_start: LenientDate
    enrolment_end: LenientDate = Field(description="Last day of randomisation; each wave closes its window after it.")
    nightly_ingest: str = Field("0 2 * * *", description="Cron (5 fields, local time) of the landing folder's ingest.")
    weekly_report: str = Field("0 6 * * 1", description="Cron (5 fields, local time) of the report refresh.")
    wave_close_time: LenientTime = Field(time(3, 0), description="Local time of day of a wave-close run.")
    late_runs: Literal["latest_only", "every_missed"] = Field(
        "latest_only", description="After an outage: run only the latest missed run of a schedule, or every one.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {v!r} is not an IANA time zone name such as Europe/London") from None
        return v

    @field_validator("nightly_ingest", "weekly_report")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not _CRON.match(v.strip()):
            raise ValueError(f"{v!r} is not a cron expression of five fields (minute hour day month weekday)")
        return v.strip()

    @model_validator(mode="after")
    def _dates(self) -> Schedule:
        if self.enrolment_end < self.enrolment_start:
            raise ValueError("schedule.enrolment_end is before enrolment_start")
        return self


class RegulatoryContext(Contract):
    """What the regulator report states about the AI system under study and how the team classifies it.

    Written by the trial team and reported as written: Flourish never infers a classification. Intended-use wording
    decides whether a wellbeing assistant is a medical device or a high-risk AI system (FDA General Wellness, MHRA
    DMHT guidance, EU AI Act Annex III), so the rationale is recorded, not assumed (research/reports.md C4)."""

    system_name: str = Field(min_length=1, description="The AI system (assistant) whose features the arms switch.")
    system_version: str | None = Field(None, description="Version of the system the study ran on.")
    feature_versions: dict[str, str] = Field(default_factory=dict, description="Version of each feature flag the "
                                             "arms switch on (CONSORT-AI item 5(i)).")
    intended_purpose: str = Field(min_length=1, description="The intended use, in the words the provider uses.")
    classification: Literal["not_high_risk", "high_risk", "medical_device", "general_wellness", "undetermined"] = (
        "undetermined")
    rationale: str = Field(min_length=1, description="Why that classification: the reasoning the team records.")
    registry: str | None = Field(None, description="Trial registry name, e.g. ISRCTN, ClinicalTrials.gov, OSF.")
    registry_id: str | None = None
    registry_url: str | None = None
    registered_on: LenientDate | None = None
    retention: str | None = Field(None, description="How long study data are kept, and under which rule.")


class InstrumentPermission(Contract):
    instrument: str
    reference: str = Field(min_length=1, description="Licence or permission reference held by the study.")


class StudyProtocol(Contract):
    study_id: str
    title: str
    intended_use: Literal["research", "commercial"] = "research"
    arms: list[Arm] = Field(min_length=2)
    waves: list[Wave] = Field(min_length=1)
    primary_outcome: Outcome
    secondary_outcomes: list[Outcome] = Field(default_factory=list)
    surrogates: list[SurrogateMetric] = Field(default_factory=list)
    privacy: PrivacySettings | None = Field(None, description="The study's privacy budget and release plan; a "
                                            "study that releases nothing may leave it out.")
    analysis: AnalysisPlan = Field(default_factory=AnalysisPlan)
    instrument_permissions: list[InstrumentPermission] = Field(default_factory=list)
    strata: list[str] = Field(default_factory=list, description="Stratification variables for randomization.")
    baseline_covariates: list[BaselineCovariate] = Field(
        default_factory=list, description="Participant characteristics measured before randomisation that the plan "
        "may name as covariates.")
    schedule: Schedule | None = Field(None, description="When the pipeline runs itself; without one, every wave "
                                      "counts as closed when `flourish run` is called (an on-demand study).")
    design: DesignSettings | None = Field(None, description="Assumptions of the design-stage simulation "
                                          "(`flourish design`); absent: its stated defaults.")
    regulatory: RegulatoryContext | None = Field(None, description="System identification, intended purpose and the "
                                                 "classification rationale the regulator report states.")

    @field_validator("study_id")
    @classmethod
    def _study_id(cls, v: str) -> str:
        return _identifier(v, "study_id")

    @model_validator(mode="after")
    def _consistent(self) -> StudyProtocol:
        arm_names = [a.name for a in self.arms]
        if len(set(arm_names)) != len(arm_names):
            raise ValueError(f"arm names must be unique, got {arm_names}")
        controls = [a.name for a in self.arms if a.control]
        if len(controls) != 1:
            raise ValueError(f"exactly one arm must be marked control: true, found {len(controls)}")
        wave_names = [w.name for w in self.waves]
        if len(set(wave_names)) != len(wave_names):
            raise ValueError(f"wave names must be unique, got {wave_names}")
        days = [w.day for w in self.waves]
        if days != sorted(days) or len(set(days)) != len(days):
            raise ValueError(f"waves must be listed in increasing day order with distinct days, got {days}")
        outcome_names = [self.primary_outcome.name] + [o.name for o in self.secondary_outcomes]
        if len(set(outcome_names)) != len(outcome_names):
            raise ValueError(f"outcome names must be unique, got {outcome_names}")
        if self.primary_outcome.wave is None:
            raise ValueError("primary_outcome.wave must name the long-run horizon wave")
        for o in [self.primary_outcome, *self.secondary_outcomes]:
            if o.wave is not None and o.wave not in wave_names:
                raise ValueError(f"outcome {o.name!r} names wave {o.wave!r}, which is not one of {wave_names}")
            if o.instrument is not None and not any(o.instrument in w.instruments for w in self.waves):
                raise ValueError(f"outcome {o.name!r} uses instrument {o.instrument!r}, which no wave administers")
        if self.analysis.baseline_wave is not None and self.analysis.baseline_wave not in wave_names:
            raise ValueError(f"analysis.baseline_wave {self.analysis.baseline_wave!r} is not one of {wave_names}")
        planned = [r.after_wave for r in self.privacy.releases] if self.privacy else []
        if [w for w in planned if w not in wave_names]:
            raise ValueError(f"privacy.releases name waves {[w for w in planned if w not in wave_names]} that are not "
                             f"one of {wave_names}")
        if len(set(planned)) != len(planned):
            raise ValueError("privacy.releases name a wave more than once")
        if self.privacy and sum(r.share for r in self.privacy.releases) > 1 + 1e-9:
            raise ValueError("privacy.releases spend more than the whole budget (their shares add up to more than 1)")
        if self.regulatory is not None:
            features = {f for a in self.arms for f in a.features}
            stray = sorted(set(self.regulatory.feature_versions) - features)
            if stray:
                raise ValueError(f"regulatory.feature_versions names {stray}, which no arm switches (features: "
                                 f"{sorted(features)})")
        declared = [c.name for c in self.baseline_covariates]
        if len(set(declared)) != len(declared):
            raise ValueError(f"baseline covariate names must be unique, got {declared}")
        if set(declared) & set(outcome_names):
            raise ValueError(f"baseline covariates {sorted(set(declared) & set(outcome_names))} are also outcomes; "
                             "a name is one or the other")
        categorical = [c.name for c in self.baseline_covariates if c.kind == "categorical"]
        unknown = [g for g in self.analysis.subgroups if g not in SUPPORTED_SUBGROUPS and g not in categorical]
        if unknown:
            raise ValueError(f"analysis.subgroups {unknown}: a prespecified subgroup must be one of "
                             f"{list(SUPPORTED_SUBGROUPS) + categorical} (the supported ones, or a declared "
                             "categorical baseline covariate)")
        unknown = [c for c in self.analysis.covariates if c not in outcome_names and c not in declared]
        if unknown:
            raise ValueError(f"analysis.covariates {unknown}: a covariate must be an outcome the protocol names (its "
                             f"baseline value is the covariate) or a declared baseline_covariates entry; known: "
                             f"{outcome_names + declared}")
        if self.primary_outcome.guardrail:
            raise ValueError(f"the primary outcome {self.primary_outcome.name!r} is the decision rule's success metric; "
                             "a guardrail (non-inferiority) outcome is a secondary outcome")
        engagement = {m.name for m in self.engagement_metrics()}
        adjusted = sorted(engagement & (set(self.analysis.covariates) | set(declared)))
        if adjusted:
            raise ValueError(f"{adjusted} are engagement metrics (telemetry after randomisation): the flourishing "
                             "effects are never adjusted for engagement, so they cannot be covariates")
        if self.design is not None:
            unknown = [o for o in self.design.outcome_sd if o not in outcome_names]
            if unknown:
                raise ValueError(f"design.outcome_sd names {unknown}, which are not outcomes of the protocol")
        return self

    @model_serializer(mode="wrap")
    def _without_absent_regulatory(self, handler):
        """An absent ``regulatory`` section is left out of the dump, so the canonical JSON, and so the preregistration
        hash, of a protocol written before the field existed stays what it was."""
        data = handler(self)
        if isinstance(data, dict) and data.get("regulatory", ...) is None:
            data.pop("regulatory")
        return data

    # -- convenience --------------------------------------------------------------------
    @property
    def control_arm(self) -> str:
        return next(a.name for a in self.arms if a.control)

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    @property
    def wave_names(self) -> list[str]:
        return [w.name for w in self.waves]

    @property
    def baseline_wave(self) -> str:
        return self.analysis.baseline_wave or self.waves[0].name

    def baseline_covariate(self, name: str) -> BaselineCovariate | None:
        """The declared baseline covariate ``name``, or None when the name is not one (an outcome's baseline)."""
        return next((c for c in self.baseline_covariates if c.name == name), None)

    @property
    def outcomes(self) -> list[Outcome]:
        return [self.primary_outcome, *self.secondary_outcomes]

    def outcome(self, name: str) -> Outcome:
        for o in self.outcomes:
            if o.name == name:
                return o
        raise KeyError(f"outcome {name!r} is not in the protocol; it has {[o.name for o in self.outcomes]}")

    def guardrails(self) -> list[Outcome]:
        """The outcomes the decision rule holds to non-inferiority (``Outcome.guardrail``; absent: every secondary
        outcome with a margin)."""
        return [o for o in self.secondary_outcomes
                if (o.guardrail if o.guardrail is not None else o.margin is not None)]

    def engagement_metrics(self) -> list[SurrogateMetric]:
        """The telemetry metrics the divergence monitor reads as engagement (``SurrogateMetric.engagement``)."""
        return [m for m in self.surrogates if m.engagement is not False]

    def instruments(self) -> list[str]:
        seen: dict[str, None] = {}
        for w in self.waves:
            for i in w.instruments:
                seen.setdefault(i, None)
        return list(seen)

    def planned_releases(self) -> list[ReleasePlan]:
        """The protocol's planned DP releases, in wave order; by default one release of the whole budget after the
        last wave."""
        if self.privacy is None:
            return []
        if not self.privacy.releases:
            return [ReleasePlan(after_wave=self.waves[-1].name, share=1.0)]
        order = {w: i for i, w in enumerate(self.wave_names)}
        return sorted(self.privacy.releases, key=lambda r: order[r.after_wave])

    def wave(self, name: str) -> Wave:
        for w in self.waves:
            if w.name == name:
                return w
        raise KeyError(f"wave {name!r} is not in the protocol; it has {self.wave_names}")


class ProtocolError(FlourishError, ValueError):
    """A protocol file that cannot be read or does not satisfy the contract."""


def load_protocol(path: str | Path) -> StudyProtocol:
    """Read and validate a study protocol YAML file; raise ProtocolError with one clear sentence."""
    p = Path(path)
    if not p.is_file():
        raise ProtocolError(f"study protocol {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"study protocol {p} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ProtocolError(f"study protocol {p} is not valid YAML{where}: {problem}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"study protocol {p} must be a YAML mapping at the top level")
    try:
        return StudyProtocol.model_validate(data)
    except ValueError as exc:
        raise ProtocolError(f"study protocol {p} is invalid: {_first_error(exc)}") from exc


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for e in errors()[:3]:
            loc = ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return "; ".join(parts)
    return str(exc)


def dump_protocol(protocol: StudyProtocol) -> str:
    """Canonical YAML of a protocol (sorted keys), as written by the simulator."""
    return yaml.safe_dump(protocol.model_dump(mode="json"), sort_keys=False)
