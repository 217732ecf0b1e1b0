"""Erasure: after `erase`, no table, file or cache under the study's folder holds the participant's
pseudonym or raw id (a byte scan of every file, the .duckdb file included), and their late data are refused."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from tests.support.privacy import KEY, fill, make_protocol
from flows.privacy_flows import erase_participant
from flows.warehouse import connect
from privacy.consent import append_consent, verify_chain
from privacy.erasure import tombstone_token
from privacy.scrub import Needles, scan_bytes
from privacy.pseudonym import pseudonymize

RAW = "raw-ERASE-ME-0007"


def _study(tmp_path: Path):
    folder = tmp_path / "study-a"
    db = folder / "warehouse.duckdb"
    con = connect(db)
    fill(con, 30)
    p = pseudonymize(RAW, KEY)
    con.execute("INSERT INTO assignments VALUES (?, 'study-a', 'coach', now(), NULL, 'b1')", [p])
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value) VALUES ('study-a', ?, 'baseline', 'who5.percent', 64)", [p])
    con.execute("INSERT INTO quarantine VALUES ('b1', 'scores', 'scores.jsonl', 3, 'out_of_range', 'x', ?, ?, NULL)",
                [p, json.dumps({"participant_id": p, "value": 120})])
    for scope in ("surveys", "telemetry"):
        append_consent(con, p, scope, "v1")
    append_consent(con, pseudonymize("raw-0001", KEY), "surveys", "v1")
    # derived files the pipeline writes: a Parquet export, a JSON cache, a landing file with raw ids
    (folder / "exports").mkdir()
    con.execute(f"COPY (SELECT * FROM scores) TO '{folder / 'exports' / 'scores.parquet'}' (FORMAT parquet)")
    (folder / "cache").mkdir()
    (folder / "cache" / "task-result.json").write_text(json.dumps({"rows": [p, "other"]}))
    landing = folder / "landing" / "batch1"
    landing.mkdir(parents=True)
    (landing / "scores.jsonl").write_text(
        "\n".join(json.dumps({"participant_id": r, "value": 1}) for r in [RAW, "raw-0001", "raw-0002"]) + "\n")
    # make sure the pseudonym has reached the file's blocks and not only the WAL
    con.execute("CHECKPOINT")
    con.close()
    return folder, db, p


def test_erase_leaves_no_bytes_anywhere(tmp_path):
    folder, db, p = _study(tmp_path)
    needles = Needles(p, RAW)
    assert set(scan_bytes(folder, needles)) >= {"warehouse.duckdb", "exports/scores.parquet",
                                                 "cache/task-result.json", "landing/batch1/scores.jsonl"}
    receipt = erase_participant(db, RAW, KEY, "erasure_request")
    assert receipt.residual_files == ()
    assert scan_bytes(folder, needles) == []
    # quarantine rows are accounting: kept, with identifier and payload stripped
    assert receipt.rows_deleted["assignments"] == 1 and receipt.rows_redacted["quarantine"] == 1
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT count(*) FROM quarantine WHERE participant IS NULL AND payload IS NULL "
                           "AND reason = 'out_of_range'").fetchone()[0] == 1
    assert "cache/task-result.json" in receipt.files_deleted
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT count(*) FROM tombstones WHERE participant = ?", [tombstone_token(p)]).fetchone()[0] == 1
        assert con.execute("SELECT tombstone_token(?)", [p]).fetchone()[0] == tombstone_token(p)
        assert verify_chain(con).verified  # redaction keeps the consent chain valid
        assert con.execute("SELECT count(*) FROM assignments").fetchone()[0] == 30  # others untouched
        log = con.execute("SELECT reason, rows_deleted, detail FROM erasure_log").fetchall()
        assert log[0][0] == "erasure_request" and log[0][1] >= 2 and p not in log[0][2]
    # other participants' rows in files survive
    assert (folder / "landing" / "batch1" / "scores.jsonl").read_text().count("participant_id") == 2
    with duckdb.connect() as mem:
        n = mem.execute(f"SELECT count(*) FROM '{folder / 'exports' / 'scores.parquet'}'").fetchone()[0]
    assert n == 30 * 6


def test_delete_and_checkpoint_alone_leave_bytes(tmp_path):
    """Why compaction is needed: DuckDB keeps deleted values in free blocks."""
    folder, db, p = _study(tmp_path)
    con = duckdb.connect(str(db))
    for t in ("assignments", "scores", "quarantine", "consent_ledger"):
        con.execute(f"DELETE FROM {t} WHERE participant = ?", [p])
    con.execute("CHECKPOINT")
    con.close()
    assert p.encode() in db.read_bytes()


def test_erasure_inside_callers_transaction_then_compaction(tmp_path):
    folder, db, p = _study(tmp_path)
    from flows.privacy_flows import compact_warehouse
    from privacy.erasure import erase_rows
    from privacy.scrub import Folders, apply_scrub, plan_scrub

    con = connect(db)
    con.execute("BEGIN TRANSACTION")
    receipt = erase_rows(con, p, "withdrawn", in_transaction=True)
    plan = plan_scrub(Folders(folder, skip=(db,)), Needles(p))
    con.execute("COMMIT")
    con.close()
    apply_scrub(plan, Needles(p))
    assert not receipt.compacted
    compact_warehouse(db)
    assert scan_bytes(folder, Needles(p)) == []


def test_reingest_of_erased_participant_is_quarantined(tmp_path):
    """Ingest-side contract: late data of an erased participant land in quarantine as 'withdrawn'.

    Needs flows/ingest/batch.py's consent gate to compare ``tombstone_token(s.participant)`` with
    ``tombstones.participant`` (migration 0020's macro); see the privacy report.
    """
    import flows.ingest as ingest
    folder, db, p = _study(tmp_path)
    erase_participant(db, RAW, KEY, "erasure_request")
    late = tmp_path / "late" / "batch2"
    late.mkdir(parents=True)
    (late / "consents.jsonl").write_text(json.dumps({
        "participant_id": RAW, "consent_version": "v1", "scopes": ["surveys"],
        "granted_at": "2026-01-01T00:00:00+00:00", "withdrawn_at": None}) + "\n")
    (late / "scores.jsonl").write_text(json.dumps({
        "participant_id": RAW, "study_id": "study-a", "wave": "m1", "outcome": "ext.score", "value": 50,
        "scored_at": "2026-02-01T00:00:00+00:00"}) + "\n")
    rec = ingest.ingest_batch(late, make_protocol(), db, KEY)
    assert rec.quarantined == {"withdrawn": 2} and sum(rec.stored.values()) == 0
    with duckdb.connect(str(db)) as con:
        refused = con.execute("SELECT participant, payload, payload_file FROM quarantine WHERE batch_id = ?",
                              [rec.batch_id]).fetchall()
        assert refused == [(None, None, None), (None, None, None)]  # refused, and nothing of them kept
    con = duckdb.connect(str(db))
    con.execute("CHECKPOINT")
    con.close()
    assert p.encode() not in db.read_bytes()
