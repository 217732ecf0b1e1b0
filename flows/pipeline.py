"""The study pipeline as Prefect flows: ingest, score, quality gates, analysis, DP release, reports.

``study_flow`` is what ``flourish run`` (and every scheduled run of ``flourish serve``) executes: each stage is
one Prefect task that reads the warehouse, calls one function that does the work (flows/ingest, flows/scoring,
flows/quality, flows/analysis_flows, flows/privacy_flows) and writes its result; a stage's failure (a
``FlourishError``, such as a critical data-quality failure naming its expectations) is the stage's one-sentence
message. A stage whose inputs have not
changed is *cached* (flows/runs.py: explicit cache keys from the code version, the protocol's hash and lock, and
the content hashes of the ingested batches), shown as a Prefect state named ``Cached``. A stage that fails stops
the stages after it, which are recorded as skipped; a critical data-quality failure stops analysis and release.
Every run is recorded in the warehouse (``pipeline_runs``, ``pipeline_stages``).

Task parameters are paths, ids and flags, never participant data, so Prefect's own database holds nothing
personal. Orchestration: by default the flows run under Prefect, one local server for the whole command
(flows/prefect_server.py; or the server ``PREFECT_API_URL`` names); ``FLOURISH_ORCHESTRATOR=inline`` runs the same
functions without Prefect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, task
from prefect.states import Completed, Failed, State

from flows import runs
from flows.ingest import Reconciliation, ingest_batch
from flows.prefect_server import prefect_api
from flows.runs import StageResult
from flows.settings import Settings, pseudonym_key
from flows.study import load_study as load_protocol
from flows.warehouse import connect
from schemas.errors import FlourishError

AnalyzeWhen = Literal["auto", "always", "never"]


def orchestrator() -> str:
    """``prefect`` or ``inline``, from FLOURISH_ORCHESTRATOR (flows/settings.py)."""
    return Settings.from_env().orchestrator


def run(flow_obj: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a flow under Prefect (one local server for the whole call, flows/prefect_server.py), or its plain function
    when FLOURISH_ORCHESTRATOR=inline."""
    if orchestrator() == "inline":
        return flow_obj.fn(*args, **kwargs)
    with prefect_api():
        return flow_obj(*args, **kwargs)


def _sentence(exc: BaseException) -> str:
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__


# ------------------------------------------------------------------------------------------------------------
# The ingest on its own (``flourish ingest``)


@task(name="ingest-landing-batch", persist_result=False, cache_policy=None, retries=0)
def ingest_landing(landing: str, study: str, warehouse: str, key_file: str | None,
                   progress: Callable[[str, int], None] | None = None,
                   quarantine_dir: str | None = None) -> Reconciliation:
    """Validate, pseudonymize, gate and store one landing batch (one transaction)."""
    protocol = load_protocol(study)
    settings = Settings.from_env()
    return ingest_batch(landing, protocol, warehouse, pseudonym_key(key_file, settings), progress=progress,
                        memory_limit=settings.duckdb_memory_limit, fast_path=settings.fast_path,
                        quarantine_dir=quarantine_dir)


@flow(name="flourish-ingest", log_prints=False, persist_result=False)
def ingest_flow(landing: str, study: str, warehouse: str, key_file: str | None = None,
                progress: Callable[[str, int], None] | None = None,
                quarantine_dir: str | None = None) -> Reconciliation:
    """Ingest a landing folder into the warehouse and return the reconciliation."""
    if orchestrator() == "inline":
        return ingest_landing.fn(landing, study, warehouse, key_file, progress, quarantine_dir)
    return ingest_landing(landing, study, warehouse, key_file, progress, quarantine_dir)


# ------------------------------------------------------------------------------------------------------------
# Stages of the study pipeline


def _stage(stage: str, warehouse: str, study_id: str, key: str | None, body: Callable[[], dict[str, Any]],
           key_after: Callable[[], str] | None = None) -> State:
    """Run ``body`` unless a completed run of the stage had the same cache key; the result as a Prefect state
    (``Cached``, ``Completed`` or ``Failed``) holding a :class:`StageResult`.

    A stage that changes its own inputs (the ingest adds a batch, the analysis may lock the plan, the release fills
    the ledger) records ``key_after()``, the key an identical later run computes, so that run finds it cached."""
    started = time.perf_counter()
    if key is not None:
        con = connect(warehouse, create=False)
        try:
            hit = runs.cached_summary(con, study_id, stage, key)
        finally:
            con.close()
        if hit is not None:
            result = StageResult(stage, "cached", time.perf_counter() - started, hit, "inputs unchanged", key)
            return Completed(name="Cached", message="inputs unchanged since a completed run", data=result)
    try:
        summary = body()
    except FlourishError as exc:
        result = StageResult(stage, "failed", time.perf_counter() - started, {}, _sentence(exc), key)
        return Failed(message=result.message, data=result)
    recorded = key_after() if key_after is not None else key
    return Completed(data=StageResult(stage, "completed", time.perf_counter() - started, summary, None, recorded))


@task(name="flourish-ingest-stage", persist_result=False, cache_policy=None)
def ingest_stage(study: str, warehouse: str, landing: str, key_file: str | None,
                 progress: Callable[[str, int], None] | None = None) -> State:
    protocol = load_protocol(study)
    listing = runs.landing_listing(landing)

    def body() -> dict[str, Any]:
        rec = ingest_landing.fn(landing, study, warehouse, key_file, progress)
        return rec.as_json() | {"seconds": rec.seconds, "balanced": rec.balanced}

    return _stage("ingest", warehouse, protocol.study_id, _data_key("ingest", protocol, warehouse, listing), body,
                  key_after=lambda: _data_key("ingest", protocol, warehouse, listing))


@task(name="flourish-score-stage", persist_result=False, cache_policy=None)
def score_stage(study: str, warehouse: str) -> State:
    from flows.scoring import compute_psychometrics, score_responses

    protocol = load_protocol(study)
    key = _data_key("score", protocol, warehouse)

    def body() -> dict[str, Any]:
        counts = score_responses.fn(warehouse, protocol.study_id)
        counts["psychometrics"] = compute_psychometrics.fn(warehouse, protocol.study_id)
        return counts

    return _stage("score", warehouse, protocol.study_id, key, body,
                  key_after=lambda: _data_key("score", protocol, warehouse))


@task(name="flourish-quality-stage", persist_result=False, cache_policy=None)
def quality_stage(study: str, warehouse: str, run_id: str, now_iso: str) -> State:
    """The data-quality gates (flows/quality): a critical failure fails the stage, so analysis and release do not
    run; warnings are recorded in the stage's summary and the run goes on."""
    from flows.quality import run_quality_gates

    protocol = load_protocol(study)
    # completeness counts participants whose wave window has closed by now: the day is an input too
    key = _data_key("quality", protocol, warehouse, now_iso[:10])

    def body() -> dict[str, Any]:
        con = connect(warehouse, create=False)
        try:
            report = run_quality_gates(con, protocol, run_id=f"quality-{run_id}",
                                       as_of=datetime.fromisoformat(now_iso))
        finally:
            con.close()
        return {"quality_run": report.run_id, "passed": sum(r.success for r in report.results),
                "warnings": len(report.warnings), "critical_failures": len(report.critical_failures),
                "verdict": report.verdict, "failed": [r.name for r in report.results if not r.success]}

    return _stage("quality", warehouse, protocol.study_id, key, body)


@task(name="flourish-analyze-stage", persist_result=False, cache_policy=None)
def analyze_stage(study: str, warehouse: str, preregister_plan: bool, exploratory: bool) -> State:
    from flows.analysis_flows import plan_lock, preregister, run_analysis

    protocol = load_protocol(study)
    key = _analyze_key(protocol, warehouse, exploratory)

    def body() -> dict[str, Any]:
        con = connect(warehouse, create=False)
        try:
            locked_now = False
            if preregister_plan and not plan_lock(con, protocol).locked:
                if con.execute("SELECT count(*) FROM plan_registry WHERE study_id = ?",
                               [protocol.study_id]).fetchone()[0] == 0:
                    preregister(con, protocol)  # the first run locks the plan, before any analysis of it
                    locked_now = True
            result = run_analysis(con, protocol, tier="trusted", exploratory=exploratory, store=True)
        finally:
            con.close()
        rows = result.summary.to_records()
        from analysis.divergence import summary as divergence_summary

        return {"run_id": result.run_id, "plan_hash": result.lock.plan_hash, "exploratory": result.exploratory,
                "locked_by_this_run": locked_now, "rows": len(rows), "notes": list(result.notes),
                "long_run": [r for r in rows if r.get("wave") == "long_run"],
                "divergence": divergence_summary(result.divergence)["counts"], "alerts": list(result.alerts),
                "decisions": {d.arm: d.decision for d in result.decisions}}

    return _stage("analyze", warehouse, protocol.study_id, key, body,
                  key_after=lambda: _analyze_key(protocol, warehouse, exploratory))


@task(name="flourish-release-stage", persist_result=False, cache_policy=None)
def release_stage(study: str, warehouse: str, now_iso: str) -> State:
    from flows.privacy_flows import budget, instrument_bounds, release_protocol
    from flows.schedules import due_releases, release_id

    protocol = load_protocol(study)
    now = datetime.fromisoformat(now_iso)
    plan_hash = _plan_hash(protocol)
    due = [(r, release_id(protocol, plan_hash, r)) for r in due_releases(protocol, now)]
    con = connect(warehouse, create=False)
    try:
        made = {r[0] for r in con.execute("SELECT DISTINCT release_id FROM privacy_ledger WHERE study_id = ?",
                                          [protocol.study_id]).fetchall()}
    finally:
        con.close()
    todo = [(r, rid) for r, rid in due if rid not in made]
    # the key is the set of due releases and whether any is still to make: when all are made the stage is cached,
    # and a rerun never draws noise or spends budget again (the ledger refuses a release id it holds in any case)
    key = runs.cache_key("release", plan_hash, sorted(rid for _, rid in due), bool(todo))

    def body() -> dict[str, Any]:
        made_now = []
        bounds = instrument_bounds(protocol)
        for planned, rid in todo:
            result = release_protocol(protocol, warehouse, outcome_bounds=bounds, fraction=planned.share,
                                      release_id=rid, through_wave=planned.after_wave)
            made_now.append({"release_id": result.release_id, "after_wave": planned.after_wave,
                             "share": planned.share, "epsilon": result.epsilon, "values": len(result.rows),
                             # the primary's public/trusted interval width at the release's last wave (or why not)
                             "public_width_ratio": result.width_ratios.get(protocol.primary_outcome.name)})
        status = budget(warehouse).get(protocol.study_id)
        return {"releases": made_now, "due": [rid for _, rid in due],
                "epsilon_spent": None if status is None else status.epsilon_spent,
                "epsilon_total": protocol.privacy.epsilon if protocol.privacy else None,
                "public_analysis": _public_analysis(protocol, warehouse) if made_now else None}

    return _stage("release", warehouse, protocol.study_id, key, body,
                  key_after=lambda: runs.cache_key("release", plan_hash, sorted(rid for _, rid in due), False))


def _public_analysis(protocol, warehouse: str) -> dict[str, Any]:
    """The public tier fitted on the releases (post-processing: no privacy cost) and stored, so the dashboard and
    the regulator report show effects; when it cannot be fitted, the reason (the release stands either way)."""
    from flows.analysis_flows import run_analysis

    con = connect(warehouse, create=False)
    try:
        result = run_analysis(con, protocol, tier="public", store=True)
    except FlourishError as exc:
        return {"rows": 0, "reason": _sentence(exc)}
    finally:
        con.close()
    return {"run_id": result.run_id, "rows": len(result.summary.to_records()), "notes": list(result.notes)}


REPORT_FILES = ("dashboard.html", "trial-report.html", "regulator-report.html", "regulator-report.json")


def default_reports_dir(warehouse: str | Path) -> Path:
    """Where ``flourish run`` writes the reports unless told: ``reports/`` beside the warehouse file."""
    return Path(warehouse).resolve().parent / "reports"


@task(name="flourish-reports-stage", persist_result=False, cache_policy=None)
def reports_stage(study: str, warehouse: str, out_dir: str) -> State:
    """The dashboard and the regulator report (public bundle) and the trial report (trusted bundle) into
    ``out_dir``; cached while the data, the scores, the stored analyses, releases and quality runs and the plan
    registry are unchanged and the files are still there."""
    from flows.reports import write_reports

    protocol = load_protocol(study)
    out = Path(out_dir)

    def key_now() -> str:
        con = connect(warehouse, create=False)
        try:
            results = runs.results_version(con, protocol.study_id)
        finally:
            con.close()
        present = all((out / name).is_file() for name in REPORT_FILES)
        return _data_key("reports", protocol, warehouse, results, str(out.resolve()), present)

    def body() -> dict[str, Any]:
        paths = write_reports(study, warehouse, out, charts=False)
        return {"out_dir": str(out)} | {k: v for k, v in paths.as_json().items() if v}

    return _stage("reports", warehouse, protocol.study_id, key_now(), body, key_after=key_now)


def _plan_hash(protocol) -> str:
    from analysis.prereg import plan_hash

    return plan_hash(protocol)


def _analyze_key(protocol, warehouse: str, exploratory: bool) -> str:
    """The analysis depends on the data, the protocol and the plan registry (a lock makes it confirmatory)."""
    con = connect(warehouse, create=False)
    try:
        registry = con.execute("SELECT entry_hash FROM plan_registry WHERE study_id = ? ORDER BY seq",
                               [protocol.study_id]).fetchall()
    finally:
        con.close()
    return _data_key("analyze", protocol, warehouse, exploratory, registry)


def _data_key(stage: str, protocol, warehouse: str, *extra: object) -> str:
    """The stage's key from the data: the batches, erasures and re-keyings, and (for every stage but the ingest,
    which writes no scores) the stored scores."""
    con = connect(warehouse, create=False)
    try:
        scores = runs.scores_fingerprint(con, protocol.study_id) if stage != "ingest" else None
        return runs.cache_key(stage, _plan_hash(protocol), runs.data_version(con, protocol.study_id), scores, *extra)
    finally:
        con.close()


# ------------------------------------------------------------------------------------------------------------
# The study pipeline (``flourish run``)


def _call(task_obj: Any, *args: Any) -> State:
    """Call a stage task under Prefect (its state, not raising) or as a plain function inline."""
    if orchestrator() == "inline":
        return task_obj.fn(*args)
    return task_obj(*args, return_state=True)


def _result(state: State) -> StageResult:
    value = state.result(raise_on_failure=False)
    if not isinstance(value, StageResult):  # a bug inside a stage (not a FlourishError): keep its traceback
        raise value if isinstance(value, BaseException) else TypeError(f"stage returned {type(value).__name__}")
    return value


def _record_crash(warehouse: str, run_id: str, seq: int, stage: str, started_at: datetime,
                  exc: BaseException) -> None:
    """End the run's record ``failed`` when a stage raised instead of returning its state, so that no run stays
    ``running`` for ever. The message names the stage and the exception's type only: its text may quote data."""
    message = (f"the {stage} stage crashed with {type(exc).__name__} (a fault in Flourish or its environment, not "
               "in the data: the traceback is in the command's output or the Prefect run's logs)")
    seconds = (datetime.now(UTC) - started_at).total_seconds()
    con = connect(warehouse, create=False)
    try:
        runs.record_stage(con, run_id, seq, StageResult(stage, "failed", seconds, {}, message), started_at)
        runs.finish_run(con, run_id, "failed", message)
    finally:
        con.close()


@flow(name="flourish-run", persist_result=False, log_prints=False)
def study_flow(study: str, warehouse: str, landing: str | None = None, key_file: str | None = None,
               analyze: AnalyzeWhen = "auto", release: bool = True, preregister_plan: bool = True,
               exploratory: bool = False, trigger: str = "cli", now_iso: str | None = None,
               progress: Callable[[str, int], None] | None = None,
               on_stage: Callable[[StageResult], None] | None = None,
               only: list[str] | None = None, reports_dir: str | None = None,
               reports: bool = True) -> dict[str, Any]:
    """Run the study's pipeline once; return the run's record (stages with state, seconds and summary).
    ``only`` restricts the run to these stages (``flourish score`` is the score stage alone). The reports go to
    ``reports_dir`` (default: :func:`default_reports_dir`)."""
    from flows.schedules import closed_waves

    protocol = load_protocol(study)
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    con = connect(warehouse, create=landing is not None)
    try:
        run_id = runs.start_run(con, protocol.study_id, trigger)
    finally:
        con.close()

    plan: list[tuple[str, Callable[[], State] | None, str | None]] = []
    if landing is not None:
        plan.append(("ingest", lambda: _call(ingest_stage, study, warehouse, landing, key_file, progress), None))
    plan.append(("score", lambda: _call(score_stage, study, warehouse), None))
    plan.append(("quality", lambda: _call(quality_stage, study, warehouse, run_id, now.isoformat()), None))
    closed = closed_waves(protocol, now)
    if analyze == "never":
        plan.append(("analyze", None, "not asked for (--analyze never)"))
    elif analyze == "auto" and not closed:
        plan.append(("analyze", None, "no wave has closed yet (schedule)"))
    else:
        plan.append(("analyze", lambda: _call(analyze_stage, study, warehouse, preregister_plan, exploratory), None))
    if release and protocol.privacy is None:
        plan.append(("release", None, "the protocol declares no privacy budget, so it releases nothing"))
    elif release:
        plan.append(("release", lambda: _call(release_stage, study, warehouse, now.isoformat()), None))
    else:
        plan.append(("release", None, "not asked for (--no-release)"))
    if reports:
        out = reports_dir or str(default_reports_dir(warehouse))
        plan.append(("reports", lambda: _call(reports_stage, study, warehouse, out), None))
    else:
        plan.append(("reports", None, "not asked for (--no-reports)"))

    if only is not None:
        plan = [step for step in plan if step[0] in only]
    results: list[StageResult] = []
    stopped: str | None = None
    for seq, (stage, call, skip) in enumerate(plan):
        started_at = datetime.now(UTC)
        if stopped is not None:
            result = StageResult(stage, "skipped", 0.0, {}, stopped)
        elif call is None:
            result = StageResult(stage, "skipped", 0.0, {}, skip)
        else:
            try:
                result = _result(call())
            except BaseException as exc:  # a bug, not bad input: record it, then let its traceback through
                _record_crash(warehouse, run_id, seq, stage, started_at, exc)
                raise
            if result.state == "failed":
                stopped = f"stopped: the {stage} stage failed"
        results.append(result)
        con = connect(warehouse, create=False)
        try:
            runs.record_stage(con, run_id, seq, result, started_at)
        finally:
            con.close()
        if on_stage is not None:
            on_stage(result)

    failed = [r for r in results if r.state == "failed"]
    alerts = [a for r in results for a in r.summary.get("alerts", [])]  # a divergence (a cached analysis keeps its)
    con = connect(warehouse, create=False)
    try:
        runs.finish_run(con, run_id, "failed" if failed else "completed",
                        failed[0].message if failed else None, alerts)
    finally:
        con.close()
    return {"run_id": run_id, "study_id": protocol.study_id, "state": "failed" if failed else "completed",
            "stages": [asdict(r) for r in results], "alerts": alerts}


# ------------------------------------------------------------------------------------------------------------
# The demo: a simulated study through the same pipeline


@flow(name="flourish-demo", persist_result=False)
def demo_flow(out: str, participants: int, seed: int, bad_rows: float,
              progress: Callable[[str, int], None] | None = None, analyze: bool = True,
              on_stage: Callable[[StageResult], None] | None = None) -> dict[str, Any]:
    """Simulate a study with bad rows, then run it through the study pipeline (``flourish run``): the pipeline a
    newcomer sees first."""
    from flows.simulation import simulate

    out_dir = Path(out)
    sim = simulate(out_dir / "study", participants, seed, bad_rows=bad_rows, formats="mixed", truth_draws=100_000)
    key_file = str(out_dir / "keys" / "pseudonym.key")
    warehouse = str(out_dir / "warehouse" / "flourish.duckdb")
    study = str(out_dir / "study" / "study.yaml")
    record = study_flow.fn(study, warehouse, sim["landing"], key_file, analyze="always" if analyze else "never",
                           release=analyze, trigger="demo", progress=progress, on_stage=on_stage,
                           reports_dir=str(out_dir / "reports"))
    return {"simulation": sim, "run": record, "warehouse": warehouse, "key_file": key_file, "study": study}


# ------------------------------------------------------------------------------------------------------------
# What a deployment of ``flourish serve`` runs


def _superseded_by_a_later_missed_run() -> bool:
    """True when this scheduled run was missed (the serve process was down) and a later run of the same deployment
    is also due: under ``late_runs: latest_only`` only the latest due run does the work."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.runtime import deployment, flow_run

    from flows.schedules import late_runs_to_make

    deployment_id, mine = deployment.id, flow_run.scheduled_start_time
    if deployment_id is None or mine is None:
        return False
    with get_client(sync_client=True) as client:
        due = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
            state={"type": FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])},
            expected_start_time=FlowRunFilterExpectedStartTime(after_=mine, before_=datetime.now(UTC))))
    later = [r.expected_start_time for r in due if str(r.id) != str(flow_run.id) and r.expected_start_time]
    return late_runs_to_make("latest_only", [mine, *later]) != [mine]


@flow(name="flourish-scheduled-run", persist_result=False, log_prints=False)
def scheduled_run(study: str, landing: str, warehouse: str, key_file: str | None, kind: str,
                  wave: str | None = None, late_runs: str = "latest_only") -> dict[str, Any] | State:
    """One run of a served schedule (flows/schedules.planned_deployments): the nightly ingest (ingest, score,
    quality), a wave's close (analysis and that wave's planned releases) or the weekly report refresh."""
    from prefect.states import Cancelled

    if late_runs == "latest_only" and _superseded_by_a_later_missed_run():
        return Cancelled(message="skipped: a later missed run of this schedule covers it (late_runs: latest_only)")
    trigger = f"schedule:{kind}" + (f":{wave}" if wave else "")
    if kind == "nightly_ingest":
        options: dict[str, Any] = {"landing": landing, "key_file": key_file, "analyze": "never", "release": False,
                                   "reports": False}
    elif kind == "wave_close":
        options = {"landing": landing, "key_file": key_file, "analyze": "always", "release": True}
    elif kind == "weekly_report":
        options = {"landing": None, "key_file": None, "analyze": "never", "release": False, "only": ["reports"]}
    else:
        raise FlourishError(f"unknown scheduled run kind {kind!r}")
    try:
        record = study_flow.fn(study, warehouse, trigger=trigger, **options)
    except BaseException as exc:
        _say(f"flourish serve: the {trigger} run crashed with {type(exc).__name__}; its traceback is in the "
             "Prefect run's logs")
        raise
    if record["state"] == "failed":
        message = next(s["message"] for s in record["stages"] if s["state"] == "failed")
        _say(f"flourish serve: the {trigger} run failed: {message}")
        return Failed(message=message, data=record)
    return record


def _say(sentence: str) -> None:
    """One line on the serve process's stderr (a served run's process shares it): Prefect's console handler is
    quiet (flows/settings.py), so without this a failed scheduled run would show only in the Prefect UI."""
    import sys

    print(sentence, file=sys.stderr, flush=True)
