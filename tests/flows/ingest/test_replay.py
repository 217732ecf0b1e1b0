"""Replay (hardening D8): records that arrived before their consents, quarantined as no_consent, are re-gated once
the consents are in, and stored exactly as if the consents had come first; the reconciliation stays exact."""

from __future__ import annotations

import duckdb

from flows.ingest import ingest_batch
from flows.ingest.replay import replay

from tests.support.spine import KEY, consent, event, response, write_jsonl

SCORE = {"participant_id": "p2", "study_id": "s1", "wave": "m1", "outcome": "clinic.total", "value": 12.5,
         "scored_at": "2026-02-01T00:00:00Z"}


def _batches(tmp_path):
    early = tmp_path / "early"  # the audit's split/B: data before its consents
    early.mkdir()
    write_jsonl(early / "events.jsonl", [event(f"e{i}", p) for i, p in enumerate(["p1", "p2", "p1", "p3"])]
                + [event("e0", "p1")])  # a repeat of e0
    write_jsonl(early / "responses.jsonl", [response("r1", "p1"), response("r2", "p3")])
    write_jsonl(early / "scores.jsonl", [SCORE])
    late = tmp_path / "late"  # split/A: the consents (p2 without telemetry; p3 never consents)
    late.mkdir()
    write_jsonl(late / "consents.jsonl", [consent("p1"), consent("p2", scopes=["surveys"])])
    return early, late


def _tables(wh):
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return {t: con.execute(f"SELECT * EXCLUDE (batch_id) FROM {t} ORDER BY ALL").fetchall()
                for t in ("events", "responses", "scores", "consents")} | {
            "response_items": con.execute("SELECT * FROM response_items ORDER BY ALL").fetchall()}
    finally:
        con.close()


def _reconciles(wh) -> bool:
    """Every row ever read is stored (by its batch or a replay) or quarantined and not replayed."""
    con = duckdb.connect(str(wh), read_only=True)
    try:
        read, stored = con.execute("SELECT sum(rows_read), sum(rows_stored) FROM batches").fetchall()[0]
        replayed = con.execute("SELECT coalesce(sum(rows_stored), 0) FROM replays").fetchall()[0][0]
        quarantined = con.execute("""SELECT count(*) FROM quarantine q WHERE NOT EXISTS (SELECT 1 FROM replayed_rows r
                                     WHERE r.batch_id = q.batch_id AND r.source_file = q.source_file
                                     AND r.line = q.line)""").fetchall()[0][0]
        return read == stored + replayed + quarantined
    finally:
        con.close()


def test_records_quarantined_before_their_consents_are_stored_by_a_replay(tmp_path, protocol):
    early, late = _batches(tmp_path)
    wh = tmp_path / "w.duckdb"
    first = ingest_batch(early, protocol, wh, KEY)
    assert first.quarantined == {"no_consent": 8}  # the repeat of e0 is refused by the gate before de-duplication
    ingest_batch(late, protocol, wh, KEY)
    assert ingest_batch(early, protocol, wh, KEY).read == 0  # re-ingest alone skips the files, as before

    result = replay(wh, protocol)
    assert result.rows_regated == 8 and result.stored == {"events": 2, "responses": 1, "scores": 1}
    assert result.still_refused == {"duplicate": 1, "no_consent": 3}  # p2's events (no telemetry), p3's rows
    assert _reconciles(wh)

    reference = tmp_path / "reference.duckdb"  # the consents first, as it should have been
    ingest_batch(late, protocol, reference, KEY)
    ingest_batch(early, protocol, reference, KEY)
    assert _tables(wh) == _tables(reference)

    again = replay(wh, protocol)  # nothing new to re-gate: the rows still refused are refused again
    assert again.stored == {} and again.rows_regated == 4 and _reconciles(wh) and _tables(wh) == _tables(reference)


def test_a_replay_refuses_what_the_gate_refuses_now(tmp_path, protocol):
    """A participant who withdrew meanwhile: their quarantined records stay refused (withdrawn), nothing stored."""
    early, _ = _batches(tmp_path)
    wh = tmp_path / "w.duckdb"
    ingest_batch(early, protocol, wh, KEY)
    late = tmp_path / "late-withdrawn"
    late.mkdir()
    write_jsonl(late / "consents.jsonl", [consent("p1", withdrawn="2026-01-02T00:00:00Z")])
    ingest_batch(late, protocol, wh, KEY)
    result = replay(wh, protocol)
    assert result.stored == {} and _reconciles(wh)
    con = duckdb.connect(str(wh), read_only=True)
    assert con.execute("SELECT count(*) FROM events").fetchall() == [(0,)]
    con.close()
