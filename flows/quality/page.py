"""The offline quality page: one HTML file with its CSS inline, no script, no font or file from anywhere.

GX's Data Docs load about 19 files from CDNs (research/orchestration.md A2, D4), so the page is ours, rendered
from stored results (``load_reports``). Every value is HTML-escaped; links are in-page anchors only.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from flows.quality.report import ExpectationResult, QualityReport

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1b1b1b; background: #fff; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; }
p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; margin-top: .6rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-family: ui-monospace, monospace; font-size: .85rem; }
.sev { display: inline-block; padding: 0 .4rem; border-radius: .25rem; font-size: .8rem; font-weight: 600; }
.sev-critical { background: #fde2e1; color: #8a1c12; } .sev-warning { background: #fff1cc; color: #6b4b00; }
.sev-info { background: #e3eefc; color: #123f7a; }
.ok { color: #1d6b2f; font-weight: 600; } .bad { color: #a4161a; font-weight: 700; }
.verdict-passed { color: #1d6b2f; } .verdict-failed { color: #a4161a; } .verdict-warn { color: #6b4b00; }
ul.ex { margin: 0; padding-left: 1rem; } .muted { color: #666; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _t(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(x: Any) -> str:
    return f"{x:,.4g}" if isinstance(x, float) else _e(x)


def _observed(r: ExpectationResult) -> str:
    o = r.observed
    if r.error:
        return f'<span class="bad">could not run: {_e(r.error)}</span>'
    if o is None:
        return '<span class="muted">nothing to judge</span>'
    if isinstance(o, Mapping):
        if "completeness" in o:
            if o["completeness"] is None:
                return '<span class="muted">no participant due yet</span>'
            return f'{o["completeness"]:.1%} ({o["scored"]:,} of {o["due"]:,} due)'
        if "p_value" in o:
            counts = " &middot; ".join(f"{_e(a)} {n:,}" for a, n in (o.get("counts") or {}).items())
            return f'p = {o["p_value"]:.3g}, &chi;&sup2; = {o["chi_square"]:.3g}; {counts}'
        parts = []
        if "min" in o:
            parts.append(f'min {_num(o["min"])} &middot; max {_num(o["max"])}')
        if "distinct" in o:
            parts.append(f'{o["distinct"]:,} distinct')
        if o.get("study_period"):
            p = o["study_period"]
            parts.append(f'period {_e(p["starts"][:10])} to {_e(p["ends"][:10])}')
        return "; ".join(parts) or _e(o)
    return _e(o)


def _examples(r: ExpectationResult) -> str:
    if not r.examples:
        return ""
    items = []
    for ex in r.examples:
        cells = ", ".join(f"{_e(k)} {_e(v)}" for k, v in ex.items() if k != "rows")
        items.append(f"<li>{cells}: {ex.get('rows', 0):,} {_e(r.unit)}</li>")
    return f'<ul class="ex">{"".join(items)}</ul>'


def _rule(r: ExpectationResult) -> str:
    shown = {k: v for k, v in r.rule.items() if k not in ("value_pairs_set", "value_set")}
    for k in ("value_pairs_set", "value_set"):
        if k in r.rule:
            shown[k] = f"{len(r.rule[k])} allowed"
    return ", ".join(f"{_e(k)}={_e(v)}" for k, v in shown.items())


def _run_section(report: QualityReport) -> str:
    verdict_class = {"passed": "verdict-passed", "failed": "verdict-failed"}.get(report.verdict, "verdict-warn")
    rows = []
    for r in report.results:
        outcome = '<span class="ok">pass</span>' if r.success else '<span class="bad">FAIL</span>'
        rows.append(
            f"<tr><td><code>{_e(r.name)}</code><br><span class=\"muted\">{_e(r.description)}</span></td>"
            f"<td><code>{_e(r.table)}.{_e(r.column)}</code><br><span class=\"muted\">{_e(r.expectation_type)}: "
            f"{_rule(r)}</span></td>"
            f'<td><span class="sev sev-{_e(r.severity)}">{_e(r.severity)}</span></td><td>{outcome}</td>'
            f'<td class="num">{_n(r.checked_count)}</td><td class="num">{_n(r.unexpected_count)}</td>'
            f"<td>{_e(r.unit)}</td><td>{_observed(r)}{_examples(r)}</td></tr>")
    return (
        f'<section id="{_e(report.run_id)}"><h2>Run <code>{_e(report.run_id)}</code>: '
        f'<span class="{verdict_class}">{_e(report.verdict)}</span></h2>'
        f'<p class="sub">checked {_t(report.checked_at)}; waves due as of {_t(report.as_of)}; '
        f"{len(report.results)} expectations, {len(report.critical_failures)} critical failed, "
        f"{len(report.warnings)} warnings, {len(report.notes)} info; {report.run_seconds:.2f} s; "
        f"Great Expectations {_e(report.gx_version)}</p>"
        "<table><thead><tr><th>expectation</th><th>judges</th><th>severity</th><th>outcome</th>"
        "<th>checked</th><th>unexpected</th><th>unit</th><th>observed and examples</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>")


def render_quality_page(results: QualityReport | Sequence[QualityReport], path: str | Path) -> Path:
    """Write the page for these runs (newest first as given) to ``path``; return the path."""
    reports = [results] if isinstance(results, QualityReport) else list(results)
    studies = sorted({r.study_id for r in reports})
    title = f"Data quality: {', '.join(studies) or 'no runs'}"
    index = "".join(
        f'<tr><td><a href="#{_e(r.run_id)}"><code>{_e(r.run_id)}</code></a></td><td>{_e(r.study_id)}</td>'
        f"<td>{_t(r.checked_at)}</td><td>{_e(r.verdict)}</td><td class=\"num\">{len(r.critical_failures)}</td>"
        f'<td class="num">{len(r.warnings)}</td></tr>' for r in reports)
    body = (
        f"<h1>{_e(title)}</h1><p class=\"sub\">Expectations generated from the study protocol and the instrument "
        "definitions, validated with Great Expectations. A critical failure stops analysis and release; "
        "warnings are recorded. Counts only: no participant appears on this page.</p>"
        + ("<table><thead><tr><th>run</th><th>study</th><th>checked</th><th>verdict</th><th>critical failed</th>"
           f"<th>warnings</th></tr></thead><tbody>{index}</tbody></table>" if reports else "<p>No quality runs.</p>")
        + "".join(_run_section(r) for r in reports))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body>{body}</body></html>\n")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
