"""``flourish run | score | demo``: the study pipeline from the command line (flows/pipeline.py).

``run`` executes the stages in order (ingest, score, quality gates, analysis, DP release, reports) and prints
each stage's state and time; ``score`` scores a warehouse's responses on its own; ``demo`` simulates a study with
bad rows and runs it through the same pipeline.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.cli.errors import UserError, one_sentence

err = Console(stderr=True, highlight=False)
out = Console(highlight=False, width=140)

DEMO_MARKER = ".flourish-demo"
"""A file the demo writes into its --out folder: only a folder holding it has its study/ and warehouse/ replaced."""

StudyArg = Annotated[Path, typer.Argument(help="The study protocol (YAML).")]
WarehouseOpt = Annotated[Path, typer.Option("--warehouse", help="The study's DuckDB warehouse file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (the run's record) for scripts.")]


def _progress(quiet: bool):
    if quiet:
        return None
    last = {"t": 0.0}

    def progress(name: str, rows: int) -> None:
        now = time.perf_counter()
        if now - last["t"] >= 1.0:
            err.print(f"  ingesting {escape(name)}: {rows:,} rows")
            last["t"] = now

    return progress


def _detail(stage: str, state: str, summary: dict[str, Any], message: str | None) -> str:
    if state in ("skipped", "failed"):
        return message or ""
    if stage == "ingest":
        stored, quarantined = sum(summary.get("stored", {}).values()), sum(summary.get("quarantined", {}).values())
        return f"read {summary.get('read', 0):,} = stored {stored:,} + quarantined {quarantined:,}"
    if stage == "score":
        return (f"{summary.get('scores', 0):,} scores, {summary.get('safety_flags', 0):,} safety flags, "
                f"{summary.get('psychometrics', 0):,} reliability rows")
    if stage == "quality":
        return (f"{summary.get('passed', 0)} expectations passed, {summary.get('warnings', 0)} warnings, "
                f"{summary.get('critical_failures', 0)} critical failures")
    if stage == "analyze":
        label = "exploratory" if summary.get("exploratory") else "confirmatory"
        locked = ", plan locked by this run" if summary.get("locked_by_this_run") else ""
        return f"{summary.get('rows', 0)} rows ({label}, plan {str(summary.get('plan_hash', ''))[:12]}{locked})"
    if stage == "release":
        made = summary.get("releases", [])
        spent = summary.get("epsilon_spent")
        budget = "" if spent is None else f"; epsilon {spent:.3g} of {summary.get('epsilon_total'):g} spent"
        ratios = [f"{m.get('after_wave')}: {_ratio(m['public_width_ratio'])}" for m in made
                  if m.get("public_width_ratio") is not None]
        public = summary.get("public_analysis")
        fitted = "" if not public else (f"; public tier fitted ({public['rows']} rows)" if public.get("rows")
                                        else f"; public tier not fitted: {public.get('reason')}")
        return f"{len(made)} release(s) made{budget}" + (
            f"; public/trusted width of the primary's last released wave {', '.join(ratios)}" if ratios else "") + fitted
    if stage == "reports":
        return f"dashboard, trial and regulator reports in {summary.get('out_dir', '')}"
    return ""


def _ratio(ratio: float | str) -> str:
    """A release's public/trusted width ratio of the primary, or n/a when the release cannot carry the model."""
    return f"{ratio:.2f}x" if isinstance(ratio, float) else "n/a"


def print_run(record: dict[str, Any], seconds: float) -> None:
    """The run's stages as a table: state, time, what each did."""
    table = Table(title=f"{record['study_id']}: run {record['run_id']} {record['state']} in {seconds:.1f} s")
    for col in ("stage", "state", "seconds", "what it did"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for s in record["stages"]:
        table.add_row(s["stage"], s["state"], f"{s['seconds']:.1f}",
                      escape(_detail(s["stage"], s["state"], s["summary"], s["message"])))
    out.print(table)
    for alert in record.get("alerts", []):  # a divergence of engagement and flourishing (analysis/divergence.py)
        out.print(f"ALERT: {escape(alert)}")


def print_report_paths(record: dict[str, Any]) -> None:
    """The paths of the reports the run wrote (or found unchanged), one per line."""
    stage = next((s for s in record["stages"] if s["stage"] == "reports"), None)
    if stage is None or stage["state"] not in ("completed", "cached"):
        return
    labels = {"dashboard": "dashboard (public)", "trial_report": "trial report (trial team)",
              "regulator_html": "regulator report", "regulator_json": "regulator report (JSON)"}
    for key, label in labels.items():
        if stage["summary"].get(key):
            out.print(f"{label}: {escape(str(stage['summary'][key]))}")


def _finish(record: dict[str, Any], started: float, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
    else:
        print_run(record, time.perf_counter() - started)
        print_report_paths(record)
    failed = [s for s in record["stages"] if s["state"] == "failed"]
    if failed:
        raise UserError(f"the {failed[0]['stage']} stage failed: {failed[0]['message']}")


def run(
    study: StudyArg,
    warehouse: WarehouseOpt,
    landing: Annotated[Path | None, typer.Option("--landing", help="Landing folder to ingest first (omit to run the "
                                                 "stages after the ingest on the warehouse as it is).")] = None,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="Pseudonym key file (else "
                                                  "FLOURISH_PSEUDONYM_KEY[_FILE]); needed with --landing.")] = None,
    analyze: Annotated[str, typer.Option("--analyze", help="auto (when a wave has closed; every wave of a study "
                                         "without a schedule), always, or never.")] = "auto",
    release: Annotated[bool, typer.Option("--release/--no-release", help="Make the protocol's planned DP releases "
                                          "whose wave has closed (each once: a rerun never spends twice).")] = True,
    preregister: Annotated[bool, typer.Option("--preregister/--no-preregister", help="Lock the plan at the first run "
                                              "when it has never been locked.")] = True,
    exploratory: Annotated[bool, typer.Option("--exploratory", help="Analyse a protocol that differs from the "
                                              "locked plan; every row is labelled exploratory.")] = False,
    reports: Annotated[bool, typer.Option("--reports/--no-reports", help="Write the dashboard, the trial report and "
                                          "the regulator report at the end.")] = True,
    reports_dir: Annotated[Path | None, typer.Option("--reports-dir", help="Folder for the reports (default: reports/ "
                                                     "beside the warehouse file).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the study's pipeline: ingest, score, quality gates, analysis, DP release, reports. A stage whose inputs
    have not changed is cached; a failed stage stops the ones after it."""
    from flows.pipeline import orchestrator
    from flows.pipeline import run as run_flow
    from flows.pipeline import study_flow
    from flows.settings import pseudonym_key
    from flows.study import load_study

    if analyze not in ("auto", "always", "never"):
        raise UserError(f"--analyze must be auto, always or never, not {analyze!r}")
    load_study(study)
    if landing is not None:
        if not landing.is_dir():
            raise UserError(f"landing folder {landing} does not exist")
        pseudonym_key(key_file)
    elif not warehouse.is_file():
        raise UserError(f"warehouse {warehouse} does not exist (give --landing to create it from a landing folder)")
    started = time.perf_counter()
    if not as_json:
        err.print(f"running {escape(str(study))} ({orchestrator()} orchestration) ...")
    on_stage = None if as_json else (lambda r: err.print(f"  {r.stage}: {r.state} ({r.seconds:.1f} s)"))
    record = run_flow(study_flow, str(study), str(warehouse), str(landing) if landing else None,
                      str(key_file) if key_file else None, analyze, release, preregister, exploratory, "cli", None,
                      _progress(as_json), on_stage, reports_dir=str(reports_dir) if reports_dir else None,
                      reports=reports)
    _finish(record, started, as_json)


def score(study: StudyArg, warehouse: WarehouseOpt, as_json: JsonOpt = False) -> None:
    """Score every response of the study in the warehouse (scores, safety flags, reliability per wave and arm)."""
    from flows.pipeline import run as run_flow
    from flows.pipeline import study_flow
    from flows.study import load_study

    load_study(study)
    if not warehouse.is_file():
        raise UserError(f"warehouse {warehouse} does not exist")
    started = time.perf_counter()
    record = run_flow(study_flow, str(study), str(warehouse), None, None, "never", False, False, False, "cli:score",
                      None, None, None, ["score"])
    _finish(record, started, as_json)


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the simulated study, key and warehouse.")] = Path("demo-out"),
    participants: Annotated[int, typer.Option("--participants", min=6)] = 3000,
    seed: Annotated[int, typer.Option("--seed")] = 2026,
    bad_rows: Annotated[float, typer.Option("--bad-rows", min=0.0, max=0.49)] = 0.01,
    analyze: Annotated[bool, typer.Option("--analyze/--no-analyze", help="Also preregister and run the analysis "
                                          "plan, and make the planned DP releases.")] = True,
) -> None:
    """Simulate a study with some bad rows and run it through the study pipeline (`flourish run`): what landed and
    what was quarantined, the long-run effects next to the simulated truth, the privacy budget."""
    from flows.pipeline import demo_flow, orchestrator
    from flows.pipeline import run as run_flow
    from privacy.pseudonym import create_key_file

    marker = out_dir / DEMO_MARKER
    ours = [out_dir / sub for sub in ("study", "warehouse") if (out_dir / sub).exists()]
    if ours and not marker.exists():
        raise UserError(f"{out_dir} holds {', '.join(p.name for p in ours)} not made by flourish demo; "
                        "choose another --out folder, or remove them yourself (the demo replaces only its own output)")
    for path in ours:
        shutil.rmtree(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("This folder was written by `flourish demo`; the demo replaces its study/ and warehouse/.\n",
                      encoding="utf-8")
    create_key_file(out_dir / "keys" / "pseudonym.key")  # outside the warehouse folder
    started = time.perf_counter()
    err.print(f"demo: {participants:,} participants, {bad_rows:.1%} bad rows, {orchestrator()} orchestration")
    result = run_flow(demo_flow, str(out_dir), participants, seed, bad_rows, _progress(False), analyze,
                      lambda r: err.print(f"  {r.stage}: {r.state} ({r.seconds:.1f} s)"))
    record = result["run"]
    print_run(record, time.perf_counter() - started)
    print_report_paths(record)
    stages = {s["stage"]: s for s in record["stages"]}
    ingest = stages["ingest"]["summary"]
    _print_ingest(ingest)
    if stages.get("analyze", {}).get("state") in ("completed", "cached"):
        _print_long_run(stages["analyze"]["summary"], out_dir)
    injected = result["simulation"]["injected"]
    quarantined = ingest.get("quarantined", {})
    missing = {k: v for k, v in injected.items() if quarantined.get(k, 0) < v}
    if missing:
        raise UserError(f"some injected bad rows were not quarantined with their reason: {missing}")
    out.print(f"every injected bad-row kind ({len(injected)} kinds, {sum(injected.values()):,} rows) is in quarantine "
              "with its reason")
    out.print(f"warehouse: {result['warehouse']}  (key: {result['key_file']})")
    failed = [s for s in record["stages"] if s["state"] == "failed"]
    if failed:
        raise UserError(f"the {failed[0]['stage']} stage failed: {failed[0]['message']}")


def _print_ingest(summary: dict[str, Any]) -> None:
    table = Table(title=f"ingest: {summary.get('read', 0):,} rows read")
    table.add_column("where")
    table.add_column("rows", justify="right")
    for kind, n in summary.get("stored", {}).items():
        table.add_row(f"stored: {kind}", f"{n:,}")
    for reason, n in summary.get("quarantined", {}).items():
        table.add_row(f"quarantined: {reason}", f"{n:,}")
    stored, quarantined = sum(summary.get("stored", {}).values()), sum(summary.get("quarantined", {}).values())
    table.add_row("read = stored + quarantined", f"{summary.get('read', 0):,} = {stored:,} + {quarantined:,}")
    out.print(table)


def _print_long_run(summary: dict[str, Any], out_dir: Path) -> None:
    truth = json.loads((out_dir / "study" / "truth.json").read_text(encoding="utf-8"))
    rows = summary.get("long_run", [])
    if not rows:
        out.print("no long-run estimate (see the notes of `flourish analyze`)")
        return
    level = rows[0].get("interval_level") or 0.95
    table = Table(title=f"long-run effect vs control (plan {str(summary.get('plan_hash', ''))[:12]})")
    for col in ("outcome", "arm", "method", "estimate", f"{level:.0%} interval", "P(benefit)", "simulated truth"):
        table.add_column(col, justify="left" if col in ("outcome", "arm", "method") else "right")
    for r in rows:
        true = truth["arms"].get(r["arm"], {}).get("long_run", {}).get(r["outcome"])
        estimate = r.get("estimate")
        table.add_row(r["outcome"], r["arm"], str(r.get("method", "")),
                      "not estimable" if estimate is None else f"{estimate:.2f}",
                      "" if r.get("lower") is None else f"[{r['lower']:.2f}, {r['upper']:.2f}]",
                      "" if r.get("p_benefit") is None else f"{r['p_benefit']:.3f}",
                      "" if true is None else f"{true:.2f}")
    out.print(table)


def _waves_run(warehouse: Path, study_id: str) -> set[str]:
    """Waves whose wave-close run has completed (from the pipeline's record)."""
    from flows.warehouse import connect

    if not warehouse.is_file():
        return set()
    con = connect(warehouse, create=False)
    try:
        rows = con.execute("SELECT trigger FROM pipeline_runs WHERE study_id = ? AND state = 'completed' "
                           "AND trigger LIKE 'schedule:wave_close:%'", [study_id]).fetchall()
    finally:
        con.close()
    return {t.split(":", 2)[2] for (t,) in rows}


def serve(
    study: StudyArg,
    landing: Annotated[Path, typer.Option("--landing", help="The landing folder the nightly ingest reads.")],
    warehouse: WarehouseOpt,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="Pseudonym key file (else "
                                                  "FLOURISH_PSEUDONYM_KEY[_FILE]).")] = None,
    list_only: Annotated[bool, typer.Option("--list", help="Print the deployments and their next run times; do not "
                                            "serve.")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", help="With --list: plan as if it were this ISO 8601 time "
                                              "(with offset), e.g. to check which waves will have closed.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve the study's schedules from its protocol (nightly ingest, a wave-close run when each wave's window
    ends, a weekly report refresh) with Prefect, until stopped. Schedules stay active when this process stops."""
    from datetime import UTC, datetime

    from flows.schedules import planned_deployments
    from flows.settings import pseudonym_key
    from flows.study import load_study

    protocol = load_study(study)
    if as_of is not None and not list_only:
        raise UserError("--as-of plans a what-if; use it with --list")
    try:
        now = datetime.fromisoformat(as_of) if as_of else datetime.now(UTC)
    except ValueError:
        raise UserError(f"--as-of {as_of!r} is not an ISO 8601 time") from None
    if now.tzinfo is None:
        raise UserError("--as-of needs a UTC offset, e.g. 2027-06-01T09:00:00+01:00")
    planned = planned_deployments(protocol, study=str(study.resolve()), landing=str(landing.resolve()),
                                  warehouse=str(warehouse.resolve()),
                                  key_file=str(key_file.resolve()) if key_file else None, now=now,
                                  waves_run=_waves_run(warehouse, protocol.study_id))
    if list_only:
        _print_deployments(planned, now, as_json)
        return
    if not landing.is_dir():
        raise UserError(f"landing folder {landing} does not exist")
    pseudonym_key(key_file)
    _serve(planned)


def _print_deployments(planned, now, as_json: bool) -> None:
    rows = [{"name": d.name, "kind": d.kind, "purpose": d.purpose, "cron": d.cron, "rrule": d.rrule,
             "timezone": d.timezone, "due_now": d.due_now, "wave": d.parameters.get("wave"),
             "next_runs": [] if d.due_now else [t.isoformat() for t in d.next_runs(now)]} for d in planned]
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title=f"deployments as of {now.isoformat()}")
    for col in ("deployment", "schedule", "time zone", "next runs (local time)"):
        table.add_column(col)
    for r in rows:
        when = "due now (its wave has closed)" if r["due_now"] else "\n".join(r["next_runs"])
        schedule = r["cron"] if r["cron"] else f"once, when wave {r['wave']} closes"
        table.add_row(escape(r["name"]), escape(schedule), r["timezone"], when)
    out.print(table)


def runner_deployments(planned) -> list[Any]:
    """Prefect deployments of :func:`flows.pipeline.scheduled_run`, one per planned deployment.

    Their entrypoint is the module path ``flows.pipeline.scheduled_run``: a file-path entrypoint makes Prefect's
    flow-run process load ``flows/pipeline.py`` as a top-level module with ``flows/`` first on ``sys.path``, where
    ``flows/reports.py`` then hides the ``reports`` package (and ``flows/statistics.py`` the standard library's)."""
    from prefect.schedules import Cron, RRule
    from prefect.types.entrypoint import EntrypointType

    from flows.pipeline import scheduled_run

    deployments = []
    for d in planned:
        schedule = (Cron(d.cron, timezone=d.timezone, slug=d.kind) if d.cron is not None
                    else RRule(d.rrule, timezone=d.timezone, slug=d.kind))
        deployments.append(scheduled_run.to_deployment(
            name=d.name, schedules=[schedule], parameters=d.parameters, description=d.purpose,
            tags=["flourish", d.kind], entrypoint_type=EntrypointType.MODULE_PATH))
    return deployments


def _serve(planned) -> None:
    """Create the deployments, queue the runs that are due now, and serve them until interrupted."""
    from prefect import serve as prefect_serve
    from prefect.client.orchestration import get_client

    from flows.prefect_server import prefect_api

    with prefect_api() as url:
        deployments = runner_deployments(planned)
        ids = {d.name: dep.apply() for d, dep in zip(planned, deployments, strict=True)}
        with get_client(sync_client=True) as client:
            for d in planned:
                if d.due_now:
                    client.create_flow_run_from_deployment(ids[d.name])
        err.print(f"serving {len(deployments)} deployments on {url} (Ctrl-C stops serving; schedules stay active)")
        prefect_serve(*deployments, pause_on_shutdown=False, print_starting_message=False)


def orchestrated(command: Any) -> Any:
    """Start the command's Prefect API first (flows/prefect_server.py ``orchestration``): the server's start-up
    then overlaps with the command importing the pipeline, instead of following it."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flows.prefect_server import orchestration

        with orchestration():
            return command(*args, **kwargs)

    return wrapper


def register(app: typer.Typer) -> None:
    app.command("serve")(one_sentence(serve))
    app.command("run")(one_sentence(orchestrated(run)))
    app.command("score")(one_sentence(orchestrated(score)))
    app.command("demo")(one_sentence(orchestrated(demo)))
