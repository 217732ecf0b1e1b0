"""The exact path: one chunk of a landing file staged, gated and stored, every refused row with its reason.

Every chunk a file is read in (landing.read_chunks) goes through :func:`ingest_chunk`: the reader's own rejects
(a CSV row with the wrong number of fields, a row that is not UTF-8) are quarantined as they are; the rest is
offered to the fast path (a clean chunk is stored in one statement), else staged (stage.py), gated (gate.py)
and stored: clean rows into their table (events gathered in ``acc_events``
first), refused rows into ``quarantine``, and the raw bytes of refused rows whose participant id could not be
read into the quarantine folder (quarantine.py). The chunk's tables are temporary and hold pseudonyms only.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from flows.ingest import fastpath, gate, landing, stage, store
from flows.ingest.contract import ItemBounds
from flows.ingest.pseudonyms import PMAP, Pseudonyms, registered
from flows.ingest.quarantine import RejectWriter
from schemas.protocol import StudyProtocol

SCAN_BATCH_ROWS = 16_384


@dataclass(frozen=True)
class ChunkCounts:
    read: int
    stored: int
    quarantined: dict[str, int]


@dataclass(frozen=True)
class FileContext:
    """What every chunk of one file needs: whose batch, which file, and where refused bytes go."""

    con: duckdb.DuckDBPyConnection
    protocol: StudyProtocol
    bounds: ItemBounds
    pseudonyms: Pseudonyms
    batch_id: str
    name: str  # the file's name as stored (FileResult.name)
    fmt: str | None
    kind: str
    rejects: RejectWriter
    fast: bool  # offer each chunk to the fast path first (fastpath.try_chunk)


def lax_lines(table: pa.Table) -> pa.Array:
    """Per line of ``table`` (``raw``): DuckDB's JSON parser takes it and JSON does not (a trailing comma, as in
    ``{"a": 1,}``). The lines with a comma before a closing bracket are few, and Python's strict parser decides
    each (inside a string the same characters are valid)."""
    import pyarrow.compute as pc

    candidates = pc.match_substring_regex(table.column("raw"), landing.TRAILING_COMMA)
    flags = np.zeros(table.num_rows, dtype=bool)
    for i in np.flatnonzero(candidates.to_numpy(zero_copy_only=False)):
        try:
            json.loads(table.column("raw")[int(i)].as_py())
        except ValueError:
            flags[i] = True
    return pa.array(flags)


def _quarantine_reader_rejects(ctx: FileContext, chunk: landing.Chunk) -> Counter:
    """Rows the reader itself could not turn into records (CSV field count, invalid UTF-8)."""
    q: Counter = Counter()
    if not chunk.rejects:
        return q
    reasons = [landing.reject_reason(ctx.fmt, why) for _, _, why in chunk.rejects]
    qfile = ctx.rejects.name_for(ctx.name)
    ctx.con.executemany(
        "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
        [[ctx.batch_id, ctx.kind, ctx.name, ln, reason, why, qfile] for (ln, _, why), reason in zip(chunk.rejects, reasons)])
    for line, raw, why in chunk.rejects:
        ctx.rejects.add(ctx.name, line, raw, why)
    q.update(reasons)
    return q


def ingest_chunk(ctx: FileContext, chunk: landing.Chunk) -> ChunkCounts:
    """Stage, gate and store one chunk; how many rows it read, stored and quarantined (and why)."""
    con, kind = ctx.con, ctx.kind
    q = _quarantine_reader_rejects(ctx, chunk)
    n_read = len(chunk.rejects)
    if chunk.table.num_rows == 0:
        return ChunkCounts(n_read, 0, dict(q))
    table = chunk.table.append_column("lax", lax_lines(chunk.table))
    if table.num_rows > SCAN_BATCH_ROWS:  # several record batches, so DuckDB scans the chunk on every core
        table = pa.Table.from_batches(table.to_batches(max_chunksize=SCAN_BATCH_ROWS))
    with registered(con, stage.CHUNK, table):
        if ctx.fast:
            stored = fastpath.try_chunk(con, stage.CHUNK, kind, ctx.protocol, ctx.bounds, ctx.pseudonyms,
                                        ctx.batch_id, ctx.name)
            if stored is not None:
                return ChunkCounts(n_read + stored, stored, dict(q))
        # pseudonymize at the door: one HMAC per distinct id, joined back inside the staging query
        distinct = [r[0] for r in con.execute(stage.distinct_ids_sql()).fetchall() if r[0] is not None]
        with registered(con, PMAP, ctx.pseudonyms.table(distinct)):
            staged = f"({stage.stage_sql(kind, ctx.protocol, ctx.bounds)})"
            if kind in ("responses", "consents"):
                con.execute(f"CREATE OR REPLACE TEMP TABLE pre_stage AS {staged[1:-1]}")
                staged = "pre_stage"
                if kind == "responses":
                    stage.check_items(con, "pre_stage", ctx.bounds)
                else:
                    stage.set_consent_hashes(con, "pre_stage")
            con.execute(gate.gate_sql(kind, staged, ctx.protocol.study_id))
        gate.mixed_scope_gate(con, kind)
        if kind == "assignments":
            gate.assignment_conflicts(con)
        _keep_unreadable_rows(ctx, table)
        con.execute(stage.payload_sql(kind, "stage"))
    _store(ctx)
    stored = 0
    for reason, n in con.execute("SELECT coalesce(reason, ''), count(*) FROM stage GROUP BY ALL").fetchall():
        n_read += n
        if reason == "":
            stored += n
        else:
            q[reason] += n
    return ChunkCounts(n_read, stored, dict(q))


def _keep_unreadable_rows(ctx: FileContext, table: pa.Table) -> None:
    """Raw bytes of refused rows whose participant id could not be read: the quarantine folder only."""
    unreadable = ctx.con.execute(
        "SELECT line FROM stage WHERE reason IS NOT NULL AND participant IS NULL AND NOT erased ORDER BY line").fetchall()
    if not unreadable:
        return
    lines = table.column("line").to_numpy()
    raws = table.column("raw")
    for pos in np.flatnonzero(np.isin(lines, np.array([r[0] for r in unreadable], dtype=np.int64))):
        ctx.rejects.add(ctx.name, int(lines[pos]), raws[int(pos)].as_py().encode("utf-8").rstrip(b"\r\n"),
                        "participant id unreadable")


def _store(ctx: FileContext) -> None:
    con, kind = ctx.con, ctx.kind
    clean = "(SELECT * FROM stage WHERE reason IS NULL)"
    if kind == "responses":
        for sql in store.response_inserts(clean):
            con.execute(sql, {"batch": ctx.batch_id} if "$batch" in sql else None)
    else:
        # clean events gather in acc_events and reach events in large inserts (batch.flush_events)
        target = gate.ACC_EVENTS if kind == "events" else None
        con.execute(store.insert_sql(kind, clean, target),
                    {"batch": ctx.batch_id, "file": ctx.name} if kind == "consents" else {"batch": ctx.batch_id})
    con.execute(
        """INSERT INTO quarantine SELECT $batch, $kind, $file, line, reason, message, participant, payload,
           CASE WHEN participant IS NULL AND NOT erased THEN $qfile END FROM stage WHERE reason IS NOT NULL""",
        {"batch": ctx.batch_id, "kind": kind, "file": ctx.name, "qfile": ctx.rejects.name_for(ctx.name)})

