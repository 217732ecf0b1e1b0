"""Erasure (GDPR Art. 17): remove participants from every table, derived file and cache, and prove it.

One set-based core, two ways in
-------------------------------
``_erase_set`` erases every pseudonym in the temporary table ``_erasure_set``, in the caller's transaction:

1. record the participants' consents in the consent ledger first (``privacy.consent.sync_from_consents``), so a
   withdrawal that arrives with the data it withdraws still reaches the ledger before the rows go;
2. DELETE their rows from every table with a ``participant`` column (``schemas.warehouse.participant_tables``,
   so tables added later are covered), except ``tombstones``, the consent ledger and the erasure log; the
   quarantine keeps its rows for reconciliation with identifier and payload stripped;
3. replace the pseudonym by ``[erased]`` inside every other text column of every warehouse table (e.g. a JSON
   payload); a column whose longest value is shorter than a pseudonym cannot hold one and is not searched;
4. redact the consent ledger (``privacy.consent.redact_participants`` keeps its chain verifiable);
5. write a tombstone per participant and one erasure-log row.

``erase_rows`` fills the set with one participant (an erasure request); ``erase_withdrawn`` with every participant
whose consent is withdrawn and who has no tombstone yet (the ingest calls it at the end of each batch, in the
batch's transaction). Both therefore have exactly the same coverage.

Files and the warehouse file
----------------------------
``scrub_files``: every file under the study's folder (Parquet exports, JSONL/CSV landing and quarantine files,
cached results) that contains the pseudonym or the raw id: text files lose the matching lines, Parquet files
are rewritten without the matching rows, other DuckDB files get the row steps and compaction, anything else
(opaque caches) is deleted, since a cache can be recomputed but cannot be edited safely. ``compact_database``:
DuckDB leaves deleted bytes in free blocks and the WAL, so a byte scan of the file would still find the
pseudonym after DELETE + CHECKPOINT (measured); the file is copied into a fresh one (``COPY FROM DATABASE``)
and atomically swapped in. ``scan_bytes``: the proof, a byte scan of every file under the folder.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from privacy.consent import redact_participants, sync_from_consents
from privacy.errors import PrivacyError
from schemas.sqltext import ident
from schemas.warehouse import participant_tables, table_names, transaction

TOMBSTONE_PREFIX = "flourish-tombstone-v1:"
ERASED = "[erased]"
SPECIAL_TABLES = ("tombstones", "consent_ledger", "erasure_log")
# Tables whose rows are accounting, not personal data: erasure strips the identifier and payload and keeps
# the row, so "rows read = stored + quarantined" still adds up for every batch after an erasure.
KEEP_REDACTED = {"quarantine": "participant = NULL, payload = NULL"}
PSEUDONYM = re.compile(r"[0-9a-f]{64}")
# The temporary table the core reads: the pseudonyms being erased.
_SET = "_erasure_set"

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
    participants: int = 1
    files_rewritten: tuple[str, ...] = ()
    files_deleted: tuple[str, ...] = ()
    residual_files: tuple[str, ...] = ()   # files that still contain a needle after scrubbing (should be empty)
    compacted: bool = False

    @property
    def total_deleted(self) -> int:
        return sum(self.rows_deleted.values())


def text_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The VARCHAR columns of a warehouse table other than ``participant``: where a pseudonym may sit as text."""
    return [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' "
        "AND table_catalog = current_database() AND table_name = ? AND data_type = 'VARCHAR' "
        "AND column_name <> 'participant' ORDER BY ordinal_position", [table]).fetchall()]


# ---------------------------------------------------------------------------------------------------------
# Rows: one set-based core

def _redact_embedded(con: duckdb.DuckDBPyConnection, pseudonyms: Sequence[str]) -> dict[str, int]:
    """Step 3: every pseudonym of the set, inside any text column of any warehouse table, becomes ``[erased]``."""
    pattern = "|".join(re.escape(p) for p in sorted(pseudonyms))
    shortest = min(len(p) for p in pseudonyms)
    redacted: dict[str, int] = {}
    for table in table_names(con):
        if table in SPECIAL_TABLES:
            continue
        columns = text_columns(con, table)
        if not columns:
            continue
        # one scan for the longest value of each column: most text columns (ids, names) are shorter than a
        # pseudonym and cannot hold one, so the search below runs only where it can find something
        longest = con.execute(f"SELECT {', '.join(f'max(strlen({ident(c)}))' for c in columns)} "
                              f"FROM {ident(table)}").fetchone()
        for column, length in zip(columns, longest, strict=True):
            if length is None or length < shortest:
                continue
            n = con.execute(f"SELECT count(*) FROM {ident(table)} WHERE regexp_matches({ident(column)}, ?)",
                            [pattern]).fetchone()[0]
            if n:
                con.execute(f"UPDATE {ident(table)} SET {ident(column)} = regexp_replace({ident(column)}, ?, ?, 'g') "
                            f"WHERE regexp_matches({ident(column)}, ?)", [pattern, ERASED, pattern])
                redacted[f"{table}.{column}"] = int(n)
    return redacted


def _erase_set(con: duckdb.DuckDBPyConnection, reason: str, trigger: str,
               withheld: Mapping[str, int] | None = None) -> ErasureReceipt:
    """Steps 1-5 of the module docstring for every pseudonym in ``_erasure_set``; the caller holds the transaction."""
    pseudonyms = [r[0] for r in con.execute(f"SELECT participant FROM {_SET} ORDER BY 1").fetchall()]
    sync_from_consents(con, participants=pseudonyms, in_transaction=True)
    in_set = f"participant IN (SELECT participant FROM {_SET})"
    deleted: dict[str, int] = {}
    redacted: dict[str, int] = {}
    for table in participant_tables(con):
        if table in SPECIAL_TABLES:
            continue
        n = con.execute(f"SELECT count(*) FROM {ident(table)} WHERE {in_set}").fetchone()[0]
        if n and table in KEEP_REDACTED:
            con.execute(f"UPDATE {ident(table)} SET {KEEP_REDACTED[table]} WHERE {in_set}")
            redacted[table] = int(n)
        elif n:
            con.execute(f"DELETE FROM {ident(table)} WHERE {in_set}")
            deleted[table] = int(n)
    for table, n in (withheld or {}).items():
        if n:
            deleted[table] = deleted.get(table, 0) + int(n)
    redacted.update(_redact_embedded(con, pseudonyms))
    ledger = redact_participants(con, pseudonyms)
    if ledger:
        redacted["consent_ledger"] = ledger
    now = datetime.now(UTC)
    con.execute(f"INSERT INTO tombstones SELECT tombstone_token(participant), ?, ? FROM {_SET} "
                "ON CONFLICT DO NOTHING", [now, reason])
    erasure_id = f"erasure-{uuid.uuid4().hex[:16]}"
    detail = {"rows_deleted": deleted, "rows_redacted": redacted, "participants": len(pseudonyms), "trigger": trigger}
    con.execute("INSERT INTO erasure_log (erasure_id, erased_at, reason, rows_deleted, rows_redacted, detail) "
                "VALUES (?,?,?,?,?,?)",
                [erasure_id, now, reason, sum(deleted.values()), sum(redacted.values()),
                 json.dumps(detail, sort_keys=True)])
    con.execute(f"DROP TABLE {_SET}")
    return ErasureReceipt(erasure_id, now, reason, deleted, redacted, participants=len(pseudonyms))


def _check_reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise PrivacyError("an erasure needs a reason (e.g. 'withdrawn', 'erasure_request')")
    return reason


def erase_rows(con: duckdb.DuckDBPyConnection, pseudonym: str, reason: str, *,
               in_transaction: bool = False) -> ErasureReceipt:
    """Erase one participant's rows (steps 1-5), in one transaction (the caller's when ``in_transaction``)."""
    if not isinstance(pseudonym, str) or not PSEUDONYM.fullmatch(pseudonym):
        raise PrivacyError("an erasure needs the participant's pseudonym (64 lowercase hex characters)")
    _check_reason(reason)

    def run() -> ErasureReceipt:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_SET} (participant VARCHAR PRIMARY KEY)")
        con.execute(f"INSERT INTO {_SET} VALUES (?)", [pseudonym])
        return _erase_set(con, reason, "erasure request")

    if in_transaction:
        return run()
    with transaction(con):
        return run()


# Participants with a consent withdrawal and no tombstone yet: erase_withdrawn erases them, and the
# ingest withholds their newly accepted rows (flows/ingest/batch.py).
WITHDRAWN_NOT_ERASED = """SELECT DISTINCT participant FROM consents WHERE withdrawn_at IS NOT NULL
    AND tombstone_token(participant) NOT IN (SELECT participant FROM tombstones)"""


def erase_withdrawn(
    con: duckdb.DuckDBPyConnection, reason: str = "withdrawn", withheld: Mapping[str, int] | None = None
) -> ErasureReceipt | None:
    """The privacy step at the end of an ingest batch, in the batch's transaction: record every consent of the
    batch in the consent ledger, then erase every participant with a withdrawal and no tombstone yet.

    So a withdrawal and the erasure it triggers commit together with the batch (DESIGN.md: withdrawal erases the
    participant and leaves a tombstone), and the ledger holds the withdrawal (redacted) and every grant; it is
    written here and by nothing that only reads it (``consent status`` is read-only). The erasure is the same
    set-based core as ``erase_rows``. The warehouse file keeps the deleted bytes in free blocks until
    ``compact_database`` runs (``flourish erase``); the landing files keep the withdrawn
    participants' raw rows until ``flourish erase ID`` scrubs them (the ingest cannot rewrite files it is reading).
    ``withheld`` counts, per table, rows of these participants that the caller's batch accepted but never
    inserted (the ingest withholds them rather than insert then delete); they count as deleted.
    """
    _check_reason(reason)
    sync_from_consents(con, in_transaction=True)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_SET} AS {WITHDRAWN_NOT_ERASED}")
    if not con.execute(f"SELECT count(*) FROM {_SET}").fetchone()[0]:
        con.execute(f"DROP TABLE {_SET}")
        return None
    return _erase_set(con, reason, "consent withdrawal at ingest", withheld)


def record_file_scrub(con: duckdb.DuckDBPyConnection, receipt: ErasureReceipt) -> None:
    """Add the file counts (file names, no identifiers) to the erasure's log row."""
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
        with transaction(con):
            for t in tables:
                con.execute(f"DELETE FROM {ident(t)} WHERE participant = ?", [needles.pseudonym])
            for t in table_names(con):
                for col in text_columns(con, t):
                    con.execute(f"UPDATE {ident(t)} SET {ident(col)} = replace({ident(col)}, ?, ?) "
                                f"WHERE contains({ident(col)}, ?)", [needles.pseudonym, ERASED, needles.pseudonym])
    finally:
        con.close()
    compact_database(path)


def iter_files(folder: Path) -> Iterable[Path]:
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            yield Path(root) / name


def scrub_files(folder: str | Path, needles: Needles, *, skip: Iterable[str | Path] = (),
                reason: str = "erasure") -> tuple[list[str], list[str]]:
    """Step 2: remove the participant from every file under ``folder`` except ``skip``; (rewritten, deleted)."""
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
        if needles.in_bytes(path.read_bytes()):  # a format we could not clean (e.g. stats in a footer)
            path.unlink()
            rewritten.remove(rel)
            deleted.append(rel)
    return rewritten, deleted


def scan_bytes(folder: str | Path, needles: Needles) -> list[str]:
    """Step 4, the proof: files under ``folder`` whose bytes still contain the pseudonym or raw id."""
    base = Path(folder)
    return [str(p.relative_to(base)) for p in iter_files(base) if needles.in_bytes(p.read_bytes())]


