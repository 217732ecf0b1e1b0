"""Prefect flows of the study spine: ingest a landing batch, and the demo pipeline.

Tasks are thin: each calls one function that does the work (flows/ingest.py, flows/simulate.py,
flows/scoring.py) and keeps the retry policy. Parameters are paths and ids, never participant
data, so Prefect's own database holds nothing personal.

Orchestration: by default a flow runs under Prefect (its ephemeral local server starts on first
use; set ``PREFECT_API_URL`` to use a running ``prefect server start`` instead and skip the
~20 s start-up). ``FLOURISH_ORCHESTRATOR=inline`` runs the same flow functions without Prefect,
for quick scripts and unit tests; the CLI says which mode it used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.ingest import Reconciliation, ingest_batch
from flows.settings import Settings, pseudonym_key
from flows.study import load_study as load_protocol


def orchestrator() -> str:
    """``prefect`` or ``inline``, from FLOURISH_ORCHESTRATOR (flows/settings.py)."""
    return Settings.from_env().orchestrator


def run(flow_obj: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a flow under Prefect, or its plain function when FLOURISH_ORCHESTRATOR=inline."""
    if orchestrator() == "inline":
        return flow_obj.fn(*args, **kwargs)
    return flow_obj(*args, **kwargs)


@task(name="ingest-landing-batch", persist_result=False, cache_policy=None)
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


@task(name="score-study", persist_result=False, cache_policy=None)
def score_study_task(warehouse: str, study_id: str) -> dict[str, int]:
    """Score every response of the study into the scores table (instruments' scoring)."""
    from flows import scoring

    fn = getattr(scoring, "score_responses")
    fn = getattr(fn, "fn", fn)
    result = fn(warehouse, study_id)
    return result if isinstance(result, dict) else {"scores": int(result or 0)}


@flow(name="flourish-demo", persist_result=False)
def demo_flow(out: str, participants: int, seed: int, bad_rows: float,
              progress: Callable[[str, int], None] | None = None, analyze: bool = True) -> dict[str, Any]:
    """Simulate a study, ingest it, score it, analyze the primary outcome, release it with DP: the pipeline a
    newcomer sees first."""
    from flows.simulation import simulate

    out_dir = Path(out)
    sim = simulate(out_dir / "study", participants, seed, bad_rows=bad_rows, formats="mixed", truth_draws=100_000)
    key_file = str(out_dir / "keys" / "pseudonym.key")
    warehouse = str(out_dir / "warehouse" / "flourish.duckdb")
    inline = orchestrator() == "inline"
    call = (lambda t, *a: t.fn(*a)) if inline else (lambda t, *a: t(*a))  # noqa: E731
    study = str(out_dir / "study" / "study.yaml")
    rec = call(ingest_landing, sim["landing"], study, warehouse, key_file, progress)
    scored = call(score_study_task, warehouse, "flourish-sim")
    result = {"simulation": sim, "reconciliation": rec, "scored": scored, "warehouse": warehouse, "key_file": key_file}
    if analyze:
        result["analysis"] = call(analyze_primary_task, study, warehouse)
        result["release"] = call(release_task, study, warehouse)
    return result


@task(name="preregister-and-analyze-primary", persist_result=False, cache_policy=None)
def analyze_primary_task(study: str, warehouse: str) -> dict[str, Any]:
    """Lock the plan and run it (trusted tier); the primary outcome's long-run rows, or the refusal."""

    from flows.analysis_flows import plan_lock, preregister, run_analysis
    from schemas.errors import FlourishError
    from flows.warehouse import connect

    protocol = load_protocol(study)
    con = connect(warehouse)
    try:
        if not plan_lock(con, protocol).locked:
            preregister(con, protocol)
        try:  # the whole locked plan (analysing a subset would change the plan's hash)
            run = run_analysis(con, protocol, tier="trusted", exploratory=False, store=True)
        except FlourishError as exc:  # a refusal (e.g. diagnostics) is a result the demo shows, not a crash
            return {"refused": " ".join(str(exc).split())}
        rows = [r for r in run.summary.to_records()
                if r.get("wave") == "long_run" and r.get("outcome") == protocol.primary_outcome.name]
        return {"long_run": rows, "plan_hash": run.lock.plan_hash}
    finally:
        con.close()


@task(name="dp-release", persist_result=False, cache_policy=None)
def release_task(study: str, warehouse: str) -> dict[str, Any]:
    """The protocol's standard differentially private releases; what the budget ledger then says."""
    from flows.privacy_flows import budget, instrument_bounds, release_protocol

    protocol = load_protocol(study)
    release = release_protocol(protocol, warehouse, outcome_bounds=instrument_bounds(protocol))
    return {"release": str(getattr(release, "release_id", release)), "budget": budget(warehouse)}
