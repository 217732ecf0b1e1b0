"""Erasure (GDPR Art. 17): remove participants from every table of the warehouse, and from its file's bytes.

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

The warehouse file and other files
----------------------------------
Rows deleted from DuckDB leave their bytes in free blocks and the WAL (measured), so ``compact_database``
rewrites the file (``COPY FROM DATABASE`` into a fresh file, atomically swapped in; its path is a bound
parameter). Files that hold the participant (landing, quarantine and derived files) are
``privacy/scrub.py``'s: planned before the rows are erased, rewritten after, and byte-scanned as the proof.

What is kept, and why
---------------------
* The tombstone stores ``tombstone_token(pseudonym) = sha256('flourish-tombstone-v1:' || pseudonym)``, a
  one-way token, not the pseudonym: it is the minimum needed to refuse the participant's late data (ingest
  compares ``tombstone_token(participant)``, a SQL macro of migration 0020). Anyone who can compute the
  pseudonym (holds the key and the raw id) can confirm the tombstone; nobody else learns anything.
* The erasure log keeps NO identifier, not even a salted hash: a salted hash stored next to its salt is
  as confirmable as the tombstone and adds nothing; counts per table and file, time and reason are enough
  to audit that erasures happen. ``erasure_id`` is the receipt given to the requester; ``compacted_at`` says
  when the warehouse file was last rewritten after it (``flourish compact``).
* DP releases already published are not recalled: their guarantee already bounds what they reveal about
  any one participant (see privacy/STATEMENT.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb

from privacy.consent import redact_participants, sync_from_consents
from privacy.errors import PrivacyError
from schemas.sqltext import ident, literal
from schemas.warehouse import participant_tables, table_names, transaction

TOMBSTONE_PREFIX = "flourish-tombstone-v1:"
ERASED = "[erased]"
SPECIAL_TABLES = ("tombstones", "consent_ledger", "erasure_log")
# Tables whose rows are accounting, not personal data: erasure strips the identifier and payload and keeps
# the row, so "rows read = stored + quarantined" still adds up for every batch after an erasure.
KEEP_REDACTED = {"quarantine": "participant = NULL, payload = NULL"}
PSEUDONYM_RUN = "[0-9a-f]{64}"
"""The form of a pseudonym (64 lowercase hex characters), as a regular expression."""
PSEUDONYM = re.compile(PSEUDONYM_RUN)
# The temporary table the core reads: the pseudonyms being erased.
_SET = "_erasure_set"


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
    files_left: tuple[str, ...] = ()       # source files holding the participant that no scrubber can edit
    residual_files: tuple[str, ...] = ()   # files that still contain a needle after scrubbing (should be empty)
    unchecked_files: tuple[str, ...] = ()  # files the byte scan could not read: not proven clean
    folders_scanned: tuple[str, ...] = ()
    folders_missing: tuple[str, ...] = ()  # landing folders an ingest recorded that are no longer there
    compacted: bool = False

    @property
    def total_deleted(self) -> int:
        return sum(self.rows_deleted.values())


def text_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The VARCHAR columns of a warehouse table other than ``participant``: where a pseudonym may sit as text."""
    return _text_columns_by_table(con).get(table, [])


def _text_columns_by_table(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for table, column in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main' "
            "AND table_catalog = current_database() AND data_type = 'VARCHAR' AND column_name <> 'participant' "
            "ORDER BY table_name, ordinal_position").fetchall():
        out.setdefault(table, []).append(column)
    return out


# ---------------------------------------------------------------------------------------------------------
# Rows: one set-based core

# A text without a run of PSEUDONYM_RUN cannot hold a pseudonym. This one small pattern is the cheap first filter;
# the exact search (each pseudonym of the set, as a substring) runs on what passes it.


def _redact_embedded(con: duckdb.DuckDBPyConnection, pseudonyms: Sequence[str]) -> dict[str, int]:
    """Step 3: every pseudonym of the set, inside any text column of any warehouse table, becomes ``[erased]``.

    Set-based: per column, one scan finds the rows holding any pseudonym of ``_erasure_set`` (a join on
    ``contains``, after the hex-run filter); only those rows are rewritten. A regular expression of the whole
    set was tried first and measured at 0.7 s on 10,000 short rows for 345 pseudonyms (RE2 on a long
    alternation), against milliseconds here."""
    hex_only = all(PSEUDONYM.fullmatch(p) for p in pseudonyms)
    shortest = min(len(p) for p in pseudonyms)
    redacted: dict[str, int] = {}
    by_table = _text_columns_by_table(con)
    for table in table_names(con):
        columns = by_table.get(table, [])
        if table in SPECIAL_TABLES or not columns:
            continue
        # the longest value of each column, from the statistics DuckDB keeps for its optimizer (an upper bound,
        # rows of the open transaction included; no scan): most text columns (ids, names) are shorter than a
        # pseudonym and cannot hold one, so the search below runs only where it can find something
        stats = con.execute(f"SELECT {', '.join(f'stats({ident(c)})' for c in columns)} "
                            f"FROM {ident(table)} LIMIT 1").fetchall()
        if not stats:
            continue  # an empty table
        for column, column_stats in zip(columns, stats[0], strict=True):
            length = column_stats.get("max_string_length") if isinstance(column_stats, dict) else None
            if length is not None and length < shortest:
                continue
            col = ident(column)
            if hex_only:  # a value as long as a pseudonym holds one only by being it: a hash join finds those
                hits = con.execute(
                    f"SELECT t.rowid, t.{col} FROM {ident(table)} t WHERE strlen(t.{col}) = 64 "
                    f"AND t.{col} IN (SELECT participant FROM {_SET}) "
                    f"UNION ALL SELECT t.rowid, t.{col} FROM {ident(table)} t WHERE strlen(t.{col}) > 64 "
                    f"AND regexp_matches(t.{col}, {literal(PSEUDONYM_RUN)}) "
                    f"AND EXISTS (SELECT 1 FROM {_SET} s WHERE contains(t.{col}, s.participant))").fetchall()
            else:
                hits = con.execute(
                    f"SELECT t.rowid, t.{col} FROM {ident(table)} t "
                    f"WHERE EXISTS (SELECT 1 FROM {_SET} s WHERE contains(t.{col}, s.participant))").fetchall()
            if not hits:
                continue
            rewritten = []
            for rowid, text in hits:
                for p in pseudonyms:
                    text = text.replace(p, ERASED)
                rewritten.append([text, rowid])
            con.executemany(f"UPDATE {ident(table)} SET {col} = ? WHERE rowid = ?", rewritten)
            redacted[f"{table}.{column}"] = len(hits)
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
    """Erase, in the caller's transaction, every participant with a consent withdrawal in ``consents`` and no
    tombstone yet; the ingest calls it at the end of each batch.

    So a withdrawal and the erasure it triggers commit together with the batch (DESIGN.md: withdrawal erases the
    participant and leaves a tombstone), and the same set-based core as ``erase_rows`` first appends the
    withdrawn participants' consents to the consent ledger, where the withdrawal stays (redacted) after their
    rows are gone. The warehouse file keeps the deleted bytes in free blocks until ``compact_database`` runs
    (``flourish compact``, ``flourish erase``); the landing files keep the withdrawn participants' raw rows until
    ``flourish erase ID`` scrubs them (the ingest cannot rewrite the files it is reading).
    ``withheld`` counts, per table, rows of these participants that the caller's batch accepted but never
    inserted (the ingest withholds them rather than insert then delete); they count as deleted.
    """
    _check_reason(reason)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_SET} AS {WITHDRAWN_NOT_ERASED}")
    if not con.execute(f"SELECT count(*) FROM {_SET}").fetchone()[0]:
        con.execute(f"DROP TABLE {_SET}")
        return None
    return _erase_set(con, reason, "consent withdrawal at ingest", withheld)


ParticipantState = Literal["held", "erased", "unknown"]


def participant_state(con: duckdb.DuckDBPyConnection, pseudonym: str) -> ParticipantState:
    """``held``: some table or the consent ledger holds the participant; ``erased``: nothing does and a tombstone
    says they were erased (re-running an erasure finishes its files); ``unknown``: neither (a mistyped id, or a
    key that is not the one the data were ingested with), so there is nothing to erase and no tombstone to write."""
    for table in participant_tables(con):
        if table in SPECIAL_TABLES:
            continue
        if con.execute(f"SELECT count(*) FROM {ident(table)} WHERE participant = ?", [pseudonym]).fetchone()[0]:
            return "held"
    if con.execute("SELECT count(*) FROM consent_ledger WHERE participant = ?", [pseudonym]).fetchone()[0]:
        return "held"
    if con.execute("SELECT count(*) FROM tombstones WHERE participant = ?", [tombstone_token(pseudonym)]).fetchone()[0]:
        return "erased"
    return "unknown"


def record_file_scrub(con: duckdb.DuckDBPyConnection, receipt: ErasureReceipt) -> None:
    """Add the file counts (file names, no identifiers) to the erasure's log row."""
    detail = json.loads(con.execute("SELECT detail FROM erasure_log WHERE erasure_id = ?",
                                    [receipt.erasure_id]).fetchone()[0])
    detail.update(files_rewritten=list(receipt.files_rewritten), files_deleted=list(receipt.files_deleted),
                  files_left=list(receipt.files_left))
    con.execute("UPDATE erasure_log SET detail = ? WHERE erasure_id = ?", [json.dumps(detail, sort_keys=True),
                                                                         receipt.erasure_id])


def record_compaction(con: duckdb.DuckDBPyConnection, compacted_at: datetime | None = None) -> int:
    """Mark every erasure not yet followed by a compaction as compacted now; return how many."""
    n = con.execute("SELECT count(*) FROM erasure_log WHERE compacted_at IS NULL").fetchone()[0]
    if n:
        con.execute("UPDATE erasure_log SET compacted_at = ? WHERE compacted_at IS NULL",
                    [compacted_at or datetime.now(UTC)])
    return int(n)


def erasures_not_compacted(con: duckdb.DuckDBPyConnection) -> int:
    """Erasures whose deleted rows may still have bytes in the warehouse file (no compaction since)."""
    return int(con.execute("SELECT count(*) FROM erasure_log WHERE compacted_at IS NULL").fetchone()[0])


# ---------------------------------------------------------------------------------------------------------
# The warehouse file

def compact_database(path: str | Path) -> None:
    """Rewrite a DuckDB file so freed blocks and the WAL (which keep deleted bytes) are gone; atomic swap.

    Holds the file's write lock while copying (no one can write meanwhile), then swaps the copy in. A
    process that opens the file in the microseconds between close and swap would write to the replaced
    file: run erasure when no pipeline writes (it is an administrative operation). The copy's path reaches
    DuckDB as a bound parameter, whatever characters the folder's name holds.
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
        con.execute("ATTACH ? AS flourish_compact", [str(tmp)])
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
