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
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

import flows.ingest.fastpath as fastpath
import flows.ingest.gate as gate
import flows.ingest.landing as landing
import flows.ingest.stage as stage
import flows.ingest.store as store
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
    embedded: int = 0  # rows with their participant id inside another field, replaced there (contract.embeds_id_sql)


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
    known_ids: Callable[[list[str]], dict[str, str]]  # raw ids of known participants among texts -> pseudonyms


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
    """Rows the reader itself could not turn into records (CSV field count, invalid UTF-8, too large)."""
    q: Counter = Counter()
    if not chunk.rejects:
        return q
    qfile = ctx.rejects.name_for(ctx.name)
    ctx.con.executemany(
        "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
        [[ctx.batch_id, ctx.kind, ctx.name, r.line, r.reason, r.why, qfile] for r in chunk.rejects])
    for r in chunk.rejects:
        ctx.rejects.add(ctx.name, r.line, r.raw, r.why)
    q.update(r.reason for r in chunk.rejects)
    return q


def stage_and_gate(con: duckdb.DuckDBPyConnection, kind: str, protocol: StudyProtocol, bounds: ItemBounds,
                   pseudonym_map: pa.Table) -> None:
    """The registered chunk staged (contract, protocol, items), gated and de-duplicated into ``stage``: every row
    with its reason, or none when it is to be stored. ``pseudonym_map`` covers the chunk's participant ids."""
    with registered(con, PMAP, pseudonym_map):
        staged = f"({stage.stage_sql(kind, protocol, bounds)})"
        if kind in ("responses", "consents", "participants"):
            con.execute(f"CREATE OR REPLACE TEMP TABLE pre_stage AS {staged[1:-1]}")
            staged = "pre_stage"
            if kind == "responses":
                stage.check_items(con, "pre_stage", bounds)
            elif kind == "participants":
                stage.check_characteristics(con, "pre_stage", protocol)
            else:
                stage.set_consent_hashes(con, "pre_stage")
        con.execute(gate.gate_sql(kind, staged, protocol.study_id))
    gate.mixed_scope_gate(con, kind)
    if kind == "assignments":
        gate.assignment_conflicts(con)


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
        if ctx.fast and kind in fastpath.CHUNK_KINDS:
            stored = fastpath.try_chunk(con, stage.CHUNK, kind, ctx.protocol, ctx.bounds, ctx.pseudonyms,
                                        ctx.batch_id, ctx.name)
            if stored is not None:
                return ChunkCounts(n_read + stored[0], stored[0], dict(q), stored[1])
        # pseudonymize at the door: one HMAC per distinct id, joined back inside the staging query
        distinct = [r[0] for r in con.execute(stage.distinct_ids_sql()).fetchall() if r[0] is not None]
        stage_and_gate(con, kind, ctx.protocol, ctx.bounds, ctx.pseudonyms.table(distinct))
        _keep_unreadable_rows(ctx, table)
        con.execute(stage.payload_sql(kind, "stage"))
        _name_unknown_fields_safely(ctx)
    _store(ctx)
    stored = embedded = 0
    for reason, n, e in con.execute(
            "SELECT coalesce(reason, ''), count(*), count_if(embedded) FROM stage GROUP BY ALL").fetchall():
        n_read += n
        embedded += e
        if reason == "":
            stored += n
        else:
            q[reason] += n
    return ChunkCounts(n_read, stored, dict(q), embedded)


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


_FIELD_LIKE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
UNNAMED = "(a key that is not a field name)"


def _name_unknown_fields_safely(ctx: FileContext) -> None:
    """A payload names the unknown fields of its record (never their values), so a partner sees which field is
    wrong. A key is a partner's text and may be a participant's raw id (records keyed by participant): a key
    that is a known participant's id is replaced by the pseudonym, and any key that does not look like a field
    name (lowercase letters, digits, underscores) by a placeholder. Only rows with unknown fields are read
    back, and they are few."""
    rows = ctx.con.execute("SELECT line, payload FROM stage WHERE payload IS NOT NULL "
                           "AND json_exists(payload, '$.unknown_fields')").fetchall()
    if not rows:
        return
    payloads = [(line, json.loads(text)) for line, text in rows]
    known = ctx.known_ids([n for _, p in payloads for n in p["unknown_fields"]])
    for _, p in payloads:
        p["unknown_fields"] = [known.get(n) or (n if _FIELD_LIKE.match(n) else UNNAMED) for n in p["unknown_fields"]]
    ctx.con.executemany("UPDATE stage SET payload = ? WHERE line = ?",
                        [[json.dumps(p, ensure_ascii=False), line] for line, p in payloads])


def _store(ctx: FileContext) -> None:
    con, kind = ctx.con, ctx.kind
    clean = "(SELECT * FROM stage WHERE reason IS NULL)"
    if kind in ("responses", "participants"):
        inserts = store.response_inserts(clean) if kind == "responses" else store.participant_inserts(clean)
        for sql in inserts:
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

