"""``flourish preregister | randomize | srm | analyze``: the trial statistician's commands.

A thin face over ``flows.analysis_flows`` (STYLE.md 12). Imports stay inside the commands so
``flourish --help`` does not load pandas, scipy or PyMC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.errors import one_sentence


def _echo_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def preregister(
    study: Annotated[Path, typer.Argument(help="Study protocol YAML.")],
    warehouse: Annotated[Path, typer.Option("--warehouse", help="Warehouse DuckDB file.")],
    deviation: Annotated[str | None, typer.Option(
        "--deviation", help="Reason for changing an already locked plan; records a deviation with time, reason "
        "and the new hash instead of relocking.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the registry entry as JSON.")] = False,
) -> None:
    """Lock the study's protocol and analysis plan: canonical JSON, SHA-256, appended to the
    hash-chained registry. Analyses run confirmatory only against the locked hash."""
    from flows.analysis_flows import preregister as do_preregister
    from flows.warehouse import open_warehouse
    from flows.study import load_study as load_protocol

    protocol = load_protocol(study)
    with open_warehouse(warehouse, create=False) as con:
        entry = do_preregister(con, protocol, deviation_reason=deviation)
    row = entry.as_row()
    if json_out:
        _echo_json(row)
        return
    what = "locked" if entry.kind == "lock" else f"deviation recorded ({entry.reason})"
    typer.echo(f"{protocol.study_id}: plan {entry.plan_hash} {what} as registry entry {entry.seq} "
               f"at {entry.recorded_at.isoformat()}")


def randomize(
    study: Annotated[Path, typer.Argument(help="Study protocol YAML (arms, allocation ratios, strata).")],
    participants: Annotated[Path, typer.Option("--participants", help="CSV with participant_id and the strata columns, in enrolment order.")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write: participant_id, study_id, arm, stratum, block.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed and file give the same allocation.")],
    block_multiplier: Annotated[int, typer.Option("--block-multiplier", help="Blocks hold this many copies of the allocation ratio.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print counts per stratum and arm as JSON.")] = False,
) -> None:
    """Stratified permuted-block randomization honouring the protocol's allocation ratios."""
    from flows.analysis_flows import randomize_csv
    from flows.study import load_study as load_protocol

    protocol = load_protocol(study)
    allocation = randomize_csv(protocol, participants, out, seed=seed, block_multiplier=block_multiplier)
    counts = allocation.groupby(["stratum", "arm"]).size().unstack(fill_value=0)
    if json_out:
        _echo_json({str(s): {str(a): int(n) for a, n in r.items()} for s, r in counts.iterrows()})
        return
    typer.echo(f"allocated {len(allocation)} participants to {out}")
    typer.echo(counts.to_string())


def srm(
    study: Annotated[Path, typer.Argument(help="Study protocol YAML.")],
    warehouse: Annotated[Path, typer.Option("--warehouse", help="Warehouse DuckDB file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the test and the balance table as JSON.")] = False,
) -> None:
    """Sample-ratio-mismatch chi-square of ingested assignments vs the protocol, and baseline balance."""
    from dataclasses import asdict

    from flows.analysis_flows import baseline_balance, srm_check
    from flows.warehouse import open_warehouse
    from flows.study import load_study as load_protocol

    protocol = load_protocol(study)
    with open_warehouse(warehouse, read_only=True) as con:
        result = srm_check(con, protocol)
        balance = baseline_balance(con, protocol)
    if json_out:
        _echo_json({"srm": asdict(result), "balance": balance.to_dict(orient="records")})
        return
    verdict = "MISMATCH" if result.mismatch else "no mismatch"
    typer.echo(f"SRM: chi-square {result.chi_square:.3f} on {result.df} df, p = {result.p_value:.3g} "
               f"({verdict} at p < {result.threshold}); observed {result.observed}")
    typer.echo(balance.to_string(index=False))


def analyze(
    study: Annotated[Path, typer.Argument(help="Study protocol YAML (must equal the preregistered plan).")],
    warehouse: Annotated[Path, typer.Option("--warehouse", help="Warehouse DuckDB file.")],
    tier: Annotated[str, typer.Option("--tier", help="trusted (participant-level statistics) or public (DP releases).")] = "trusted",
    exploratory: Annotated[bool, typer.Option(
        "--exploratory", help="Allow a protocol that is not the locked plan; every output row is labelled exploratory.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome summary as a JSON list of row objects "
                                           "(estimate, sd, interval and its level, n per arm, estimable and the reason "
                                           "when not, ...).")] = False,
    calibration_study: Annotated[str | None, typer.Option(
        "--calibration-study", help="Study id in the warehouse whose long-run outcome is observed: adds a surrogate-index "
        "forecast of the primary's long-run effect (rows with wave long_run, method surrogate_index_delta).")] = None,
    surrogate_waves: Annotated[str | None, typer.Option(
        "--surrogate-waves", help="Comma-separated early waves used as surrogates (default: the first follow-up wave).")] = None,
    save_dir: Annotated[Path | None, typer.Option(
        "--save-dir", help="Also write each model's posterior (ArviZ netCDF) and tidy tables under DIR/<outcome>/.")] = None,
) -> None:
    """Run the locked analysis plan: longitudinal model per outcome, ANCOVA with Holm across secondary
    outcomes, tipping point, subgroups, CUPED telemetry; store and print the outcome summary."""
    from flows.analysis_flows import run_analysis
    from flows.warehouse import open_warehouse
    from flows.study import load_study as load_protocol

    if tier not in ("trusted", "public"):
        raise typer.BadParameter("--tier must be trusted or public")
    protocol = load_protocol(study)
    say = (lambda m: typer.echo(m, err=True)) if not json_out else (lambda _m: None)
    with open_warehouse(warehouse, create=False) as con:
        run = run_analysis(
            con, protocol, tier=tier, exploratory=exploratory, progress=say, calibration_study=calibration_study,
            surrogate_waves=[w.strip() for w in surrogate_waves.split(",")] if surrogate_waves else None,
        )
    if save_dir is not None:
        for name, result in run.results.items():
            if hasattr(result, "save"):
                result.save(save_dir / name)
    if json_out:
        typer.echo(run.summary.to_json())
        for n in run.notes:  # stdout stays one JSON document; notes (e.g. STUDY RUNNING) go to stderr
            typer.echo(f"note: {n}", err=True)
        return
    label = "EXPLORATORY" if run.exploratory else "confirmatory (locked plan)"
    typer.echo(f"{protocol.study_id}: run {run.run_id}, plan {run.lock.plan_hash[:12]}, {label}")
    frame = run.summary.to_frame().drop(columns=["plan_hash", "tier", "control", "direction", "interval_level"])
    typer.echo(frame.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for t in run.tipping_points:
        typer.echo(f"tipping point: {t.statement}")
    for d in run.decisions:
        typer.echo(f"decision rule ({d.tier}): {d.statement}")
    for n in run.notes:
        typer.echo(f"note: {n}")


def register(app: typer.Typer) -> None:
    """Add the analysis commands to the top-level ``flourish`` app (called by flows/cli/__init__.py)."""
    app.command("preregister")(one_sentence(preregister))
    app.command("randomize")(one_sentence(randomize))
    app.command("srm")(one_sentence(srm))
    app.command("analyze")(one_sentence(analyze))
