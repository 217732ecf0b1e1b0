"""The CONSORT flow per arm and per wave (CONSORT 2025 item 22a, losses with reasons 22b), drawn as SVG, and the same
counts in the shape of ClinicalTrials.gov's participant flow (API v2 ``participantFlowModule``, waves as periods).

Counts that flow (entered = continued + exits) are boxes; counts that do not (answered at a wave, skipped a wave and
came back, answered outside the window) are side notes, as the R ``consort`` package does with side boxes
(research/reports.md B2, adayim/consort #21).
"""

from __future__ import annotations

from typing import Any

from reports.bundle import ConsortFlow, ReportBundle, ReleasedValue
from reports.text import cell_floor, esc, fmt_count, noise_interval, suppressed

BOX_W, BOX_H, GAP_Y, COL_W = 250, 54, 44, 330


def group_ids(bundle: ReportBundle, prefix: str) -> dict[str, str]:
    """ClinicalTrials.gov group ids (FG000, FG001, ...) in the protocol's arm order."""
    return {a: f"{prefix}{i:03d}" for i, a in enumerate(bundle.protocol.arm_names)}


def _box(x: float, y: float, lines: list[str], *, w: float = BOX_W, h: float = BOX_H, cls: str = "box") -> str:
    text = "".join(f'<tspan x="{x + 8:.0f}" dy="{0 if i == 0 else 15}">{esc(t)}</tspan>' for i, t in enumerate(lines))
    return (f'<rect class="{cls}" x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h:.0f}" rx="4" '
            f'fill="{"#fff" if cls == "box" else "#fafafa"}" stroke="#333"/>'
            f'<text x="{x + 8:.0f}" y="{y + 18:.0f}" font-size="12" fill="#1b1b1b">{text}</text>')


def flow_svg(flow: ConsortFlow, wave_names: list[str]) -> str:
    """The flow diagram: randomised, then per arm its allocation and every wave (entered, answered; exits beside)."""
    n_arms = len(flow.arms)
    width = 40 + n_arms * COL_W
    height = 150 + len(wave_names) * (BOX_H + GAP_Y + 18) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="consort-flow" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="flow-title flow-desc">',
             '<title id="flow-title">CONSORT flow diagram per arm and wave</title>',
             f'<desc id="flow-desc">{esc(flow_description(flow))}</desc>',
             '<g class="mark-group role-mark flow-boxes">']
    top_x = width / 2 - BOX_W / 2
    erased = sum(flow.erased.values())
    parts.append(_box(top_x, 10, [f"Randomised and still consenting: {flow.randomised:,}",
                                  f"Withdrew consent and were erased: {erased:,}"], h=46))
    for i, arm in enumerate(flow.arms):
        x = 20 + i * COL_W
        y = 90
        parts.append(f'<line x1="{width / 2:.0f}" y1="56" x2="{x + BOX_W / 2:.0f}" y2="{y}" stroke="#666"/>')
        parts.append(_box(x, y, [f"Allocated to {arm.arm}", f"n = {arm.allocated:,}"], h=42))
        y += 42
        for w in arm.waves:
            y += GAP_Y
            parts.append(f'<line x1="{x + BOX_W / 2:.0f}" y1="{y - GAP_Y}" x2="{x + BOX_W / 2:.0f}" y2="{y}" stroke="#666"/>')
            exits = "; ".join(f"{reason.split(' (')[0]}: {n:,}" for reason, n in w.exits.items()) or "no exits"
            parts.append(_box(x, y, [f"Wave {w.wave}: entered {w.entered:,}", f"answered {w.answered:,}; continued "
                                     f"{w.continued:,}", exits], h=BOX_H + 6))
            notes = "; ".join(f"{k}: {v:,}" for k, v in w.side_notes.items() if v)
            if notes:
                parts.append(f'<text x="{x + 8:.0f}" y="{y + BOX_H + 20:.0f}" font-size="10" fill="#555">'
                             f"{esc(notes)}</text>")
            y += BOX_H + 6 + 12
    parts.append("</g></svg>")
    return "".join(parts)


def flow_description(flow: ConsortFlow) -> str:
    parts = [f"{flow.randomised:,} randomised participants still consenting"]
    if flow.erased:
        parts.append("erased after withdrawing consent: " + ", ".join(f"{r} {n:,}" for r, n in flow.erased.items()))
    for a in flow.arms:
        waves = "; ".join(f"{w.wave} entered {w.entered}, answered {w.answered}, continued {w.continued}"
                          + "".join(f", {r} {n}" for r, n in w.exits.items()) for w in a.waves)
        parts.append(f"{a.arm}: allocated {a.allocated}; {waves}")
    return ". ".join(parts)


def flow_rows(flow: ConsortFlow) -> list[tuple[Any, ...]]:
    rows = []
    for a in flow.arms:
        for w in a.waves:
            rows.append((a.arm, w.wave, w.entered, w.answered, w.continued,
                         "; ".join(f"{r}: {n}" for r, n in w.exits.items()) or "none",
                         "; ".join(f"{k}: {v}" for k, v in w.side_notes.items() if v) or ""))
    return rows


# -- the public flow (DP counts) -----------------------------------------------------------------------------------


def public_flow(bundle: ReportBundle) -> dict[str, dict[str, ReleasedValue]]:
    """arm -> {"allocated" | wave: released cell} from the latest DP release of the CONSORT counts."""
    out: dict[str, dict[str, ReleasedValue]] = {}
    for v in bundle.values_of("consort_counts"):
        if v.arm is None:
            continue
        out.setdefault(v.arm, {})["allocated" if v.statistic == "assigned" else (v.wave or "")] = v
    return out


def _num_subjects(v: ReleasedValue | None, level: float, k: int) -> dict[str, str]:
    if v is None:
        return {"comment": "not released"}
    if v.suppressed:
        return {"comment": suppressed(k)}
    lo, hi = noise_interval(v, level)
    return {"numSubjects": f"{max(0.0, v.value or 0.0):.0f}",
            "comment": f"DP count {v.value:.1f}, noise SD {v.noise_sd:.1f}, {level:.0%} interval {lo:.0f} to {hi:.0f}"}


def participant_flow_module(bundle: ReportBundle) -> dict[str, Any]:
    """``participantFlowModule`` (ClinicalTrials.gov API v2 field names): one period per wave. From the trusted flow:
    STARTED, COMPLETED (continued) and NOT COMPLETED milestones with drop/withdraw reasons, answered as a milestone
    with a comment; from a public bundle: allocation and answers per wave as DP counts (numSubjects rounded, the noise
    in the comment, suppressed cells without a number)."""
    p = bundle.protocol
    ids = group_ids(bundle, "FG")
    groups = [{"id": ids[a.name], "title": a.name, "description": a.description or ", ".join(a.features) or a.name}
              for a in p.arms]
    level, k = p.analysis.interval_level, cell_floor(p)
    periods = []
    if isinstance(bundle.flow, ConsortFlow):
        flow = bundle.flow
        for i, wave in enumerate(p.wave_names):
            waves = {a.arm: a.waves[i] for a in flow.arms}
            milestones = [
                {"type": "STARTED", "achievements": [{"groupId": ids[a], "numSubjects": str(w.entered)}
                                                     for a, w in waves.items()]},
                {"type": "ANSWERED AT THIS WAVE", "comment": "not conserved: participants may skip a wave and return",
                 "achievements": [{"groupId": ids[a], "numSubjects": str(w.answered)} for a, w in waves.items()]},
                {"type": "COMPLETED", "achievements": [{"groupId": ids[a], "numSubjects": str(w.continued)}
                                                       for a, w in waves.items()]},
                {"type": "NOT COMPLETED", "achievements": [{"groupId": ids[a], "numSubjects": str(w.entered - w.continued)}
                                                           for a, w in waves.items()]},
            ]
            reasons = sorted({r for w in waves.values() for r in w.exits})
            drops = [{"type": r, "reasons": [{"groupId": ids[a], "numSubjects": str(w.exits.get(r, 0))}
                                             for a, w in waves.items()]} for r in reasons]
            periods.append({"title": f"Wave {wave} (day {p.wave(wave).day})", "milestones": milestones,
                            "dropWithdraws": drops})
        pre = (f"{sum(flow.erased.values())} participant(s) withdrew consent and were erased with their arm "
               "(erasure keeps no arm); they are not in the groups below.") if flow.erased else ""
        unit = "exact counts (trusted build)"
    else:
        cells = public_flow(bundle)
        for i, wave in enumerate(p.wave_names):
            started = [{"groupId": ids[a], **_num_subjects(cells.get(a, {}).get("allocated") if i == 0 else
                                                           cells.get(a, {}).get(p.wave_names[i - 1]), level, k)}
                       for a in p.arm_names]
            answered = [{"groupId": ids[a], **_num_subjects(cells.get(a, {}).get(wave), level, k)} for a in p.arm_names]
            periods.append({"title": f"Wave {wave} (day {p.wave(wave).day})", "milestones": [
                {"type": "STARTED", "comment": "allocated (first wave) or answered the previous wave; DP counts",
                 "achievements": started},
                {"type": "ANSWERED AT THIS WAVE", "comment": "DP counts", "achievements": answered}]})
        pre = "Counts are differentially private: each is the true count plus noise (see the comments)."
        unit = "DP counts (public build)"
    return {"preAssignmentDetails": pre, "recruitmentDetails": f"{p.title}; {unit}", "typeUnitsAnalyzed": "Participants",
            "groups": groups, "periods": periods}


def flow_counts_from_module(module: dict[str, Any]) -> dict[tuple[str, str, str], int]:
    """(period title, milestone type, groupId) -> numSubjects: what a reader of the JSON gets back (round-trip test)."""
    out = {}
    for period in module["periods"]:
        for m in period["milestones"]:
            for a in m["achievements"]:
                if "numSubjects" in a:
                    out[(period["title"], m["type"], a["groupId"])] = int(a["numSubjects"])
    return out


def public_flow_rows(bundle: ReportBundle) -> list[tuple[str, str, str]]:
    level, k = bundle.protocol.analysis.interval_level, cell_floor(bundle.protocol)
    cells, rows = public_flow(bundle), []
    for a in bundle.protocol.arm_names:
        for stage in ["allocated", *bundle.protocol.wave_names]:
            v = cells.get(a, {}).get(stage)
            if v is None:
                rows.append((a, stage, "not released"))
            elif v.suppressed:
                rows.append((a, stage, suppressed(k)))
            else:
                lo, hi = noise_interval(v, level)
                rows.append((a, stage, f"{fmt_count(v.value)} ({fmt_count(lo)} to {fmt_count(hi)})"))
    return rows
