"""Privacy flows: open the warehouse, call one privacy function, write the result (STYLE.md, habit 2).

Plain functions rather than Prefect flows: erasure, re-keying and releases are administrative commands a
privacy officer runs by hand, and a Prefect ephemeral server costs 20-30 s per process here
(research/stack.md). Wrap them in ``@flow`` where a scheduled pipeline needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb

from flows.warehouse import connect
from schemas.protocol import StudyProtocol
from schemas.warehouse import participant_tables


def _db_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return Path(row[0]) if row and row[0] else None


def erase_participant(
    con_or_path: duckdb.DuckDBPyConnection | str | Path,
    pseudonym: str,
    reason: str = "withdrawn",
    *,
    raw_id: str | None = None,
    study_folder: str | Path | None = None,
    in_transaction: bool = False,
    scrub: bool = True,
):
    """Erase one participant everywhere under the warehouse's folder; return an ErasureReceipt.

    With a path: rows, files, compaction and the byte-scan proof (``receipt.residual_files`` lists any file
    still holding the pseudonym or raw id: it should be empty). With an open connection (ingest, when a
    consent record with ``withdrawn_at`` lands; pass ``in_transaction=True`` inside its batch transaction):
    rows and files only, ``receipt.compacted`` is False and the caller runs ``compact_warehouse(path)``
    after closing its connection, since DuckDB keeps deleted bytes in free blocks until then. Inside a batch
    whose landing files are still being read, pass ``scrub=False`` and call the path form (or
    ``compact_warehouse`` plus this function with ``scrub=True``) after the batch commits, so the files of the
    running batch are not rewritten under it.
    """
    from flows.ingest import record_rewrites
    from privacy.erasure import Needles, compact_database, erase_rows, record_file_scrub, scan_bytes, scrub_files

    needles = Needles(pseudonym, raw_id)
    if isinstance(con_or_path, duckdb.DuckDBPyConnection):
        con = con_or_path
        receipt = erase_rows(con, pseudonym, reason, participant_tables=participant_tables(con),
                             in_transaction=in_transaction)
        db = _db_path(con)
        folder = Path(study_folder) if study_folder else (db.parent if db else None)
        if folder is not None and scrub:
            skip = [db, Path(str(db) + ".wal")] if db else []
            rewrites: list[tuple[str, str]] = []
            rewritten, deleted = scrub_files(folder, needles, skip=skip, reason=reason,
                                             on_rewrite=lambda a, b: rewrites.append((a, b)))
            receipt = replace(receipt, files_rewritten=tuple(rewritten), files_deleted=tuple(deleted))
            record_file_scrub(con, receipt)
            record_rewrites(con, rewrites, reason)
        return receipt

    db = Path(con_or_path)
    con = connect(db)
    try:
        receipt = erase_rows(con, pseudonym, reason, participant_tables=participant_tables(con))
    finally:
        con.close()
    folder = Path(study_folder) if study_folder else db.parent
    rewrites: list[tuple[str, str]] = []
    rewritten, deleted = scrub_files(folder, needles, skip=[db, Path(str(db) + ".wal")], reason=reason,
                                     on_rewrite=lambda a, b: rewrites.append((a, b)))
    receipt = replace(receipt, files_rewritten=tuple(rewritten), files_deleted=tuple(deleted), compacted=True)
    con = connect(db)
    try:
        record_file_scrub(con, receipt)
        record_rewrites(con, rewrites, reason)
    finally:
        con.close()
    compact_database(db)
    return replace(receipt, residual_files=tuple(scan_bytes(folder, needles)))


def compact_warehouse(path: str | Path) -> None:
    """Rewrite the warehouse so deleted rows leave no bytes behind (after an erasure inside ingest)."""
    from privacy.erasure import compact_database

    connect(path).close()  # waits for another process's lock, applies migrations
    compact_database(path)


def rekey_warehouse(path: str | Path, old_key: bytes, new_key: bytes, raw_ids: list[str]):
    """Re-key every participant table in one transaction, then compact so old pseudonyms leave no bytes."""
    from privacy.erasure import compact_database
    from privacy.rekey import rekey

    con = connect(path)
    try:
        report = rekey(con, old_key, new_key, raw_ids, participant_tables=participant_tables(con))
    finally:
        con.close()
    compact_database(path)
    return report


def release_protocol(protocol: Any, warehouse: str | Path, *, outcome_bounds: Mapping[str, Any] | None = None,
                     fraction: float = 1.0):
    """The protocol's standard DP releases, written to ``releases``/``release_values``, spend in the ledger."""
    from privacy.release import release_standard_set

    con = connect(warehouse)
    try:
        return release_standard_set(con, protocol, outcome_bounds=outcome_bounds, fraction=fraction)
    finally:
        con.close()


def instrument_bounds(protocol: StudyProtocol) -> dict[str, Bounds]:
    """Public clipping bounds of every instrument-scored outcome: the score's range from the shipped instrument
    definition (``Instrument.score_range``), unless the protocol declares both bounds itself.

    These bounds are public information in the DP sense (they come from the instrument's published scale, not
    from the data), which is why they may set the sensitivity of a release."""
    import instruments
    from privacy.release import Bounds

    out: dict[str, Bounds] = {}
    for o in protocol.outcomes:
        if o.instrument is None or (o.lower_bound is not None and o.upper_bound is not None):
            continue
        inst = instruments.load(o.instrument)
        lower, upper = inst.score_range(o.name.split(".", 1)[1])
        out[o.name] = Bounds(lower, upper, o.name)
    return out


def budget(warehouse: str | Path) -> dict[str, Any]:
    from privacy.budget import budget_status

    con = connect(warehouse)
    try:
        return budget_status(con)
    finally:
        con.close()


def consent_status(warehouse: str | Path, *, sync: bool = True) -> dict[str, Any]:
    """Status of the consent ledger; with ``sync``, first append entries for consents ingested since."""
    from privacy.consent import consent_status as status
    from privacy.consent import sync_from_consents

    con = connect(warehouse)
    try:
        if sync:
            sync_from_consents(con)
        return status(con)
    finally:
        con.close()


__all__ = ["erase_participant", "instrument_bounds", "compact_warehouse", "rekey_warehouse", "release_protocol", "budget",
           "consent_status"]
