"""The trial report: CONSORT 2025 for the trial team, from a trusted bundle, as one HTML file with no script.

Charts are static SVG rendered offline by vl-convert and the flow diagram is drawn here as SVG, so the file prints
to PDF as it is and works under any Content-Security-Policy. Sections follow the CONSORT 2025 items the bundle can
fill; the checklist at the end says, for every row, where it is filled, that it needs a person, or why it does not
apply. The baseline table has no p-values: baseline differences after randomisation are by chance (CONSORT 2025
item 25 explanation).
"""

from __future__ import annotations

from reports.bundle import ConsortFlow, PlanRecord, QualityStatus, ReportBundle, Safety
from reports.checklists import ChecklistRow, consort_2025, consort_ai, feature_history
from reports.consort import flow_rows, flow_svg, public_flow
from reports.images import svg_of
from reports.text import (NO_RELEASE, Raw, cell_floor, effect_text, esc, fmt, fmt_count, interval_label, noise_interval,
                          not_available, page, pct, table)
from reports.views import View, enrolment_view, forest_view, safety_view, telemetry_view, trajectory_view
from schemas.results import LONG_RUN, Effect


def figure(view: View) -> str:
    """A view as a static figure: the SVG, its description as caption, and its table."""
    if view.spec is None:
        return view.table_html
    return (f'<figure class="chart" data-chart="{esc(view.key)}" role="group" aria-label="{esc(view.title)}">'
            f"{svg_of(view.spec, view.key)}<figcaption>{esc(view.description)}</figcaption></figure>"
            f"{view.note_html}{view.table_html}")


def _h(id_: str, title: str) -> str:
    return f'<h2 id="{id_}">{esc(title)}</h2>'


def design_html(bundle: ReportBundle) -> str:
    p, reg = bundle.protocol, bundle.protocol.regulatory
    versions = reg.feature_versions if reg else {}
    arms = table(["arm", "allocation", "role", "features switched on (version)", "description"],
                 [(a.name, f"{a.allocation:g}", "control" if a.control else "intervention",
                   ", ".join(f"{f} ({versions.get(f, 'version not recorded')})" for f, on in a.features.items() if on)
                   or "none", a.description) for a in p.arms], caption="Arms (CONSORT 2025: intervention and comparator)")
    waves = table(["wave", "day after assignment", "window (days +/-)", "instruments"],
                  [(w.name, w.day, w.window_days, ", ".join(w.instruments)) for w in p.waves], numeric=(1, 2),
                  caption="Waves")
    outcomes = table(["outcome", "role", "instrument", "wave of interest", "good direction", "MCID"],
                     [(o.name, "primary" if o.name == p.primary_outcome.name else "secondary", o.instrument or o.source,
                       o.wave or "every wave", o.direction.replace("_", " "), fmt(o.mcid)) for o in p.outcomes],
                     caption="Outcomes")
    a = p.analysis
    plan = (f"<p>Analysis plan: effect shape {esc(a.effect_shape)}, time trend {esc(a.time_trend)}, "
            f"{a.interval_level:.0%} intervals, covariates {esc(', '.join(a.covariates) or 'none')}, subgroups "
            f"{esc(', '.join(a.subgroups) or 'none')}; {a.chains} chain(s) x {a.draws} draws. "
            + (f"Privacy: epsilon {fmt(p.privacy.epsilon)}, delta {p.privacy.delta:g} per {esc(p.privacy.unit)}, "
               f"{esc(p.privacy.mechanism)} noise, cells below {p.privacy.min_cell_size} suppressed; planned releases "
               f"after {esc(', '.join(r.after_wave for r in p.planned_releases()))}.</p>" if p.privacy is not None
               else f"Privacy: {esc(NO_RELEASE)}.</p>"))
    intended = (f"<p>System: <b>{esc(reg.system_name)}</b> {esc(reg.system_version or '')}. Intended use: "
                f"{esc(reg.intended_purpose)}</p>" if reg else
                '<p class="na">System identification and intended use: not recorded in the protocol (regulatory '
                "section absent).</p>")
    history = feature_history(bundle)
    hist = table(["recorded", "arm", "features on", "versions"], history,
                 caption="Feature flags per arm as recorded in the plan registry (CONSORT-AI 5(i), dated)") if history else ""
    return _h("design", "Design") + intended + arms + hist + waves + outcomes + plan


def prereg_html(bundle: ReportBundle) -> str:
    plan = bundle.plan
    if not isinstance(plan, PlanRecord):
        return _h("preregistration", "Preregistration") + (not_available(plan, "Preregistration") or "")
    lock = plan.lock
    head = (f"<p>Plan locked {lock.recorded_at:%Y-%m-%d %H:%M:%S} UTC with SHA-256 <code class=\"hash\">"
            f"{esc(lock.plan_hash)}</code>. The protocol these reports were built from hashes to <code class=\"hash\">"
            f"{esc(plan.current_hash)}</code>: {esc(plan.explanation)}.</p>" if lock else "<p>No lock entry.</p>")
    devs = table(["#", "recorded (UTC)", "new plan hash", "reason"],
                 [(d.seq, f"{d.recorded_at:%Y-%m-%d %H:%M}", d.plan_hash[:16], d.reason) for d in plan.deviations],
                 caption="Deviations from the locked plan") if plan.deviations else \
        "<p>No deviation from the locked plan has been recorded.</p>"
    return _h("preregistration", "Preregistration") + head + _h("deviations", "Deviations from the locked plan") + devs


def flow_html(bundle: ReportBundle) -> str:
    flow = bundle.flow
    out = _h("flow", "Participant flow")
    if not isinstance(flow, ConsortFlow):
        return out + (not_available(flow, "Participant flow") or "")
    waves = bundle.protocol.wave_names
    out += (f'<figure class="flow" data-chart="consort-flow">{flow_svg(flow, waves)}<figcaption>Counted in the '
            f"warehouse as of {flow.as_of:%Y-%m-%d %H:%M} UTC"
            + (f"; randomised {flow.first_assigned:%Y-%m-%d} to {flow.last_assigned:%Y-%m-%d}, last answer "
               f"{flow.last_answer:%Y-%m-%d}" if flow.first_assigned and flow.last_answer else "")
            + ". At every arm and wave, entered = continued + exits. "
            f"Prompts sent: {esc(flow.prompted)}.</figcaption></figure>")
    out += table(["arm", "wave", "entered", "answered", "continued", "exits (reason: n)", "side notes (not conserved)"],
                 flow_rows(flow), numeric=(2, 3, 4), caption="Flow per arm and wave")
    if flow.erased:
        out += (f"<p>Withdrew consent and were erased: {esc(', '.join(f'{r}: {n}' for r, n in flow.erased.items()))}. "
                "Erasure removes a participant with their arm, so withdrawals are counted for the study, not per arm.</p>")
    if isinstance(bundle.compliance, tuple) and bundle.compliance:
        out += table(["arm", "wave", "prompted", "answered in window", "late", "expired", "unanswered"],
                     [(c.arm, c.wave, fmt_count(c.prompted), fmt_count(c.answered), fmt_count(c.late),
                       fmt_count(c.expired), fmt_count(c.unanswered)) for c in bundle.compliance],
                     numeric=(2, 3, 4, 5, 6), caption="Survey compliance per arm and wave (prompts of record; "
                     "prompted = answered in window + late + expired + unanswered). Late answers are kept and "
                     "flagged; the plan's rule decides whether the primary analysis uses them")
    # the public flow beside it: DP counts and how far each is from the exact count, in noise SDs
    cells = public_flow(bundle)
    if cells:
        level = bundle.protocol.analysis.interval_level
        rows = []
        for arm in flow.arms:
            exact = {"allocated": arm.allocated, **{w.wave: w.answered for w in arm.waves}}
            for stage, n in exact.items():
                v = cells.get(arm.arm, {}).get(stage)
                if v is None:
                    continue
                if v.suppressed:
                    rows.append((arm.arm, stage, n, Raw(f'<span class="suppressed">suppressed (n &lt; '
                                                         f'{cell_floor(bundle.protocol)})</span>'), "", ""))
                    continue
                lo, hi = noise_interval(v, level)
                rows.append((arm.arm, stage, n, f"{fmt_count(v.value)} ({fmt_count(lo)} to {fmt_count(hi)})",
                             fmt(v.noise_sd), fmt((v.value - n) / v.noise_sd if v.noise_sd else None)))
        out += table(["arm", "stage", "exact (trusted)", f"DP count ({level:.0%} interval)", "noise SD",
                      "difference in noise SDs"], rows, numeric=(2, 3, 4, 5),
                     caption="The public flow (latest DP release) beside the exact counts")
    return out


def baseline_html(bundle: ReportBundle) -> str:
    out = _h("baseline", "Baseline characteristics by arm")
    if not bundle.baseline:
        return out + '<p class="na">Baseline table: not available: no baseline scores.</p>'
    arms = bundle.protocol.arm_names
    by = {(r.outcome, r.arm): r for r in bundle.baseline}
    rows = []
    for o in bundle.protocol.outcomes:
        cells = []
        for a in arms:
            r = by.get((o.name, a))
            cells.append("no data" if r is None else f"{fmt(r.mean)} ({fmt(r.sd)}); median {fmt(r.median)} "
                         f"[{fmt(r.q1)}, {fmt(r.q3)}]; n = {r.n}")
        rows.append((o.name, *cells))
    out += table(["outcome at " + bundle.protocol.baseline_wave, *arms], rows,
                 caption="Mean (SD); median [IQR]; n. No p-values: differences at baseline after randomisation are by "
                         "chance (CONSORT 2025 item 25).")
    if bundle.strata:
        strata = sorted({s.stratum for s in bundle.strata})
        n = {(s.arm, s.stratum): s.n for s in bundle.strata}
        total = {a: sum(n.get((a, s), 0) for s in strata) for a in arms}
        out += table(["stratum", *arms], [(s, *[f"{n.get((a, s), 0)} ({pct(n.get((a, s), 0) / total[a]) if total[a] else '-'})"
                                               for a in arms]) for s in strata], caption="Randomisation strata")
    return out


def _pick(effects: list[Effect], **match: str) -> Effect | None:
    for e in effects:
        if all(getattr(e, k) == v for k, v in match.items()) and e.subgroup is None:
            return e
    return None


def outcomes_html(bundle: ReportBundle) -> str:
    """CONSORT 2025 item 26: per outcome, arm and wave: available n, analysed n, and every method's estimate."""
    out = _h("outcomes", "Outcomes and estimation")
    trusted, public = bundle.latest_analysis("trusted"), bundle.latest_analysis("public")
    if trusted is None and public is None:
        return out + '<p class="na">Outcomes: not available: no analysis has been stored.</p>'
    p = bundle.protocol
    avail = {(a.outcome, a.arm, a.wave): a.n_available for a in bundle.availability}
    t_eff = list(trusted.effects) if trusted else []
    p_eff = list(public.effects) if public else []
    methods_t = sorted({e.method for e in t_eff if e.outcome in [o.name for o in p.outcomes] and "tipping" not in e.method})
    methods_p = sorted({e.method for e in p_eff})
    level = p.analysis.interval_level
    for run in (trusted, public):
        if run is not None:
            kind = "EXPLORATORY" if run.exploratory else "confirmatory"
            out += (f"<p>{esc(run.tier)} tier: run <code>{esc(run.run_id)}</code> ({kind}), plan "
                    f"<code>{esc(run.plan_hash[:12])}</code>, {run.created_at:%Y-%m-%d %H:%M} UTC.</p>")
    for o in p.outcomes:
        rows = []
        for arm in [a for a in p.arm_names if a != p.control_arm]:
            for wave in [*p.wave_names, LONG_RUN]:
                cells = []
                any_row = False
                for m in methods_t:
                    e = _pick(t_eff, outcome=o.name, arm=arm, wave=wave, method=m)
                    any_row |= e is not None
                    cells.append("" if e is None else effect_text(e) + (f"; P(benefit) {pct(e.p_benefit)}"
                                                                         if e.p_benefit is not None else "")
                                 + (f"; p = {fmt(e.p_value, 2)}" if e.p_value is not None else ""))
                for m in methods_p:
                    e = _pick(p_eff, outcome=o.name, arm=arm, wave=wave, method=m)
                    any_row |= e is not None
                    cells.append("" if e is None else effect_text(e))
                if not any_row:
                    continue
                first = next((e for e in t_eff if e.outcome == o.name and e.arm == arm and e.wave == wave
                              and e.subgroup is None and e.n_arm is not None), None)
                analysed = "" if first is None else f"{first.n_arm} / {first.n_control}"
                w = p.wave_names[-1] if wave == LONG_RUN else wave
                available = f"{avail.get((o.name, arm, w), 0)} / {avail.get((o.name, p.control_arm, w), 0)}"
                rows.append((arm, wave, available, analysed, *cells))
        header = ["arm", "wave", "available n (arm / control)", "analysed n (arm / control)",
                  *[f"trusted: {m}" for m in methods_t], *[f"public (includes DP noise): {m}" for m in methods_p]]
        out += (f"<h3>{esc(o.name)}</h3>" + table(header, rows, caption=(
            f"{o.name} ({'primary' if o.name == p.primary_outcome.name else 'secondary'}; good direction "
            f"{o.direction.replace('_', ' ')}; MCID {fmt(o.mcid)}): arm minus control with {level:.0%} intervals")))
    for tier in ("trusted", "public"):
        view = forest_view(bundle, tier)
        if view.spec is not None:
            out += f"<h3>Long-run effects, {tier} tier</h3>" + figure(View(
                f"forest-{tier}", view.title, view.description, view.spec, "", marks_expected=view.marks_expected))
    traj = trajectory_view(bundle, "trusted")
    if traj.spec is not None:
        out += "<h3>Effects over the waves, trusted tier</h3>" + figure(View(
            "trajectories-trusted", traj.title, traj.description, traj.spec, ""))
    return out


def sensitivity_html(bundle: ReportBundle) -> str:
    out = _h("sensitivity", "Missing-data sensitivity")
    run = bundle.latest_analysis("trusted")
    rows = [e for e in (run.effects if run else ()) if "tipping" in e.method]
    if not rows:
        return out + ('<p class="na">Tipping-point analysis: not available: no tipping-point rows were stored by the '
                      "analysis.</p>")
    return out + "<p>The tipping point is the shift, in outcome units, of the missing participants' outcomes in the " \
        "intervention arm at which the conclusion would change (a missing-not-at-random departure).</p>" + table(
        ["outcome", "arm", "wave", "tipping delta (outcome units)", "note"],
        [(e.outcome, e.arm, e.wave, effect_text(e), e.reason or "") for e in rows], numeric=(3,))


def ancillary_html(bundle: ReportBundle) -> str:
    run = bundle.latest_analysis("trusted")
    outcomes = [o.name for o in bundle.protocol.outcomes]
    rows = [e for e in (run.effects if run else ()) if (e.subgroup or e.outcome not in outcomes) and "tipping" not in e.method]
    out = _h("ancillary", "Ancillary analyses")
    if not rows:
        return out + "<p>No ancillary analysis (prespecified subgroups, telemetry effects) was run.</p>"
    return out + table(["outcome or metric", "arm", "wave", "subgroup", "method", "effect (interval)", "label"],
                       [(e.outcome, e.arm, e.wave, e.subgroup or "", e.method, effect_text(e),
                         "exploratory" if run.exploratory else "prespecified") for e in rows], numeric=(5,))


def harms_html(bundle: ReportBundle) -> str:
    out = _h("harms", "Harms")
    safety = bundle.safety
    if isinstance(safety, Safety):
        rows = [(c.flag, c.arm, c.wave, fmt_count(c.n_participants), fmt_count(c.at_risk),
                 pct(c.n_participants / c.at_risk) if c.at_risk and c.n_participants is not None else "")
                for c in safety.counts]
        out += table(["safety flag", "arm", "wave", "participants flagged", "answered the instrument", "share"], rows,
                     numeric=(3, 4, 5), caption="Safety screens triggered (participants), with denominators")
        view = safety_view(bundle)
        if view.spec is not None:
            out += figure(View("safety-trusted", view.title, view.description, view.spec, ""))
    else:
        out += not_available(safety, "Safety flags") or ""
    flow = bundle.flow
    if isinstance(flow, ConsortFlow):
        out += (f"<p>Withdrawals of consent (erased): {esc(', '.join(f'{r}: {n}' for r, n in flow.erased.items()) or 'none')}."
                " Losses to follow-up per arm and wave are in the participant flow.</p>")
    return out


def diagnostics_html(bundle: ReportBundle) -> str:
    out = _h("diagnostics", "Diagnostics")
    q = bundle.quality
    if isinstance(q, QualityStatus):
        out += f"<p>Data-quality gates, run <code>{esc(q.run_id)}</code> ({q.checked_at:%Y-%m-%d %H:%M} UTC): " \
               f"<b>{esc(q.verdict)}</b>.</p>"
        out += table(["expectation", "severity", "result", "checked", "unexpected", "unit"],
                     [(c.name, c.severity, "pass" if c.success else "FAIL", fmt_count(c.checked_count)
                       if c.checked_count is not None else "", fmt_count(c.unexpected_count)
                       if c.unexpected_count is not None else "", c.unit or "") for c in q.checks], numeric=(3, 4))
    else:
        out += not_available(q, "Data quality") or ""
    run = bundle.last_run
    notes = getattr(run, "analysis_notes", ())
    failed = [e for a in bundle.analyses for e in a.effects if e.reason is not None]
    out += ("<p>Analysis notes: " + esc("; ".join(notes)) + "</p>") if notes else "<p>No analysis notes.</p>"
    if failed:
        out += table(["tier", "outcome", "arm", "wave", "method", "why not estimable"],
                     [(e.tier, e.outcome, e.arm, e.wave, e.method, e.reason) for e in failed],
                     caption="Effects that could not be estimated")
    out += ("<p class=\"muted\">Sampler diagnostics (R-hat, effective sample size) are checked by the analysis against "
            "the plan's limits (a failing model's rows say so above); their values are not stored in the warehouse.</p>")
    return out


def psychometrics_html(bundle: ReportBundle) -> str:
    out = _h("psychometrics", "Reliability per wave and arm")
    if not bundle.psychometrics:
        return out + '<p class="na">Psychometrics: not available: the scoring stage stored none.</p>'
    return out + table(["outcome", "wave", "arm", "items", "n", "alpha (95% CI)", "omega", "note"],
                       [(r.outcome, r.wave, r.arm, r.n_items, "" if r.n_obs is None else r.n_obs,
                         f"{fmt(r.alpha)} ({fmt(r.alpha_ci_lower)} to {fmt(r.alpha_ci_upper)})" if r.alpha is not None
                         else "not available", fmt(r.omega), r.note) for r in bundle.psychometrics], numeric=(3, 4, 5, 6),
                       caption="Cronbach's alpha (Feldt CI) and McDonald's omega")


def checklist_html(rows: list[ChecklistRow], title: str, id_: str) -> str:
    badge = {"filled": "b-ok", "needs a person": "b-warn", "not applicable": "b-info"}
    counts = {s: sum(r.status == s for r in rows) for s in badge}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return (_h(id_, title) + f"<p>{len(rows)} rows: {esc(summary)}.</p>" + table(
        ["item", "section", "topic", "status", "where, or why"],
        [(f"{r.guideline} {r.item}", r.section, r.topic, Raw(f'<span class="badge {badge[r.status]}">{esc(r.status)}</span>'),
          r.detail) for r in rows], cls="checklist"))


def build_trial_report(bundle: ReportBundle) -> str:
    """The trial report's HTML from a trusted bundle (a public bundle works too, with the trusted sections marked not
    available)."""
    p = bundle.protocol
    tier_note = ("TRUSTED: exact counts from participant-level data; for the trial team, not for release."
                 if bundle.tier == "trusted" else "Built from the public bundle: trusted-tier sections are not available.")
    summary = []
    if isinstance(bundle.flow, ConsortFlow):
        summary.append(f"{bundle.flow.randomised:,} participants randomised and still consenting across {len(p.arms)} arms")
    for tier in ("trusted", "public"):
        run = bundle.latest_analysis(tier)  # type: ignore[arg-type]
        if run is None:
            continue
        for e in run.effects:
            if e.outcome == p.primary_outcome.name and e.wave == LONG_RUN and e.subgroup is None and \
                    e.method.startswith("bayes"):
                summary.append(f"{tier} tier, {e.arm} vs {e.control} on {e.outcome} at the final wave: "
                               f"{effect_text(e)} ({interval_label(e.interval_level, tier)})"
                               + (f", P(benefit) {pct(e.p_benefit)}" if e.p_benefit is not None else ""))
    views = [enrolment_view(bundle), telemetry_view(bundle)]
    toc = ["design", "preregistration", "deviations", "flow", "baseline", "outcomes", "sensitivity", "ancillary",
           "harms", "diagnostics", "psychometrics", "releases", "telemetry", "consort-2025", "consort-ai"]
    body = (
        f'<header><p class="tier">{esc(tier_note)}</p><h1>{esc(p.title)}: a randomised trial</h1>'
        f'<p class="sub">Trial report per CONSORT 2025 (with CONSORT-AI). Study <code>{esc(p.study_id)}</code>; built '
        f"{bundle.built_at:%Y-%m-%d %H:%M} UTC.</p>"
        f'<nav class="toc">{" ".join(f"<a href=#{t}>{t}</a>" for t in toc)}</nav></header>'
        + _h("summary", "Summary") + "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in summary) + "</ul>"
        + design_html(bundle) + prereg_html(bundle) + flow_html(bundle) + baseline_html(bundle)
        + outcomes_html(bundle) + sensitivity_html(bundle) + ancillary_html(bundle) + harms_html(bundle)
        + diagnostics_html(bundle) + psychometrics_html(bundle)
        + _h("releases", "DP releases (what the public sees)") + figure(views[0])
        + _h("telemetry", "Telemetry") + figure(views[1])
        + checklist_html(consort_2025(bundle), "CONSORT 2025 checklist", "consort-2025")
        + checklist_html(consort_ai(bundle), "CONSORT-AI items", "consort-ai"))
    return page(f"{p.title}: trial report", body)
