"""The regulator report's machine-readable document: its contract, and so its JSON Schema.

``reports.regulator`` fills a :class:`RegulatorReport` from a public report bundle; ``flourish schema export`` writes
its JSON Schema (``regulator_report.schema.json``), and the repository ships the same schema in
``schemas/json/regulator_report.schema.json`` so a regulator can validate a report offline.

Sections follow the issue (and map onto EU AI Act Annex IV's technical documentation and Art. 72's post-market
monitoring plan): system and feature identification, intended use and the team's classification rationale, study
design and registration, population and flow, outcomes with uncertainty, harms and safety monitoring, data governance,
the privacy statement, data quality, limitations, post-market monitoring. A field that cannot be filled says why, as
``{"not_available": "<why>"}``, never an empty value. The outcome and flow sections are also given in the shape of
ClinicalTrials.gov's results modules (API v2 field names: ``participantFlowModule`` with waves as periods,
``baselineCharacteristicsModule``, ``outcomeMeasuresModule``, ``adverseEventsModule``); numbers there are strings, as
the API writes them, and DP counts are rounded with their noise in the comment.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DOCUMENT_VERSION = "flourish.regulator_report/1"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotAvailable(_Doc):
    not_available: str = Field(min_length=1, description="Why the field cannot be filled.")


# -- ClinicalTrials.gov API v2 results modules (field names as the API spells them) ---------------------------------


class _CT(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CTGroup(_CT):
    id: str
    title: str
    description: str | None = None


class CTFlowStats(_CT):
    groupId: str
    numSubjects: str | None = None
    comment: str | None = None


class CTMilestone(_CT):
    type: str
    comment: str | None = None
    achievements: list[CTFlowStats]


class CTDropWithdraw(_CT):
    type: str
    comment: str | None = None
    reasons: list[CTFlowStats]


class CTPeriod(_CT):
    title: str
    milestones: list[CTMilestone]
    dropWithdraws: list[CTDropWithdraw] | None = None


class CTParticipantFlowModule(_CT):
    preAssignmentDetails: str | None = None
    recruitmentDetails: str | None = None
    typeUnitsAnalyzed: str | None = None
    groups: list[CTGroup]
    periods: list[CTPeriod]


class CTDenomCount(_CT):
    groupId: str
    value: str | None = None


class CTDenom(_CT):
    units: str
    counts: list[CTDenomCount]


class CTMeasurement(_CT):
    groupId: str
    value: str | None = None
    spread: str | None = None
    lowerLimit: str | None = None
    upperLimit: str | None = None
    comment: str | None = None


class CTCategory(_CT):
    title: str | None = None
    measurements: list[CTMeasurement]


class CTClass(_CT):
    title: str | None = None
    categories: list[CTCategory]


class CTBaselineMeasure(_CT):
    title: str
    description: str | None = None
    populationDescription: str | None = None
    paramType: str
    dispersionType: str | None = None
    unitOfMeasure: str | None = None
    classes: list[CTClass]


class CTBaselineCharacteristicsModule(_CT):
    populationDescription: str | None = None
    typeUnitsAnalyzed: str | None = None
    groups: list[CTGroup]
    denoms: list[CTDenom]
    measures: list[CTBaselineMeasure]


class CTAnalysis(_CT):
    groupIds: list[str]
    statisticalMethod: str | None = None
    statisticalComment: str | None = None
    paramType: str | None = None
    paramValue: str | None = None
    ciPctValue: str | None = None
    ciNumSides: str | None = None
    ciLowerLimit: str | None = None
    ciUpperLimit: str | None = None
    estimateComment: str | None = None


class CTOutcomeMeasure(_CT):
    type: Literal["PRIMARY", "SECONDARY", "OTHER_PRE_SPECIFIED", "POST_HOC"]
    title: str
    description: str | None = None
    populationDescription: str | None = None
    reportingStatus: str | None = None
    paramType: str | None = None
    dispersionType: str | None = None
    unitOfMeasure: str | None = None
    timeFrame: str | None = None
    typeUnitsAnalyzed: str | None = None
    groups: list[CTGroup] | None = None
    denoms: list[CTDenom] | None = None
    classes: list[CTClass] | None = None
    analyses: list[CTAnalysis] | None = None


class CTOutcomeMeasuresModule(_CT):
    outcomeMeasures: list[CTOutcomeMeasure]


class CTEventGroup(_CT):
    id: str
    title: str
    description: str | None = None
    seriousNumAffected: int | None = None
    seriousNumAtRisk: int | None = None
    otherNumAffected: int | None = None
    otherNumAtRisk: int | None = None


class CTEventStats(_CT):
    groupId: str
    numEvents: int | None = None
    numAffected: int | None = None
    numAtRisk: int | None = None


class CTAdverseEvent(_CT):
    term: str
    organSystem: str | None = None
    assessmentType: str | None = None
    notes: str | None = None
    stats: list[CTEventStats]


class CTAdverseEventsModule(_CT):
    frequencyThreshold: str | None = None
    timeFrame: str | None = None
    description: str | None = None
    eventGroups: list[CTEventGroup]
    seriousEvents: list[CTAdverseEvent] | None = None
    otherEvents: list[CTAdverseEvent] | None = None


class CTResultsSection(_CT):
    participantFlowModule: CTParticipantFlowModule
    baselineCharacteristicsModule: CTBaselineCharacteristicsModule
    outcomeMeasuresModule: CTOutcomeMeasuresModule
    adverseEventsModule: CTAdverseEventsModule


class ClinicalTrialsGov(_CT):
    resultsSection: CTResultsSection


# -- the report's own sections --------------------------------------------------------------------------------------


class ArmIdentity(_Doc):
    arm: str
    control: bool
    features_on: list[str]
    feature_versions: dict[str, str]
    description: str


class SystemIdentification(_Doc):
    system_name: str | NotAvailable
    system_version: str | NotAvailable
    arms: list[ArmIdentity]
    flourish_study_id: str


class IntendedUse(_Doc):
    protocol_intended_use: str = Field(description="The protocol's intended_use (research or commercial), which "
                                       "governs instrument licences.")
    intended_purpose: str | NotAvailable
    classification: str | NotAvailable
    classification_rationale: str | NotAvailable
    note: str


class Deviation(_Doc):
    recorded_at: datetime
    plan_hash: str
    reason: str


class Registration(_Doc):
    registry: str | NotAvailable
    registry_id: str | NotAvailable
    registry_url: str | NotAvailable
    registered_on: date | NotAvailable


class WaveDesign(_Doc):
    name: str
    day: int
    window_days: int
    instruments: list[str]


class OutcomeDesign(_Doc):
    name: str
    role: Literal["primary", "secondary"]
    instrument: str | None
    wave: str | None
    direction: str
    mcid: float | None


class StudyDesign(_Doc):
    design: str
    allocation_ratio: str
    waves: list[WaveDesign]
    outcomes: list[OutcomeDesign]
    interval_level: float
    plan_hash: str | NotAvailable
    plan_locked_at: datetime | NotAvailable
    protocol_is_locked_plan: bool
    deviations: list[Deviation]
    registration: Registration


class ReleasedCount(_Doc):
    arm: str
    stage: str
    dp_count: float | None
    noise_sd: float | None
    lower: float | None
    upper: float | None
    suppressed: bool
    shown: str = Field(description="As the HTML report shows it: value (interval) or 'suppressed (n < k)'.")


class PopulationAndFlow(_Doc):
    unit: str
    source: str
    release_id: str | NotAvailable
    counts: list[ReleasedCount]
    participants_erased_after_withdrawal: int | None


class OutcomeResult(_Doc):
    outcome: str
    arm: str
    control: str
    wave: str
    method: str
    tier: str
    estimate: float | None
    lower: float | None
    upper: float | None
    interval_level: float | None
    includes_dp_noise: bool
    p_benefit: float | None
    p_above_mcid: float | None
    n_arm: int | None
    n_control: int | None
    exploratory: bool
    not_estimable_because: str | None


class Outcomes(_Doc):
    analysis_run: str | NotAvailable
    results: list[OutcomeResult]


class SafetyCountDoc(_Doc):
    arm: str
    wave: str
    flag: str
    dp_count: float | None
    noise_sd: float | None
    suppressed: bool


class HarmsAndSafety(_Doc):
    monitoring: str
    safety_screens: list[str]
    counts: list[SafetyCountDoc] | NotAvailable
    withdrawals_erased: int | None


class DataGovernance(_Doc):
    consent_scopes: list[str]
    consent_rule: str
    erasure_requests_honoured: int | None
    participants_erased: int | None
    pseudonymisation: str
    retention: str | NotAvailable


class ReleaseDoc(_Doc):
    release_id: str
    created_at: datetime
    mechanism: str
    accounting: str
    epsilon: float
    delta: float
    rho: float | None
    min_cell_size: int
    queries: list[str]
    values_sha256: str
    suppressed_cells: int


class PrivacyStatement(_Doc):
    unit: str
    accounting: str | NotAvailable
    epsilon_total: float | NotAvailable
    delta: float | NotAvailable
    epsilon_spent: float | NotAvailable
    epsilon_left: float | NotAvailable
    rho_spent: float | None
    mechanisms: list[str]
    min_cell_size: int | NotAvailable
    releases: list[ReleaseDoc]
    protects: list[str]
    does_not_protect: list[str]


class QualityCheckDoc(_Doc):
    name: str
    severity: str
    success: bool


class DataQuality(_Doc):
    verdict: str | NotAvailable
    run_id: str | None
    checked_at: datetime | None
    checks: list[QualityCheckDoc]


class PipelineRunDoc(_Doc):
    run_id: str
    state: str
    started_at: datetime
    stages: dict[str, str]


class PostMarketMonitoring(_Doc):
    plan: str
    planned_releases: list[str]
    divergence_monitor: str | NotAvailable
    last_pipeline_run: PipelineRunDoc | NotAvailable


class RegulatoryDate(_Doc):
    date: date
    what: str
    jurisdiction: str
    status: str
    source: str


class RegulatorReport(_Doc):
    """The regulator report, one JSON document per build (public tier: differentially private releases only)."""

    document_version: Literal["flourish.regulator_report/1"] = DOCUMENT_VERSION
    generated_at: datetime
    study_id: str
    title: str
    tier: Literal["public"]
    system: SystemIdentification
    intended_use: IntendedUse
    design: StudyDesign
    population_and_flow: PopulationAndFlow
    outcomes: Outcomes
    harms_and_safety: HarmsAndSafety
    data_governance: DataGovernance
    privacy: PrivacyStatement
    data_quality: DataQuality
    limitations: list[str]
    post_market_monitoring: PostMarketMonitoring
    regulatory_dates: list[RegulatoryDate]
    clinicaltrials_gov: ClinicalTrialsGov


def regulator_report_schema() -> dict:
    """The JSON Schema of :class:`RegulatorReport` (draft 2020-12, as pydantic v2 emits it)."""
    schema = RegulatorReport.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "flourish:regulator_report/1"
    return schema
