"""The design-stage power curves (``flourish design``): power against participants per arm, one line per effect (in
MCID multiples) and attrition, with the Monte Carlo error as a band and the analytic curve dashed beside it.

Takes the cell records of ``analysis.design`` as plain dicts (no warehouse, no study data: a design exists before
any data do), returns an Altair chart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt

__all__ = ["design_chart", "power_curve_chart", "public_curve_chart"]


def power_curve_chart(cells: Sequence[dict[str, Any]], *, title: str) -> alt.LayerChart:
    rows = []
    for c in cells:
        label = f"{c['effect_mcid_multiple']:g} MCID, attrition {c['attrition']:.0%}"
        rate = c["power"] if c["effect_mcid_multiple"] > 0 else c["rejection_rate"]
        se = c["power_mcse"] if c["effect_mcid_multiple"] > 0 else c["rejection_rate_mcse"]
        rows.append({"participants_per_arm": c["participants_per_arm"], "scenario": label, "rejection": rate,
                     "low": max(0.0, rate - 2 * se), "high": min(1.0, rate + 2 * se),
                     "analytic": c["analytic_power"], "failure_rate": c["failure_rate"]})
    base = alt.Chart(alt.Data(values=rows)).encode(
        x=alt.X("participants_per_arm:Q", title="participants per arm"),
        color=alt.Color("scenario:N", title="effect, attrition"))
    band = base.mark_area(opacity=0.2).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("rejection:Q", title="rejection rate (power; type I error at 0 MCID)", scale=alt.Scale(domain=[0, 1])),
        tooltip=["participants_per_arm:Q", "scenario:N", alt.Tooltip("rejection:Q", format=".3f"),
                 alt.Tooltip("analytic:Q", format=".3f"), alt.Tooltip("failure_rate:Q", format=".3f")])
    analytic = base.mark_line(strokeDash=[4, 3]).encode(y="analytic:Q")
    return (band + line + analytic).properties(title=title, width=480, height=300)


def public_curve_chart(public: Sequence[dict[str, Any]], *, title: str) -> alt.Chart:
    """The public tier's power and interval coverage against the study's total epsilon (at the planned N and 1
    MCID), each with a 2-MC-SE error bar: what the privacy budget costs the published analysis."""
    rows = []
    for c in public:
        for measure, rate, se in (("power", c["power"], c["power_mcse"]), ("coverage", c["coverage"], c["coverage_mcse"])):
            if rate is None:
                continue
            rows.append({"epsilon": c["epsilon"], "measure": measure, "rate": rate,
                         "low": max(0.0, rate - 2 * (se or 0.0)), "high": min(1.0, rate + 2 * (se or 0.0))})
    base = alt.Chart(alt.Data(values=rows)).encode(
        x=alt.X("epsilon:Q", title="total privacy budget (epsilon)", scale=alt.Scale(type="log")),
        color=alt.Color("measure:N", title="public tier"))
    return (base.mark_line(point=True).encode(y=alt.Y("rate:Q", title="rate", scale=alt.Scale(domain=[0, 1])))
            + base.mark_errorbar().encode(y="low:Q", y2="high:Q")).properties(title=title, width=480, height=240)


def design_chart(cells: Sequence[dict[str, Any]], public: Sequence[dict[str, Any]], *, study_id: str):
    """The power curves and, when the public tier was simulated, its curves against epsilon below them."""
    chart = power_curve_chart(cells, title=f"{study_id}: power of the primary analysis (trusted tier)")
    if public:
        return alt.vconcat(chart, public_curve_chart(public, title=f"{study_id}: public tier against epsilon"))
    return chart
