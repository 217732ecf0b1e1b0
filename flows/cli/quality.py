"""``flourish quality``: the data engineer's quality gates, a thin face over ``flows.quality``.

Imports stay inside the command: Great Expectations alone takes about 10 s to import.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.errors import UserError, one_sentence


def quality(
    study: Annotated[Path, typer.Argument(help="Study protocol YAML: the rules are generated from it and the instruments.")],
    warehouse: Annotated[Path, typer.Option("--warehouse", help="Warehouse DuckDB file (results are stored in it).")],
    html: Annotated[Path | None, typer.Option(
        "--html", help="Also write an offline HTML page of this study's latest runs (no script, no external file).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run as one JSON object (expectations, counts).")] = False,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="ISO time with a UTC offset against which a wave counts as due for completeness "
        "(default: now). The same warehouse and --as-of give the same results.")] = None,
    history: Annotated[int, typer.Option("--history", min=1, help="Runs shown on the --html page, newest first.")] = 20,
) -> None:
    """Run the data-quality gates generated from the protocol: score and item ranges, known outcomes and waves,
    one score per participant x wave x outcome, wave windows, allowed arms and the sample-ratio check,
    completeness per wave, event times. Results are stored (one row per expectation per run). Exit code 2 when
    a critical expectation fails; warnings are reported and do not fail the command."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from flows.quality import load_reports, new_run_id, render_quality_page, run_quality_gates
    from flows.settings import Settings
    from flows.study import load_study
    from flows.warehouse import open_warehouse
    from schemas.sqltext import literal

    moment = None
    if as_of is not None:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            raise UserError(f"--as-of must be an ISO time such as 2026-12-01T00:00:00+00:00, not {as_of!r}") from None
        if moment.tzinfo is None:
            raise UserError("--as-of must carry a UTC offset (e.g. +00:00)")
    if not warehouse.exists():
        raise UserError(f"warehouse {warehouse} does not exist")
    protocol = load_study(study)
    err = Console(stderr=True)
    with open_warehouse(warehouse) as con:
        con.execute(f"SET memory_limit = {literal(Settings.from_env().duckdb_memory_limit)}")  # as the ingest does
        with err.status("validating (Great Expectations takes about 10 s to load) ...") if not json_out else nullcontext():
            report = run_quality_gates(con, protocol, run_id=new_run_id(), as_of=moment, raise_on_critical=False)
        if html is not None:
            render_quality_page(load_reports(con, protocol.study_id, runs=history), html)
    if json_out:
        typer.echo(report.to_json())
    else:
        out = Console()
        table = Table(title=Text(f"{protocol.study_id}: quality run {report.run_id}"))
        table.add_column("severity")
        table.add_column("outcome")
        table.add_column("expectation", no_wrap=True)
        table.add_column("unexpected", justify="right")
        table.add_column("of", justify="right")
        table.add_column("unit")
        for r in report.results:  # Text: a name such as item_in_range[who5] is not rich markup
            table.add_row(r.severity, "pass" if r.success else "FAIL", Text(r.name),
                          "" if r.unexpected_count is None else f"{r.unexpected_count:,}",
                          "" if r.checked_count is None else f"{r.checked_count:,}", r.unit)
        out.print(table)
        out.print(Text(f"{report.verdict}: of {len(report.results)} expectations, {len(report.critical_failures)} "
                       f"critical, {len(report.warnings)} warning and {len(report.notes)} info failed "
                       f"({report.run_seconds:.1f} s)"))
    if html is not None:
        typer.echo(f"wrote {html}", err=True)
    report.raise_for_critical()


def register(app: typer.Typer) -> None:
    """Add ``flourish quality`` to the top-level app (called by flows/cli/__init__.py)."""
    app.command("quality")(one_sentence(quality))
