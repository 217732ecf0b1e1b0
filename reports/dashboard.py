"""The public dashboard: one self-contained HTML file that works with no network.

All charts share ONE inlined JavaScript bundle of Vega, Vega-Lite and Vega-Embed made by ``vl_convert.javascript_bundle``
at the Vega-Lite version Altair emits (research/reports.md A4: a hand-copied bundle of another version fails with
``mr.compile is not a function``, vega/altair #2271; ``chart.save(inline=True)`` per chart would repeat the ~0.9 MB
bundle in every chart). Specs are inlined as JSON data (never ``data.url``), no font or file is loaded from anywhere,
and Vega-Embed's "open in editor", "view source" and "view compiled" actions are off: the editor action posts the
chart's data to an external site (vega/altair #2040).

Built from a public bundle only: every number on the page is a DP release, a public-tier analysis row, the budget
ledger, the plan registry or a verdict of an aggregate table.
"""

from __future__ import annotations

import json
from functools import lru_cache

import altair as alt

from reports.bundle import Budget, NotAvailable, PlanRecord, QualityStatus, ReportBundle
from reports.text import cell_floor, esc, fmt, not_available, page, suppressed, table
from reports.views import View, default_views

EMBED_OPTIONS = {"renderer": "svg", "actions": {"export": True, "source": False, "compiled": False, "editor": False}}
"""Vega-Embed options of every chart: SVG (so marks are elements a test can count and a screen reader can reach) and no
action that leaves the page."""


def vega_lite_version() -> str:
    """``major.minor`` of the Vega-Lite schema Altair emits (v6.4.1 -> 6.4)."""
    return ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


@lru_cache(maxsize=2)
def javascript_bundle(vl_version: str | None = None) -> str:
    """Vega + Vega-Lite + Vega-Embed as one script (vl-convert bundles it offline; about 0.9 MB; 1-6 s the first time)."""
    import vl_convert

    return vl_convert.javascript_bundle(vl_version=vl_version or vega_lite_version())


_LOADER = """
(function () {
  var specs = JSON.parse(document.getElementById('flourish-specs').textContent);
  var options = JSON.parse(document.getElementById('flourish-embed-options').textContent);
  Object.keys(specs).forEach(function (id) {
    var el = document.getElementById(id);
    vegaEmbed(el, specs[id], options).then(function () { el.setAttribute('data-rendered', 'true'); })
      .catch(function (err) { el.setAttribute('data-rendered', 'failed'); console.error('chart ' + id + ': ' + err); });
  });
})();
"""


def _json_script(element_id: str, value: object) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def view_html(view: View, *, chart_html: str | None = None) -> str:
    """A view: heading, chart (or the sentence replacing it), its text description, and the table beside it."""
    desc_id = f"desc-{view.key}"
    if view.spec is None:
        return f'<section id="{view.key}"><h2>{esc(view.title)}</h2>{view.table_html}</section>'
    chart = chart_html if chart_html is not None else (
        f'<div class="vega-chart" id="chart-{view.key}" role="figure" aria-describedby="{desc_id}"></div>')
    short, _, rest = view.description.partition(". ")
    more = f"<details><summary>Every number in words</summary>{esc(rest)}</details>" if rest else ""
    return (f'<section id="{view.key}"><h2>{esc(view.title)}</h2><div class="view"><div class="chart">{chart}'
            f'<p class="muted" id="{desc_id}"><b>Description.</b> {esc(short)}.</p>{more}{view.note_html}</div>'
            f'<div class="numbers">{view.table_html}</div></div></section>')


def plan_header(bundle: ReportBundle) -> str:
    """Plan hash, lock time, deviations and the confirmatory or exploratory label of the analysis shown."""
    cards = []
    plan = bundle.plan
    if isinstance(plan, PlanRecord) and plan.lock is not None:
        lock = plan.lock
        cards.append(f'<div class="card"><span>preregistered plan (SHA-256)</span><b class="hash">{esc(lock.plan_hash)}</b>'
                     f'<span>locked {lock.recorded_at:%Y-%m-%d %H:%M} UTC; {len(plan.deviations)} recorded deviation(s)'
                     f"</span></div>")
        state = "the reports' protocol is the locked plan" if plan.locked else f"NOT the locked plan: {plan.explanation}"
        cards.append(f'<div class="card"><span>protocol in use</span><b class="hash">{esc(plan.current_hash[:16])}…</b>'
                     f"<span>{esc(state)}</span></div>")
    else:
        cards.append(f'<div class="card"><span>preregistration</span><b>not locked</b>'
                     f'<span>{esc(getattr(plan, "reason", ""))}</span></div>')
    for run in bundle.analyses:
        label = "EXPLORATORY" if run.exploratory else "confirmatory"
        cls = "b-warn" if run.exploratory else "b-ok"
        cards.append(f'<div class="card"><span>{esc(run.tier)}-tier analysis {esc(run.run_id)}</span>'
                     f'<b><span class="badge {cls}">{label}</span></b><span>plan {esc(run.plan_hash[:12])}, '
                     f"{run.created_at:%Y-%m-%d %H:%M} UTC</span></div>")
    if isinstance(bundle.budget, Budget):
        b = bundle.budget
        cards.append(f'<div class="card"><span>privacy budget (per {esc(b.unit)})</span><b>epsilon {fmt(b.epsilon_spent)} '
                     f"of {fmt(b.epsilon_total)} spent</b><span>{b.releases} release(s); delta {b.delta:g}</span></div>")
    return f'<div class="summary">{"".join(cards)}</div>'


def quality_html(bundle: ReportBundle) -> str:
    q = bundle.quality
    if not isinstance(q, QualityStatus):
        return f'<section id="quality"><h2>Data quality</h2>{not_available(q, "Data quality")}</section>'
    cls = {"passed": "b-ok", "failed": "b-bad"}.get(q.verdict, "b-warn")
    failed = [c for c in q.checks if not c.success]
    by_sev: dict[str, list[int]] = {}
    for c in q.checks:
        by_sev.setdefault(c.severity, [0, 0])[0 if c.success else 1] += 1
    counts = table(["severity", "expectations passed", "failed"],
                   [(s, p, f) for s, (p, f) in sorted(by_sev.items())], numeric=(1, 2),
                   caption=f"Quality run {q.run_id} ({q.checked_at:%Y-%m-%d %H:%M} UTC)")
    fails = table(["expectation", "severity", "what it checks"], [(c.name, c.severity, c.description) for c in failed],
                  caption="Failed expectations") if failed else "<p>Every expectation passed.</p>"
    return (f'<section id="quality"><h2>Data quality</h2><p>Latest quality gates: <span class="badge {cls}">'
            f"{esc(q.verdict)}</span>. A critical failure stops analysis and release.</p>{counts}{fails}</section>")


def optional_sections(bundle: ReportBundle) -> str:
    """Sections other rooms fill later: "not available" until they do."""
    if isinstance(bundle.compliance, NotAvailable):
        comp = not_available(bundle.compliance, "Survey compliance per arm and wave")
    else:
        k = cell_floor(bundle.protocol)
        rows = [(c.arm, c.wave, suppressed(k) if c.suppressed else fmt(c.prompted),
                 suppressed(k) if c.suppressed else fmt(c.answered), fmt(c.noise_sd)) for c in bundle.compliance]
        comp = table(["arm", "wave", "prompted", "answered", "noise SD"], rows, numeric=(2, 3, 4),
                     caption="Survey compliance per arm and wave")
    d = bundle.divergence
    div = (not_available(d, "Engagement-vs-flourishing divergence monitor") if isinstance(d, NotAvailable)
           else f"<p>Divergence monitor: <b>{esc(d.status)}</b> {esc(d.detail)}</p>" + (table(
               ["arm", "wave", "engagement metric", "flourishing outcome", "status", "engagement effect",
                "harm (positive = worse)", "margin", "IUT p", "P(quadrant)"],
               [(c.arm, c.wave, c.metric, c.outcome, c.status.replace("_", " "), fmt(c.engagement_estimate),
                 fmt(c.harm_estimate), fmt(c.margin), fmt(c.p_iut), fmt(c.p_quadrant)) for c in d.checks],
               numeric=(5, 6, 7, 8, 9), caption="Divergence checks: engagement up and flourishing down beyond its "
               "margin, an intersection-union test at the plan's alpha") if d.checks else ""))
    return (f'<section id="compliance"><h2>Survey compliance</h2>{comp}</section>'
            f'<section id="divergence"><h2>Engagement vs flourishing</h2>{div}</section>')


def releases_html(bundle: ReportBundle) -> str:
    if not bundle.releases:
        return '<section id="releases"><h2>DP releases</h2><p class="na">No DP release has been made yet.</p></section>'
    rows = [(r.release_id, f"{r.created_at:%Y-%m-%d %H:%M}", r.mechanism, fmt(r.epsilon), f"{r.delta:g}",
             r.min_cell_size, len(r.queries), sum(1 for v in bundle.release_values if v.release_id == r.release_id
                                                  and v.suppressed)) for r in bundle.releases]
    return ('<section id="releases"><h2>DP releases behind these numbers</h2>' + table(
        ["release", "made (UTC)", "mechanism", "epsilon", "delta", "min cell size", "queries", "suppressed cells"], rows,
        numeric=(3, 4, 5, 6, 7)) + "<p class=\"muted\">Every number released is the true statistic plus random noise "
        "drawn by OpenDP, so that no one participant's data can be told from the release (differential privacy). The "
        "interval beside each number is the range that holds the true statistic with the stated probability, given "
        "the noise alone. A cell whose noisy count falls below the minimum cell size is suppressed.</p></section>")


def build_dashboard(bundle: ReportBundle, *, views: list[View] | None = None) -> str:
    """The dashboard's HTML (one file) from a public bundle."""
    if bundle.tier != "public":
        raise ValueError("the dashboard is public: build it from a public bundle (flows.reports.public_bundle)")
    p = bundle.protocol
    views = views if views is not None else default_views(bundle, "public")
    specs = {f"chart-{v.key}": v.spec for v in views if v.spec is not None}
    level = p.analysis.interval_level
    toc = " ".join(f'<a href="#{v.key}">{esc(v.title.split(" (")[0])}</a>' for v in views)
    arms = "; ".join(f"{a.name}{' (control)' if a.control else ''}: {a.description or ', '.join(a.features) or 'no features'}"
                     for a in p.arms)
    body = (
        f'<header><p class="tier">Public dashboard &middot; differentially private</p><h1>{esc(p.title)}</h1>'
        f'<p class="sub">Study <code>{esc(p.study_id)}</code>. Arms: {esc(arms)}. Waves: {esc(", ".join(p.wave_names))}. '
        f"Every number comes from a differentially private release or from a model fitted to those releases; each "
        f"shows its {level:.0%} interval. Built {bundle.built_at:%Y-%m-%d %H:%M} UTC.</p>{plan_header(bundle)}"
        f'<nav class="toc">{toc} <a href="#quality">Data quality</a> <a href="#releases">DP releases</a></nav></header>'
        + "".join(view_html(v) for v in views) + quality_html(bundle) + optional_sections(bundle) + releases_html(bundle)
        + _json_script("flourish-specs", specs) + _json_script("flourish-embed-options", EMBED_OPTIONS)
        + f"<script>{javascript_bundle()}</script><script>{_LOADER}</script>")
    return page(f"{p.title}: public dashboard", body)
