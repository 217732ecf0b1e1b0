"""The report bundle: everything a report may show, as one frozen value.

Report builders (``reports.dashboard``, ``reports.trial``, ``reports.regulator``) take a :class:`ReportBundle` and
nothing else: no connection, no path, no environment. ``flows.reports`` fills it from the warehouse in one of two
tiers (DESIGN.md, "Two trust tiers"):

- **public**: only what may leave the study: the DP release tables (values with their noise SD and suppression),
  the plan registry (the locked plan, its hash and time, its deviations), the public-tier analysis rows (the
  noise-aware model fitted to the releases), the budget ledger, and aggregate tables stripped of exact counts
  (quality verdicts without unit counts, reliability coefficients without n, the pipeline's stage states without
  their summaries). No participant-level table is read.
- **trusted**: the same, plus what the trial team sees inside the study: both tiers' analysis rows, the CONSORT flow
  counted from the warehouse (aggregates only), baseline moments per arm, available n per outcome x arm x wave,
  harms (safety flags per arm and wave), exact reliability n, quarantine reasons.

Sections another room fills later (survey compliance per arm x wave, the engagement-vs-flourishing divergence
monitor) are optional; a report renders an absent one as "not available" with the reason given here.

Units are in the names (``epsilon_spent``, ``noise_sd``, ``n_participants``); counts a DP release made are floats
(noisy), exact counts are ints.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.protocol import StudyProtocol
from schemas.results import Effect

BUNDLE_VERSION = "flourish.report_bundle/1"

Tier = Literal["public", "trusted"]


class Part(BaseModel):
    """Base of every bundle part: unknown fields refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NotAvailable(Part):
    """A section the bundle cannot fill, and why (rendered as "not available: <reason>")."""

    reason: str = Field(min_length=1)


# -- DP releases -------------------------------------------------------------------------------------------------


class Release(Part):
    """One DP release (the ``releases`` table): its privacy loss and what it holds."""

    release_id: str
    created_at: datetime
    mechanism: str
    accounting: str
    rho: float | None
    epsilon: float
    delta: float
    min_cell_size: int
    queries: tuple[str, ...]
    values_sha256: str
    opendp_version: str


class ReleasedValue(Part):
    """One released cell (``release_values``): ``value`` is None exactly when ``suppressed`` (its noisy count fell
    below the protocol's ``min_cell_size``); ``noise_sd`` is the SD of the DP noise in ``value``."""

    release_id: str
    query: str
    outcome: str | None
    arm: str | None
    wave: str | None
    statistic: str
    value: float | None
    noise_sd: float | None
    suppressed: bool

    @model_validator(mode="after")
    def _suppression(self) -> ReleasedValue:
        if self.suppressed and self.value is not None:
            raise ValueError(f"released cell {self.query}/{self.statistic} is suppressed but carries a value")
        if not self.suppressed and self.value is None:
            raise ValueError(f"released cell {self.query}/{self.statistic} has no value and is not suppressed")
        return self


class LedgerEntry(Part):
    release_id: str
    query: str
    mechanism: str
    noise_scale: float
    rho: float | None
    epsilon: float | None
    status: str


class Budget(Part):
    """The study's privacy budget (``privacy_budgets`` and ``privacy_ledger``)."""

    accounting: str
    epsilon_total: float
    delta: float
    epsilon_spent: float
    epsilon_left: float
    rho_total: float | None = None
    rho_spent: float | None = None
    releases: int
    unit: str = "participant"
    ledger: tuple[LedgerEntry, ...] = ()


# -- plan, analysis ----------------------------------------------------------------------------------------------


class PlanEntry(Part):
    """One entry of the append-only plan registry: the lock, or a deviation with its reason."""

    seq: int
    kind: str
    plan_hash: str
    recorded_at: datetime
    reason: str
    entry_hash: str
    plan_json: str = Field(description="The canonical protocol JSON that was hashed (public: it is the protocol).")


class PlanRecord(Part):
    entries: tuple[PlanEntry, ...]
    current_hash: str = Field(description="Hash of the protocol the reports were built from.")
    locked: bool = Field(description="The current protocol is the locked plan (or its latest recorded deviation).")
    explanation: str = ""

    @property
    def lock(self) -> PlanEntry | None:
        return next((e for e in self.entries if e.kind == "lock"), None)

    @property
    def deviations(self) -> tuple[PlanEntry, ...]:
        return tuple(e for e in self.entries if e.kind == "deviation")


class AnalysisRun(Part):
    """The rows of one stored analysis run (``analysis_summary``) of one tier."""

    run_id: str
    tier: Tier
    created_at: datetime
    plan_hash: str
    exploratory: bool
    effects: tuple[Effect, ...]


# -- aggregates --------------------------------------------------------------------------------------------------


class QualityCheck(Part):
    name: str
    family: str
    severity: str
    success: bool
    description: str
    checked_count: int | None = None      # trusted only: exact counts are not released
    unexpected_count: int | None = None
    unit: str | None = None


class QualityStatus(Part):
    run_id: str
    checked_at: datetime
    verdict: str
    checks: tuple[QualityCheck, ...]


class SafetyCount(Part):
    """Participants with a safety flag, per arm x wave x flag: exact (trusted) or from a DP release (public)."""

    arm: str
    wave: str
    flag: str
    n_participants: float | None
    noise_sd: float | None = None
    suppressed: bool = False
    at_risk: float | None = Field(None, description="Participants who answered the flagging instrument at the wave.")


class Safety(Part):
    source: Literal["warehouse", "dp_release"]
    counts: tuple[SafetyCount, ...]
    flags: tuple[str, ...] = ()


class Reliability(Part):
    instrument: str
    instrument_version: str
    outcome: str
    wave: str
    arm: str
    n_items: int
    n_obs: int | None = None               # trusted only
    alpha: float | None
    alpha_ci_lower: float | None
    alpha_ci_upper: float | None
    omega: float | None
    note: str = ""


class StageState(Part):
    stage: str
    state: str
    seconds: float
    message: str | None = None


class PipelineRun(Part):
    run_id: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    state: str
    message: str | None
    stages: tuple[StageState, ...]
    analysis_notes: tuple[str, ...] = ()   # trusted only (the analyze stage's notes)


# -- trusted-tier aggregates -------------------------------------------------------------------------------------


class FlowWave(Part):
    """One arm at one wave of the CONSORT flow. ``entered = continued + sum(exits)`` holds exactly; ``answered`` and
    the side notes are not conserved through the flow (a participant may skip a wave and answer a later one)."""

    wave: str
    entered: int
    exits: dict[str, int]
    continued: int
    answered: int
    side_notes: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _conserved(self) -> FlowWave:
        if self.entered != self.continued + sum(self.exits.values()):
            raise ValueError(f"flow at {self.wave}: entered {self.entered} != continued {self.continued} + exits "
                             f"{self.exits}")
        return self


class FlowArm(Part):
    arm: str
    allocated: int
    waves: tuple[FlowWave, ...]


class ConsortFlow(Part):
    """Participants through the study per arm and wave, counted in the warehouse (trusted tier)."""

    randomised: int
    arms: tuple[FlowArm, ...]
    erased: dict[str, int] = Field(default_factory=dict, description="Participants erased, by reason (withdrawal of "
                                   "consent erases a participant with their arm, so these are not per arm).")
    prompted: str = Field("not recorded: the warehouse holds no survey prompts, only answers",
                          description="What is known about prompts sent per wave.")
    as_of: datetime | None = None
    first_assigned: datetime | None = Field(None, description="Earliest randomisation (recruitment start).")
    last_assigned: datetime | None = Field(None, description="Latest randomisation (recruitment end so far).")
    last_answer: datetime | None = Field(None, description="Latest survey answer (follow-up so far).")


class BaselineRow(Part):
    """An outcome at the baseline wave, per arm: exact moments (trusted)."""

    outcome: str
    arm: str
    n: int
    mean: float | None
    sd: float | None
    median: float | None = None
    q1: float | None = None
    q3: float | None = None


class StratumCount(Part):
    arm: str
    stratum: str
    n: int


class Availability(Part):
    """Participants with a score of the outcome at the wave, per arm (CONSORT 2025 item 26: available n)."""

    outcome: str
    arm: str
    wave: str
    n_available: int


# -- sections others fill later ----------------------------------------------------------------------------------


class ComplianceCell(Part):
    """Survey prompts of one arm x wave and what became of them (``schemas.warehouse.relations.compliance_table``):
    prompted = answered_in_window + late + expired + unanswered. ``answered`` is answered in the window. Exact
    ints in the trusted tier; in the public tier only from a DP release (noisy floats with their ``noise_sd``)."""

    arm: str
    wave: str
    prompted: float | None
    answered: float | None
    noise_sd: float | None = None
    suppressed: bool = False
    late: float | None = None
    expired: float | None = None
    unanswered: float | None = None


class DivergenceCheck(Part):
    """One check of the divergence monitor (``analysis.divergence``; table ``divergence_status``): an arm's
    engagement effect on ``metric`` against its harm on ``outcome`` at ``wave`` (the effect against the outcome's good
    direction, positive = worse), with the intersection-union test's p-values and the posterior quadrant probability."""

    arm: str
    wave: str
    outcome: str
    metric: str
    status: Literal["divergence", "no_divergence", "indeterminate"]
    alpha: float
    margin: float
    engagement_estimate: float | None = None
    engagement_sd: float | None = None
    harm_estimate: float | None = None
    harm_sd: float | None = None
    p_engagement: float | None = None
    p_harm: float | None = None
    p_iut: float | None = None
    p_quadrant: float | None = None
    reason: str | None = None

    def sentence(self) -> str:
        where = f"{self.arm} at {self.wave} ({self.metric} vs {self.outcome})"
        if self.status == "indeterminate":
            return f"{where}: indeterminate, {self.reason}"
        return (f"{where}: engagement {self.engagement_estimate:+.3g} (p = {self.p_engagement:.2g}), harm "
                f"{self.harm_estimate:+.3g} against margin {self.margin:g} (p = {self.p_harm:.2g}), IUT p = "
                f"{self.p_iut:.2g}, P(quadrant) = {self.p_quadrant:.2f}")


class DivergenceStatus(Part):
    """The engagement-vs-flourishing divergence monitor's latest status (post-market monitoring): the summary
    ``status`` (divergence when any check diverges, else indeterminate when any check could not be made, else no
    divergence), a ``detail`` sentence with the numbers, and every check of the run (``tier``'s rows only)."""

    status: str
    checked_at: datetime | None = None
    detail: str = ""
    tier: Tier | None = None
    checks: tuple[DivergenceCheck, ...] = ()


class Governance(Part):
    consent_scopes: dict[str, int | None] = Field(default_factory=dict, description="Participants granting each "
                                                  "scope (None in the public tier: exact counts are not released).")
    erasures_honoured: int | None = None
    participants_erased: int | None = None
    quarantined_by_reason: dict[str, int] = Field(default_factory=dict)   # trusted only
    retention: str | None = None


# -- the bundle --------------------------------------------------------------------------------------------------


class ReportBundle(Part):
    """Everything the reports may show (one tier). A section None or :class:`NotAvailable` renders as
    "not available"."""

    bundle_version: Literal["flourish.report_bundle/1"] = BUNDLE_VERSION
    tier: Tier
    built_at: datetime
    protocol: StudyProtocol
    plan: PlanRecord | NotAvailable
    releases: tuple[Release, ...] = ()
    release_values: tuple[ReleasedValue, ...] = ()
    budget: Budget | NotAvailable
    analyses: tuple[AnalysisRun, ...] = ()
    quality: QualityStatus | NotAvailable
    safety: Safety | NotAvailable
    psychometrics: tuple[Reliability, ...] = ()
    last_run: PipelineRun | NotAvailable
    governance: Governance = Field(default_factory=Governance)
    # trusted only
    flow: ConsortFlow | NotAvailable = NotAvailable(reason="the CONSORT flow is counted in the trusted build only")
    baseline: tuple[BaselineRow, ...] = ()
    strata: tuple[StratumCount, ...] = ()
    availability: tuple[Availability, ...] = ()
    # filled by other rooms later
    compliance: tuple[ComplianceCell, ...] | NotAvailable = NotAvailable(
        reason="the survey compliance table (prompted and answered per arm and wave) is not computed yet")
    divergence: DivergenceStatus | NotAvailable = NotAvailable(
        reason="the engagement-vs-flourishing divergence monitor has not reported")

    @model_validator(mode="after")
    def _tier_rules(self) -> ReportBundle:
        if self.tier == "public":
            leaks = [a.run_id for a in self.analyses if a.tier != "public"]
            if leaks:
                raise ValueError(f"a public bundle holds trusted-tier analysis runs {leaks}")
            if isinstance(self.flow, ConsortFlow) or self.baseline or self.availability or self.strata:
                raise ValueError("a public bundle holds exact participant counts (flow, baseline or availability)")
            if isinstance(self.safety, Safety) and self.safety.source != "dp_release":
                raise ValueError("a public bundle's safety counts must come from a DP release")
            if isinstance(self.compliance, tuple) and any(c.noise_sd is None and not c.suppressed
                                                          for c in self.compliance):
                raise ValueError("a public bundle's compliance counts must come from a DP release")
            if isinstance(self.divergence, DivergenceStatus) and self.divergence.tier == "trusted":
                raise ValueError("a public bundle holds the trusted tier's divergence checks")
            if any(r.n_obs is not None for r in self.psychometrics):
                raise ValueError("a public bundle's reliability rows carry exact n")
            if isinstance(self.quality, QualityStatus) and any(
                    c.checked_count is not None or c.unexpected_count is not None for c in self.quality.checks):
                raise ValueError("a public bundle's quality checks carry exact counts")
        return self

    # -- convenience for builders ---------------------------------------------------------------------------------
    def latest_analysis(self, tier: Tier) -> AnalysisRun | None:
        runs = [a for a in self.analyses if a.tier == tier]
        return max(runs, key=lambda a: a.created_at) if runs else None

    def latest_release(self, query: str) -> Release | None:
        with_query = [r for r in self.releases if query in r.queries]
        return max(with_query, key=lambda r: r.created_at) if with_query else None

    def values_of(self, query: str, release_id: str | None = None) -> list[ReleasedValue]:
        """The cells of ``query`` in one release (default: the latest release holding it)."""
        if release_id is None:
            latest = self.latest_release(query)
            if latest is None:
                return []
            release_id = latest.release_id
        return [v for v in self.release_values if v.query == query and v.release_id == release_id]

    @property
    def has_telemetry(self) -> bool:
        """True when the protocol declares telemetry metrics (surrogates)."""
        return bool(self.protocol.surrogates)
