"""Replay: quarantined ``no_consent`` records re-gated once their participants' consents have arrived.

A record that arrives before its participant's consent is quarantined as ``no_consent``: the gate cannot know that
a consent will follow, and re-ingesting the file changes nothing (it is skipped by its hash). Its quarantine row
keeps the record, pseudonymized (``payload``). :func:`replay` sends those records through the same checks, gate
and de-duplication as an ingest (exact.stage_and_gate, store.py), the participant already a pseudonym, in one
transaction, and stores each record that now passes exactly as the ingest would have stored it had the consent
come first (hardening finding D8; ``tests/flows/ingest/test_replay.py`` compares the two warehouses).

Reconciliation stays exact without rewriting history: a replayed record's quarantine row is kept and named in
``replayed_rows`` with the replay that stored it, and the replay records its own count in ``replays`` (rows
re-gated = rows stored + rows still refused). So for a warehouse, rows read by all batches = rows stored by them +
rows stored by replays + quarantine rows not replayed. A record still refused keeps its row as it was (its
reason then, e.g. ``no_consent`` for a participant who never consented). Replay needs no key: payloads hold
pseudonyms only.

    flourish replay --study STUDY.yaml --warehouse FILE [--json]
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

import flows.ingest.exact as exact
import flows.ingest.gate as gate
import flows.ingest.stage as stage
import flows.ingest.store as store
from flows.ingest.contract import ItemBounds
from flows.ingest.pseudonyms import identity_table, registered
from flows.warehouse import connect
from schemas.protocol import StudyProtocol
from schemas.warehouse import transaction

REPLAYED = ("events", "responses", "scores", "participants", "prompts")  # the kinds the consent gate refuses as no_consent


@dataclass(frozen=True)
class ReplayResult:
    replay_id: str
    rows_regated: int
    stored: dict[str, int] = field(default_factory=dict)  # kind -> records stored now
    still_refused: dict[str, int] = field(default_factory=dict)  # reason (now) -> records left in quarantine

    def as_json(self) -> dict:
        return {"replay_id": self.replay_id, "rows_regated": self.rows_regated, "stored": self.stored,
                "still_refused": self.still_refused}


def replay(warehouse: str | Path, protocol: StudyProtocol) -> ReplayResult:
    """Re-gate every quarantined ``no_consent`` record of the study not replayed yet; store those that now pass."""
    replay_id = f"replay-{uuid.uuid4().hex[:16]}"
    con = connect(warehouse)
    try:
        con.execute("SET TimeZone = 'UTC'")
        bounds = ItemBounds.from_registry()
        tombs = {r[0] for r in con.execute("SELECT participant FROM tombstones").fetchall()}
        stored: Counter = Counter()
        refused: Counter = Counter()
        with transaction(con):
            con.execute(f"CREATE OR REPLACE TEMP TABLE {gate.ACC_EVENTS} AS SELECT * FROM events LIMIT 0")
            for kind in REPLAYED:
                rows = _waiting(con, protocol.study_id, kind)
                if rows.num_rows:
                    s, r = _regate(con, protocol, bounds, tombs, kind, rows, replay_id)
                    stored[kind] += s
                    refused.update(r)
            regated = sum(stored.values()) + sum(refused.values())
            con.execute("INSERT INTO replays VALUES (?, ?, now(), ?, ?, ?)",
                        [replay_id, protocol.study_id, regated, sum(stored.values()),
                         json.dumps({"stored": dict(stored), "still_refused": dict(sorted(refused.items()))})])
        return ReplayResult(replay_id, regated, {k: v for k, v in stored.items() if v}, dict(sorted(refused.items())))
    finally:
        con.close()


def _waiting(con, study_id: str, kind: str) -> pa.Table:
    """The kind's quarantined no_consent records of the study with their payload, not replayed yet: ``line`` a
    number of this replay's own, ``raw`` the payload, ``lax`` false, and the quarantine row's identity."""
    return con.sql("""
        SELECT row_number() OVER (ORDER BY q.batch_id, q.source_file, q.line) AS line, q.payload AS raw,
               false AS lax, q.batch_id, q.source_file, q.line AS source_line
        FROM quarantine q JOIN batches b USING (batch_id)
        WHERE b.study_id = ? AND q.record_kind = ? AND q.reason = 'no_consent' AND q.payload IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM replayed_rows r
                          WHERE r.batch_id = q.batch_id AND r.source_file = q.source_file AND r.line = q.line)
        ORDER BY line""", params=[study_id, kind]).to_arrow_table()


def _regate(con, protocol: StudyProtocol, bounds: ItemBounds, tombs: set[str], kind: str, rows: pa.Table,
            replay_id: str) -> tuple[int, Counter]:
    """Stage and gate one kind's waiting records; store those that pass (each under its original batch)."""
    chunk = rows.select(["line", "raw", "lax"]).cast(pa.schema([("line", pa.int64()), ("raw", pa.large_string()),
                                                                 ("lax", pa.bool_())]))
    origin = rows.select(["line", "batch_id", "source_file", "source_line"])
    with registered(con, stage.CHUNK, chunk), registered(con, "replay_origin", origin):
        pseudonyms = [r[0] for r in con.execute(stage.distinct_ids_sql()).fetchall() if r[0] is not None]
        exact.stage_and_gate(con, kind, protocol, bounds, identity_table(pseudonyms, tombs))
        con.execute("CREATE OR REPLACE TEMP TABLE replay_passed AS SELECT s.*, o.batch_id FROM stage s "
                    "JOIN replay_origin o USING (line) WHERE s.reason IS NULL")
        _store_passed(con, kind)
        con.execute("INSERT INTO replayed_rows SELECT o.batch_id, o.source_file, o.source_line, ? "
                    "FROM replay_origin o JOIN stage s USING (line) WHERE s.reason IS NULL", [replay_id])
        counts = con.execute("SELECT coalesce(reason, ''), count(*) FROM stage GROUP BY ALL").fetchall()
    con.execute("DROP TABLE IF EXISTS replay_passed")
    refused = Counter({reason: n for reason, n in counts if reason})
    return sum(n for reason, n in counts if not reason), refused


def _store_passed(con, kind: str) -> None:
    """The passing records into their tables, each with the batch it arrived in (``$batch`` per row)."""
    if kind in ("responses", "participants"):
        inserts = (store.response_inserts if kind == "responses" else store.participant_inserts)(
            "replay_passed", batch="s.batch_id")
        for sql in inserts:
            con.execute(sql)
        return
    con.execute(store.insert_sql(kind, "replay_passed", batch="batch_id"))
