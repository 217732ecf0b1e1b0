"""The views the reports show: for each, its numbers (plain rows), an Altair chart of them, a text description and a
table of the same numbers.

Numbers are apart from pictures (research/aesthetics.md, "what Flourish absorbs" 7): ``*_rows`` functions are pure
and return lists of dicts built from the bundle; the chart and the table are both drawn from those rows, so they
cannot disagree. Every chart has a Vega-Lite ``description`` (its ARIA label), points on its lines, and arms told
apart by colour *and* shape from a colour-blind-safe palette (Okabe & Ito 2008, whose colours each reach 3:1 contrast
against white: WCAG 2.1 SC 1.4.11; ``tests/reports/test_views.py`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import altair as alt

from reports.bundle import AnalysisRun, Budget, ReportBundle, Safety
from reports.text import (
    Raw,
    effect_text,
    esc,
    fmt,
    fmt_count,
    interval_label,
    noise_interval,
    pct,
    suppressed,
    table,
    cell_floor,
    z_of,
)
from schemas.results import LONG_RUN, PLATEAU, Effect

ARM_COLOURS = ("#000000", "#0072B2", "#D55E00", "#009E73", "#882255", "#5D3A9B")
"""Okabe-Ito black, blue, vermillion and bluish green, then Tol's wine and a dark purple: each has at least 3:1
contrast with white and the first four stay distinct under the common colour-vision deficiencies."""
ARM_SHAPES = ("circle", "square", "triangle-up", "diamond", "cross", "triangle-down")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


@dataclass(frozen=True)
class View:
    """One view: a chart (a Vega-Lite spec, or None when a sentence replaces it), its description, and the table of
    the same numbers (HTML)."""

    key: str
    title: str
    description: str
    spec: dict[str, Any] | None
    table_html: str
    note_html: str = ""
    marks_expected: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _arm_scales(bundle: ReportBundle) -> tuple[alt.Scale, alt.Scale]:
    arms = bundle.protocol.arm_names
    colours = [ARM_COLOURS[i % len(ARM_COLOURS)] for i in range(len(arms))]
    shapes = [ARM_SHAPES[i % len(ARM_SHAPES)] for i in range(len(arms))]
    return alt.Scale(domain=arms, range=colours), alt.Scale(domain=arms, range=shapes)


def _finish(chart: alt.TopLevelMixin, description: str) -> dict[str, Any]:
    spec = chart.properties(description=description).configure(font=FONT).configure_view(stroke=None) \
        .configure_title(anchor="start", frame="bounds") \
        .configure_axis(labelFontSize=11, titleFontSize=12) \
        .configure_legend(labelFontSize=11, titleFontSize=12, orient="bottom", direction="horizontal") \
        .to_dict(validate=True)
    return spec


def _level(bundle: ReportBundle) -> float:
    return bundle.protocol.analysis.interval_level


def _k(bundle: ReportBundle) -> int | None:
    return cell_floor(bundle.protocol)


# ---------------------------------------------------------------------------------------------------------------
# Enrolment and retention (DP counts)


def enrolment_rows(bundle: ReportBundle) -> list[dict[str, Any]]:
    """Allocated participants and participants answering at each wave, per arm, from the latest DP release of the
    CONSORT counts: value, interval from the DP noise, or suppressed."""
    cells = bundle.values_of("consort_counts")
    level, k = _level(bundle), _k(bundle)
    stages = ["allocated", *bundle.protocol.wave_names]
    rows = []
    for v in cells:
        stage = "allocated" if v.statistic == "assigned" else v.wave
        if stage not in stages or v.arm is None:
            continue
        lo, hi = noise_interval(v, level)
        rows.append({"arm": v.arm, "stage": stage, "order": stages.index(stage), "count": v.value, "lower": lo,
                     "upper": hi, "noise_sd": v.noise_sd, "suppressed": v.suppressed,
                     "shown": suppressed(k) if v.suppressed else f"{fmt_count(v.value)} ({fmt_count(lo)} to {fmt_count(hi)})"})
    arm_order = {a: i for i, a in enumerate(bundle.protocol.arm_names)}
    return sorted(rows, key=lambda r: (arm_order.get(r["arm"], 99), r["order"]))


def enrolment_view(bundle: ReportBundle) -> View:
    rows = enrolment_rows(bundle)
    title = "Enrolment and retention by arm and wave"
    level = _level(bundle)
    release = bundle.latest_release("consort_counts")
    if not rows or release is None:
        return View("enrolment", title, "No DP release of the participant counts has been made.", None,
                    '<p class="na">Enrolment and retention: not available: no DP release of the participant counts '
                    "has been made yet.</p>")
    colour, shape = _arm_scales(bundle)
    stages = ["allocated", *bundle.protocol.wave_names]
    shown = [r for r in rows if not r["suppressed"]]
    hidden = [r for r in rows if r["suppressed"]]
    description = (f"Line chart of the number of participants allocated to each arm and answering at each wave "
                   f"({', '.join(bundle.protocol.wave_names)}), from DP release {release.release_id}; bars show the "
                   f"{level:.0%} interval from the DP noise. " + "; ".join(
                       f"{r['arm']} {r['stage']}: {r['shown']}" for r in rows))
    arms = bundle.protocol.arm_names
    base = alt.Chart(alt.Data(values=rows)).encode(
        x=alt.X("stage:N", sort=stages, title="stage"), xOffset=alt.XOffset("arm:N", sort=arms),
        color=alt.Color("arm:N", scale=colour, title="arm"))
    # suppressed cells break the line (no value is drawn for them, and none is interpolated across them)
    line = base.mark_line(point=alt.OverlayMarkDef(size=60, filled=True), invalid="break-paths-filter-domains").encode(
        y=alt.Y("count:Q", title="participants (DP count)"), shape=alt.Shape("arm:N", scale=shape, title="arm"),
        tooltip=[alt.Tooltip("arm:N"), alt.Tooltip("stage:N"), alt.Tooltip("shown:N", title="count (interval)")])
    bars = base.mark_rule(strokeWidth=1.5).encode(y="lower:Q", y2="upper:Q")
    layers = [bars, line]
    if hidden:
        layers.append(alt.Chart(alt.Data(values=hidden)).mark_text(
            angle=270, align="left", baseline="middle", fontSize=9, color="#8a1c12").encode(
            x=alt.X("stage:N", sort=stages), xOffset=alt.XOffset("arm:N", sort=arms), y=alt.value(255),
            text=alt.Text("shown:N")))
    chart = alt.layer(*layers).properties(
        width=520, height=260, title=alt.TitleParams(title, subtitle=[
            f"DP counts with their {level:.0%} interval from the noise; suppressed cells are marked, never drawn as 0"]))
    spec = _finish(chart, description)
    tbl = table(["arm", "stage", f"participants ({level:.0%} interval from the DP noise)", "noise SD"],
                [(r["arm"], r["stage"], Raw(f'<span class="suppressed">{esc(r["shown"])}</span>') if r["suppressed"]
                  else r["shown"], fmt(r["noise_sd"])) for r in rows], numeric=(2, 3),
                caption=f"Participant counts, DP release {release.release_id} ({release.created_at:%Y-%m-%d})")
    return View("enrolment", title, description, spec, tbl, marks_expected=len(shown))


# ---------------------------------------------------------------------------------------------------------------
# Effects


def main_method(run: AnalysisRun, outcomes: list[str]) -> str | None:
    """The run's primary method: the Bayesian method with the most whole-sample rows at the protocol's outcomes
    (the longitudinal model in the trusted tier, the noise-aware model in the public tier)."""
    counts: dict[str, int] = {}
    for e in run.effects:
        if e.subgroup is None and e.outcome in outcomes and e.reason is None:
            counts[e.method] = counts.get(e.method, 0) + 1
    if not counts:
        counts = {e.method: 1 for e in run.effects if e.outcome in outcomes}
    if not counts:
        return None
    return max(counts, key=lambda m: (m.startswith("bayes"), counts[m], m))


def effect_rows(bundle: ReportBundle, tier: str, *, long_run: bool) -> tuple[list[dict[str, Any]], AnalysisRun | None]:
    run = bundle.latest_analysis(tier)  # type: ignore[arg-type]
    if run is None:
        return [], None
    outcomes = [o.name for o in bundle.protocol.outcomes]
    method = main_method(run, outcomes)
    waves = bundle.protocol.wave_names
    rows = []
    for e in run.effects:
        if e.method != method or e.subgroup is not None or e.outcome not in outcomes:
            continue
        if long_run != (e.wave == LONG_RUN) or e.wave == PLATEAU or (not long_run and e.wave not in waves):
            continue
        o = bundle.protocol.outcome(e.outcome)
        sign = 1 if (e.direction or o.direction) == "higher_is_better" else -1
        rows.append({"outcome": e.outcome, "arm": e.arm, "wave": e.wave, "order": waves.index(e.wave) if e.wave in waves
                     else len(waves), "estimate": e.estimate, "lower": e.lower, "upper": e.upper,
                     "p_benefit": e.p_benefit, "p_above_mcid": e.p_above_mcid, "mcid": o.mcid,
                     "mcid_line": None if o.mcid is None else sign * o.mcid, "direction": e.direction or o.direction,
                     "n_arm": e.n_arm, "n_control": e.n_control, "reason": e.reason,
                     "shown": "not estimable (why: below the table)" if e.reason else effect_text(e),
                     "exploratory": run.exploratory, "method": e.method, "level": e.interval_level})
    return rows, run


def _reasons(rows: list[dict[str, Any]]) -> str:
    """Why effects could not be estimated, once per outcome (the table rows say only "not estimable")."""
    seen: dict[str, str] = {}
    for r in rows:
        if r["reason"]:
            seen.setdefault(r["outcome"], r["reason"])
    return "".join(f'<p class="na">{esc(o)}: not estimable: {esc(why)}.</p>' for o, why in seen.items())


def _run_label(run: AnalysisRun) -> str:
    kind = "EXPLORATORY" if run.exploratory else "confirmatory (locked plan)"
    return f"analysis run {run.run_id}, {kind}, plan {run.plan_hash[:12]}"


def trajectory_view(bundle: ReportBundle, tier: str = "public") -> View:
    title = "Effect of each arm over the waves (arm minus control)"
    rows, run = effect_rows(bundle, tier, long_run=False)
    if run is None or not rows:
        why = ("no public-tier analysis (the noise-aware model on the DP releases) has been stored" if tier == "public"
               else "no analysis has been stored")
        return View("trajectories", title, why, None, f'<p class="na">Effect trajectories: not available: {esc(why)}.</p>')
    level = rows[0]["level"] or _level(bundle)
    label = interval_label(level, tier)
    colour, shape = _arm_scales(bundle)
    est = [r for r in rows if r["estimate"] is not None]
    if not est:
        return View("trajectories", title, "no effect could be estimated", None, table(
            ["outcome", "arm", "wave", "effect"], [(r["outcome"], r["arm"], r["wave"], r["shown"]) for r in rows],
            caption=f"Effects per wave ({_run_label(run)}): none could be estimated") + _reasons(rows))
    description = (f"Effect of each arm against control per outcome at each wave, estimate with {label}; {_run_label(run)}. "
                   + "; ".join(f"{r['outcome']} {r['arm']} {r['wave']}: {r['shown']}" for r in rows))
    waves = bundle.protocol.wave_names
    base = alt.Chart().encode(x=alt.X("wave:N", sort=waves, title="wave"),
                              xOffset=alt.XOffset("arm:N", sort=bundle.protocol.arm_names),
                              color=alt.Color("arm:N", scale=colour))
    layer = alt.layer(
        alt.Chart().mark_rule(color="#777", strokeDash=[4, 3]).encode(y=alt.datum(0)),
        base.mark_rule(strokeWidth=1.5).encode(y=alt.Y("lower:Q", title="effect (outcome units)"), y2="upper:Q"),
        base.mark_line(point=alt.OverlayMarkDef(size=50, filled=True)).encode(
            y="estimate:Q", shape=alt.Shape("arm:N", scale=shape), tooltip=["outcome:N", "arm:N", "wave:N", alt.Tooltip("shown:N", title="effect (interval)")]),
        data=alt.Data(values=est)).properties(width=215, height=170)
    chart = layer.facet(facet=alt.Facet("outcome:N", title=None), columns=2).resolve_scale(y="independent").properties(
        title=alt.TitleParams(title, subtitle=[label, _run_label(run)]))
    spec = _finish(chart, description)
    tbl = table(["outcome", "arm", "wave", f"effect ({level:.0%} interval)", "n arm / control"],
                [(r["outcome"], r["arm"], r["wave"], r["shown"], f"{fmt_count(r['n_arm'])} / {fmt_count(r['n_control'])}")
                 for r in sorted(rows, key=lambda r: (r["outcome"], r["arm"], r["order"]))], numeric=(3, 4),
                caption=f"Effects per wave: {label}")
    return View("trajectories", title, description, spec, tbl + _reasons(rows), marks_expected=len(est))


def forest_view(bundle: ReportBundle, tier: str = "public") -> View:
    title = "Long-run effect across outcomes (forest plot)"
    rows, run = effect_rows(bundle, tier, long_run=True)
    if run is None or not rows:
        return View("forest", title, "no long-run effect stored", None,
                    '<p class="na">Long-run effects: not available: no analysis of this tier has been stored.</p>')
    level = rows[0]["level"] or _level(bundle)
    label = interval_label(level, tier)
    colour, shape = _arm_scales(bundle)
    est = [r for r in rows if r["estimate"] is not None]
    if not est:
        return View("forest", title, "no long-run effect could be estimated", None, table(
            ["outcome", "arm", "long-run effect"], [(r["outcome"], r["arm"], r["shown"]) for r in rows],
            caption=f"Long-run effects ({_run_label(run)}): none could be estimated") + _reasons(rows))
    description = (f"Forest plot of each arm's long-run effect against control on every outcome, with {label}; dashed "
                   f"lines mark no effect and the minimum clinically important difference (MCID) in the direction of "
                   f"benefit; {_run_label(run)}. " + "; ".join(f"{r['outcome']} {r['arm']}: {r['shown']}" for r in rows))
    base = alt.Chart().encode(y=alt.Y("arm:N", sort=bundle.protocol.arm_names, title=None),
                              color=alt.Color("arm:N", scale=colour))
    layer = alt.layer(
        alt.Chart().mark_rule(color="#777", strokeDash=[4, 3]).encode(x=alt.datum(0)),
        alt.Chart().mark_rule(color="#0b5394", strokeDash=[2, 2]).encode(x="mcid_line:Q"),
        base.mark_rule(strokeWidth=2).encode(x=alt.X("lower:Q", title="effect at the final wave (outcome units)"),
                                             x2="upper:Q"),
        base.mark_point(size=80, filled=True).encode(
            x="estimate:Q", shape=alt.Shape("arm:N", scale=shape),
            tooltip=["outcome:N", "arm:N", alt.Tooltip("shown:N", title="effect (interval)")]),
        data=alt.Data(values=est)).properties(width=380, height=alt.Step(22))
    chart = layer.facet(row=alt.Row("outcome:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left"))) \
        .resolve_scale(x="independent").properties(title=alt.TitleParams(title, subtitle=[label, _run_label(run)]))
    spec = _finish(chart, description)
    tbl = table(["outcome", "arm", f"long-run effect ({level:.0%} interval)", "MCID", "good direction"],
                [(r["outcome"], r["arm"], r["shown"], fmt(r["mcid"]), r["direction"].replace("_", " ")) for r in rows],
                numeric=(2, 3), caption=f"Long-run effects: {label}")
    return View("forest", title, description, spec, tbl + _reasons(rows), marks_expected=len(est))


def probability_view(bundle: ReportBundle, tier: str = "public") -> View:
    title = "Probability of benefit and of exceeding the MCID (long run)"
    rows, run = effect_rows(bundle, tier, long_run=True)
    data = []
    for r in rows:
        label = f"{r['outcome']}: {r['arm']}"
        for measure, key in (("P(benefit)", "p_benefit"), ("P(benefit > MCID)", "p_above_mcid")):
            if r[key] is not None:
                data.append({"row": label, "measure": measure, "probability": r[key], "shown": pct(r[key])})
    if run is None or not data:
        return View("probabilities", title, "no posterior probabilities stored", None,
                    '<p class="na">Probabilities of benefit: not available: no Bayesian long-run row has been stored.</p>')
    description = ("Dot chart of the posterior probability that each arm benefits participants against control on each "
                   "outcome, and that the benefit exceeds the minimum clinically important difference; "
                   + ("the model includes the DP noise. " if tier == "public" else "trusted tier. ")
                   + "; ".join(f"{d['row']} {d['measure']} {d['shown']}" for d in data))
    chart = alt.Chart(alt.Data(values=data)).mark_point(size=90, filled=True).encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="posterior probability"),
        y=alt.Y("row:N", title=None),
        color=alt.Color("measure:N", scale=alt.Scale(domain=["P(benefit)", "P(benefit > MCID)"],
                                                     range=["#0072B2", "#D55E00"]), title=None),
        shape=alt.Shape("measure:N", scale=alt.Scale(domain=["P(benefit)", "P(benefit > MCID)"],
                                                     range=["circle", "diamond"]), title=None),
        tooltip=["row:N", "measure:N", alt.Tooltip("shown:N", title="probability")],
    ).properties(width=420, height=alt.Step(24), title=alt.TitleParams(title, subtitle=[
        "A probability is the model's own statement of uncertainty:", "it has no further interval",
        _run_label(run)]))
    rule = alt.Chart(alt.Data(values=[{"x": 0.5}])).mark_rule(color="#777", strokeDash=[4, 3]).encode(x="x:Q")
    spec = _finish(alt.layer(rule, chart), description)
    tbl = table(["outcome: arm", "P(benefit)", "P(benefit > MCID)"],
                [(f"{r['outcome']}: {r['arm']}", pct(r["p_benefit"]),
                  "no MCID declared" if r["mcid"] is None else pct(r["p_above_mcid"])) for r in rows],
                numeric=(1, 2), caption="Posterior probabilities at the final wave")
    return View("probabilities", title, description, spec, tbl, marks_expected=len(data))


# ---------------------------------------------------------------------------------------------------------------
# Telemetry


NO_TELEMETRY = ("This study records no telemetry (its protocol declares no telemetry metrics), so no telemetry numbers "
                "are shown.")


def telemetry_rows(bundle: ReportBundle) -> list[dict[str, Any]]:
    level, k, rows = _level(bundle), _k(bundle), []
    for s in bundle.protocol.surrogates:
        for v in bundle.values_of(f"telemetry_means:{s.name}"):
            if v.statistic != "mean":
                continue
            lo, hi = noise_interval(v, level)
            rows.append({"metric": s.name, "arm": v.arm, "mean": v.value, "lower": lo, "upper": hi,
                         "suppressed": v.suppressed, "noise_sd": v.noise_sd,
                         "shown": suppressed(k) if v.suppressed else f"{fmt(v.value)} ({fmt(lo)} to {fmt(hi)})"})
    return rows


def telemetry_view(bundle: ReportBundle) -> View:
    title = "Telemetry metrics by arm (first weeks after assignment)"
    if not bundle.has_telemetry:
        return View("telemetry", title, NO_TELEMETRY, None, f'<p class="na">{esc(NO_TELEMETRY)}</p>')
    rows = telemetry_rows(bundle)
    if not rows:
        return View("telemetry", title, "no DP release of the telemetry metrics", None,
                    '<p class="na">Telemetry metrics: not available: no DP release of them has been made.</p>')
    level = _level(bundle)
    colour, shape = _arm_scales(bundle)
    shown = [r for r in rows if not r["suppressed"]]
    description = (f"Mean of each telemetry metric per arm from the DP release, with the {level:.0%} interval from the "
                   "DP noise. " + "; ".join(f"{r['metric']} {r['arm']}: {r['shown']}" for r in rows))
    base = alt.Chart().encode(y=alt.Y("arm:N", sort=bundle.protocol.arm_names, title=None),
                              color=alt.Color("arm:N", scale=colour))
    layer = alt.layer(base.mark_rule(strokeWidth=2).encode(x=alt.X("lower:Q", title="mean per participant"), x2="upper:Q"),
                      base.mark_point(size=80, filled=True).encode(x="mean:Q", shape=alt.Shape("arm:N", scale=shape),
                                                                  tooltip=["metric:N", "arm:N", "shown:N"]),
                      data=alt.Data(values=shown)).properties(width=380, height=alt.Step(22))
    chart = layer.facet(row=alt.Row("metric:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left"))) \
        .resolve_scale(x="independent").properties(title=alt.TitleParams(title, subtitle=[
            f"DP means with their {level:.0%} interval from the noise"]))
    spec = _finish(chart, description)
    tbl = table(["metric", "arm", f"mean ({level:.0%} interval from the DP noise)"],
                [(r["metric"], r["arm"], Raw(f'<span class="suppressed">{esc(r["shown"])}</span>') if r["suppressed"]
                  else r["shown"]) for r in rows], numeric=(2,), caption="Telemetry metrics (DP release)")
    return View("telemetry", title, description, spec, tbl, marks_expected=len(shown))


# ---------------------------------------------------------------------------------------------------------------
# Safety


def safety_view(bundle: ReportBundle) -> View:
    title = "Safety flags by arm"
    safety = bundle.safety
    if not isinstance(safety, Safety) or not safety.counts:
        why = getattr(safety, "reason", "no safety flag was raised")
        return View("safety", title, why, None, f'<p class="na">Safety flags: not available: {esc(why)}.</p>')
    level, k = _level(bundle), _k(bundle)
    colour, shape = _arm_scales(bundle)
    rows = []
    for c in safety.counts:
        if c.suppressed:
            text = suppressed(k)
            lo = hi = None
        elif c.noise_sd is not None and c.n_participants is not None:
            half = z_of(level) * c.noise_sd
            lo, hi = c.n_participants - half, c.n_participants + half
            text = f"{fmt_count(c.n_participants)} ({fmt_count(lo)} to {fmt_count(hi)})"
        else:
            lo = hi = None
            text = fmt_count(c.n_participants) + (f" of {fmt_count(c.at_risk)}" if c.at_risk else "")
        rows.append({"arm": c.arm, "wave": c.wave, "flag": c.flag, "n": c.n_participants, "lower": lo, "upper": hi,
                     "suppressed": c.suppressed, "shown": text,
                     "rate": None if not c.at_risk or c.n_participants is None else c.n_participants / c.at_risk})
    exact = safety.source == "warehouse"
    y_field, y_title = ("rate", "share of participants answering") if exact else ("n", "participants flagged (DP count)")
    shown = [r for r in rows if not r["suppressed"] and r[y_field] is not None]
    description = ("Participants with each safety flag per arm and wave" + (
        " (exact counts, trusted report)" if exact else f", DP counts with the {level:.0%} interval from the noise")
        + ". " + "; ".join(f"{r['flag']} {r['arm']} {r['wave']}: {r['shown']}" for r in rows))
    waves = bundle.protocol.wave_names
    base = alt.Chart().encode(x=alt.X("wave:N", sort=waves), color=alt.Color("arm:N", scale=colour))
    layers = [base.mark_line(point=alt.OverlayMarkDef(size=50, filled=True)).encode(
        y=alt.Y(f"{y_field}:Q", title=y_title, axis=alt.Axis(format="%") if exact else alt.Axis()),
        shape=alt.Shape("arm:N", scale=shape),
        tooltip=["flag:N", "arm:N", "wave:N", "shown:N"])]
    if not exact:
        layers.insert(0, base.mark_rule().encode(y="lower:Q", y2="upper:Q"))
    chart = alt.layer(*layers, data=alt.Data(values=shown)).properties(width=250, height=170) \
        .facet(facet=alt.Facet("flag:N", title=None), columns=2).properties(title=title)
    spec = _finish(chart, description)
    tbl = table(["flag", "arm", "wave", "participants flagged" + ("" if exact else f" ({level:.0%} interval)")],
                [(r["flag"], r["arm"], r["wave"], Raw(f'<span class="suppressed">{esc(r["shown"])}</span>')
                  if r["suppressed"] else r["shown"]) for r in rows], numeric=(3,), caption="Safety flags")
    return View("safety", title, description, spec, tbl, marks_expected=len(shown))


# ---------------------------------------------------------------------------------------------------------------
# Privacy budget


def budget_view(bundle: ReportBundle) -> View:
    title = "Privacy budget spent and left"
    b = bundle.budget
    if not isinstance(b, Budget):
        return View("budget", title, b.reason, None, f'<p class="na">Privacy budget: not available: {esc(b.reason)}.</p>')
    zcdp = b.accounting == "zcdp" and b.rho_total
    rows = []
    for r in bundle.releases:
        share = (r.rho or 0.0) / b.rho_total if zcdp else r.epsilon / b.epsilon_total
        rows.append({"part": f"release {r.release_id} ({r.created_at:%Y-%m-%d})", "share": share, "kind": "spent",
                     "epsilon": r.epsilon, "rho": r.rho})
    spent_share = (b.rho_spent or 0.0) / b.rho_total if zcdp else b.epsilon_spent / b.epsilon_total
    rows.append({"part": "left", "share": max(0.0, 1.0 - spent_share), "kind": "left", "epsilon": b.epsilon_left,
                 "rho": None if not zcdp else max(0.0, b.rho_total - (b.rho_spent or 0.0))})
    unit = "rho (zCDP)" if zcdp else "epsilon"
    description = (f"Stacked bar of the study's privacy budget (epsilon {fmt(b.epsilon_total)}, delta {b.delta:g}, per "
                   f"{b.unit}): epsilon {fmt(b.epsilon_spent)} spent ({pct(spent_share)} of the budget) over {b.releases} release(s), epsilon "
                   f"{fmt(b.epsilon_left)} left. Shares are of the budget counted in {unit}. "
                   + "; ".join(f"{r['part']}: {pct(r['share'])}" for r in rows))
    chart = alt.Chart(alt.Data(values=rows)).mark_bar(stroke="#fff", strokeWidth=1).encode(
        x=alt.X("sum(share):Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]), title=f"share of the budget ({unit})"),
        color=alt.Color("part:N", title=None, scale=alt.Scale(
            domain=[r["part"] for r in rows],
            range=[ARM_COLOURS[1 + i % 4] for i in range(len(rows) - 1)] + ["#d9d9d9"])),
        order=alt.Order("kind:N", sort="descending"),
        tooltip=["part:N", alt.Tooltip("share:Q", format=".1%"), alt.Tooltip("epsilon:Q", format=".3f")],
    ).properties(width=480, height=46, title=alt.TitleParams(title, subtitle=[
        f"epsilon {fmt(b.epsilon_spent)} of {fmt(b.epsilon_total)} spent (delta {b.delta:g}); exact ledger figures, "
        "not estimates"]))
    spec = _finish(chart, description)
    tbl = table(["part", "epsilon", "rho", "share of the budget"],
                [(r["part"], fmt(r["epsilon"]), fmt(r["rho"]) if r["rho"] is not None else "", pct(r["share"]))
                 for r in rows] + [("total spent (composed)", fmt(b.epsilon_spent), fmt(b.rho_spent) if zcdp else "",
                                    pct(spent_share))],
                numeric=(1, 2, 3), caption=f"Privacy budget per {b.unit} ({b.accounting} accounting)")
    note = ("<p class=\"muted\">Under zCDP, releases compose by adding rho, so one release's epsilon is not its share of "
            "the total epsilon; the bar shows shares of rho.</p>" if zcdp else "")
    return View("budget", title, description, spec, tbl, note_html=note, marks_expected=len(rows))


def default_views(bundle: ReportBundle, tier: str = "public") -> list[View]:
    """The dashboard's chart views, in reading order."""
    return [enrolment_view(bundle), trajectory_view(bundle, tier), forest_view(bundle, tier),
            probability_view(bundle, tier), telemetry_view(bundle), safety_view(bundle), budget_view(bundle)]
