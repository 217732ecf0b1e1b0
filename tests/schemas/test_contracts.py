"""Each contract refuses what it must: pydantic models at the edge, and the same rules in the ingest."""

from __future__ import annotations

import json

import duckdb
import pytest
from pydantic import ValidationError

from flows.ingest import ingest_batch
from schemas.protocol import StudyProtocol
from schemas.records import Assignment, Consent, Event, ExternalScore, Response

from tests.support.spine import KEY, assignment, consent, event, response, write_jsonl


@pytest.mark.parametrize("model, good, bad_change", [
    (Consent, consent("p1"), {"scopes": ["telemetry", "marketing"]}),
    (Consent, consent("p1"), {"granted_at": "2026-01-01T00:00:00"}),
    (Consent, consent("p1"), {"extra": 1}),
    (Assignment, assignment("p1"), {"assigned_at": "yesterday"}),
    (Assignment, assignment("p1"), {"participant_id": ""}),
    (Response, response("r1", "p1"), {"items": {"WHO5_1": "often"}}),
    (Response, response("r1", "p1"), {"submitted_at": "2026-01-02 09:00:00"}),
    (Event, event("e1", "p1"), {"type": "purchase"}),
    (Event, event("e1", "p1"), {"participant_id": 42}),
    (ExternalScore, {"participant_id": "p1", "study_id": "s1", "wave": "m1", "outcome": "clinic.total",
                     "value": 12, "scored_at": "2026-02-01T00:00:00Z"}, {"value": "high"}),
])
def test_record_models_accept_the_good_and_refuse_the_bad(model, good, bad_change):
    model.model_validate({k: v for k, v in good.items() if v is not None})
    with pytest.raises(ValidationError):
        model.model_validate({**{k: v for k, v in good.items() if v is not None}, **bad_change})


def _protocol_dict(**over):
    base = {
        "study_id": "s1", "title": "t",
        "arms": [{"name": "control", "control": True}, {"name": "b"}],
        "waves": [{"name": "baseline", "day": 0, "instruments": ["who5"]}, {"name": "m1", "day": 30, "instruments": ["who5"]}],
        "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m1"},
        "privacy": {"epsilon": 1.0},
    }
    base.update(over)
    return base


@pytest.mark.parametrize("change, needle", [
    ({"arms": [{"name": "a", "control": True}, {"name": "b", "control": True}]}, "exactly one arm"),
    ({"arms": [{"name": "a", "control": True}, {"name": "a"}]}, "unique"),
    ({"primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m24"}}, "not one of"),
    ({"primary_outcome": {"name": "swls.total", "instrument": "swls", "wave": "m1"}}, "no wave administers"),
    ({"waves": [{"name": "m1", "day": 30, "instruments": ["who5"]}, {"name": "baseline", "day": 0, "instruments": ["who5"]}]},
     "increasing day order"),
    ({"privacy": {"epsilon": -1}}, "greater than 0"),
    ({"unexpected": True}, "Extra inputs are not permitted"),
])
def test_protocol_refusals_say_what_is_wrong(change, needle):
    with pytest.raises(ValidationError, match=needle):
        StudyProtocol.model_validate(_protocol_dict(**change))


def _quarantine(tmp_path, protocol, files: dict[str, list]):
    land = tmp_path / "landing"
    land.mkdir()
    for name, rows in files.items():
        write_jsonl(land / name, rows)
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY)
    con = duckdb.connect(str(wh), read_only=True)
    rows = con.execute("SELECT source_file, line, reason, message FROM quarantine ORDER BY source_file, line").fetchall()
    con.close()
    return rec, rows


@pytest.mark.parametrize("bad, reason", [
    (b'{"event_id": "e9", ', "malformed_json"),
    ('[1, 2, 3]', "schema_violation"),
    (event("e9", "p1", extra_field=1), "schema_violation"),
    ({k: v for k, v in event("e9", "p1").items() if k != "session_id"}, "schema_violation"),
    (event("e9", "p1", ts="2026-01-03T10:00:00"), "naive_timestamp"),
    (event("e9", "p1", ts="2026-13-03T10:00:00Z"), "schema_violation"),
    (event("e9", "p1", value="lots"), "schema_violation"),
    (event("e9", "p1", study_id="s2"), "unknown_study"),
    (event("e9", "p-without-consent"), "no_consent"),
    (event("e9", "p-surveys-only"), "no_consent"),
    (event("e9", "p-withdrawn", ts="2026-03-01T00:00:00Z"), "withdrawn"),
    (event("e1", "p1"), "duplicate"),
    (b'\xff\xfe not utf-8', "invalid_utf8"),
])
def test_each_bad_event_lands_in_quarantine_with_its_reason(tmp_path, protocol, bad, reason):
    files = {
        "consents.jsonl": [consent("p1"), consent("p-surveys-only", scopes=["surveys"]),
                           consent("p-withdrawn", withdrawn="2026-02-01T00:00:00Z")],
        "events.jsonl": [event("e1", "p1"), bad],
    }
    rec, rows = _quarantine(tmp_path, protocol, files)
    assert rec.read == 5 and rec.stored["events"] == 1 and rec.stored["consents"] == 3
    assert [(r[0], r[1], r[2]) for r in rows] == [("events.jsonl", 2, reason)]
    assert rows[0][3]  # a message a person can read


@pytest.mark.parametrize("bad, reason", [
    (response("r9", "p1", instrument="wemwbs"), "unknown_instrument"),
    (response("r9", "p1", instrument_version="7"), "unknown_instrument"),
    (response("r9", "p1", wave="m24"), "unknown_wave"),
    (response("r9", "p1", items={"WHO5_1": 6}), "out_of_range"),
    (response("r9", "p1", items={"WHO5_1": -1}), "out_of_range"),
    (response("r9", "p1", items={"WHO5_1": 2.5}), "schema_violation"),
    (response("r9", "p1", items={"WHO5_1": "3"}), None),  # lax: an integer in a string is an integer
    (response("r9", "p1", items={"WHO5_9": 1}), "unknown_item"),
    (response("r9", "p1", items=[1, 2]), "schema_violation"),
    (response("r9", "p-events-only"), "no_consent"),
    (response("r1", "p1"), "duplicate"),
])
def test_each_bad_response_lands_in_quarantine_with_its_reason(tmp_path, protocol, bad, reason):
    files = {"consents.jsonl": [consent("p1"), consent("p-events-only", scopes=["telemetry"])],
             "responses.jsonl": [response("r1", "p1"), bad]}
    rec, rows = _quarantine(tmp_path, protocol, files)
    assert rec.read == 4
    if reason is None:
        assert rows == [] and rec.stored["responses"] == 2
    else:
        assert [(r[0], r[1], r[2]) for r in rows] == [("responses.jsonl", 2, reason)]


def test_assignments_unknown_arm_and_conflicts(tmp_path, protocol):
    files = {"assignments.jsonl": [assignment("p1"), assignment("p2", arm="placebo"), assignment("p1", arm="guidance"),
                                   assignment("p1")]}
    rec, rows = _quarantine(tmp_path, protocol, files)
    assert rec.stored["assignments"] == 1
    assert [r[2] for r in rows] == ["unknown_arm", "conflicting_assignment", "duplicate"]


def test_external_scores_gated_and_checked(tmp_path, protocol):
    good = {"participant_id": "p1", "study_id": "s1", "wave": "m1", "outcome": "clinic.total", "value": 12.5,
            "scored_at": "2026-02-01T00:00:00Z"}
    files = {"consents.jsonl": [consent("p1")],
             "scores-clinic.jsonl": [good, {**good, "outcome": "nope"}, {**good, "participant_id": "p2"}, good]}
    rec, rows = _quarantine(tmp_path, protocol, files)
    assert rec.stored["scores"] == 1
    assert [r[2] for r in rows] == ["unknown_outcome", "no_consent", "duplicate"]


def test_consent_version_without_the_scope_stops_the_gate_from_then_on(tmp_path, protocol):
    files = {
        "consents.jsonl": [consent("p1"), {**consent("p1", scopes=["surveys"], granted="2026-02-01T00:00:00Z"),
                                           "consent_version": "v2"}],
        "events.jsonl": [event("e1", "p1", ts="2026-01-15T00:00:00Z"), event("e2", "p1", ts="2026-02-15T00:00:00Z")],
    }
    rec, rows = _quarantine(tmp_path, protocol, files)
    assert rec.stored["events"] == 1
    assert [(r[1], r[2]) for r in rows] == [(2, "no_consent")]


def test_unknown_files_are_quarantined_not_ignored(tmp_path, protocol):
    files = {"notes.jsonl": ["hello", "", "world"]}
    rec, rows = _quarantine(tmp_path, protocol, files)
    assert rec.read == 2 and [r[2] for r in rows] == ["unknown_record_kind", "unknown_record_kind"]


def test_hostile_files_never_crash_the_batch(tmp_path, protocol):
    land = tmp_path / "landing"
    (land / "events").mkdir(parents=True)
    (land / "_own").mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    (land / "events.parquet").write_bytes(b"PAR1 this is not parquet")
    (land / "assignments.csv").write_bytes(b"")
    (land / "responses.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(response("r1", "p1")).encode() + b"\n")
    write_jsonl(land / "events" / "2026-01-03.jsonl", [event("e1", "p1"), event("e2", "p1", value=1e999)])
    write_jsonl(land / "_own" / "events.jsonl", [event("e3", "p1")])  # underscore folders are not data
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    assert rec.stored["responses"] == 1  # a byte-order mark is not part of the record
    assert rec.stored["events"] == 1 and rec.stored["consents"] == 1
    assert rec.quarantined["unreadable_file"] >= 1
    assert rec.read == sum(rec.stored.values()) + sum(rec.quarantined.values())
    names = {f.name for f in rec.files}
    assert "events/2026-01-03.jsonl" in names and "_own/events.jsonl" not in names


def test_repeated_item_code_is_a_schema_violation(tmp_path, protocol):
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    line = json.dumps(response("r1", "p1", items={"WHO5_1": 1})).replace('"WHO5_1": 1', '"WHO5_1": 1, "WHO5_1": 5')
    write_jsonl(land / "responses.jsonl", [line])
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    assert rec.quarantined == {"schema_violation": 1}


def test_resubmission_in_a_wave_is_stored_and_the_latest_is_scored(tmp_path, protocol):
    from flows.scoring import score_responses

    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    write_jsonl(land / "responses.jsonl", [
        response("r1", "p1", items={f"WHO5_{i}": 1 for i in range(1, 6)}, submitted_at="2026-01-02T09:00:00Z"),
        response("r2", "p1", items={f"WHO5_{i}": 4 for i in range(1, 6)}, submitted_at="2026-01-03T09:00:00Z"),
    ])
    wh = tmp_path / "w.duckdb"
    assert ingest_batch(land, protocol, wh, KEY).stored["responses"] == 2
    score_responses.fn(wh, "s1")
    con = duckdb.connect(str(wh), read_only=True)
    value = con.execute("SELECT value FROM scores WHERE outcome = 'who5.raw'").fetchall()
    assert value == [(20.0,)]  # the later submission (5 x 4), not the earlier one


def test_a_file_ingested_for_one_study_is_read_again_for_another(tmp_path, protocol):
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    wh = tmp_path / "w.duckdb"
    other = protocol.model_copy(update={"study_id": "s2"})
    assert ingest_batch(land, protocol, wh, KEY).read == 1
    assert ingest_batch(land, protocol, wh, KEY).read == 0
    assert ingest_batch(land, other, wh, KEY).read == 1


@pytest.mark.parametrize("use, instrument, permissions, refused", [
    ("research", "flourish_index", [], False),
    ("commercial", "who5", [], False),
    ("commercial", "flourish_index", [], True),  # CC BY-NC: commercial use needs a permission
    ("commercial", "flourish_index", [{"instrument": "flourish_index", "reference": "licence 2026-17"}], False),
    ("research", "wemwbs", [], True),  # not in the library
])
def test_protocol_licence_gate_and_unknown_instruments(tmp_path, use, instrument, permissions, refused):
    from flows.study import load_study
    from schemas.protocol import ProtocolError, dump_protocol

    protocol = StudyProtocol.model_validate(_protocol_dict(
        intended_use=use, instrument_permissions=permissions,
        waves=[{"name": "baseline", "day": 0, "instruments": ["who5", instrument]},
               {"name": "m1", "day": 30, "instruments": ["who5"]}]))
    path = tmp_path / "study.yaml"
    path.write_text(dump_protocol(protocol))
    if refused:
        with pytest.raises(ProtocolError, match="refused"):
            load_study(path)
        with pytest.raises(ProtocolError):
            ingest_batch(tmp_path, protocol, tmp_path / "w.duckdb", KEY)
    else:
        assert load_study(path) == protocol
