"""Erasure (GDPR Art. 17): remove one participant from every table, derived file and cache, and prove it.

What erasure does, in order (``flows/privacy_flows.py`` runs the whole sequence):

1. ``erase_rows`` (one transaction): DELETE the participant's rows from every table with a ``participant``
   column (the caller passes ``schemas.warehouse.participant_tables``, so tables added later are covered),
   except ``tombstones`` and the consent ledger; replace the pseudonym by ``[erased]`` inside text columns
   of other tables (e.g. a JSON payload); redact the consent ledger (privacy/consent.py keeps its chain
   verifiable); write a tombstone; log the erasure.
2. ``scrub_files``: every file under the study's folder (Parquet exports, JSONL/CSV landing and quarantine
   files, cached results) that contains the pseudonym or the raw id: text files lose the matching lines,
   Parquet files are rewritten without the matching rows, other DuckDB files get step 1 and 3, anything
   else (opaque caches) is deleted, since a cache can be recomputed but cannot be edited safely.
3. ``compact_database``: DuckDB leaves deleted bytes in free blocks and the WAL, so a byte scan of the file
   would still find the pseudonym after DELETE + CHECKPOINT (measured). The file is copied into a fresh one
   (``COPY FROM DATABASE``) and atomically swapped in.
4. ``scan_bytes``: the proof, a byte scan of every file under the folder for the pseudonym and raw id.

What is kept, and why
---------------------
* The tombstone stores ``tombstone_token(pseudonym) = sha256('flourish-tombstone-v1:' || pseudonym)``, a
  one-way token, not the pseudonym: it is the minimum needed to refuse the participant's late data (ingest
  compares ``tombstone_token(participant)``, a SQL macro of migration 0020). Anyone who can compute the
  pseudonym (holds the key and the raw id) can confirm the tombstone; nobody else learns anything.
* The erasure log keeps NO identifier, not even a salted hash: a salted hash stored next to its salt is
  as confirmable as the tombstone and adds nothing; counts per table and file, time and reason are enough
  to audit that erasures happen. ``erasure_id`` is the receipt given to the requester.
* DP releases already published are not recalled: their guarantee already bounds what they reveal about
  any one participant (see privacy/STATEMENT.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from privacy.consent import redact_participant
from schemas.sqltext import ident

TOMBSTONE_PREFIX = "flourish-tombstone-v1:"
ERASED = "[erased]"
SPECIAL_TABLES = ("tombstones", "consent_ledger", "erasure_log")
# Tables whose rows are accounting, not personal data: erasure strips the identifier and payload and keeps
# the row, so "rows read = stored + quarantined" still adds up for every batch after an erasure.
KEEP_REDACTED = {"quarantine": "participant = NULL, payload = NULL"}
TEXT_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".txt", ".log")
PARQUET_SUFFIXES = (".parquet", ".pq")
DUCKDB_SUFFIXES = (".duckdb", ".db")


def tombstone_token(pseudonym: str) -> str:
    """What ``tombstones.participant`` stores for an erased pseudonym (equals the SQL macro of the same name)."""
    return hashlib.sha256((TOMBSTONE_PREFIX + pseudonym).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ErasureReceipt:
    erasure_id: str
    erased_at: datetime
    reason: str
    rows_deleted: dict[str, int]
    rows_redacted: dict[str, int]
    files_rewritten: tuple[str, ...] = ()
    files_deleted: tuple[str, ...] = ()
    residual_files: tuple[str, ...] = ()   # files that still contain a needle after scrubbing (should be empty)
    compacted: bool = False

    @property
    def total_deleted(self) -> int:
        return sum(self.rows_deleted.values())


def _text_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
        "AND data_type = 'VARCHAR' AND column_name <> 'participant'", [table]).fetchall()]


def _all_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' "
        "ORDER BY 1").fetchall()]


def erase_rows(
    con: duckdb.DuckDBPyConnection,
    pseudonym: str,
    reason: str,
    *,
    participant_tables: Sequence[str],
    in_transaction: bool = False,
) -> ErasureReceipt:
    """Step 1: delete, redact, tombstone and log, in one transaction (the caller's when ``in_transaction``)."""
    if not pseudonym or len(pseudonym) < 16:
        raise ValueError("erase_rows needs the participant's pseudonym (64 hex characters), not an empty string")
    if not reason:
        raise ValueError("an erasure needs a reason (e.g. 'withdrawn', 'erasure_request')")
    if not in_transaction:
        con.execute("BEGIN TRANSACTION")
    try:
        deleted: dict[str, int] = {}
        redacted: dict[str, int] = {}
        for table in participant_tables:
            if table in SPECIAL_TABLES:
                continue
            n = con.execute(f"SELECT count(*) FROM {ident(table)} WHERE participant = ?", [pseudonym]).fetchone()[0]
            if n and table in KEEP_REDACTED:
                con.execute(f"UPDATE {ident(table)} SET {KEEP_REDACTED[table]} WHERE participant = ?", [pseudonym])
                redacted[table] = int(n)
            elif n:
                con.execute(f"DELETE FROM {ident(table)} WHERE participant = ?", [pseudonym])
                deleted[table] = int(n)
        for table in _all_tables(con):
            if table in SPECIAL_TABLES:
                continue
            for col in _text_columns(con, table):
                n = con.execute(f"SELECT count(*) FROM {ident(table)} WHERE contains({ident(col)}, ?)", [pseudonym]).fetchone()[0]
                if n:
                    con.execute(f"UPDATE {ident(table)} SET {ident(col)} = replace({ident(col)}, ?, ?) WHERE contains({ident(col)}, ?)",
                                [pseudonym, ERASED, pseudonym])
                    redacted[f"{table}.{col}"] = int(n)
        n = redact_participant(con, pseudonym)
        if n:
            redacted["consent_ledger"] = n
        now = datetime.now(UTC)
        con.execute("INSERT INTO tombstones VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [tombstone_token(pseudonym), now, reason])
        erasure_id = f"erasure-{uuid.uuid4().hex[:16]}"
        con.execute("INSERT INTO erasure_log VALUES (?,?,?,?,?,?)",
                    [erasure_id, now, reason, sum(deleted.values()), sum(redacted.values()),
                     json.dumps({"rows_deleted": deleted, "rows_redacted": redacted}, sort_keys=True)])
        if not in_transaction:
            con.execute("COMMIT")
    except BaseException:
        if not in_transaction:
            con.execute("ROLLBACK")
        raise
    return ErasureReceipt(erasure_id, now, reason, deleted, redacted)


def record_file_scrub(con: duckdb.DuckDBPyConnection, receipt: ErasureReceipt) -> None:
    """Add the file counts (names relative to the study folder, no identifiers) to the erasure's log row."""
    detail = json.loads(con.execute("SELECT detail FROM erasure_log WHERE erasure_id = ?",
                                    [receipt.erasure_id]).fetchone()[0])
    detail.update(files_rewritten=list(receipt.files_rewritten), files_deleted=list(receipt.files_deleted),
                  compacted=receipt.compacted)
    con.execute("UPDATE erasure_log SET detail = ? WHERE erasure_id = ?", [json.dumps(detail, sort_keys=True),
                                                                         receipt.erasure_id])


# ---------------------------------------------------------------------------------------------------------
# Files

def _raw_pattern(raw_id: str) -> re.Pattern[bytes]:
    """The raw id as a whole token (so erasing 'p1' does not touch 'p10')."""
    return re.compile(rb"(?<![A-Za-z0-9_\-])" + re.escape(raw_id.encode("utf-8")) + rb"(?![A-Za-z0-9_\-])")


@dataclass(frozen=True)
class Needles:
    pseudonym: str
    raw_id: str | None = None

    def in_bytes(self, data: bytes) -> bool:
        if self.pseudonym.encode() in data:
            return True
        return bool(self.raw_id) and _raw_pattern(self.raw_id).search(data) is not None

    def in_line(self, line: bytes) -> bool:
        if self.in_bytes(line):
            return True
        if b"raw_base64" in line:  # ingest's quarantine files keep unreadable rows base64-encoded
            try:
                import base64

                obj = json.loads(line)
                return self.in_bytes(base64.b64decode(obj.get("raw_base64") or ""))
            except (ValueError, AttributeError):
                return False
        return False


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".erase-tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, path.stat().st_mode & 0o777)
    tmp.replace(path)


def _scrub_text(path: Path, needles: Needles) -> bool:
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    kept = [ln for ln in lines if not needles.in_line(ln)]
    if len(kept) == len(lines):
        return False
    _atomic_write(path, b"".join(kept))
    return True


def _scrub_parquet(path: Path, needles: Needles) -> None:
    cond = "contains(CAST(t AS VARCHAR), $pseudo)"
    params: dict[str, str] = {"pseudo": needles.pseudonym}
    if needles.raw_id:
        cond += " OR regexp_matches(CAST(t AS VARCHAR), $raw)"
        params["raw"] = r"(^|[^A-Za-z0-9_\-])" + re.escape(needles.raw_id) + r"($|[^A-Za-z0-9_\-])"
    tmp = path.with_name(path.name + ".erase-tmp")
    con = duckdb.connect()
    try:
        params["src"] = str(path)
        con.execute(f"COPY (SELECT * FROM read_parquet($src) t WHERE NOT ({cond})) TO '{tmp}' (FORMAT parquet)",
                    params)
    finally:
        con.close()
    tmp.replace(path)


def compact_database(path: str | Path) -> None:
    """Rewrite a DuckDB file so freed blocks and the WAL (which keep deleted bytes) are gone; atomic swap.

    Holds the file's write lock while copying (no one can write meanwhile), then swaps the copy in. A
    process that opens the file in the microseconds between close and swap would write to the replaced
    file: run erasure when no pipeline writes (it is an administrative operation).
    """
    p = Path(path)
    tmp = p.with_name(p.name + ".compact-tmp")
    for f in (tmp, Path(str(tmp) + ".wal")):
        if f.exists():
            f.unlink()
    con = duckdb.connect(str(p))
    try:
        con.execute("CHECKPOINT")
        src = con.execute("SELECT current_database()").fetchone()[0]
        con.execute(f"ATTACH '{tmp}' AS flourish_compact")
        con.execute(f"COPY FROM DATABASE {ident(src)} TO flourish_compact")
        con.execute("DETACH flourish_compact")
    finally:
        con.close()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(p)
    wal = Path(str(p) + ".wal")
    if wal.exists():
        wal.unlink()


def _scrub_other_duckdb(path: Path, needles: Needles, reason: str) -> None:
    con = duckdb.connect(str(path))
    try:
        tables = [r[0] for r in con.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema='main' "
            "AND column_name='participant'").fetchall()]
        con.execute("BEGIN TRANSACTION")
        for t in tables:
            con.execute(f"DELETE FROM {ident(t)} WHERE participant = ?", [needles.pseudonym])
        for t in _all_tables(con):
            for col in _text_columns(con, t):
                con.execute(f"UPDATE {ident(t)} SET {ident(col)} = replace({ident(col)}, ?, ?) WHERE contains({ident(col)}, ?)",
                            [needles.pseudonym, ERASED, needles.pseudonym])
        con.execute("COMMIT")
    finally:
        con.close()
    compact_database(path)


def iter_files(folder: Path) -> Iterable[Path]:
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            yield Path(root) / name


def scrub_files(folder: str | Path, needles: Needles, *, skip: Iterable[str | Path] = (),
                reason: str = "erasure", on_rewrite: Callable[[str, str], None] | None = None
                ) -> tuple[list[str], list[str]]:
    """Step 2: remove the participant from every file under ``folder`` except ``skip``; (rewritten, deleted).

    ``on_rewrite(sha256_before, sha256_after)`` hears of each file rewritten (the ingest records it, so it does
    not read a scrubbed landing file again as new input)."""
    base = Path(folder)
    skipped = {Path(s).resolve() for s in skip}
    rewritten: list[str] = []
    deleted: list[str] = []
    for path in iter_files(base):
        rp = path.resolve()
        if rp in skipped or path.name.endswith((".erase-tmp", ".compact-tmp")):
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not needles.in_bytes(data) and not (b"raw_base64" in data and path.suffix in TEXT_SUFFIXES):
            continue
        rel = str(path.relative_to(base))
        name = path.name.lower()
        if name.endswith(TEXT_SUFFIXES):
            if _scrub_text(path, needles):
                rewritten.append(rel)
        elif name.endswith(PARQUET_SUFFIXES):
            _scrub_parquet(path, needles)
            rewritten.append(rel)
        elif name.endswith(DUCKDB_SUFFIXES):
            _scrub_other_duckdb(path, needles, reason)
            rewritten.append(rel)
        else:
            path.unlink()
            deleted.append(rel)
            continue
        after = path.read_bytes()
        if needles.in_bytes(after):  # a format we could not clean (e.g. stats in a footer)
            path.unlink()
            rewritten.remove(rel)
            deleted.append(rel)
        elif on_rewrite is not None and rel in rewritten:
            on_rewrite(hashlib.sha256(data).hexdigest(), hashlib.sha256(after).hexdigest())
    return rewritten, deleted


def scan_bytes(folder: str | Path, needles: Needles) -> list[str]:
    """Step 4, the proof: files under ``folder`` whose bytes still contain the pseudonym or raw id."""
    base = Path(folder)
    return [str(p.relative_to(base)) for p in iter_files(base) if needles.in_bytes(p.read_bytes())]


# Participants with a consent withdrawal and no tombstone yet: erase_withdrawn erases them, and the
# ingest withholds their newly accepted rows (flows/ingest/batch.py).
WITHDRAWN_NOT_ERASED = """SELECT DISTINCT participant FROM consents WHERE withdrawn_at IS NOT NULL
    AND tombstone_token(participant) NOT IN (SELECT participant FROM tombstones)"""


def erase_withdrawn(
    con: duckdb.DuckDBPyConnection, reason: str = "withdrawn", withheld: Mapping[str, int] | None = None
) -> ErasureReceipt | None:
    """Erase, in the caller's transaction, every participant with a withdrawal in ``consents`` and no tombstone yet.

    The ingest calls this at the end of a batch, so a withdrawal and the erasure it triggers commit together
    (DESIGN.md: withdrawal erases the participant and leaves a tombstone). Set-based (one statement per
    table for all of the batch's withdrawals), unlike ``erase_rows`` which serves one erasure request. The
    warehouse file keeps the deleted bytes in free blocks until ``compact_database`` runs (``flourish erase``
    and ``flourish compact`` do); files under the study folder are scrubbed by ``flourish erase`` only.
    ``withheld`` counts, per table, rows of these participants that the caller's batch accepted but never
    inserted (the ingest withholds them rather than insert then delete); they count as deleted.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE withdrawn_now AS {WITHDRAWN_NOT_ERASED}")
    pseudonyms = [r[0] for r in con.execute("SELECT participant FROM withdrawn_now").fetchall()]
    if not pseudonyms:
        return None
    from schemas.warehouse import participant_tables

    deleted: dict[str, int] = {}
    redacted: dict[str, int] = {}
    for table in participant_tables(con):
        if table in SPECIAL_TABLES:
            continue
        n = con.execute(f"SELECT count(*) FROM {ident(table)} WHERE participant IN (SELECT participant FROM withdrawn_now)"
                        ).fetchone()[0]
        if not n:
            continue
        if table in KEEP_REDACTED:
            con.execute(f"UPDATE {ident(table)} SET {KEEP_REDACTED[table]} "
                        "WHERE participant IN (SELECT participant FROM withdrawn_now)")
            redacted[table] = int(n)
        else:
            con.execute(f"DELETE FROM {ident(table)} WHERE participant IN (SELECT participant FROM withdrawn_now)")
            deleted[table] = int(n)
    for table, n in (withheld or {}).items():
        if n:
            deleted[table] = deleted.get(table, 0) + int(n)
    ledger = 0
    if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'consent_ledger'").fetchone()[0]:
        ledger = con.execute("SELECT count(*) FROM consent_ledger WHERE participant IN "
                             "(SELECT participant FROM withdrawn_now)").fetchone()[0]
        con.execute("UPDATE consent_ledger SET participant = NULL, subject_salt = NULL, redacted = true "
                    "WHERE participant IN (SELECT participant FROM withdrawn_now)")
    if ledger:
        redacted["consent_ledger"] = int(ledger)
    now = datetime.now(UTC)
    con.execute("INSERT INTO tombstones SELECT tombstone_token(participant), ?, ? FROM withdrawn_now "
                "ON CONFLICT DO NOTHING", [now, reason])
    erasure_id = f"erasure-{uuid.uuid4().hex[:16]}"
    detail = {"rows_deleted": deleted, "rows_redacted": redacted, "participants": len(pseudonyms),
              "trigger": "consent withdrawal at ingest"}
    con.execute("INSERT INTO erasure_log VALUES (?,?,?,?,?,?)",
                [erasure_id, now, reason, sum(deleted.values()), sum(redacted.values()), json.dumps(detail, sort_keys=True)])
    con.execute("DROP TABLE withdrawn_now")
    return ErasureReceipt(erasure_id, now, reason, deleted, redacted)
