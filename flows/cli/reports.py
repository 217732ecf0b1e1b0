"""``flourish report``: the reports people read, a thin face over ``flows.reports``.

- ``flourish report dashboard STUDY.yaml --warehouse FILE --out DIR``: the public dashboard (one offline HTML file);
- ``flourish report trial ...``: the trial team's CONSORT 2025 report (trusted: exact counts, not for release);
- ``flourish report regulator ...``: the regulator report, HTML and JSON (valid against its JSON Schema);
- ``flourish report all ...``: all three and the charts as PNG and SVG (what the pipeline's last stage writes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.errors import UserError, one_sentence

report_app = typer.Typer(help="Reports: the public dashboard, the trial report and the regulator report.",
                         no_args_is_help=True)

StudyArg = Annotated[Path, typer.Argument(help="The study protocol (YAML).")]
WarehouseOpt = Annotated[Path, typer.Option("--warehouse", help="The study's DuckDB warehouse file.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder to write the report into (created if missing).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the written paths as one JSON object.")]


def _check(study: Path, warehouse: Path):
    from flows.study import load_study

    protocol = load_study(study)
    if not warehouse.is_file():
        raise UserError(f"warehouse {warehouse} does not exist")
    return protocol


def _done(paths: dict[str, object], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(paths) + "\n")
        return
    for name, path in paths.items():
        if isinstance(path, list):
            typer.echo(f"{name}: {len(path)} files in {Path(path[0]).parent if path else '-'}")
        else:
            typer.echo(f"{name}: {path}")


def dashboard(study: StudyArg, warehouse: WarehouseOpt, out: OutOpt = Path("reports-out"), as_json: JsonOpt = False) -> None:
    """Write the public dashboard: one HTML file that works offline, built from the DP releases, the locked plan and
    the public-tier analysis only. Every number shows its interval; suppressed cells say so."""
    from flows.reports import public_bundle
    from reports import build_dashboard

    protocol = _check(study, warehouse)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dashboard.html"
    path.write_text(build_dashboard(public_bundle(warehouse, protocol)), encoding="utf-8")
    _done({"dashboard": str(path), "bytes": path.stat().st_size}, as_json)


def trial(study: StudyArg, warehouse: WarehouseOpt, out: OutOpt = Path("reports-out"), as_json: JsonOpt = False) -> None:
    """Write the trial report (CONSORT 2025 with CONSORT-AI): exact counts from the warehouse, for the trial team."""
    from flows.reports import trusted_bundle
    from reports import build_trial_report

    protocol = _check(study, warehouse)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "trial-report.html"
    path.write_text(build_trial_report(trusted_bundle(warehouse, protocol)), encoding="utf-8")
    _done({"trial_report": str(path)}, as_json)


def regulator(study: StudyArg, warehouse: WarehouseOpt, out: OutOpt = Path("reports-out"), as_json: JsonOpt = False) -> None:
    """Write the regulator report as HTML and as JSON valid against regulator_report.schema.json (flourish schema
    export writes the schema)."""
    from flows.reports import public_bundle
    from reports import build_regulator_report

    protocol = _check(study, warehouse)
    out.mkdir(parents=True, exist_ok=True)
    report = build_regulator_report(public_bundle(warehouse, protocol))
    html_path, json_path = out / "regulator-report.html", out / "regulator-report.json"
    html_path.write_text(report.html, encoding="utf-8")
    json_path.write_text(json.dumps(report.document, indent=2) + "\n", encoding="utf-8")
    _done({"regulator_html": str(html_path), "regulator_json": str(json_path)}, as_json)


def all_reports(study: StudyArg, warehouse: WarehouseOpt, out: OutOpt = Path("reports-out"),
                charts: Annotated[bool, typer.Option("--charts/--no-charts", help="Also write every chart as PNG "
                                                     "and SVG under OUT/charts.")] = True,
                pdf: Annotated[bool, typer.Option("--pdf", help="Also print the trial report to PDF (needs Debian's "
                                                  "chromium; without it, says why no PDF was made).")] = False,
                as_json: JsonOpt = False) -> None:
    """Write the dashboard, the trial report and the regulator report (and the charts as PNG and SVG)."""
    from flows.reports import write_reports

    _check(study, warehouse)
    paths = write_reports(study, warehouse, out, charts=charts, pdf=pdf).as_json()
    if not pdf:
        paths.pop("trial_pdf"), paths.pop("pdf_note")
    elif not paths["pdf_note"]:
        paths.pop("pdf_note")
    _done(paths, as_json)


def register(app: typer.Typer) -> None:
    """Add ``flourish report ...`` to the top-level app (called by flows/cli/__init__.py)."""
    report_app.command("dashboard")(one_sentence(dashboard))
    report_app.command("trial")(one_sentence(trial))
    report_app.command("regulator")(one_sentence(regulator))
    report_app.command("all")(one_sentence(all_reports))
    app.add_typer(report_app, name="report")
