"""The regulator report: a JSON document valid against the shipped JSON Schema (``schemas.regulator``), and an HTML
rendering of the same document, from a public bundle.

The HTML is drawn from the document, never from the bundle directly, so the two cannot disagree. Everything in it is
a DP release, a public-tier analysis row (the noise-aware model, whose intervals include the DP noise), the budget
ledger, the plan registry, a verdict of an aggregate table, or text from the protocol. The classification is the one
the team records in the protocol (``regulatory.classification`` and its rationale): a wellbeing assistant is not
high-risk by default, and intended-use wording decides (research/reports.md C4). Regulatory dates are data with their
sources (``reports/data/regulatory_dates.json``), not constants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports.bundle import Budget, PipelineRun, PlanRecord, QualityStatus, ReportBundle, Safety
from reports.consort import group_ids, participant_flow_module, public_flow
from reports.images import svg_of
from reports.text import NO_RELEASE, cell_floor, esc, fmt, fmt_count, noise_interval, page, suppressed, table
from reports.views import View, enrolment_view, forest_view, main_method
from schemas.regulator import (
    ArmIdentity,
    ClinicalTrialsGov,
    CTAdverseEvent,
    CTAdverseEventsModule,
    CTAnalysis,
    CTBaselineCharacteristicsModule,
    CTBaselineMeasure,
    CTCategory,
    CTClass,
    CTDenom,
    CTDenomCount,
    CTEventGroup,
    CTEventStats,
    CTGroup,
    CTMeasurement,
    CTOutcomeMeasure,
    CTOutcomeMeasuresModule,
    CTParticipantFlowModule,
    CTResultsSection,
    DataGovernance,
    DataQuality,
    Deviation,
    HarmsAndSafety,
    IntendedUse,
    NotAvailable,
    OutcomeDesign,
    OutcomeResult,
    Outcomes,
    PipelineRunDoc,
    PopulationAndFlow,
    PostMarketMonitoring,
    PrivacyStatement,
    QualityCheckDoc,
    Registration,
    RegulatorReport,
    RegulatoryDate,
    ReleasedCount,
    ReleaseDoc,
    SafetyCountDoc,
    StudyDesign,
    SystemIdentification,
    WaveDesign,
)
from schemas.results import LONG_RUN

DATES_FILE = Path(__file__).with_name("data") / "regulatory_dates.json"
CONSENT_SCOPES = ("telemetry", "surveys", "linkage", "aggregate_release")
"""The consent scopes Flourish records (privacy/STATEMENT.md); how many participants granted each is not released."""

PROTECTS = [
    "What the releases reveal about any one participant: neighbouring data sets differ by one participant (all their "
    "responses, scores and telemetry across every wave)",
    "Against an attacker who knows every other participant's data, within the stated epsilon and delta",
]
DOES_NOT_PROTECT = [
    "Population-level facts the study exists to find (for example, that a feature improves wellbeing on average), and "
    "inferences from them about a person known to have taken part",
    "The public information in the protocol: arms, waves, outcomes, bands and clipping bounds",
    "Participant-level data inside the study's environment (the trusted tier), which access control, pseudonymisation "
    "and erasure protect instead",
    "Releases made before a participant's erasure, which are not recalled (the DP guarantee bounds what they reveal)",
]


def _na(value: Any, why: str) -> Any:
    return NotAvailable(not_available=why) if value in (None, "", {}) else value


def regulatory_dates() -> list[RegulatoryDate]:
    data = json.loads(DATES_FILE.read_text(encoding="utf-8"))
    return [RegulatoryDate(**d) for d in data["dates"]]


def _cells(bundle: ReportBundle) -> list[ReleasedCount]:
    level, k = bundle.protocol.analysis.interval_level, cell_floor(bundle.protocol)
    out = []
    for arm, stages in public_flow(bundle).items():
        for stage in ["allocated", *bundle.protocol.wave_names]:
            v = stages.get(stage)
            if v is None:
                continue
            lo, hi = noise_interval(v, level)
            out.append(ReleasedCount(arm=arm, stage=stage, dp_count=v.value, noise_sd=v.noise_sd, lower=lo, upper=hi,
                                     suppressed=v.suppressed, shown=suppressed(k) if v.suppressed else
                                     f"{fmt_count(v.value)} ({fmt_count(lo)} to {fmt_count(hi)})"))
    return out


def _outcome_results(bundle: ReportBundle) -> tuple[str | NotAvailable, list[OutcomeResult]]:
    run = bundle.latest_analysis("public")
    if run is None:
        return NotAvailable(not_available="no public-tier analysis (the noise-aware model fitted to the DP releases) "
                            "has been stored"), []
    return run.run_id, [OutcomeResult(
        outcome=e.outcome, arm=e.arm, control=e.control, wave=e.wave, method=e.method, tier=e.tier, estimate=e.estimate,
        lower=e.lower, upper=e.upper, interval_level=e.interval_level, includes_dp_noise=e.tier == "public",
        p_benefit=e.p_benefit, p_above_mcid=e.p_above_mcid, n_arm=e.n_arm, n_control=e.n_control,
        exploratory=run.exploratory, not_estimable_because=e.reason) for e in run.effects]


def _s(x: float | None, digits: int = 3) -> str | None:
    return None if x is None else f"{x:.{digits}g}"


def ctgov(bundle: ReportBundle) -> ClinicalTrialsGov:
    """The ClinicalTrials.gov-shaped results section, from the public bundle (DP counts and means; noise-aware
    effects)."""
    p = bundle.protocol
    level, k = p.analysis.interval_level, cell_floor(p)
    flow = CTParticipantFlowModule.model_validate(participant_flow_module(bundle))
    bg, og, eg = group_ids(bundle, "BG"), group_ids(bundle, "OG"), group_ids(bundle, "EG")
    cells = public_flow(bundle)

    def denom(ids: dict[str, str]) -> list[CTDenom]:
        counts = []
        for a in p.arm_names:
            v = cells.get(a, {}).get("allocated")
            counts.append(CTDenomCount(groupId=ids[a], value=None if v is None or v.suppressed or v.value is None
                                       else f"{max(0.0, v.value):.0f}"))
        return [CTDenom(units="Participants", counts=counts)]

    def released(query: str, statistic: str, wave: str, arm: str):
        return next((x for x in bundle.values_of(query) if x.arm == arm and x.wave == wave
                     and x.statistic == statistic), None)

    def measurement(ids: dict[str, str], arm: str, v, what: str) -> CTMeasurement:
        """A released value as a measurement: the value with its interval from the DP noise, or why there is none."""
        if v is None:
            return CTMeasurement(groupId=ids[arm], comment="not released")
        if v.suppressed:
            return CTMeasurement(groupId=ids[arm], comment=suppressed(k))
        lo, hi = noise_interval(v, level)
        return CTMeasurement(groupId=ids[arm], value=_s(v.value), lowerLimit=_s(lo), upperLimit=_s(hi),
                             comment=f"{what}; limits are its {level:.0%} interval from the DP noise (noise SD "
                                     f"{_s(v.noise_sd)})")

    def mean_measurement(ids: dict[str, str], outcome: str, wave: str, arm: str) -> CTMeasurement:
        return measurement(ids, arm, released(f"score_moments:{outcome}", "mean", wave, arm), "DP mean")

    def events_measurement(ids: dict[str, str], outcome: str, wave: str, arm: str) -> CTMeasurement:
        """A binary outcome's released count of participants with the event (``binary_counts:<outcome>``)."""
        n = released(f"binary_counts:{outcome}", "n", wave, arm)
        of = f" of a DP n of {_s(n.value)}" if n is not None and n.value is not None else ""
        return measurement(ids, arm, released(f"binary_counts:{outcome}", "events", wave, arm),
                           f"DP count of participants with the event{of}")

    groups = lambda ids: [CTGroup(id=ids[a.name], title=a.name, description=a.description or None) for a in p.arms]  # noqa: E731
    baseline = CTBaselineCharacteristicsModule(
        populationDescription="All randomised participants still consenting; DP counts and means (each the true value "
                              "plus noise).", typeUnitsAnalyzed="Participants", groups=groups(bg), denoms=denom(bg),
        measures=[CTBaselineMeasure(title=f"{o.name} at {p.baseline_wave}", paramType="MEAN",
                                    dispersionType="95% Confidence Interval" if level == 0.95 else None,
                                    unitOfMeasure="score on a scale",
                                    classes=[CTClass(categories=[CTCategory(measurements=[
                                        mean_measurement(bg, o.name, p.baseline_wave, a) for a in p.arm_names])])])
                  for o in p.outcomes if not o.binary])  # a binary outcome is an event after assignment
    run = bundle.latest_analysis("public")
    measures = []
    for o in p.outcomes:
        wave = o.wave or p.wave_names[-1]
        analyses = []
        # each outcome's own main method: a binary outcome's (the noise-aware beta-binomial's risk difference) is not
        # a continuous one's
        method = main_method(run, [o.name]) if run else None
        stat_method, param = (("Bayesian beta-binomial on DP counts with the DP noise in the likelihood (noise-aware; "
                               "latent counts)", "Risk Difference (RD)") if o.binary else
                              ("Bayesian ANCOVA on DP sufficient statistics with the DP noise in the likelihood "
                               "(noise-aware)", "Mean Difference (Final Values)"))
        for e in (run.effects if run else ()):
            if e.outcome == o.name and e.wave == LONG_RUN and e.method == method and e.subgroup is None:
                analyses.append(CTAnalysis(
                    groupIds=[og[e.control], og[e.arm]], statisticalMethod=stat_method, paramType=param,
                    paramValue=_s(e.estimate), ciPctValue=_s(100 * (e.interval_level or level), 3), ciNumSides="TWO_SIDED",
                    ciLowerLimit=_s(e.lower), ciUpperLimit=_s(e.upper),
                    estimateComment=(f"{e.arm} minus {e.control}{' (risk of the event, risk units)' if o.binary else ''}; "
                                     "credible interval including the DP noise; "
                                     f"P(benefit) {_s(e.p_benefit)}" if e.reason is None else f"not estimable: {e.reason}")))
        measures.append(CTOutcomeMeasure(
            type="PRIMARY" if o.name == p.primary_outcome.name else "SECONDARY", title=o.name,
            description=f"{o.instrument or o.source}; {o.direction.replace('_', ' ')}; MCID {fmt(o.mcid)}",
            populationDescription="Randomised participants with the outcome at the wave (DP counts)",
            reportingStatus="POSTED", paramType="COUNT_OF_PARTICIPANTS" if o.binary else "MEAN",
            unitOfMeasure="participants with the event" if o.binary else "score on a scale",
            timeFrame=f"wave {wave} (day {p.wave(wave).day} after assignment)", typeUnitsAnalyzed="Participants",
            groups=groups(og), denoms=denom(og),
            classes=[CTClass(categories=[CTCategory(measurements=[
                (events_measurement if o.binary else mean_measurement)(og, o.name, wave, a) for a in p.arm_names])])],
            analyses=analyses or None))
    safety = bundle.safety
    events, description = [], ("Flourish records safety screens of the instruments (e.g. a positive PHQ-2), not "
                                "clinician-assessed adverse events.")
    if isinstance(safety, Safety):
        for flag in safety.flags:
            stats = []
            for a in p.arm_names:
                cs = [c for c in safety.counts if c.flag == flag and c.arm == a and not c.suppressed
                      and c.n_participants is not None]
                stats.append(CTEventStats(groupId=eg[a], numAffected=int(round(max(c.n_participants for c in cs)))
                                          if cs else None))
            events.append(CTAdverseEvent(term=flag, assessmentType="SYSTEMATIC_ASSESSMENT",
                                         notes="largest DP count over the waves", stats=stats))
    else:
        description += f" Their counts are not released: {safety.reason}."
    adverse = CTAdverseEventsModule(frequencyThreshold="0", timeFrame=f"from assignment to wave {p.wave_names[-1]}",
                                    description=description,
                                    eventGroups=[CTEventGroup(id=eg[a.name], title=a.name) for a in p.arms],
                                    seriousEvents=[], otherEvents=events)
    return ClinicalTrialsGov(resultsSection=CTResultsSection(
        participantFlowModule=flow, baselineCharacteristicsModule=baseline, outcomeMeasuresModule=CTOutcomeMeasuresModule(
            outcomeMeasures=measures), adverseEventsModule=adverse))


def limitations(bundle: ReportBundle) -> list[str]:
    p, out = bundle.protocol, []
    out.append("Every public number carries differential-privacy noise; small cells are suppressed, and effects from the "
               "noise-aware model are wider than the trusted tier's.")
    n_supp = sum(v.suppressed for v in bundle.release_values)
    if n_supp:
        out.append(f"{n_supp} released cells are suppressed (noisy count below {cell_floor(p)}).")
    run = bundle.latest_analysis("public")
    failed = sorted({e.outcome for e in (run.effects if run else ()) if e.reason is not None})
    if failed:
        out.append("No public-tier estimate for: " + ", ".join(failed) + " (their rows say why).")
    if run is None:
        out.append("No public-tier analysis is stored, so no effect is reported here.")
    elif run.exploratory:
        out.append("The analysis shown is exploratory: the protocol differs from the locked plan.")
    if not isinstance(bundle.safety, Safety):
        out.append("Safety-flag counts are not part of the DP releases.")
    if not p.surrogates:
        out.append("The study records no telemetry, so delivery of the features is not measured.")
    out.append("Participants who withdraw consent are erased with their data; their arm is not kept, so withdrawals are "
               "reported for the study, not per arm.")
    out.append("Outcomes are self-reported questionnaires; the study measures wellbeing, not clinical diagnoses.")
    return out


def build_document(bundle: ReportBundle) -> RegulatorReport:
    if bundle.tier != "public":
        raise ValueError("the regulator report is public: build it from a public bundle (flows.reports.public_bundle)")
    p, reg = bundle.protocol, bundle.protocol.regulatory
    versions = reg.feature_versions if reg else {}
    arms = [ArmIdentity(arm=a.name, control=a.control, features_on=[f for f, on in a.features.items() if on],
                        feature_versions={f: v for f, v in versions.items() if a.features.get(f)},
                        description=a.description) for a in p.arms]
    no_reg = "the protocol has no regulatory section"
    system = SystemIdentification(system_name=_na(reg.system_name if reg else None, no_reg),
                                  system_version=_na(reg.system_version if reg else None,
                                                     "the protocol records no system version"),
                                  arms=arms, flourish_study_id=p.study_id)
    intended = IntendedUse(
        protocol_intended_use=p.intended_use, intended_purpose=_na(reg.intended_purpose if reg else None, no_reg),
        classification=_na(reg.classification if reg else None, no_reg),
        classification_rationale=_na(reg.rationale if reg else None, no_reg),
        note="The classification is the team's, as recorded in the protocol; Flourish does not infer it. Intended-use "
             "wording decides device and high-risk status (FDA General Wellness, MHRA DMHT guidance, EU AI Act Annex III).")
    plan = bundle.plan if isinstance(bundle.plan, PlanRecord) else None
    lock = plan.lock if plan else None
    design = StudyDesign(
        design="parallel-group randomised trial, longitudinal waves", allocation_ratio=":".join(f"{a.allocation:g}"
                                                                                                for a in p.arms),
        waves=[WaveDesign(name=w.name, day=w.day, window_days=w.window_days, instruments=w.instruments) for w in p.waves],
        outcomes=[OutcomeDesign(name=o.name, role="primary" if o.name == p.primary_outcome.name else "secondary",
                                instrument=o.instrument, wave=o.wave, direction=o.direction, mcid=o.mcid)
                  for o in p.outcomes],
        interval_level=p.analysis.interval_level,
        plan_hash=lock.plan_hash if lock else NotAvailable(not_available="the plan has not been preregistered"),
        plan_locked_at=lock.recorded_at if lock else NotAvailable(not_available="the plan has not been preregistered"),
        protocol_is_locked_plan=bool(plan and plan.locked),
        deviations=[Deviation(recorded_at=d.recorded_at, plan_hash=d.plan_hash, reason=d.reason)
                    for d in (plan.deviations if plan else ())],
        registration=Registration(
            registry=_na(reg.registry if reg else None, "no registry recorded in the protocol"),
            registry_id=_na(reg.registry_id if reg else None, "no registry identifier recorded in the protocol"),
            registry_url=_na(reg.registry_url if reg else None, "no registry URL recorded in the protocol"),
            registered_on=_na(reg.registered_on if reg else None, "no registration date recorded in the protocol")))
    release = bundle.latest_release("consort_counts")
    flow = PopulationAndFlow(unit="participant", source="DP release of the CONSORT counts (allocated, answered per wave)",
                             release_id=release.release_id if release else NotAvailable(
                                 not_available="no DP release of the participant counts has been made"),
                             counts=_cells(bundle), participants_erased_after_withdrawal=
                             bundle.governance.participants_erased)
    run_id, results = _outcome_results(bundle)
    safety = bundle.safety
    screens = sorted({c.flag for c in safety.counts}) if isinstance(safety, Safety) else []
    harms = HarmsAndSafety(
        monitoring="Safety screens of the instruments are scored at every wave (flows/scoring); the trial team's report "
                   "lists them per arm and wave with denominators.", safety_screens=screens,
        counts=[SafetyCountDoc(arm=c.arm, wave=c.wave, flag=c.flag, dp_count=c.n_participants, noise_sd=c.noise_sd,
                               suppressed=c.suppressed) for c in safety.counts] if isinstance(safety, Safety)
        else NotAvailable(not_available=safety.reason),
        withdrawals_erased=bundle.governance.participants_erased)
    g = bundle.governance
    governance = DataGovernance(
        consent_scopes=list(CONSENT_SCOPES), consent_rule="Data are ingested only under a granted scope; a withdrawal "
        "erases the participant from every table and derived file and leaves a one-way tombstone so later data are "
        "refused.", erasure_requests_honoured=g.erasures_honoured, participants_erased=g.participants_erased,
        pseudonymisation="keyed HMAC-SHA256 of the raw id at ingest; the key lives outside the warehouse",
        retention=_na(g.retention, "the protocol records no retention rule (regulatory.retention); EU AI Act Art. 18 "
                      "asks providers of high-risk systems to keep documentation for 10 years"))
    b = bundle.budget
    privacy = PrivacyStatement(
        unit="participant", accounting=b.accounting if isinstance(b, Budget) else NotAvailable(not_available=b.reason),
        epsilon_total=p.privacy.epsilon if p.privacy else NotAvailable(not_available=NO_RELEASE),
        delta=p.privacy.delta if p.privacy else NotAvailable(not_available=NO_RELEASE),
        epsilon_spent=b.epsilon_spent if isinstance(b, Budget) else NotAvailable(not_available=b.reason),
        epsilon_left=b.epsilon_left if isinstance(b, Budget) else NotAvailable(not_available=b.reason),
        rho_spent=b.rho_spent if isinstance(b, Budget) else None,
        mechanisms=sorted({r.mechanism for r in bundle.releases}) or ([p.privacy.mechanism] if p.privacy else []),
        min_cell_size=p.privacy.min_cell_size if p.privacy else NotAvailable(not_available=NO_RELEASE),
        releases=[ReleaseDoc(release_id=r.release_id, created_at=r.created_at, mechanism=r.mechanism,
                             accounting=r.accounting, epsilon=r.epsilon, delta=r.delta, rho=r.rho,
                             min_cell_size=r.min_cell_size, queries=list(r.queries), values_sha256=r.values_sha256,
                             suppressed_cells=sum(1 for v in bundle.release_values if v.release_id == r.release_id
                                                  and v.suppressed)) for r in bundle.releases],
        protects=PROTECTS, does_not_protect=DOES_NOT_PROTECT)
    q = bundle.quality
    quality = DataQuality(verdict=q.verdict if isinstance(q, QualityStatus) else NotAvailable(not_available=q.reason),
                          run_id=q.run_id if isinstance(q, QualityStatus) else None,
                          checked_at=q.checked_at if isinstance(q, QualityStatus) else None,
                          checks=[QualityCheckDoc(name=c.name, severity=c.severity, success=c.success)
                                  for c in (q.checks if isinstance(q, QualityStatus) else ())])
    last = bundle.last_run
    pmm = PostMarketMonitoring(
        plan="The study pipeline runs on its schedule (nightly ingest, a wave-close run per wave, a weekly report "
             "refresh); each run records its stages; planned DP releases are made once per closed wave and spend a "
             "fixed share of the budget; the divergence monitor flags engagement rising while flourishing falls.",
        planned_releases=[f"after wave {r.after_wave}: {r.share:.0%} of the budget" for r in p.planned_releases()],
        divergence_monitor=(bundle.divergence.status if hasattr(bundle.divergence, "status")
                            else NotAvailable(not_available=bundle.divergence.reason)),  # type: ignore[union-attr]
        last_pipeline_run=PipelineRunDoc(run_id=last.run_id, state=last.state, started_at=last.started_at,
                                         stages={s.stage: s.state for s in last.stages})
        if isinstance(last, PipelineRun) else NotAvailable(not_available=last.reason))
    return RegulatorReport(
        generated_at=bundle.built_at, study_id=p.study_id, title=p.title, tier="public", system=system,
        intended_use=intended, design=design, population_and_flow=flow,
        outcomes=Outcomes(analysis_run=run_id, results=results), harms_and_safety=harms, data_governance=governance,
        privacy=privacy, data_quality=quality, limitations=limitations(bundle), post_market_monitoring=pmm,
        regulatory_dates=regulatory_dates(), clinicaltrials_gov=ctgov(bundle))


# -- HTML -----------------------------------------------------------------------------------------------------------


def _v(x: Any) -> str:
    """A document value as text: a NotAvailable reads 'not available: why'."""
    if isinstance(x, NotAvailable):
        return f"not available: {x.not_available}"
    if isinstance(x, float):
        return fmt(x)
    return "" if x is None else str(x)


def _static(view: View) -> str:
    if view.spec is None:
        return view.table_html
    return (f'<figure class="chart" data-chart="{esc(view.key)}">{svg_of(view.spec, view.key)}'
            f"<figcaption>{esc(view.description)}</figcaption></figure>{view.table_html}")


def render_html(doc: RegulatorReport, bundle: ReportBundle) -> str:
    d = doc
    sections = []

    def sec(id_: str, title: str, content: str) -> None:
        sections.append(f'<section id="{id_}"><h2>{esc(title)}</h2>{content}</section>')

    sec("system", "1. System and feature identification",
        f"<p>System: <b>{esc(_v(d.system.system_name))}</b>, version {esc(_v(d.system.system_version))}.</p>" + table(
            ["arm", "control", "features on", "feature versions", "description"],
            [(a.arm, "yes" if a.control else "no", ", ".join(a.features_on) or "none",
              ", ".join(f"{f} {v}" for f, v in a.feature_versions.items()) or "not recorded", a.description)
             for a in d.system.arms]))
    sec("intended-use", "2. Intended use and classification",
        table(["field", "value"], [("protocol intended use", d.intended_use.protocol_intended_use),
                                   ("intended purpose", _v(d.intended_use.intended_purpose)),
                                   ("classification (the team's)", _v(d.intended_use.classification)),
                                   ("rationale", _v(d.intended_use.classification_rationale))])
        + f"<p class=\"muted\">{esc(d.intended_use.note)}</p>")
    r = d.design.registration
    sec("design", "3. Study design and registration",
        f"<p>{esc(d.design.design)}; allocation {esc(d.design.allocation_ratio)}; {d.design.interval_level:.0%} "
        f"intervals. Preregistered plan SHA-256 <code class=\"hash\">{esc(_v(d.design.plan_hash))}</code>, locked "
        f"{esc(_v(d.design.plan_locked_at))}; protocol is the locked plan: {'yes' if d.design.protocol_is_locked_plan else 'NO'}."
        f" Registry: {esc(_v(r.registry))} {esc(_v(r.registry_id))} {esc(_v(r.registry_url))}, registered "
        f"{esc(_v(r.registered_on))}.</p>"
        + (table(["recorded", "plan hash", "reason"], [(str(x.recorded_at), x.plan_hash[:16], x.reason)
                                                       for x in d.design.deviations], caption="Deviations")
           if d.design.deviations else "<p>No deviation from the locked plan has been recorded.</p>")
        + table(["outcome", "role", "instrument", "wave", "good direction", "MCID"],
                [(o.name, o.role, o.instrument or "", o.wave or "", o.direction, _v(o.mcid)) for o in d.design.outcomes]))
    sec("population", "4. Population and flow",
        f"<p>Unit: {esc(d.population_and_flow.unit)}. Source: {esc(d.population_and_flow.source)}, release "
        f"{esc(_v(d.population_and_flow.release_id))}. Participants erased after withdrawing consent: "
        f"{esc(_v(d.population_and_flow.participants_erased_after_withdrawal))}.</p>"
        + _static(enrolment_view(bundle)))
    level = bundle.protocol.analysis.interval_level
    sec("outcomes", "5. Outcomes with uncertainty",
        f"<p>Analysis run {esc(_v(d.outcomes.analysis_run))}. Intervals are {level:.0%} credible intervals that include "
        "the DP noise.</p>" + ("" if not d.outcomes.results else table(
            ["outcome", "arm", "wave", "estimate (interval)", "P(benefit)", "P(> MCID)", "n arm / control"],
            [(o.outcome, o.arm, o.wave, f"not estimable: {o.not_estimable_because}" if o.not_estimable_because else
              f"{fmt(o.estimate)} ({fmt(o.lower)} to {fmt(o.upper)})", _v(o.p_benefit), _v(o.p_above_mcid),
              f"{fmt_count(o.n_arm)} / {fmt_count(o.n_control)}") for o in d.outcomes.results], numeric=(3, 4, 5, 6)))
        + _static(forest_view(bundle, "public")))
    h = d.harms_and_safety
    sec("harms", "6. Harms and safety monitoring",
        f"<p>{esc(h.monitoring)}</p>" + (f'<p class="na">Safety counts: {esc(_v(h.counts))}.</p>'
                                        if isinstance(h.counts, NotAvailable) else table(
            ["flag", "arm", "wave", "DP count"], [(c.flag, c.arm, c.wave, suppressed(cell_floor(bundle.protocol))
                                                   if c.suppressed else fmt_count(c.dp_count)) for c in h.counts]))
        + f"<p>Participants erased after withdrawing consent: {esc(_v(h.withdrawals_erased))}.</p>")
    g = d.data_governance
    sec("governance", "7. Data governance",
        table(["field", "value"], [("consent scopes recorded", ", ".join(g.consent_scopes)), ("consent rule", g.consent_rule),
                                   ("erasure requests honoured", _v(g.erasure_requests_honoured)),
                                   ("participants erased", _v(g.participants_erased)),
                                   ("pseudonymisation", g.pseudonymisation), ("retention", _v(g.retention))]))
    pv = d.privacy
    sec("privacy", "8. Privacy statement",
        (f"<p>Privacy unit: one {esc(pv.unit)}. Budget epsilon {fmt(pv.epsilon_total)}, delta {pv.delta:g}; spent "
         f"epsilon {esc(_v(pv.epsilon_spent))} ({esc(_v(pv.accounting))} accounting), left {esc(_v(pv.epsilon_left))}. "
         f"Mechanisms: {esc(', '.join(pv.mechanisms))} (OpenDP). Cells whose noisy count is below {pv.min_cell_size} "
         "are suppressed.</p>" if not isinstance(pv.epsilon_total, NotAvailable)
         else f"<p>Privacy unit: one {esc(pv.unit)}. {esc(_v(pv.epsilon_total)).capitalize()}: nothing of the study "
              "leaves it as a differentially private release.</p>")
        + table(["release", "made", "mechanism", "epsilon", "delta", "suppressed cells", "values SHA-256"],
                [(x.release_id, str(x.created_at)[:16], x.mechanism, fmt(x.epsilon), f"{x.delta:g}", x.suppressed_cells,
                  x.values_sha256[:16]) for x in pv.releases], numeric=(3, 4, 5))
        + "<h3>What DP protects</h3><ul>" + "".join(f"<li>{esc(t)}</li>" for t in pv.protects) + "</ul>"
        + "<h3>What DP does not protect</h3><ul>" + "".join(f"<li>{esc(t)}</li>" for t in pv.does_not_protect) + "</ul>")
    dq = d.data_quality
    sec("quality", "9. Data quality",
        f"<p>Verdict: <b>{esc(_v(dq.verdict))}</b> (run {esc(dq.run_id or '')}). "
        f"{sum(c.success for c in dq.checks)} of {len(dq.checks)} expectations passed.</p>"
        + table(["expectation", "severity", "result"], [(c.name, c.severity, "pass" if c.success else "FAIL")
                                                        for c in dq.checks if not c.success]) if any(
            not c.success for c in dq.checks) else f"<p>Verdict: <b>{esc(_v(dq.verdict))}</b>; every expectation passed.</p>")
    sec("limitations", "10. Limitations", "<ul>" + "".join(f"<li>{esc(t)}</li>" for t in d.limitations) + "</ul>")
    pm = d.post_market_monitoring
    sec("pmm", "11. Post-market monitoring",
        f"<p>{esc(pm.plan)}</p><p>Planned releases: {esc('; '.join(pm.planned_releases))}.</p>"
        f"<p>Engagement-vs-flourishing divergence monitor: {esc(_v(pm.divergence_monitor))}"
        f"{esc(': ' + bundle.divergence.detail) if getattr(bundle.divergence, 'detail', '') else ''}.</p>"
        + (f"<p>Last pipeline run {esc(pm.last_pipeline_run.run_id)}: {esc(pm.last_pipeline_run.state)} "
           f"({esc(', '.join(f'{k} {v}' for k, v in pm.last_pipeline_run.stages.items()))}).</p>"
           if not isinstance(pm.last_pipeline_run, NotAvailable) else f"<p>{esc(_v(pm.last_pipeline_run))}</p>"))
    sec("dates", "12. Regulatory dates cited (data with sources)",
        table(["date", "what", "jurisdiction", "status", "source"],
              [(str(x.date), x.what, x.jurisdiction, x.status, x.source) for x in d.regulatory_dates]))
    sec("ctgov", "13. ClinicalTrials.gov-shaped results",
        "<p>The JSON document carries <code>clinicaltrials_gov.resultsSection</code> with the participant flow (waves as "
        "periods), baseline characteristics, outcome measures and adverse events modules, in ClinicalTrials.gov API v2 "
        "field names.</p>")
    body = (f'<header><p class="tier">Regulator report &middot; public tier (differentially private)</p>'
            f"<h1>{esc(d.title)}</h1><p class=\"sub\">Study <code>{esc(d.study_id)}</code>; generated "
            f"{d.generated_at:%Y-%m-%d %H:%M} UTC; document {esc(d.document_version)}, valid against "
            "regulator_report.schema.json.</p></header>" + "".join(sections))
    return page(f"{d.title}: regulator report", body)


@dataclass(frozen=True)
class RegulatorOutput:
    document: dict[str, Any]
    html: str
    model: RegulatorReport


def build_regulator_report(bundle: ReportBundle) -> RegulatorOutput:
    """The regulator report from a public bundle: the JSON document (a dict ready for ``json.dump``) and its HTML."""
    model = build_document(bundle)
    document = json.loads(model.model_dump_json())
    # ClinicalTrials.gov leaves out a field it has no value for (its optional fields are never null)
    document["clinicaltrials_gov"] = json.loads(model.clinicaltrials_gov.model_dump_json(exclude_none=True))
    return RegulatorOutput(document, render_html(model, bundle), model)


