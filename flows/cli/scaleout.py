"""``flourish scaleout export | analyze``: a study laid out as Parquet partitions, its primary models fitted from
statistics reduced per partition (in this process or on a Dask cluster through Prefect) and summed.

A thin face over ``flows.scaleout`` (STYLE.md 12); imports stay inside the commands.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.errors import UserError, one_sentence

scaleout_app = typer.Typer(help="Scale-out: Parquet partitions of a study, statistics reduced per partition on Dask.",
                           no_args_is_help=True)


def export(
    study: Annotated[Path, typer.Argument(help="Study protocol YAML.")],
    warehouse: Annotated[Path, typer.Option("--warehouse", help="Warehouse DuckDB file.")],
    out: Annotated[Path, typer.Option("--out", help="New (or empty) folder for the partitions.")],
    buckets: Annotated[int, typer.Option("--buckets", min=1, max=4096, help="Participant buckets (each a whole "
                                         "set of participants; one task per bucket).")] = 16,
) -> None:
    """Write the study's assignments, scores, events, responses and prompts as bucketed Parquet partitions (hive
    layout)."""
    from flows.scaleout import export_partitions
    from flows.study import load_study
    from flows.warehouse import open_warehouse

    protocol = load_study(study)
    if not warehouse.is_file():
        raise UserError(f"warehouse {warehouse} does not exist")
    with open_warehouse(warehouse, create=False) as con:
        root = export_partitions(con, protocol, out, buckets=buckets)
    typer.echo(f"{protocol.study_id}: {buckets} buckets written to {root} (manifest.json lists the rows per table)")


def analyze(
    study: Annotated[Path, typer.Argument(help="Study protocol YAML.")],
    partitions: Annotated[Path, typer.Option("--partitions", help="Folder written by `flourish scaleout export` "
                                             "(or laid out the same way).")],
    task_runner: Annotated[str, typer.Option("--task-runner", help="process (every partition in this process) or "
                                             "dask (each partition a Prefect task on a Dask cluster).")] = "dask",
    dask_address: Annotated[str | None, typer.Option("--dask-address", help="Scheduler address of an existing "
                                                     "Dask cluster (default: a local cluster).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Workers of the local Dask cluster.")] = 2,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as a JSON list.")] = False,
) -> None:
    """Fit the plan's primary models (and their cross-check) from statistics reduced per partition and summed:
    the same model code as `flourish analyze`. Rows are labelled exploratory and not stored; the final-wave
    ANCOVA, tipping point, subgroups and CUPED come from `flourish analyze` on the warehouse."""
    from analysis.plan import run_plan
    from analysis.prereg import plan_hash
    from analysis.summary import OutcomeSummary
    from flows.scaleout import partitioned_plan_statistics
    from flows.study import load_study

    if task_runner not in ("process", "dask"):
        raise UserError(f"--task-runner must be process or dask, not {task_runner!r}")
    protocol = load_study(study)
    say = (lambda m: typer.echo(m, err=True)) if not json_out else (lambda _m: None)
    started = time.perf_counter()
    stats = partitioned_plan_statistics(partitions, protocol, task_runner=task_runner, address=dask_address,
                                        workers=workers, progress=say)
    reduced = time.perf_counter() - started
    result = run_plan(stats, protocol, progress=say)
    summary = OutcomeSummary.of(result.effects, plan_hash=plan_hash(protocol), exploratory=True)
    if json_out:
        typer.echo(summary.to_json())
        return
    typer.echo(f"{protocol.study_id}: statistics of {sum(stats.arm_counts.values()):,} participants reduced in "
               f"{reduced:.1f} s ({task_runner}); models fitted in {time.perf_counter() - started - reduced:.1f} s")
    frame = summary.to_frame().drop(columns=["plan_hash", "tier", "control", "direction", "interval_level"])
    typer.echo(frame.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for n in result.notes:
        typer.echo(f"note: {n}")


def register(app: typer.Typer) -> None:
    scaleout_app.command("export")(one_sentence(export))
    scaleout_app.command("analyze")(one_sentence(analyze))
    app.add_typer(scaleout_app, name="scaleout")
