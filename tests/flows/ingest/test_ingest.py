"""Ingest invariants: reconciliation, idempotency, crash safety, no raw ids, every format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.ingest import ingest_batch, quarantine_dir
from flows.ingest.quarantine import read_rejected
from schemas.warehouse import participant_tables, table_names
from privacy.pseudonym import pseudonymize

from tests.support.spine import KEY, assignment, consent, event, response, write_jsonl

from tests.support import REPO as ROOT  # noqa: E402


def _counts(wh: Path) -> dict[str, int]:
    con = duckdb.connect(str(wh), read_only=True)
    out = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in table_names(con)
           if t != "schema_migrations"}
    con.close()
    return out


def _landing(tmp_path: Path, n: int = 40) -> Path:
    land = tmp_path / "landing"
    land.mkdir()
    pids = [f"participant-{i:03d}@example.org" for i in range(n)]
    write_jsonl(land / "consents.jsonl", [consent(p) for p in pids])
    write_jsonl(land / "assignments.jsonl", [assignment(p, "control" if i % 2 else "guidance") for i, p in enumerate(pids)])
    write_jsonl(land / "responses-baseline.jsonl", [response(f"r{i}", p) for i, p in enumerate(pids)]
                + ['{"broken": ', response("r0", pids[0])])
    write_jsonl(land / "events-2026-01.jsonl", [event(f"e{i}", p) for i, p in enumerate(pids)]
                + [event("e-x", "stranger@example.org")])
    return land


def test_reconciles_and_second_ingest_changes_nothing(tmp_path, protocol):
    land = _landing(tmp_path)
    wh = tmp_path / "w.duckdb"
    first = ingest_batch(land, protocol, wh, KEY)
    assert first.read == 40 * 4 + 3
    assert first.read == sum(first.stored.values()) + sum(first.quarantined.values())
    assert first.quarantined == {"duplicate": 1, "malformed_json": 1, "no_consent": 1}
    before = _counts(wh)
    second = ingest_batch(land, protocol, wh, KEY)
    assert second.read == 0 and sorted(second.as_json()["files_skipped"]) == sorted(p.name for p in land.iterdir())
    assert _counts(wh) == before
    # the reconciliation is stored with the batch
    con = duckdb.connect(str(wh), read_only=True)
    stored = json.loads(con.execute("SELECT reconciliation FROM batches").fetchone()[0])
    assert stored["read"] == first.read


def test_no_raw_participant_id_anywhere_in_the_warehouse(tmp_path, protocol):
    land = _landing(tmp_path)
    wh = tmp_path / "w.duckdb"
    ingest_batch(land, protocol, wh, KEY)
    con = duckdb.connect(str(wh))
    con.execute("CHECKPOINT")
    # every text column of every table
    for table in table_names(con):
        cols = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND data_type LIKE 'VARCHAR%'",
            [table]).fetchall()]
        for c in cols:
            hits = con.execute(f'SELECT count(*) FROM {table} WHERE "{c}"::VARCHAR LIKE \'%@example.org%\'').fetchone()[0]
            assert hits == 0, f"raw id found in {table}.{c}"
    con.close()
    # and the bytes of the file itself
    for path in [wh, Path(str(wh) + ".wal")]:
        if path.exists():
            assert b"@example.org" not in path.read_bytes()
    # pseudonyms are the documented HMAC
    con = duckdb.connect(str(wh), read_only=True)
    expected = pseudonymize("participant-000@example.org", KEY)
    assert con.execute("SELECT count(*) FROM consents WHERE participant = ?", [expected]).fetchone()[0] == 1
    assert "participant" in participant_tables(con)[0] or participant_tables(con)


def test_quarantine_payload_is_pseudonymized_and_unreadable_rows_go_to_a_file(tmp_path, protocol):
    land = _landing(tmp_path)
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY)
    con = duckdb.connect(str(wh), read_only=True)
    rows = con.execute("SELECT reason, participant, payload, payload_file FROM quarantine ORDER BY reason").fetchall()
    by_reason = {r[0]: r for r in rows}
    dup = json.loads(by_reason["duplicate"][2])
    assert dup["participant_id"] == pseudonymize("participant-000@example.org", KEY)
    assert by_reason["malformed_json"][2] is None and by_reason["malformed_json"][3]
    qfile = quarantine_dir(land) / by_reason["malformed_json"][3]
    # the raw bytes are sealed under the study key: read back with it, unreadable without it
    assert [raw for _, _, _, raw in read_rejected(qfile, KEY)] == [b'{"broken": ']
    assert b"broken" not in qfile.read_bytes()
    assert rec.batch_id in qfile.name


def test_csv_and_parquet_landing_files(tmp_path, protocol):
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("a"), consent("b")])
    (land / "assignments.csv").write_text(
        "participant_id,study_id,arm,assigned_at,stratum\n"
        "a,s1,control,2026-01-01T00:00:00Z,\n"
        "b,s1,guidance,2026-01-01T00:00:00Z,north,EXTRA\n"
        "c,s1,guidance,2026-01-01 00:00:00,\n", encoding="utf-8")
    pq.write_table(pa.table({
        "response_id": ["r1", "r2"], "participant_id": ["a", "b"], "study_id": ["s1", "s1"],
        "instrument": ["who5", "who5"], "instrument_version": ["1", "1"], "wave": ["baseline", "baseline"],
        "submitted_at": ["2026-01-02T00:00:00+00:00", "2026-01-02T00:00:00+00:00"],
        "items": ['{"WHO5_1": 3, "WHO5_2": 4}', '{"WHO5_1": 9}'],
    }), land / "responses.parquet")
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    assert rec.stored == {"consents": 2, "assignments": 1, "responses": 1, "events": 0}
    assert rec.quarantined == {"malformed_csv": 1, "naive_timestamp": 1, "out_of_range": 1}
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    lines = con.execute("SELECT source_file, line, reason FROM quarantine ORDER BY 1, 2").fetchall()
    assert lines == [("assignments.csv", 3, "malformed_csv"), ("assignments.csv", 4, "naive_timestamp"),
                     ("responses.parquet", 2, "out_of_range")]


def test_blank_lines_crlf_and_missing_final_newline(tmp_path, protocol):
    land = tmp_path / "landing"
    land.mkdir()
    body = (json.dumps(consent("a")) + "\r\n\r\n   \n\t\n" + json.dumps(consent("b"))).encode()
    (land / "consents.jsonl").write_bytes(body)
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    assert rec.read == 2 and rec.stored["consents"] == 2


def test_killed_mid_batch_leaves_warehouse_as_before_and_rerun_finishes(tmp_path, protocol):
    land = _landing(tmp_path, n=60)
    wh = tmp_path / "w.duckdb"
    # a first, separate batch already in the warehouse
    early = tmp_path / "early"
    early.mkdir()
    write_jsonl(early / "consents.jsonl", [consent("early-1")])
    ingest_batch(early, protocol, wh, KEY)
    before = _counts(wh)
    # a hard kill (no rollback, no cleanup) from the progress callback once 100 rows are read
    script = (
        "import os, sys; from flows.ingest import ingest_batch; from schemas.protocol import StudyProtocol; import json;"
        "p = StudyProtocol.model_validate(json.loads(sys.argv[1])); seen = {};"
        "kill = lambda name, rows: (seen.__setitem__(name, rows), sum(seen.values()) >= 100 and os._exit(99));"
        "ingest_batch(sys.argv[2], p, sys.argv[3], sys.argv[4].encode(), progress=kill)"
    )
    proc = subprocess.run([sys.executable, "-c", script, protocol.model_dump_json(), str(land), str(wh), KEY.decode()],
                          cwd=ROOT, capture_output=True, timeout=300)
    assert proc.returncode == 99, proc.stderr.decode()[-2000:]
    assert _counts(wh) == before  # nothing of the killed batch survived
    rec = ingest_batch(land, protocol, wh, KEY)
    after = _counts(wh)
    reference = tmp_path / "ref.duckdb"
    ingest_batch(early, protocol, reference, KEY)
    ingest_batch(land, protocol, reference, KEY)
    assert after == _counts(reference)  # no loss, no duplicates
    assert rec.read == 60 * 4 + 3


# -- the reconciliation invariant over arbitrary mixtures of good and bad rows ---------------

row_kinds = st.sampled_from([
    "good", "dup", "malformed", "naive", "unknown_study", "no_consent", "extra_field", "blank", "bad_type", "late",
])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(row_kinds, min_size=1, max_size=40), n_consents=st.integers(0, 5))
def test_every_row_ends_in_exactly_one_place(tmp_path_factory, protocol, kinds, n_consents):
    tmp = tmp_path_factory.mktemp("prop")
    land = tmp / "landing"
    land.mkdir()
    consents = [consent(f"p{i}", withdrawn="2026-06-01T00:00:00Z" if i == 0 else None) for i in range(n_consents)]
    write_jsonl(land / "consents.jsonl", consents)
    rows: list = []
    for i, k in enumerate(kinds):
        pid = f"p{i % max(n_consents, 1)}"
        e = event(f"e{i}", pid)
        rows.append({
            "good": e, "dup": event(f"e{max(i - 1, 0)}", pid), "malformed": json.dumps(e)[:-3],
            "naive": event(f"e{i}", pid, ts="2026-01-03T10:00:00"), "unknown_study": event(f"e{i}", pid, study_id="x"),
            "no_consent": event(f"e{i}", "nobody"), "extra_field": event(f"e{i}", pid, colour="red"), "blank": "",
            "bad_type": event(f"e{i}", pid, value=[1]), "late": event(f"e{i}", pid, ts="2026-07-01T00:00:00Z"),
        }[k])
    write_jsonl(land / "events.jsonl", rows)
    wh = tmp / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY)
    non_blank = sum(1 for k in kinds if k != "blank") + len(consents)
    assert rec.read == non_blank
    assert rec.read == sum(rec.stored.values()) + sum(rec.quarantined.values())
    con = duckdb.connect(str(wh), read_only=True)
    q_lines = {r[0] for r in con.execute("SELECT line FROM quarantine WHERE source_file = 'events.jsonl'").fetchall()}
    n_events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    # a withdrawal in the batch erases that participant's stored rows, and the erasure log counts them
    erased = sum(json.loads(d[0])["rows_deleted"].get("events", 0)
                 for d in con.execute("SELECT detail FROM erasure_log").fetchall())
    con.close()
    assert rec.stored["events"] == n_events + erased
    expected_lines = {i + 1 for i, k in enumerate(kinds) if k != "blank"}
    assert q_lines <= expected_lines
    assert len(q_lines) + n_events + erased == len(expected_lines)  # each line exactly once


def _quarantined(wh: Path) -> list[tuple]:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return con.execute("SELECT source_file, line, reason FROM quarantine ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_impossible_times_are_refused_not_moved(tmp_path, protocol):
    """A cast alone takes hour 24 and offsets of a day or more, moving the instant by hours or days (found by a
    hostile-batch audit); year 0 and a time past the year 9999 in UTC are out of range too. Both paths refuse them."""
    from schemas.records import Event

    bad = ["2026-03-01T10:00:00+99:99", "2026-03-01T10:00:00+24:00", "2026-03-01T24:00:00+00:00",
           "2026-03-01T10:60:00Z", "0000-03-01T10:00:00+00:00", "9999-12-31T23:59:59-01:00"]
    good = ["2026-03-01T23:59:59+14:00", "2026-03-01T10:00:00.123456789-03:30", "2026-03-01 10:00Z"]
    for fast in ("1", "0"):
        land = tmp_path / f"landing-{fast}"
        land.mkdir()
        write_jsonl(land / "consents.jsonl", [consent("p1")])
        write_jsonl(land / "events.jsonl", [event(f"e{i}", "p1", ts=ts) for i, ts in enumerate(bad + good)])
        rec = ingest_batch(land, protocol, tmp_path / f"w-{fast}.duckdb", KEY, fast_path=fast == "1")
        assert rec.quarantined == {"schema_violation": len(bad)} and rec.stored["events"] == len(good), rec.as_json()
        assert [line for _, line, _ in _quarantined(tmp_path / f"w-{fast}.duckdb")] == list(range(1, len(bad) + 1))
    for ts in bad[:-1]:  # the pydantic contract says the same (the last is a valid local time, but not in UTC)
        try:
            Event.model_validate(event("e", "p1", ts=ts))
        except ValueError:
            continue
        raise AssertionError(f"the contract accepted {ts}")


def test_an_item_value_past_64_bits_is_out_of_range_not_skipped(tmp_path, protocol):
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    huge = '{"response_id": "r1", "participant_id": "p1", "study_id": "s1", "instrument": "who5", ' \
           '"instrument_version": "1", "wave": "baseline", "submitted_at": "2026-01-02T09:00:00+00:00", ' \
           '"items": {"WHO5_1": 9223372036854775808, "WHO5_2": 3, "WHO5_3": 3, "WHO5_4": 3, "WHO5_5": 3}}'
    write_jsonl(land / "responses.jsonl", [huge, response("r2", "p1", items={"WHO5_1": "99999999999999999999"})])
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    assert rec.quarantined == {"out_of_range": 2} and rec.stored["responses"] == 0, rec.as_json()


def test_quarantine_files_have_short_distinct_names_whatever_the_landing_paths(tmp_path, protocol, monkeypatch):
    """A 247-character file name, and two paths that both read events__a__b with '/' made '__', each keep their
    own raw bytes (a too-long name crashed the batch; the two collided and one file's bytes were lost)."""
    land = tmp_path / "landing"
    (land / "events" / "a").mkdir(parents=True)
    (land / "events__a").mkdir(parents=True)
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    write_jsonl(land / ("events-" + "x" * 235 + ".jsonl"), [event("e1", "p1"), "{not json"])
    write_jsonl(land / "events" / "a__b.jsonl", ['{"first file bad row": 1'])
    write_jsonl(land / "events__a" / "b.jsonl", ['{"second file bad row": 2'])
    monkeypatch.chdir(land)
    rec = ingest_batch(Path("."), protocol, tmp_path / "w.duckdb", KEY)  # "." too: the folder beside, not inside
    assert rec.quarantined == {"malformed_json": 3} and rec.stored["events"] == 1
    qfiles = sorted(quarantine_dir(land).iterdir())
    assert not (land / ".quarantine").exists() and len(qfiles) == 3
    assert all(len(q.name) < 200 for q in qfiles)
    raws = sorted(raw for q in qfiles for _, _, _, raw in read_rejected(q, KEY))
    assert raws == [b'{"first file bad row": 1', b'{"second file bad row": 2', b"{not json"]


def test_one_invalid_utf8_byte_in_a_csv_costs_its_row_not_the_file(tmp_path, protocol):
    """The audit's case: the whole file became one unreadable_file row (two good rows lost from the count), and
    past the reader's first block the batch failed."""
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("a")])
    header = b"event_id,participant_id,study_id,ts,session_id,type,feature,value\n"
    row = lambda i, session=b"s-1": b"e%d,a,s1,2026-01-03T10:00:00Z,%s,message,,\n" % (i, session)  # noqa: E731
    (land / "events.csv").write_bytes(header + row(1) + row(2, b"s-\xff") + row(3))
    many = [row(i) for i in range(10, 130_000)]  # past the CSV reader's 8 MiB block
    (land / "events-big.csv").write_bytes(header + b"".join(many) + row(9, b"s-\xfe\xff") + row(8))
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    assert rec.quarantined == {"invalid_utf8": 2} and rec.stored["events"] == 2 + len(many) + 1
    assert rec.read == 1 + 3 + len(many) + 2
    assert _quarantined(tmp_path / "w.duckdb") == [("events-big.csv", len(many) + 2, "invalid_utf8"),
                                                   ("events.csv", 3, "invalid_utf8")]
    raws = [raw for q in quarantine_dir(land).iterdir() for _, _, _, raw in read_rejected(q, KEY)]
    assert sorted(raws) == sorted((b"e2,a,s1,2026-01-03T10:00:00Z,s-\xff,message,,",
                                   b"e9,a,s1,2026-01-03T10:00:00Z,s-\xfe\xff,message,,"))


def test_values_of_unknown_fields_do_not_reach_the_warehouse(tmp_path, protocol):
    """An unknown field may hold another participant's raw id (the audit's "user_id"; a CSV's extra "email"
    column): the quarantine payload names unknown fields but does not copy their values."""
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    write_jsonl(land / "events.jsonl", [{**event("e1", "p1"), "user_id": "PX-bravo-91d2", "value": 1}])
    (land / "assignments.csv").write_text("participant_id,study_id,arm,assigned_at,email\n"
                                          "p1,s1,control,2026-01-01T00:00:00Z,bravo@example.org\n", encoding="utf-8")
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    assert rec.quarantined == {"schema_violation": 2}
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    payloads = {r[0]: json.loads(r[1]) for r in con.execute("SELECT source_file, payload FROM quarantine").fetchall()}
    con.close()
    assert payloads["events.jsonl"]["unknown_fields"] == ["user_id"] and payloads["events.jsonl"]["value"] == 1
    assert payloads["events.jsonl"]["participant_id"] == pseudonymize("p1", KEY)
    assert payloads["assignments.csv"]["unknown_fields"] == ["email"] and payloads["assignments.csv"]["arm"] == "control"
    dump = json.dumps(payloads)
    assert "PX-bravo" not in dump and "bravo@example.org" not in dump
