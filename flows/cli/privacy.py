"""CLI commands of the privacy area: consent status and sync, erase, compact, rekey, release, budget.

A thin face over flows/privacy_flows.py (STYLE.md, habit 12); heavy imports (OpenDP) happen inside commands.
Refusals from privacy/ (PrivacyError, a FlourishError) are printed as one sentence with exit code 2; with
``--json`` a refused ``erase`` also prints ``{"erased": false, "error": ...}`` on stdout, so a script reading
stdout sees the refusal too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.errors import UserError, one_sentence, sentence
from schemas.errors import FlourishError

WarehouseOpt = Annotated[Path, typer.Option("--warehouse", help="The study's DuckDB warehouse file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

consent_app = typer.Typer(help="The consent ledger (append-only, hash-chained).", no_args_is_help=True,
                          add_completion=False, pretty_exceptions_enable=False)


def _existing(warehouse: Path) -> Path:
    if not warehouse.is_file():
        raise UserError(f"warehouse {warehouse} does not exist")
    return warehouse


def consent_status_cmd(warehouse: WarehouseOpt, json_out: JsonOpt = False) -> None:
    """Consent per scope (active, withdrawn, entries) and whether the ledger's hash chain verifies.

    Read-only. A withdrawal reaches the ledger when the ingest erases the participant (it still counts as
    withdrawn: the entries are redacted, not removed); other consents are appended by `flourish consent sync`,
    and this says how many are pending.
    """
    from flows.privacy_flows import consent_status

    status = consent_status(_existing(warehouse))
    if json_out:
        typer.echo(json.dumps(status, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Consent ledger: {status['entries']} entries")
        for col in ("scope", "active", "withdrawn", "entries"):
            table.add_column(col)
        for scope, s in status["scopes"].items():
            table.add_row(scope, str(s["active"]), str(s["withdrawn"]), str(s["entries"]))
        Console().print(table)
        typer.echo("hash chain: " + ("verified" if status["chain_verified"] else
                                     f"BROKEN at entry {status['first_bad_seq']} ({status['problem']})"))
        if status["not_in_ledger"]:
            typer.echo(f"{status['not_in_ledger']} consent entries of the warehouse are not in the ledger yet; "
                       "`flourish consent sync` appends them")
    if not status["chain_verified"]:
        raise typer.Exit(code=1)


def consent_sync_cmd(warehouse: WarehouseOpt) -> None:
    """Append to the hash-chained ledger every consent the warehouse holds and the ledger lacks (run it after an
    ingest, or on a schedule; `consent status` says how many are pending). Idempotent."""
    from flows.privacy_flows import consent_sync

    typer.echo(f"appended {consent_sync(_existing(warehouse))} ledger entries")


def _erase_text(r) -> list[str]:
    lines = [f"erased: {r.total_deleted} rows in {len(r.rows_deleted)} tables, {len(r.files_rewritten)} files "
             f"rewritten, {len(r.files_deleted)} deleted; warehouse compacted; receipt {r.erasure_id}"]
    if not r.total_deleted:
        lines.append("note: no rows were left to delete (the participant was erased before); files re-checked")
    lines.append("byte scan (raw id and pseudonym): " + ", ".join(r.folders_scanned))
    if r.folders_missing:
        lines.append("NOT covered (landing folders an ingest recorded, no longer there): " + ", ".join(r.folders_missing))
    if r.unchecked_files:
        lines.append("NOT checked (could not be read): " + ", ".join(r.unchecked_files))
    if r.files_left:
        lines.append("left as they are (source files no scrubber can edit row by row; remove the participant by "
                     "hand): " + ", ".join(r.files_left))
    return lines


def erase(
    participant_id: Annotated[str, typer.Argument(help="The participant's RAW id (pseudonymized here, never stored).")],
    warehouse: WarehouseOpt,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="Pseudonym key file (else FLOURISH_PSEUDONYM_KEY[_FILE]); "
                                                  "must be the warehouse's active key.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why: erasure_request, withdrawn, ...")] = "erasure_request",
    study_folder: Annotated[Path | None, typer.Option(
        "--study-folder", help="The study's folder to scrub and byte-scan (exports, caches); default: the "
                               "warehouse's folder. It must contain the warehouse. Landing folders an ingest "
                               "recorded, and their quarantine folders, are always covered too.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Erase a participant from every table, the landing and quarantine files, and every file under the study's
    folder; compact the warehouse; leave a tombstone so their late data are quarantined; prove it with a byte scan.

    Refused, with nothing written, for an id the warehouse holds nothing of (a typo, or the wrong key). If a file
    step fails after the rows are erased, running the same command again finishes it. Published DP releases are
    not recalled."""
    from flows.privacy_flows import erase_participant
    from flows.settings import pseudonym_key

    try:
        _existing(warehouse)
        if study_folder is not None and not warehouse.resolve().is_relative_to(study_folder.resolve()):
            raise UserError(f"--study-folder {study_folder} must contain the warehouse {warehouse}")
        r = erase_participant(warehouse, participant_id, pseudonym_key(key_file), reason, study_folder=study_folder)
    except FlourishError as exc:
        if json_out:
            typer.echo(json.dumps({"erased": False, "error": sentence(exc)}, indent=2))
        raise
    out = {"erased": True, "erasure_id": r.erasure_id, "rows_deleted": r.rows_deleted, "rows_redacted": r.rows_redacted,
           "files_rewritten": list(r.files_rewritten), "files_deleted": list(r.files_deleted),
           "files_left": list(r.files_left), "compacted": r.compacted, "residual_files": list(r.residual_files),
           "unchecked_files": list(r.unchecked_files), "folders_scanned": list(r.folders_scanned),
           "folders_missing": list(r.folders_missing)}
    typer.echo(json.dumps(out, indent=2) if json_out else "\n".join(_erase_text(r)))
    if r.residual_files:
        raise UserError(f"the byte scan still finds the participant in {', '.join(r.residual_files)}")


def compact(warehouse: WarehouseOpt, json_out: JsonOpt = False) -> None:
    """Rewrite the warehouse file so rows deleted by an erasure leave no bytes behind.

    Run it after an ingest whose batch held consent withdrawals: the ingest erases those participants in the
    batch's transaction, but DuckDB keeps deleted rows' bytes in free blocks until the file is rewritten.
    `flourish erase` compacts by itself. Needs the warehouse to itself for a moment (no running ingest)."""
    from flows.privacy_flows import compact_warehouse

    r = compact_warehouse(_existing(warehouse))
    out = {"warehouse": r.warehouse, "bytes_before": r.bytes_before, "bytes_after": r.bytes_after,
           "erasures_compacted": r.erasures_compacted}
    typer.echo(json.dumps(out, indent=2) if json_out else
               f"compacted {r.warehouse}: {r.bytes_before:,} -> {r.bytes_after:,} bytes; "
               f"{r.erasures_compacted} erasure(s) no longer leave bytes in the file")


def rekey(
    warehouse: WarehouseOpt,
    old_key_file: Annotated[Path, typer.Option("--old-key-file", help="File holding the current key.")],
    new_key_file: Annotated[Path, typer.Option("--new-key-file", help="File holding the new key.")],
    ids_file: Annotated[Path, typer.Option("--ids-file", help="Raw participant ids, one per line, from the "
                                           "recruiting system, INCLUDING withdrawn ones (HMAC cannot be inverted).")],
    json_out: JsonOpt = False,
) -> None:
    """Re-key every pseudonym (all participant tables, tombstones, consent ledger) in one transaction."""
    from flows.privacy_flows import rekey_warehouse
    from privacy.pseudonym import load_key

    _existing(warehouse)
    if not ids_file.is_file():
        raise UserError(f"raw-id file {ids_file} does not exist")
    try:
        ids = ids_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"raw-id file {ids_file} is not UTF-8 text") from None
    r = rekey_warehouse(warehouse, load_key(old_key_file), load_key(new_key_file), ids)
    out = {"rekey_id": r.rekey_id, "old_fingerprint": r.old_fingerprint, "new_fingerprint": r.new_fingerprint,
           "participants": r.participants, "rows_updated": r.rows_updated, "tombstones": r.tombstones_rekeyed}
    typer.echo(json.dumps(out, indent=2) if json_out else
               f"re-keyed {r.participants} participants ({sum(r.rows_updated.values())} rows, "
               f"{r.tombstones_rekeyed} tombstones); key {r.old_fingerprint} -> {r.new_fingerprint}")


FRACTION_HELP = (
    "Share of the study's total privacy budget this release spends (1.0 = all; e.g. 0.25 for an interim release). "
    "With Gaussian noise the budget is counted in rho (zero-concentrated DP, where rho adds up), so this is a share "
    "of rho_total, and a quarter of rho is MORE than a quarter of epsilon (0.25 of a budget of epsilon 4 spends "
    "about epsilon 1.9); with Laplace noise it is a share of epsilon. The command prints the epsilon spent.")


def release(
    study: Annotated[Path, typer.Argument(help="The study protocol YAML.")],
    warehouse: WarehouseOpt,
    fraction: Annotated[float, typer.Option("--fraction", help=FRACTION_HELP)] = 1.0,
    json_out: JsonOpt = False,
) -> None:
    """Make the protocol's standard DP releases (CONSORT counts, score moments and bands, paired moments, a binary
    outcome's counts of events and non-events per arm x follow-up wave, telemetry means) with OpenDP; refused before any budget is reserved if the warehouse has no assignments or no
    scores, and before any noise if the budget does not allow it."""
    from flows.privacy_flows import budget_json, instrument_bounds, release_protocol
    from flows.study import load_study as load_protocol

    protocol = load_protocol(study)
    _existing(warehouse)
    if protocol.privacy is None:
        raise UserError(f"study {protocol.study_id} declares no privacy settings (no budget), so it releases nothing; "
                        "add a `privacy:` section with its epsilon to release")
    typer.echo(f"releasing {protocol.study_id} ({protocol.privacy.mechanism}, fraction {fraction} of the budget "
               f"in {'rho' if protocol.privacy.mechanism == 'gaussian' else 'epsilon'})...", err=True)
    r = release_protocol(protocol, warehouse, outcome_bounds=instrument_bounds(protocol), fraction=fraction)
    study_budget = budget_json(warehouse)[r.study_id]
    out = {"release_id": r.release_id, "study_id": r.study_id, "mechanism": r.mechanism, "privacy_unit": r.unit.kind,
           "rho": r.rho, "epsilon": r.epsilon, "delta": r.delta, "queries": list(r.queries), "values": len(r.rows),
           "suppressed": sum(x.suppressed for x in r.rows), "values_sha256": r.values_sha256,
           "study_epsilon_spent": study_budget["epsilon_spent"], "study_epsilon_total": study_budget["epsilon_total"],
           "public_width_ratio": dict(r.width_ratios)}
    typer.echo(json.dumps(out, indent=2) if json_out else
               f"released {out['values']} values ({out['suppressed']} suppressed) in {len(r.queries)} queries; "
               f"this release: epsilon {r.epsilon:.6g} (delta {r.delta:g}); study: epsilon "
               f"{study_budget['epsilon_spent']:.12g} of {study_budget['epsilon_total']:g} spent; release {r.release_id}")
    if not json_out and r.width_ratios:
        typer.echo("public-tier interval of the long-run effect, width over the same model's on exact statistics: "
                   + "; ".join(f"{o} {v:.2f}x" if isinstance(v, float) else f"{o} {v}"
                               for o, v in r.width_ratios.items()))


def budget_lines(status: dict[str, dict[str, float | int]], details: dict) -> list[str]:
    """The text form of ``budget``, from the same figures as ``--json`` (``details`` adds delta and rho)."""
    lines = []
    for study_id, b in status.items():
        d = details[study_id]
        left = b["epsilon_total"] - b["epsilon_spent"]
        extra = f", rho {d.rho_spent:.12g} of {d.rho_total:.12g}" if d.accounting == "zcdp" else ""
        lines.append(f"{study_id}: epsilon_spent {b['epsilon_spent']:.12g} of epsilon_total {b['epsilon_total']:.12g} "
                     f"({left:.12g} left, delta {d.delta:g}, {d.accounting}{extra}); {b['releases']} "
                     f"release{'' if b['releases'] == 1 else 's'}")
    return lines


def budget(warehouse: WarehouseOpt, json_out: JsonOpt = False) -> None:
    """Privacy budget per study, in epsilon: total, spent, left and number of releases (the text and --json print
    the same figures)."""
    from flows.privacy_flows import budget as budget_status
    from flows.privacy_flows import budget_json

    status = budget_json(_existing(warehouse))
    if json_out:
        typer.echo(json.dumps(status))
        return
    if not status:
        typer.echo("no releases yet")
    for line in budget_lines(status, budget_status(warehouse)):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    consent_app.command("status")(one_sentence(consent_status_cmd))
    consent_app.command("sync")(one_sentence(consent_sync_cmd))
    app.add_typer(consent_app, name="consent")
    app.command("erase")(one_sentence(erase))
    app.command("compact")(one_sentence(compact))
    app.command("rekey")(one_sentence(rekey))
    app.command("release")(one_sentence(release))
    app.command("budget")(one_sentence(budget))
