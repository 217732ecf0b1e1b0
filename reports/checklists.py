"""The CONSORT 2025 checklist and the CONSORT-AI items, each row marked *filled* (with where), *needs a person*, or
*not applicable* (with why), from the bundle.

Rows are keyed by guideline, version and topic name, never by a bare number: numbers moved between CONSORT 2010 and
2025 (baseline data went from 15 to 25, harms from 19 to 15 and 27; research/reports.md B4). The 2025 checklist has
30 items in 42 reporting rows (Hopewell et al. 2025, BMJ 388:e081123 and PLOS Med 22(4):e1004587, table 1); the item
topics below are ours, short paraphrases of that table. CONSORT-AI (Liu et al. 2020, Lancet Digit Health
2:e537-48) adds 14 items keyed to CONSORT 2010's numbering, which it extends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reports.bundle import AnalysisRun, ConsortFlow, PlanRecord, ReportBundle, Safety

Status = Literal["filled", "needs a person", "not applicable"]

CONSORT_2025 = "CONSORT 2025"
CONSORT_AI = "CONSORT-AI 2020"

# (item number, section, topic) of the 42 reporting rows of CONSORT 2025.
CONSORT_2025_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("1a", "Title and abstract", "Identification as a randomised trial"),
    ("1b", "Title and abstract", "Structured summary of design, methods, results and conclusions"),
    ("2", "Open science", "Trial registration: registry, identifier with URL, date"),
    ("3", "Open science", "Where the protocol and statistical analysis plan can be accessed"),
    ("4", "Open science", "Data sharing: de-identified data, data dictionary, code and materials"),
    ("5a", "Open science", "Funding and the funders' role"),
    ("5b", "Open science", "Conflicts of interest"),
    ("6", "Introduction", "Background and rationale"),
    ("7", "Introduction", "Objectives related to benefits and harms"),
    ("8", "Methods", "Patient and public involvement"),
    ("9", "Methods", "Trial design: type, allocation ratio, framework"),
    ("10", "Methods", "Changes to the trial protocol after it commenced, with reasons"),
    ("11", "Methods", "Trial setting and locations"),
    ("12a", "Methods", "Eligibility criteria for participants"),
    ("12b", "Methods", "Eligibility criteria for sites and for those delivering the interventions"),
    ("13", "Methods", "Intervention and comparator"),
    ("14", "Methods", "Outcomes: prespecified primary and secondary, how and when assessed"),
    ("15", "Methods", "Harms: how they were defined and assessed"),
    ("16a", "Methods", "Sample size"),
    ("16b", "Methods", "Interim analyses and stopping guidelines"),
    ("17a", "Methods", "Randomisation: sequence generation"),
    ("17b", "Methods", "Randomisation: type and restrictions"),
    ("18", "Methods", "Allocation concealment mechanism"),
    ("19", "Methods", "Implementation of the allocation"),
    ("20a", "Methods", "Blinding: who was blinded"),
    ("20b", "Methods", "Blinding: how, and similarity of interventions"),
    ("21a", "Methods", "Statistical methods for each outcome"),
    ("21b", "Methods", "Who is included in each analysis"),
    ("21c", "Methods", "How missing data were handled"),
    ("21d", "Methods", "Methods for additional analyses"),
    ("22a", "Results", "Participant flow, with a flow diagram"),
    ("22b", "Results", "Losses and exclusions after randomisation, with reasons"),
    ("23a", "Results", "Recruitment and follow-up dates"),
    ("23b", "Results", "Why the trial ended or was stopped"),
    ("24a", "Results", "Intervention and comparator as delivered"),
    ("24b", "Results", "Concomitant care"),
    ("25", "Results", "Baseline data per group"),
    ("26", "Results", "Numbers analysed, outcomes and estimation"),
    ("27", "Results", "Harms per group"),
    ("28", "Results", "Ancillary analyses, prespecified or exploratory"),
    ("29", "Discussion", "Interpretation"),
    ("30", "Discussion", "Limitations"),
)

CONSORT_AI_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("1a,b (i)", "Title and abstract", "The intervention involves AI: say so and name the type of model"),
    ("1a,b (ii)", "Title and abstract", "Intended use of the AI intervention"),
    ("2a (i)", "Introduction", "Intended use in its pathway: purpose and intended users"),
    ("4a (i)", "Methods", "Inclusion and exclusion at the level of participants"),
    ("4a (ii)", "Methods", "Inclusion and exclusion at the level of input data"),
    ("4b", "Methods", "How the AI intervention was integrated into the trial setting"),
    ("5 (i)", "Methods", "Version of the AI algorithm used"),
    ("5 (ii)", "Methods", "How input data were acquired and selected"),
    ("5 (iii)", "Methods", "How poor-quality or unavailable input data were assessed and handled"),
    ("5 (iv)", "Methods", "Human-AI interaction in handling the input data, and users' expertise"),
    ("5 (v)", "Methods", "The output of the AI intervention"),
    ("5 (vi)", "Methods", "How the outputs contributed to decisions or to the participant's use"),
    ("19", "Results", "Analysis of performance errors and how they were identified"),
    ("25", "Other information", "Whether and how the AI intervention and its code can be accessed"),
)


@dataclass(frozen=True)
class ChecklistRow:
    guideline: str
    item: str
    section: str
    topic: str
    status: Status
    detail: str

    @property
    def key(self) -> str:
        return f"{self.guideline}: {self.topic}"


def _run(bundle: ReportBundle, tier: str) -> AnalysisRun | None:
    return bundle.latest_analysis(tier)  # type: ignore[arg-type]


def consort_2025(bundle: ReportBundle) -> list[ChecklistRow]:
    """Every CONSORT 2025 row, filled from the bundle where it can be, else marked for a person."""
    p, reg = bundle.protocol, bundle.protocol.regulatory
    trusted, public = _run(bundle, "trusted"), _run(bundle, "public")
    methods = sorted({e.method for r in (trusted, public) if r for e in r.effects})
    plan = bundle.plan if isinstance(bundle.plan, PlanRecord) else None
    flow = bundle.flow if isinstance(bundle.flow, ConsortFlow) else None
    ratio = ":".join(f"{a.allocation:g}" for a in p.arms)
    tipping = [e for r in (trusted,) if r for e in r.effects if "tipping" in e.method]
    subgroups = [e for r in (trusted,) if r for e in r.effects if e.subgroup]
    extra_methods = sorted({e.method for r in (trusted,) if r for e in r.effects
                            if e.outcome not in [o.name for o in p.outcomes] or e.subgroup})
    person: dict[str, str] = {
        "4": "where de-identified data, the data dictionary and code are shared is a decision of the team",
        "5a": "funding and the funders' role are not recorded in the protocol",
        "5b": "conflicts of interest are not recorded in the protocol",
        "6": "the scientific background is written by the team",
        "8": "patient and public involvement is not recorded in the protocol",
        "11": "settings and locations are not recorded (the protocol's strata: " + (", ".join(p.strata) or "none") + ")",
        "12a": "eligibility criteria are not recorded in the protocol",
        "16a": "the protocol records no sample-size calculation",
        "17a": "the allocation sequence may be generated outside Flourish (`flourish randomize` uses stratified "
               "permuted blocks); the team states which",
        "17b": "block sizes are not recorded in the warehouse; stratification: " + (", ".join(p.strata) or "none"),
        "18": "allocation concealment is a property of the assignment service, not recorded here",
        "19": "who generated the sequence, enrolled and assigned participants is not recorded here",
        "20a": "blinding is not recorded in the protocol",
        "20b": "blinding is not recorded in the protocol",
        "23b": "why the trial ended is a statement of the team",
        "24b": "concomitant care is not recorded",
        "29": "interpretation is written by the team",
        "30": "limitations are written by the team (the data-driven ones are listed in the report's limitations)",
    }
    filled: dict[str, str] = {
        "1a": "report title: 'a randomised trial'",
        "1b": "section Summary",
        "3": ("section Preregistration: the locked protocol is the statistical analysis plan, plan hash "
              f"{plan.lock.plan_hash[:12]}; the canonical protocol JSON is held in the plan registry"
              if plan and plan.lock else ""),
        "7": f"section Design: primary outcome {p.primary_outcome.name} at {p.primary_outcome.wave}; harms via the "
             "instruments' safety screens",
        "9": f"section Design: parallel groups, {len(p.arms)} arms, allocation {ratio}, Bayesian estimation with "
             "posterior probabilities of benefit and of exceeding the MCID (superiority framing)",
        "10": ("section Deviations: " + (f"{len(plan.deviations)} recorded deviation(s) with reasons"
                                         if plan.deviations else "no deviation recorded")) if plan else "",
        "13": "section Design: arms with their feature flags (and versions, CONSORT-AI)",
        "14": "section Design: outcomes, instruments, waves, good direction and MCID",
        "15": "section Design and Harms: safety screens of the instruments (safety flags)",
        "21a": "section Outcomes: methods " + ", ".join(methods) if methods else "",
        "21b": "section Outcomes: analysed n per arm and wave beside available n (all randomised participants with "
               "the outcome at the wave)" if trusted else "",
        "21c": ("section Missing-data sensitivity: likelihood-based models under missing at random, with tipping-point "
                f"rows ({len(tipping)})" if tipping else
                "section Outcomes: likelihood-based models under missing at random (no tipping-point rows stored)"),
        "22a": "section Participant flow (diagram and table per arm and wave)" if flow else "",
        "22b": "section Participant flow: exits per wave with their reason" if flow else "",
        "23a": (f"section Design: enrolment {p.schedule.enrolment_start} to {p.schedule.enrolment_end}; waves at "
                + ", ".join(f"day {w.day}" for w in p.waves)) if p.schedule else (
            f"section Participant flow: randomised {flow.first_assigned:%Y-%m-%d} to {flow.last_assigned:%Y-%m-%d}, "
            f"last answer {flow.last_answer:%Y-%m-%d}" if flow and flow.first_assigned and flow.last_answer else ""),
        "21d": ("sections Missing-data sensitivity and Ancillary analyses: " + ", ".join(extra_methods + sorted(
            {e.method for e in tipping}))) if extra_methods or tipping else "",
        "24a": ("section Telemetry: feature exposure and use per arm" if p.surrogates else ""),
        "25": "section Baseline: outcomes at the baseline wave per arm (mean, SD, median, IQR), no p-values"
              if bundle.baseline else "",
        "26": "section Outcomes: per outcome and arm, analysed n and available n per wave, estimates with intervals "
              "for both tiers and both methods" if trusted else "",
        "27": "section Harms: safety flags per arm and wave with denominators; withdrawals"
              if isinstance(bundle.safety, Safety) else "",
        "28": (f"section Ancillary analyses: {', '.join(extra_methods)}" + (f"; {len(subgroups)} subgroup rows"
                                                                          if subgroups else "")) if extra_methods else "",
    }
    if reg is not None and reg.registry_id:
        filled["2"] = (f"{reg.registry or 'registry'} {reg.registry_id}" + (f" ({reg.registry_url})" if reg.registry_url
                                                                           else "")
                       + (f", registered {reg.registered_on}" if reg.registered_on else ""))
    else:
        person["2"] = "the protocol has no regulatory.registry_id (Flourish's plan lock is not a public registry)"
    not_applicable = {
        "12b": "the interventions are software features delivered by the assistant, not by sites or clinicians",
    }
    if not p.surrogates:
        person["24a"] = "the protocol declares no telemetry, so delivery of the features is not measured here"
    if not filled.get("28"):
        not_applicable["28"] = "no ancillary analysis was run"
    if not filled.get("21d") and trusted is not None:
        not_applicable["21d"] = "the plan prespecifies no additional analysis"
    stop = [r.after_wave for r in p.privacy.releases] if p.privacy is not None else []
    person["16b"] = ("interim DP releases are planned after " + ", ".join(stop) + "; the protocol records no stopping "
                     "rule" if stop else "the protocol records no interim analysis or stopping rule")
    rows = []
    for item, section, topic in CONSORT_2025_ITEMS:
        if item in not_applicable:
            rows.append(ChecklistRow(CONSORT_2025, item, section, topic, "not applicable", not_applicable[item]))
        elif filled.get(item):
            rows.append(ChecklistRow(CONSORT_2025, item, section, topic, "filled", filled[item]))
        else:
            why = person.get(item, "the data this row needs are not in this build (" + (
                "trusted tier only" if bundle.tier == "public" else "not recorded") + ")")
            rows.append(ChecklistRow(CONSORT_2025, item, section, topic, "needs a person", why))
    return rows


def feature_history(bundle: ReportBundle) -> list[tuple[str, str, str, str]]:
    """(date, arm, features on, versions) at every plan registry entry whose arms or versions changed: CONSORT-AI 5(i)
    as dated rows, so a version change mid-study shows when it was recorded."""
    import json

    plan = bundle.plan if isinstance(bundle.plan, PlanRecord) else None
    out, last = [], None
    for e in plan.entries if plan else ():
        data = json.loads(e.plan_json)
        versions = (data.get("regulatory") or {}).get("feature_versions", {})
        state = tuple((a["name"], tuple(sorted(f for f, on in a.get("features", {}).items() if on))) for a in data["arms"])
        key = (state, tuple(sorted(versions.items())))
        if key == last:
            continue
        last = key
        for arm, features in state:
            out.append((f"{e.recorded_at:%Y-%m-%d}", arm, ", ".join(features) or "none",
                        ", ".join(f"{f} {versions[f]}" for f in features if f in versions) or "not recorded"))
    return out


def consort_ai(bundle: ReportBundle) -> list[ChecklistRow]:
    p, reg = bundle.protocol, bundle.protocol.regulatory
    features = {a.name: [f for f, on in a.features.items() if on] for a in p.arms}
    feats = "; ".join(f"{a}: {', '.join(f) or 'none'}" for a, f in features.items())
    rows: dict[str, tuple[Status, str]] = {
        "1a,b (i)": ("filled", f"report title and Design: the arms switch features of an AI assistant ({feats})"
                     + (f"; system {reg.system_name}" if reg else "")),
        "4a (i)": ("needs a person", "participant eligibility is not recorded in the protocol"),
        "4a (ii)": ("filled", "section Governance: only data under a granted consent scope are ingested (telemetry, "
                    "surveys); rows without consent or outside the contract are quarantined by reason"),
        "4b": ("needs a person", "how the features were deployed in the product is not recorded"),
        "5 (ii)": ("filled", "section Design: survey instruments per wave ("
                   + ", ".join(p.instruments()) + ")" + ("; telemetry events: " + ", ".join(
                       sorted({s.event_type for s in p.surrogates})) if p.surrogates else "; no telemetry")),
        "5 (iii)": ("filled", "sections Governance and Diagnostics: quarantine by reason and the data-quality gates"
                    if bundle.governance.quarantined_by_reason or bundle.tier == "trusted" else
                    "section Data quality: the data-quality gates' verdicts"),
        "5 (iv)": ("needs a person", "human-AI interaction is a property of the product, not recorded here"),
        "5 (v)": ("needs a person", "the features' outputs are not described in the protocol"),
        "5 (vi)": ("needs a person", "how outputs reached the participant is not recorded"),
        "19": ("needs a person", "performance errors of the assistant are not measured by this study"),
        "25": ("needs a person", "access to the features and their code is a decision of the provider"),
    }
    if reg is not None:
        versions = ", ".join(f"{f} {v}" for f, v in reg.feature_versions.items())
        rows["1a,b (ii)"] = ("filled", f"section Design: intended use: {reg.intended_purpose}")
        rows["2a (i)"] = ("filled", f"section Design: {reg.intended_purpose}")
        if reg.system_version or versions:
            rows["5 (i)"] = ("filled", f"section Design: system {reg.system_name} {reg.system_version or ''}".strip()
                             + (f"; feature versions {versions}" if versions else "")
                             + "; dated history from the plan registry")
    if "5 (i)" not in rows:
        rows["5 (i)"] = ("needs a person", "the protocol records feature flags per arm (" + feats + ") but no "
                         "version: add regulatory.system_version and regulatory.feature_versions")
    for item in ("1a,b (ii)", "2a (i)"):
        rows.setdefault(item, ("needs a person", "the protocol has no regulatory.intended_purpose"))
    return [ChecklistRow(CONSORT_AI, item, section, topic, *rows[item]) for item, section, topic in CONSORT_AI_ITEMS]
