"""Report loaders and the reports stage: read the warehouse into a :class:`reports.bundle.ReportBundle`, hand it to
the builders in ``reports/``, write the files.

Two loaders, one per trust tier (DESIGN.md):

- :func:`load_public_bundle` reads only :data:`PUBLIC_TABLES` (DP releases, the budget ledger, the plan registry,
  the analysis summary's public-tier rows, and aggregate tables, from which it drops exact counts). The reports
  stage runs it on :func:`public_connection`: an in-memory DuckDB holding copies of those tables and nothing else,
  so a participant-level table cannot be read by mistake: it is not there.
- :func:`load_trusted_bundle` reads the public part and, from the warehouse, the CONSORT flow per arm and wave,
  the baseline table, available n per outcome x arm x wave, safety flags per arm and wave, consent scopes and
  quarantine reasons: GROUP BY aggregates only, through the canonical relations (``schemas.warehouse.relations``).
  Its reports stay inside the study.

:func:`write_reports` is what the pipeline's last stage (and ``flourish demo``) calls: the dashboard and the
regulator report from the public bundle, the trial report from the trusted one, and the charts as PNG and SVG.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reports.bundle import (
    AnalysisRun,
    Availability,
    BaselineRow,
    Budget,
    ComplianceCell,
    ConsortFlow,
    DivergenceCheck,
    DivergenceStatus,
    FlowArm,
    FlowWave,
    Governance,
    LedgerEntry,
    NotAvailable,
    PipelineRun,
    PlanEntry,
    PlanRecord,
    QualityCheck,
    QualityStatus,
    Release,
    ReleasedValue,
    Reliability,
    ReportBundle,
    Safety,
    SafetyCount,
    StageState,
    StratumCount,
)
from schemas.results import Effect
from schemas.sqltext import literal, number
from schemas.warehouse import relations

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

    from schemas.protocol import StudyProtocol

PUBLIC_TABLES = ("releases", "release_values", "privacy_budgets", "privacy_ledger", "plan_registry",
                 "analysis_summary", "quality_results", "psychometrics", "pipeline_runs", "pipeline_stages",
                 "erasure_log", "divergence_status")
"""The only tables the public loader reads. None has a participant column; exact counts in them (quality unit
counts, reliability n, stage summaries, trusted-tier rows) are dropped by the loader, not shown. Of
``divergence_status`` only the public tier's rows are copied (the monitor on the noise-aware model's effects)."""

SAFETY_QUERY_PREFIX = "safety_flags"
"""A DP release query whose name starts so holds safety-flag counts per arm x wave (statistic = the flag). The
standard release plan has none yet; until it does, the public reports say that safety counts are not released."""


# ----------------------------------------------------------------------------------------------------------------
# Connections


@contextmanager
def public_connection(warehouse: str | Path, study_id: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB holding copies of :data:`PUBLIC_TABLES` (this study's rows) and nothing else."""
    import duckdb

    from flows.warehouse import connect

    connect(warehouse, create=False).close()  # migrated to the latest schema, as every reader sees it
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"ATTACH {literal(str(Path(warehouse)))} AS wh (READ_ONLY)")
        try:
            for table in PUBLIC_TABLES:
                if table == "pipeline_stages":
                    sql = ("SELECT s.* FROM wh.pipeline_stages s JOIN wh.pipeline_runs r USING (run_id) "
                           "WHERE r.study_id = ?")
                elif table == "erasure_log":
                    sql = "SELECT * FROM wh.erasure_log"  # no study column: a warehouse-wide operational record
                elif table == "divergence_status":  # the trusted tier's monitor reads participant-level effects
                    sql = "SELECT * FROM wh.divergence_status WHERE study_id = ? AND tier = 'public'"
                else:
                    sql = f"SELECT * FROM wh.{table} WHERE study_id = ?"
                con.execute(f"CREATE TABLE {table} AS {sql}", [] if table == "erasure_log" else [study_id])
        finally:
            con.execute("DETACH wh")
        yield con
    finally:
        con.close()


# ----------------------------------------------------------------------------------------------------------------
# The public part (also the base of the trusted bundle)


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _plan(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> PlanRecord | NotAvailable:
    from analysis.prereg import PreregistrationError, RegistryEntry, lock_status, plan_hash

    rows = con.execute(
        "SELECT seq, kind, plan_hash, recorded_at, reason, prev_entry_hash, entry_hash, plan_json FROM plan_registry "
        "WHERE study_id = ? ORDER BY seq", [protocol.study_id]).fetchall()
    if not rows:
        return NotAvailable(reason="the plan has not been preregistered (no entry in the plan registry)")
    entries = tuple(PlanEntry(seq=r[0], kind=r[1], plan_hash=r[2], recorded_at=_utc(r[3]), reason=r[4],
                              entry_hash=r[6], plan_json=r[7]) for r in rows)
    history = [RegistryEntry(protocol.study_id, r[0], r[1], r[2], _utc(r[3]), r[4], r[5], r[6]) for r in rows]
    try:
        status = lock_status(history, protocol)
        locked, explanation = status.locked, status.explanation
    except PreregistrationError as exc:
        locked, explanation = False, f"the plan registry's hash chain does not verify: {exc}"
    return PlanRecord(entries=entries, current_hash=plan_hash(protocol), locked=locked, explanation=explanation)


def _releases(con: duckdb.DuckDBPyConnection, study_id: str) -> tuple[tuple[Release, ...], tuple[ReleasedValue, ...]]:
    releases = tuple(
        Release(release_id=r[0], created_at=_utc(r[1]), mechanism=r[2], accounting=r[3], rho=r[4], epsilon=r[5],
                delta=r[6], min_cell_size=r[7], queries=tuple(json.loads(r[8])), values_sha256=r[9],
                opendp_version=r[10])
        for r in con.execute(
            "SELECT release_id, created_at, mechanism, accounting, rho, epsilon, delta, min_cell_size, queries, "
            "values_sha256, opendp_version FROM releases WHERE study_id = ? ORDER BY created_at, release_id",
            [study_id]).fetchall())
    values = tuple(
        ReleasedValue(release_id=r[0], query=r[1], outcome=r[2], arm=r[3], wave=r[4], statistic=r[5], value=r[6],
                      noise_sd=r[7], suppressed=r[8])
        for r in con.execute(
            "SELECT release_id, query, outcome, arm, wave, statistic, value, noise_sd, suppressed FROM release_values "
            "WHERE study_id = ?", [study_id]).fetchall())
    return releases, values


def _budget(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> Budget | NotAvailable:
    from privacy.budget import budget_status

    if protocol.privacy is None:
        return NotAvailable(reason="the protocol plans no DP release (it has no privacy section), so it has no budget")
    status = budget_status(con, protocol.study_id).get(protocol.study_id)
    if status is None:
        return NotAvailable(reason="no DP release has been made, so no budget has been spent")
    ledger = tuple(LedgerEntry(release_id=r[0], query=r[1], mechanism=r[2], noise_scale=r[3], rho=r[4],
                               epsilon=r[5], status=r[6])
                   for r in con.execute("SELECT release_id, query, mechanism, noise_scale, rho, epsilon, status "
                                        "FROM privacy_ledger WHERE study_id = ? ORDER BY reserved_at, entry_id",
                                        [protocol.study_id]).fetchall())
    return Budget(accounting=status.accounting, epsilon_total=status.epsilon_total, delta=status.delta,
                  epsilon_spent=status.epsilon_spent, epsilon_left=status.epsilon_remaining,
                  rho_total=status.rho_total, rho_spent=status.rho_spent, releases=status.releases,
                  unit=protocol.privacy.unit, ledger=ledger)


_EFFECT_COLUMNS = ("outcome", "arm", "control", "wave", "method", "tier", "estimate", "sd", "lower", "upper",
                   "interval_level", "p_benefit", "p_above_mcid", "p_in_rope", "p_value", "p_adjusted", "n_arm",
                   "n_control", "subgroup", "direction", "reason")


def _analyses(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, tiers: tuple[str, ...]) -> tuple[AnalysisRun, ...]:
    """The latest stored run of each tier (its every row)."""
    out = []
    for tier in tiers:
        latest = con.execute(
            "SELECT run_id, max(created_at), any_value(plan_hash), bool_or(exploratory) FROM analysis_summary "
            "WHERE study_id = ? AND tier = ? GROUP BY run_id ORDER BY 2 DESC, 1 LIMIT 1",
            [protocol.study_id, tier]).fetchone()
        if latest is None:
            continue
        rows = con.execute(
            f"SELECT {', '.join(_EFFECT_COLUMNS)} FROM analysis_summary WHERE study_id = ? AND run_id = ? "
            "AND tier = ? ORDER BY outcome, arm, method, wave, subgroup NULLS FIRST",
            [protocol.study_id, latest[0], tier]).fetchall()
        effects = []
        for r in rows:
            rec = dict(zip(_EFFECT_COLUMNS, r, strict=True))
            rec["control"] = rec["control"] or protocol.control_arm  # rows stored before migration 0050
            effects.append(Effect(**rec))
        out.append(AnalysisRun(run_id=latest[0], tier=tier, created_at=_utc(latest[1]), plan_hash=latest[2],
                               exploratory=bool(latest[3]), effects=tuple(effects)))
    return tuple(out)


def _quality(con: duckdb.DuckDBPyConnection, study_id: str, *, counts: bool) -> QualityStatus | NotAvailable:
    latest = con.execute("SELECT run_id, max(checked_at) FROM quality_results WHERE study_id = ? GROUP BY run_id "
                         "ORDER BY 2 DESC, 1 DESC LIMIT 1", [study_id]).fetchone()
    if latest is None:
        return NotAvailable(reason="the data-quality gates have not run")
    rows = con.execute("SELECT expectation, family, severity, success, description, checked_count, unexpected_count, "
                       "unit FROM quality_results WHERE run_id = ? ORDER BY seq", [latest[0]]).fetchall()
    checks = tuple(QualityCheck(name=r[0], family=r[1], severity=r[2], success=r[3], description=r[4],
                                checked_count=r[5] if counts else None, unexpected_count=r[6] if counts else None,
                                unit=r[7] if counts else None) for r in rows)
    failed = [c for c in checks if not c.success]
    verdict = ("failed" if any(c.severity == "critical" for c in failed)
               else "passed with warnings" if failed else "passed")
    return QualityStatus(run_id=latest[0], checked_at=_utc(latest[1]), verdict=verdict, checks=checks)


def _psychometrics(con: duckdb.DuckDBPyConnection, study_id: str, *, counts: bool) -> tuple[Reliability, ...]:
    rows = con.execute("SELECT instrument, instrument_version, outcome, wave, arm, n_items, n_obs, alpha, alpha_ci_lower, "
                       "alpha_ci_upper, omega, note FROM psychometrics WHERE study_id = ? ORDER BY outcome, wave, arm",
                       [study_id]).fetchall()
    return tuple(Reliability(instrument=r[0], instrument_version=r[1], outcome=r[2], wave=r[3], arm=r[4],
                             n_items=r[5], n_obs=r[6] if counts else None, alpha=r[7], alpha_ci_lower=r[8],
                             alpha_ci_upper=r[9], omega=r[10], note=r[11]) for r in rows)


def _last_run(con: duckdb.DuckDBPyConnection, study_id: str, *, notes: bool) -> PipelineRun | NotAvailable:
    run = con.execute("SELECT run_id, trigger, started_at, finished_at, state, message FROM pipeline_runs "
                      "WHERE study_id = ? AND state <> 'running' ORDER BY started_at DESC LIMIT 1",
                      [study_id]).fetchone()
    if run is None:
        return NotAvailable(reason="the pipeline has not finished a run of this study")
    stages = con.execute("SELECT stage, state, seconds, message, summary FROM pipeline_stages WHERE run_id = ? "
                         "ORDER BY seq", [run[0]]).fetchall()
    analysis_notes: tuple[str, ...] = ()
    if notes:
        analyzed = con.execute(
            "SELECT s.summary FROM pipeline_stages s JOIN pipeline_runs r USING (run_id) WHERE r.study_id = ? "
            "AND s.stage = 'analyze' AND s.state = 'completed' ORDER BY s.started_at DESC LIMIT 1",
            [study_id]).fetchone()
        if analyzed is not None:
            analysis_notes = tuple(json.loads(analyzed[0]).get("notes", []))
    return PipelineRun(run_id=run[0], trigger=run[1], started_at=_utc(run[2]), finished_at=_utc(run[3]), state=run[4],
                       message=run[5], stages=tuple(StageState(stage=s[0], state=s[1], seconds=s[2], message=s[3])
                                                    for s in stages),
                       analysis_notes=analysis_notes)


def _public_safety(releases: tuple[Release, ...], values: tuple[ReleasedValue, ...]) -> Safety | NotAvailable:
    cells = [v for v in values if v.query.startswith(SAFETY_QUERY_PREFIX)]
    if not cells:
        return NotAvailable(reason="safety-flag counts are not part of the study's DP releases, so the public reports "
                            "show none; the trial team's report has them")
    holding = {v.release_id for v in cells}
    latest = max((r for r in releases if r.release_id in holding), key=lambda r: r.created_at).release_id
    counts = tuple(SafetyCount(arm=v.arm or "", wave=v.wave or "", flag=v.statistic, n_participants=v.value,
                               noise_sd=v.noise_sd, suppressed=v.suppressed) for v in cells if v.release_id == latest)
    return Safety(source="dp_release", counts=counts, flags=tuple(sorted({c.flag for c in counts})))


_STATUS_WORDS = {"divergence": "divergence", "no_divergence": "no divergence", "indeterminate": "indeterminate"}


def _divergence(con: duckdb.DuckDBPyConnection, study_id: str, tier: str) -> DivergenceStatus | NotAvailable:
    """The divergence monitor's rows of the latest stored analysis run of ``tier`` (``divergence_status``, migration
    0090), summarised: a divergence anywhere makes the status a divergence; otherwise any indeterminate check (a
    missing, failed or suppressed flourishing measure) makes it indeterminate, never a pass."""
    latest = con.execute(
        "SELECT run_id, max(created_at) FROM divergence_status WHERE study_id = ? AND tier = ? "
        "GROUP BY run_id ORDER BY 2 DESC, 1 LIMIT 1", [study_id, tier]).fetchone()
    if latest is None:
        return NotAvailable(reason=f"the divergence monitor has no {tier}-tier check stored: no {tier}-tier analysis "
                            "has run, or the protocol names no engagement metric")
    rows = con.execute(
        "SELECT arm, wave, outcome, metric, status, alpha, margin, engagement_estimate, engagement_sd, "
        "harm_estimate, flourishing_sd, p_engagement, p_harm, p_iut, p_quadrant, reason FROM divergence_status "
        "WHERE study_id = ? AND run_id = ? AND tier = ? ORDER BY arm, metric, outcome, wave",
        [study_id, latest[0], tier]).fetchall()
    checks = tuple(DivergenceCheck(arm=r[0], wave=r[1], outcome=r[2], metric=r[3], status=r[4], alpha=r[5],
                                   margin=r[6], engagement_estimate=r[7], engagement_sd=r[8], harm_estimate=r[9],
                                   harm_sd=r[10], p_engagement=r[11], p_harm=r[12], p_iut=r[13], p_quadrant=r[14],
                                   reason=r[15]) for r in rows)
    statuses = {c.status for c in checks}
    overall = next(s for s in ("divergence", "indeterminate", "no_divergence") if s in statuses)
    shown = [c for c in checks if c.status == overall]
    detail = (f"{len(shown)} of {len(checks)} checks ({tier} tier, run {latest[0]}): "
              + "; ".join(c.sentence() for c in shown[:4]) + ("; ..." if len(shown) > 4 else ""))
    return DivergenceStatus(status=_STATUS_WORDS[overall], checked_at=_utc(latest[1]), detail=detail, tier=tier,
                            checks=checks)


def _erasures(con: duckdb.DuckDBPyConnection) -> tuple[int, int, dict[str, int]]:
    rows = con.execute("SELECT reason, count(*), sum(coalesce(TRY_CAST(json_extract(detail, '$.participants') AS "
                       "BIGINT), 1)) FROM erasure_log GROUP BY reason ORDER BY reason").fetchall()
    return (sum(r[1] for r in rows), int(sum(r[2] or 0 for r in rows)), {r[0]: int(r[2] or 0) for r in rows})


def load_public_bundle(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, *,
                       built_at: datetime | None = None) -> ReportBundle:
    """The public tier's bundle, read from :data:`PUBLIC_TABLES` only (run it on :func:`public_connection`)."""
    releases, values = _releases(con, protocol.study_id)
    erasures, erased, _ = _erasures(con)
    retention = protocol.regulatory.retention if protocol.regulatory else None
    return ReportBundle(
        tier="public", built_at=built_at or datetime.now(UTC), protocol=protocol, plan=_plan(con, protocol),
        releases=releases, release_values=values, budget=_budget(con, protocol),
        analyses=_analyses(con, protocol, ("public",)), quality=_quality(con, protocol.study_id, counts=False),
        safety=_public_safety(releases, values), psychometrics=_psychometrics(con, protocol.study_id, counts=False),
        last_run=_last_run(con, protocol.study_id, notes=False),
        divergence=_divergence(con, protocol.study_id, "public"),
        governance=Governance(erasures_honoured=erasures, participants_erased=erased, retention=retention),
        compliance=NotAvailable(reason="survey compliance is not part of the study's DP releases, so the public "
                                "reports show none; the trial team's report has the exact counts"))


# ----------------------------------------------------------------------------------------------------------------
# The trusted part: aggregates of participant-level tables, for the trial team


def _waves_sql(protocol: StudyProtocol) -> str:
    rows = ", ".join(f"({literal(w.name)}, {number(i)}, {number(w.day)}, {number(w.window_days)})"
                     for i, w in enumerate(protocol.waves))
    return f"(SELECT * FROM (VALUES {rows}) t(wave, idx, day, window_days))"


def consort_flow(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, *, as_of: datetime | None = None) -> ConsortFlow:
    """Participants per arm through the waves, counted in DuckDB (GROUP BY; no participant row leaves the database).

    A participant is *in follow-up* at wave k when they answered wave k or a later one (the latest submission per
    instrument, ``relations.latest_responses``). Entered at the first wave: allocated; at wave k: those in follow-up
    at wave k-1. Exits at wave k: those who answered nothing at k or later, as *lost to follow-up*, or as *wave not
    closed yet* when the wave's window has not closed by ``as_of`` (a study with a schedule). ``answered`` and the side
    notes (skipped this wave but answered a later one; answered outside the wave's window) do not flow.
    Participants who withdrew consent were erased with their arm, so they are counted apart, by erasure reason."""
    from flows.schedules import closed_waves

    sid = protocol.study_id
    now = as_of or datetime.now(UTC)
    closed = set(closed_waves(protocol, now)) if protocol.schedule is not None else set(protocol.wave_names)
    arms_sql, waves_sql = relations.study_arms(sid), _waves_sql(protocol)
    # outside the window: the declared response window where the wave has one (relations.response_windows), else
    # day +/- window_days of the assignment
    answered_sql = (f"SELECT a.participant, a.arm, w.idx, bool_or(coalesce(r.late, r.submitted_at < a.assigned_at + "
                    f"to_days(CAST(w.day - w.window_days AS INTEGER)) OR r.submitted_at > a.assigned_at + "
                    f"to_days(CAST(w.day + w.window_days AS INTEGER)))) AS outside FROM {arms_sql} a "
                    f"JOIN {relations.response_windows(protocol)} r USING (participant) JOIN {waves_sql} w ON w.wave = r.wave "
                    "GROUP BY ALL")
    last = con.execute(
        f"WITH ans AS ({answered_sql}), lastp AS (SELECT participant, max(idx) AS last_idx FROM ans GROUP BY ALL) "
        f"SELECT a.arm, l.last_idx, count(*) FROM {arms_sql} a LEFT JOIN lastp l USING (participant) GROUP BY ALL"
    ).fetchall()
    per_wave = con.execute(f"WITH ans AS ({answered_sql}) SELECT arm, idx, count(*), count(*) FILTER (WHERE outside) "
                           "FROM ans GROUP BY ALL").fetchall()
    last_by: dict[str, dict[int, int]] = {}
    for arm, idx, n in last:
        last_by.setdefault(arm, {})[-1 if idx is None else int(idx)] = int(n)
    answered = {(arm, int(idx)): (int(n), int(late)) for arm, idx, n, late in per_wave}
    arms = []
    for arm in protocol.arm_names:
        dist = last_by.get(arm, {})
        allocated = sum(dist.values())
        entered, waves = allocated, []
        for k, w in enumerate(protocol.waves):
            continued = sum(n for idx, n in dist.items() if idx >= k)
            gone = entered - continued
            reason = "lost to follow-up (no answer at this or any later wave)" if w.name in closed \
                else "wave not closed yet"
            n_answered, n_late = answered.get((arm, k), (0, 0))
            notes = {"skipped this wave, answered a later one": continued - n_answered}
            if n_late:
                notes["answered outside the wave's window"] = n_late
            waves.append(FlowWave(wave=w.name, entered=entered, exits={reason: gone} if gone else {},
                                  continued=continued, answered=n_answered, side_notes=notes))
            entered = continued
        arms.append(FlowArm(arm=arm, allocated=allocated, waves=tuple(waves)))
    stray = sum(n for arm, d in last_by.items() if arm not in protocol.arm_names for n in d.values())
    _, _, erased = _erasures(con)
    first, last_assigned = con.execute(f"SELECT min(assigned_at), max(assigned_at) FROM {arms_sql}").fetchone()
    last_answer = con.execute(f"SELECT max(submitted_at) FROM {relations.latest_responses(sid)}").fetchone()[0]
    return ConsortFlow(randomised=sum(a.allocated for a in arms) + stray, arms=tuple(arms), erased=erased, as_of=now,
                       first_assigned=_utc(first), last_assigned=_utc(last_assigned), last_answer=_utc(last_answer))


def _baseline(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> tuple[BaselineRow, ...]:
    sid, outcomes = protocol.study_id, [o.name for o in protocol.outcomes]
    rows = con.execute(
        f"SELECT s.outcome, a.arm, count(*), avg(s.value), stddev_samp(s.value), quantile_cont(s.value, 0.5), "
        f"quantile_cont(s.value, 0.25), quantile_cont(s.value, 0.75) "
        f"FROM {relations.study_scores(sid, outcomes, [protocol.baseline_wave])} s "
        f"JOIN {relations.study_arms(sid)} a USING (participant) GROUP BY ALL ORDER BY 1, 2").fetchall()
    return tuple(BaselineRow(outcome=r[0], arm=r[1], n=r[2], mean=r[3], sd=r[4], median=r[5], q1=r[6], q3=r[7])
                 for r in rows)


def _strata(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> tuple[StratumCount, ...]:
    rows = con.execute(f"SELECT arm, coalesce(stratum, '(none)'), count(*) FROM {relations.study_arms(protocol.study_id)} "
                       "GROUP BY ALL ORDER BY 1, 2").fetchall()
    return tuple(StratumCount(arm=r[0], stratum=r[1], n=r[2]) for r in rows)


def _availability(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> tuple[Availability, ...]:
    sid = protocol.study_id
    rows = con.execute(
        f"SELECT s.outcome, a.arm, s.wave, count(*) FROM {relations.study_scores(sid, [o.name for o in protocol.outcomes])} s "
        f"JOIN {relations.study_arms(sid)} a USING (participant) GROUP BY ALL ORDER BY 1, 2, 3").fetchall()
    return tuple(Availability(outcome=r[0], arm=r[1], wave=r[2], n_available=r[3]) for r in rows)


def _trusted_safety(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> Safety:
    sid = protocol.study_id
    rows = con.execute(
        f"WITH f AS (SELECT DISTINCT f.participant, f.wave, f.flag, f.instrument FROM safety_flags f WHERE f.study_id = ?), "
        f"risk AS (SELECT a.arm, r.wave, r.instrument, count(DISTINCT r.participant) AS n FROM "
        f"{relations.latest_responses(sid)} r JOIN {relations.study_arms(sid)} a USING (participant) GROUP BY ALL) "
        f"SELECT a.arm, f.wave, f.flag, count(*), any_value(risk.n) FROM f JOIN {relations.study_arms(sid)} a "
        "USING (participant) LEFT JOIN risk ON risk.arm = a.arm AND risk.wave = f.wave AND risk.instrument = f.instrument "
        "GROUP BY ALL ORDER BY 1, 2, 3", [sid]).fetchall()
    counts = tuple(SafetyCount(arm=r[0], wave=r[1], flag=r[2], n_participants=r[3], at_risk=r[4]) for r in rows)
    return Safety(source="warehouse", counts=counts, flags=tuple(sorted({c.flag for c in counts})))


def _trusted_governance(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, public: Governance) -> Governance:
    sid = protocol.study_id
    scopes = con.execute(
        f"SELECT scope, count(DISTINCT c.participant) FROM (SELECT participant, unnest(scopes) AS scope FROM consents) c "
        f"JOIN {relations.study_arms(sid)} a USING (participant) GROUP BY ALL ORDER BY 1").fetchall()
    quarantined = con.execute("SELECT q.reason, count(*) FROM quarantine q JOIN batches b USING (batch_id) "
                              "WHERE b.study_id = ? GROUP BY ALL ORDER BY 1", [sid]).fetchall()
    return public.model_copy(update={"consent_scopes": {s: int(n) for s, n in scopes},
                                     "quarantined_by_reason": {r: int(n) for r, n in quarantined}})


def _trusted_compliance(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol,
                        as_of: datetime | None) -> tuple[ComplianceCell, ...] | NotAvailable:
    """Exact compliance per arm x wave (``relations.compliance_table``, counted in DuckDB), in protocol order."""
    if not con.execute("SELECT count(*) FROM prompts WHERE study_id = ?", [protocol.study_id]).fetchone()[0]:
        return NotAvailable(reason="no survey prompts have been ingested for this study, so compliance (prompted, "
                            "answered in window, late, expired) cannot be counted")
    now = literal((as_of or datetime.now(UTC)).isoformat()) + "::TIMESTAMPTZ"
    rows = con.execute(f"SELECT arm, wave, prompted, answered_in_window, late, expired, unanswered "
                       f"FROM {relations.compliance_table(protocol, now)}").fetchall()
    arms, waves = {a: i for i, a in enumerate(protocol.arm_names)}, {w: i for i, w in enumerate(protocol.wave_names)}
    rows.sort(key=lambda r: (arms.get(r[0], len(arms)), r[0], waves.get(r[1], len(waves)), r[1]))
    return tuple(ComplianceCell(arm=r[0], wave=r[1], prompted=r[2], answered=r[3], late=r[4], expired=r[5],
                                unanswered=r[6]) for r in rows)


def load_trusted_bundle(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, *, built_at: datetime | None = None,
                        as_of: datetime | None = None) -> ReportBundle:
    """The trial team's bundle: the public part, both tiers' analysis rows, exact counts of aggregate tables, and
    aggregates of the warehouse (CONSORT flow, baseline, available n, safety flags, consent scopes, quarantine)."""
    public = load_public_bundle(con, protocol, built_at=built_at)
    compliance = _trusted_compliance(con, protocol, as_of)
    flow = consort_flow(con, protocol, as_of=as_of)
    if isinstance(compliance, tuple):
        flow = flow.model_copy(update={"prompted": f"{int(sum(c.prompted or 0 for c in compliance)):,} prompts of "
                                       "record (per arm and wave in the compliance table)"})
    return public.model_copy(update={
        "tier": "trusted",
        "analyses": _analyses(con, protocol, ("trusted", "public")),
        "quality": _quality(con, protocol.study_id, counts=True),
        "psychometrics": _psychometrics(con, protocol.study_id, counts=True),
        "last_run": _last_run(con, protocol.study_id, notes=True),
        "safety": _trusted_safety(con, protocol),
        "flow": flow,
        "baseline": _baseline(con, protocol),
        "strata": _strata(con, protocol),
        "availability": _availability(con, protocol),
        "governance": _trusted_governance(con, protocol, public.governance),
        "compliance": compliance,
        "divergence": _trusted_divergence(con, protocol.study_id, public.divergence),
    })


def _trusted_divergence(con: duckdb.DuckDBPyConnection, study_id: str,
                        public: DivergenceStatus | NotAvailable) -> DivergenceStatus | NotAvailable:
    """The trial team's monitor: the trusted tier's latest checks, else the public tier's."""
    trusted = _divergence(con, study_id, "trusted")
    return public if isinstance(trusted, NotAvailable) else trusted


# ----------------------------------------------------------------------------------------------------------------
# The reports stage


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_reports` wrote each report (``trial_pdf`` None when no PDF was made: ``pdf_note`` says why)."""

    dashboard: Path
    trial_report: Path
    regulator_html: Path
    regulator_json: Path
    charts: tuple[Path, ...]
    trial_pdf: Path | None = None
    pdf_note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"dashboard": str(self.dashboard), "trial_report": str(self.trial_report),
                "regulator_html": str(self.regulator_html), "regulator_json": str(self.regulator_json),
                "charts": [str(p) for p in self.charts],
                "trial_pdf": None if self.trial_pdf is None else str(self.trial_pdf), "pdf_note": self.pdf_note}


def print_to_pdf(html: Path, pdf: Path, *, timeout: float = 120.0) -> str:
    """Print a (script-free, self-contained) report to PDF with headless Chromium, when the machine has it (Debian's
    ``chromium`` package); returns "" on success, else one sentence saying why no PDF was made. No network: the
    file loads nothing and background networking is off."""
    import shutil
    import subprocess
    import tempfile

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return "no PDF: Chromium is not installed (apt-get install chromium prints the HTML report to PDF)"
    with tempfile.TemporaryDirectory(prefix="flourish-pdf-") as profile:
        proc = subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}", "--no-pdf-header-footer",
             f"--print-to-pdf={pdf}", html.resolve().as_uri()], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not pdf.is_file():
        return f"no PDF: Chromium exited with {proc.returncode}"
    return ""


def public_bundle(warehouse: str | Path, protocol: StudyProtocol, *, built_at: datetime | None = None) -> ReportBundle:
    with public_connection(warehouse, protocol.study_id) as con:
        return load_public_bundle(con, protocol, built_at=built_at)


def trusted_bundle(warehouse: str | Path, protocol: StudyProtocol, *, built_at: datetime | None = None,
                   as_of: datetime | None = None) -> ReportBundle:
    from flows.warehouse import open_warehouse

    with open_warehouse(warehouse, create=False) as con:
        return load_trusted_bundle(con, protocol, built_at=built_at, as_of=as_of)


def write_reports(study: str | Path, warehouse: str | Path, out_dir: str | Path, *, charts: bool = True,
                  pdf: bool = False, now: datetime | None = None) -> ReportPaths:
    """Write the dashboard and the regulator report (public bundle) and the trial report (trusted bundle) into
    ``out_dir``; with ``charts``, every dashboard chart as PNG and SVG under ``out_dir/charts``; with ``pdf``, the
    trial report as PDF too when Chromium is installed. Returns the paths."""
    from flows.study import load_study
    from reports import build_dashboard, build_regulator_report, build_trial_report, write_chart_images

    protocol = load_study(study)
    built = now or datetime.now(UTC)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    public = public_bundle(warehouse, protocol, built_at=built)
    trusted = trusted_bundle(warehouse, protocol, built_at=built, as_of=now)
    dashboard = out / "dashboard.html"
    dashboard.write_text(build_dashboard(public), encoding="utf-8")
    trial = out / "trial-report.html"
    trial.write_text(build_trial_report(trusted), encoding="utf-8")
    regulator = build_regulator_report(public)
    reg_html, reg_json = out / "regulator-report.html", out / "regulator-report.json"
    reg_html.write_text(regulator.html, encoding="utf-8")
    reg_json.write_text(json.dumps(regulator.document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    images = tuple(write_chart_images(public, out / "charts")) if charts else ()
    trial_pdf, note = None, ""
    if pdf:
        note = print_to_pdf(trial, out / "trial-report.pdf")
        trial_pdf = None if note else out / "trial-report.pdf"
    return ReportPaths(dashboard, trial, reg_html, reg_json, images, trial_pdf, note)
