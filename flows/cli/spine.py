"""CLI commands of the study spine: simulate, ingest, replay, schema export."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.errors import UserError, one_sentence

schema_app = typer.Typer(help="Contracts as JSON Schema, for partners who produce landing files.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)  # a progress line is one line, whatever the terminal's width
out = Console()


def printable(name: str) -> str:
    """A partner's file name as plain text (``flows.ingest.errors.printable``, imported when first needed: the
    ingest package is not loaded for ``flourish --help``)."""
    from flows.ingest.errors import printable as as_text

    return as_text(name)


def register(app: typer.Typer) -> None:
    app.command("simulate")(one_sentence(simulate))
    app.command("ingest")(one_sentence(ingest))
    app.command("replay")(one_sentence(replay))
    schema_app.command("export")(one_sentence(schema_export))
    app.add_typer(schema_app, name="schema")


def simulate(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write landing/, study.yaml, truth.json into."),
    participants: int = typer.Option(10_000, "--participants", min=6, help="Number of participants."),
    seed: int = typer.Option(1, "--seed", help="Random seed; the same seed gives the same files."),
    bad_rows: float = typer.Option(0.0, "--bad-rows", min=0.0, max=0.49,
                                   help="Fraction of bad rows to inject, of every kind the ingest quarantines."),
    formats: str = typer.Option("jsonl", "--formats", help="jsonl, or mixed (assignments as CSV, some events as Parquet)."),
) -> None:
    """Simulate a realistic three-arm field study as landing files, with its protocol and true effects."""
    from flows.simulation import simulate as run_simulation

    if formats not in ("jsonl", "mixed"):
        raise UserError(f"--formats must be jsonl or mixed, not {formats!r}")
    started = time.perf_counter()
    with err.status(f"simulating {participants:,} participants ..."):
        summary = run_simulation(out_dir, participants, seed, bad_rows=bad_rows, formats=formats)
    err.print(f"wrote {summary['responses']:,} responses and {summary['events']:,} events for "
              f"{participants:,} participants to {summary['landing']} in {time.perf_counter() - started:.1f} s")
    if summary["injected"]:
        err.print(f"injected bad rows: {summary['injected']}")


def _progress_printer(quiet: bool):
    if quiet:
        return None
    last = {"t": 0.0}

    def progress(name: str, rows: int) -> None:
        now = time.perf_counter()
        if now - last["t"] >= 1.0:
            # a partner's file name, printed as text: control characters escaped, no markup read into it
            err.print(f"  {printable(name)}: {rows:,} rows", highlight=False, markup=False)
            last["t"] = now

    return progress


def ingest(
    landing: Path = typer.Argument(..., help="Landing folder holding consents*, assignments*, responses*, scores*, events* files."),
    study: Path = typer.Option(..., "--study", help="The study protocol (YAML)."),
    warehouse: Path = typer.Option(..., "--warehouse", help="The DuckDB warehouse file (created if missing)."),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="Pseudonym key file (else FLOURISH_PSEUDONYM_KEY[_FILE])."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: read, stored, quarantined."),
    quarantine_dir: Optional[Path] = typer.Option(
        None, "--quarantine-dir",
        help="Folder for the sealed raw bytes of rows the warehouse cannot hold (default: <landing>.quarantine beside "
             "the landing folder, which a read-only drop box cannot take)."),
) -> None:
    """Validate, pseudonymize, consent-gate and store a landing batch; every row is stored or quarantined."""
    from flows.pipeline import ingest_flow, orchestrator, run
    from flows.settings import pseudonym_key
    from flows.study import load_study as load_protocol

    load_protocol(study)  # fail fast with one sentence
    pseudonym_key(key_file)
    if not landing.is_dir():
        raise UserError(f"landing folder {printable(str(landing))} does not exist")
    err.print(f"ingesting {printable(str(landing))} ({orchestrator()} orchestration) ...", markup=False)
    rec = run(ingest_flow, str(landing), str(study), str(warehouse), str(key_file) if key_file else None,
              _progress_printer(as_json), str(quarantine_dir) if quarantine_dir else None)
    if as_json:
        sys.stdout.write(json.dumps(rec.as_json()) + "\n")
        return
    _print_reconciliation(rec)


def _print_reconciliation(rec) -> None:
    table = Table(title=f"batch {rec.batch_id}: {rec.read:,} rows read in {rec.seconds:.1f} s")
    table.add_column("where")
    table.add_column("rows", justify="right")
    for kind, n in rec.stored.items():
        table.add_row(f"stored: {kind}", f"{n:,}")
    for reason, n in rec.quarantined.items():
        table.add_row(f"quarantined: {reason}", f"{n:,}")
    stored = sum(rec.stored.values())
    quarantined = sum(rec.quarantined.values())
    table.add_row("[bold]read = stored + quarantined[/bold]",
                  f"[bold]{rec.read:,} = {stored:,} + {quarantined:,}[/bold]")
    out.print(table)
    if rec.erased:
        out.print(f"consent withdrawals in this batch erased their participants: {rec.erased.rows_deleted:,} rows "
                  f"deleted, {rec.erased.rows_redacted:,} kept without their identifiers (quarantine rows, consent-ledger "
                  f"entries, text that held a pseudonym) "
                  f"(receipt {rec.erased.erasure_id})")
    for warning, n in rec.warnings.items():
        out.print(f"warning: {n:,} row(s) held their participant's raw id inside another field; it was replaced "
                  f"there by the pseudonym ({warning}); ask the partner to fill those fields with something else",
                  markup=False)
    unreadable = [f"{printable(f.name)} ({f.unreadable_message})" for f in rec.files if f.unreadable_message]
    if unreadable:
        out.print(f"{len(unreadable)} file(s) could not be read, each one row in quarantine: {'; '.join(unreadable)}",
                  markup=False, highlight=False)
    skipped = [printable(f.name) for f in rec.files if f.skipped]
    if skipped:
        out.print(f"{len(skipped)} file(s) already ingested, skipped: {', '.join(skipped)}", markup=False,
                  highlight=False)


def replay(
    study: Path = typer.Option(..., "--study", help="The study protocol (YAML)."),
    warehouse: Path = typer.Option(..., "--warehouse", help="The DuckDB warehouse file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: rows re-gated, stored, still refused."),
) -> None:
    """Re-gate quarantined no_consent records once their consents are ingested; store those that now pass.

    Records that arrive before their participant's consent are quarantined as no_consent, and re-ingesting the
    same files skips them. Run this after the consents have been ingested: every quarantined no_consent record
    goes through the ingest's checks and consent gate again, and the reconciliation stays exact (the quarantine
    row is kept and marked replayed). No key is needed: quarantined records hold pseudonyms only."""
    from flows.ingest.replay import replay as run_replay
    from flows.study import load_study as load_protocol

    protocol = load_protocol(study)
    if not warehouse.is_file():
        raise UserError(f"warehouse {printable(str(warehouse))} does not exist")
    result = run_replay(warehouse, protocol)
    if as_json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        return
    stored = ", ".join(f"{n:,} {kind}" for kind, n in result.stored.items()) or "nothing"
    refused = ", ".join(f"{n:,} {reason}" for reason, n in result.still_refused.items()) or "none"
    out.print(f"replay {result.replay_id}: {result.rows_regated:,} quarantined record(s) re-gated; stored {stored}; "
              f"still refused: {refused}", markup=False, highlight=False)


def schema_export(directory: Path = typer.Argument(..., help="Folder to write the JSON Schema files into.")) -> None:
    """Write the JSON Schema of the study protocol and of every landing record kind."""
    from schemas.export import export_schemas

    written = export_schemas(directory)
    for path in written:
        out.print(str(path))
