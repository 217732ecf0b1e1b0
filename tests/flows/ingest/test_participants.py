"""The participants record kind: baseline characteristics under the landing contract, the protocol's declared
covariates, the consent gate, erasure and re-keying (issue 20 item 5)."""

from __future__ import annotations

import duckdb
import pytest

from flows.ingest import ingest_batch
from privacy.erasure import erase_rows
from privacy.pseudonym import pseudonymize
from privacy.rekey import rekey
from schemas.protocol import StudyProtocol
from schemas.warehouse import participant_tables

from tests.support.spine import KEY, consent, write_jsonl

PROTOCOL = StudyProtocol.model_validate({
    "study_id": "s1", "title": "t",
    "arms": [{"name": "control", "control": True}, {"name": "guidance"}],
    "waves": [{"name": "baseline", "day": 0, "instruments": ["who5"]}, {"name": "m1", "day": 30, "instruments": ["who5"]}],
    "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m1"},
    "baseline_covariates": [{"name": "drug", "kind": "categorical", "levels": ["No", "Yes"]}, {"name": "age"}],
})
SECRET = "Maybe-sk3tchy-value"  # a value the messages must never copy


def _record(pid: str, characteristics, **over) -> dict:
    return {"participant_id": pid, "study_id": "s1", "recorded_at": "2026-01-01T02:00:00Z",
            "characteristics": characteristics, **over}


@pytest.mark.parametrize("fast", [True, False])
def test_each_bad_characteristic_is_quarantined_with_a_reason_naming_the_covariate_never_the_value(tmp_path, fast):
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent(f"p{i}", scopes=("surveys",)) for i in range(9)])
    write_jsonl(land / "participants.jsonl", [
        _record("p0", {"drug": "Yes", "age": 31}),
        _record("p1", {"drug": "No", "age": "40"}),          # a number as text (CSV writes it so) is a number
        _record("p2", {"drug": SECRET}),                     # not one of drug's levels
        _record("p3", {SECRET: "Yes"}),                      # not a declared covariate
        _record("p4", {"age": SECRET}),                      # a numeric covariate that is not a number
        _record("p5", {"drug": None}, stratum="north"),      # null: not recorded, stored as such
        _record("p0", {"drug": "No"}),                       # one record per participant
        _record("p-no-consent", {"drug": "No"}),
        _record("p6", {"drug": 1}),                          # a level is text
        _record("p7", {"drug": True}),                       # the contract's own refusal
    ])
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, PROTOCOL, wh, KEY, fast_path=fast)
    assert rec.read == 19 and rec.stored["participants"] == 3
    con = duckdb.connect(str(wh), read_only=True)
    rows = con.execute("SELECT line, reason, message FROM quarantine WHERE record_kind = 'participants' "
                       "ORDER BY line").fetchall()
    stored = con.execute("SELECT covariate, value_text, value_number FROM participant_characteristics "
                         "ORDER BY ALL").fetchall()
    con.close()
    assert [(line, reason) for line, reason, _ in rows] == [
        (3, "out_of_range"), (4, "unknown_covariate"), (5, "schema_violation"), (7, "duplicate"), (8, "no_consent"),
        (9, "out_of_range"), (10, "schema_violation")]
    messages = dict((line, m) for line, _, m in rows)
    assert "drug" in messages[3] and "No, Yes" in messages[3]
    assert "drug, age" in messages[4]
    assert "age" in messages[5]
    assert all(SECRET not in m for m in messages.values())
    assert stored == [("age", "40", 40.0), ("age", None, 31.0), ("drug", "No", None), ("drug", "Yes", None),
                      ("drug", None, None)]  # NULLS LAST


def test_a_participants_record_before_its_consent_is_replayed_once_the_consent_arrives(tmp_path):
    from flows.ingest.replay import replay

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    write_jsonl(first / "participants.jsonl", [_record("p0", {"drug": "Yes"})])
    write_jsonl(second / "consents.jsonl", [consent("p0", scopes=("surveys",))])
    wh = tmp_path / "w.duckdb"
    assert ingest_batch(first, PROTOCOL, wh, KEY).quarantined == {"no_consent": 1}
    ingest_batch(second, PROTOCOL, wh, KEY)
    assert replay(wh, PROTOCOL).stored.get("participants") == 1
    con = duckdb.connect(str(wh), read_only=True)
    try:
        assert con.execute("SELECT covariate, value_text FROM participant_characteristics").fetchall() == [("drug", "Yes")]
    finally:
        con.close()


def test_erasure_and_rekeying_cover_the_participants_tables(tmp_path):
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent(f"p{i}", scopes=("surveys",)) for i in range(3)])
    write_jsonl(land / "participants.jsonl", [_record(f"p{i}", {"drug": "Yes", "age": 30 + i}) for i in range(3)])
    wh = tmp_path / "w.duckdb"
    ingest_batch(land, PROTOCOL, wh, KEY)
    con = duckdb.connect(str(wh))
    try:
        assert {"participants", "participant_characteristics"} <= set(participant_tables(con))
        gone = pseudonymize("p1", KEY)
        erase_rows(con, gone, "erasure request")
        for table in ("participants", "participant_characteristics"):
            assert con.execute(f"SELECT count(*) FROM {table} WHERE participant = ?", [gone]).fetchone()[0] == 0
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
        new_key = b"another-key-for-the-same-study-0123"
        rekey(con, KEY, new_key, ["p0", "p1", "p2"])
        kept = {pseudonymize("p0", new_key), pseudonymize("p2", new_key)}
        for table in ("participants", "participant_characteristics"):
            assert {r[0] for r in con.execute(f"SELECT participant FROM {table}").fetchall()} == kept
    finally:
        con.close()
