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


# -- the pydantic contract and the ingest accept and refuse the same lines -----------------------------------
#
# Lines of every record kind, each a valid record (unique keys, consented participants, the protocol's study,
# arms, waves, instrument and external outcome, answers in range) with at most one change: a field set to a value
# of every JSON type and of every length around its bound, a key dropped, an unknown or repeated key, a timestamp
# of every valid and invalid form, an event type, scopes and items of every shape, or the line's text itself
# broken (not JSON, NaN, a trailing comma, a lone surrogate, a top-level array). The protocol's own checks
# (unknown study, arm, item code, an answer out of range) and the gate are not the contract's business: the
# changes never reach them with a value the contract accepts.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from schemas.records import RECORD_KINDS, LineRefused, parse_line  # noqa: E402

GRANTED = "0001-01-01T00:00:00Z"  # the gate's consents precede every instant the contract accepts
TIMESTAMPS = [
    "2026-03-01T10:00:00Z", "2026-03-01T10:00:00+05", "2026-03-01T10:00:00+0530", "2026-03-01 10:00Z",
    "2026-03-01T10:00:00.123456789-03:30", "9999-12-31T23:59:59.9999999Z", GRANTED, "2024-02-29T12:00:00-12:00",
    "2026-03-01T10:00:00", "2026-03-01", "2026-02-30T00:00:00Z", "2026-03-01T24:00:00Z", "2026-03-01t10:00:00Z",
    "2026-03-01T10:00:00z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00", "2026-03-01T10:00:00+24:00",
    "2026-03-01T10:00:60Z", "2026-03-01T10:00:00+05:30:00", " 2026-03-01T10:00:00Z", "", 20260301, None, True,
]
TEXTS = ["x", "é", "😀", "a\u0000b", "line\u2028sep", " ", 'q"uote', "back\\slash", "", 5, 5.5, True, None, [],
         {}, ["x"]]
NUMBERS = [0, -1, 1.5, -0.0, 1e308, 12345678901234567890123, "1.5", " 2 ", "\t2", "+1", "1e5", ".5", "5.", "inf",
           "NaN", "-", "", "1_000", "0x10", True, None, [1], {"a": 1}]
EVENT_TYPES_AND_NOT = ["message", "session_start", "feature_opt_out", "MESSAGE", "purchase", "", 1, None]
SCOPE_LISTS = [[], ["telemetry"], ["surveys", "surveys"], ["bogus"], "surveys", "[\"surveys\"]", [1], [None], None,
               {"a": 1}, ["telemetry", "linkage", "aggregate_release", "surveys"]]
ITEMS = [{}, {"WHO5_1": 3}, {"WHO5_1": "3"}, {"WHO5_1": " 3 "}, {"WHO5_1": 3.0}, {"WHO5_1": "3.0"}, {"WHO5_1": -0.0},
         {"WHO5_1": 2.5}, {"WHO5_1": True}, {"WHO5_1": None}, {"WHO5_1": [1]}, {"WHO5_1": "+3"}, {"WHO5_1": "3e0"},
         {"WHO5_5": 0, "WHO5_1": 5}, {"WHO5_1": {"v": 1}}, "{}", "{\"WHO5_1\": 3}", [], 5, None]
TIME_ZONE_NAMES = ["Europe/London", "America/New_York", "Asia/Kolkata", "UTC", "europe/london", "Mars/Olympus", "GMT+1",
                   "Europe/London ", "localtime", "", 5, None, ["UTC"]]
# characteristics of every shape; those the contract accepts are valid for the spine protocol's declared covariates
# (drug: No/Yes, age: numeric), so the protocol's own key-by-key checks never decide here
CHARACTERISTICS = [{}, {"drug": "Yes"}, {"drug": None}, {"age": 3}, {"age": -1.5}, {"age": " 2 "}, {"age": 1e308},
                   {"drug": True}, {"drug": [1]}, {"drug": {"a": 1}}, {"drug": ""}, {"drug": "x" * 1025},
                   "{}", [], 5, None]
# fields whose valid values the protocol or the gate constrains: only values the contract refuses are tried
CONSTRAINED = {"participant_id", "study_id", "arm", "wave", "instrument", "instrument_version", "outcome",
               "event_id", "response_id", "prompt_id"}


def _valid(kind: str, i: int) -> dict:
    pid = f"pc{i}" if kind == "consents" else f"pg{i}"
    return {
        "consents": {"participant_id": pid, "consent_version": "v1", "scopes": ["telemetry", "surveys"],
                     "granted_at": "2026-01-01T00:00:00Z", "withdrawn_at": None},
        "assignments": {"participant_id": pid, "study_id": "s1", "arm": "guidance",
                        "assigned_at": "2026-01-01T01:00:00+01:00", "stratum": "north"},
        "participants": {"participant_id": pid, "study_id": "s1", "recorded_at": "2026-01-01T02:00:00Z",
                         "characteristics": {"drug": "Yes", "age": 41}, "stratum": "north"},
        "responses": {"response_id": f"r{i}", "participant_id": pid, "study_id": "s1", "instrument": "who5",
                      "instrument_version": "1", "wave": "m1", "submitted_at": "2026-02-01T09:00:00+00:00",
                      "items": {f"WHO5_{k}": k for k in range(1, 6)}},
        "scores": {"participant_id": pid, "study_id": "s1", "wave": "m1", "outcome": "clinic.total", "value": 12.5,
                   "scored_at": "2026-02-01T00:00:00Z"},
        "events": {"event_id": f"e{i}", "participant_id": pid, "study_id": "s1", "ts": "2026-01-03T10:00:00-05:00",
                   "session_id": "s-1", "type": "message", "feature": "guidance", "value": 1.0},
        # every optional time present and in order, so a changed time may break the order (timestamp_order)
        "prompts": {"prompt_id": f"q{i}", "participant_id": pid, "study_id": "s1", "wave": "m1", "instrument": "who5",
                    "schedule_version": "2026.1", "scheduled_at": "2026-03-01T09:00:00Z",
                    "sent_at": "2026-03-01T10:00:00+01:00", "opened_at": "2026-03-01T09:30:00Z",
                    "started_at": "2026-03-01T09:31:00Z", "completed_at": "2026-03-01T09:40:00Z",
                    "expired_at": "2026-03-03T09:00:00Z", "timezone": "Europe/London"},
    }[kind]


def _values_for(kind: str, name: str) -> list:
    from schemas.records import field_specs

    spec = {s.name: s for s in field_specs(kind)}[name]
    if spec.form == "timestamp":
        return TIMESTAMPS
    if spec.form == "number":
        return NUMBERS
    if spec.form == "enum":
        return EVENT_TYPES_AND_NOT
    if spec.form == "scopes":
        return SCOPE_LISTS
    if spec.form == "items":
        return ITEMS
    if spec.form == "timezone":
        return TIME_ZONE_NAMES
    if spec.form == "characteristics":
        return CHARACTERISTICS
    bound = spec.max_chars
    around = ["x" * bound, "x" * (bound + 1), "é" * bound, "é" * (bound + 1), "😀" * (bound // 2)]
    if name in CONSTRAINED:  # a value the contract refuses, or (keys) a unique one it accepts
        refused = [v for v in TEXTS + around if not (isinstance(v, str) and 0 < len(v) <= bound)]
        return refused + (["UNIQUE"] if name in ("event_id", "response_id", "prompt_id") else [])
    return TEXTS + around


@st.composite
def _line(draw, kind: str, i: int) -> str:
    rec = _valid(kind, i)
    change = draw(st.sampled_from(["none", "set", "set", "set", "drop", "unknown_key", "repeat_key", "text",
                                   "not_object", "spaces"]))
    name = draw(st.sampled_from(sorted(rec)))
    if change == "set":
        value = draw(st.sampled_from(_values_for(kind, name)))
        rec[name] = f"{rec[name]}-é😀" if value == "UNIQUE" else value
    elif change == "drop":
        rec.pop(name)
    elif change == "unknown_key":
        rec["bogus"] = draw(st.sampled_from([None, 1, "x"]))
    ascii_only = draw(st.booleans())
    text = json.dumps(rec, ensure_ascii=ascii_only)
    if change == "repeat_key":
        text = text[:-1] + f', {json.dumps(name)}: {json.dumps(rec[name])}}}'
    elif change == "text":
        text = draw(st.sampled_from([
            text[:-2], text[:-1] + ",}", text.replace("{", "{\"nan\": NaN, ", 1), '["not", "an", "object"]',
            text[:-1] + ', "x": "\\ud800"}', text[:-1] + ', "x": 1e999}', "null", "{}",
        ]))
    elif change == "not_object":
        text = json.dumps(draw(st.sampled_from([[rec], "text", 1, None])))
    elif change == "spaces":
        text = f" \t{text} "
    return text


def _accepted(kind: str, text: str) -> bool:
    try:
        parse_line(kind, text)
    except LineRefused:
        return False
    return True


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_ingest_stores_exactly_the_lines_the_pydantic_contract_accepts(tmp_path_factory, protocol, data):
    """For every record kind, the same generated lines to ``schemas.records.parse_line`` and to the ingest
    (either path): a line is stored if and only if the contract accepts it. A 100-character consent_version
    (refused by the contract and the JSON Schema, stored by the ingest before they shared one definition)
    is among them."""
    tmp = tmp_path_factory.mktemp("contract")
    land = tmp / "landing"
    land.mkdir()
    lines = {kind: data.draw(st.lists(st.integers(0, 0), min_size=1, max_size=8).flatmap(
        lambda ns: st.tuples(*[_line(kind, i) for i in range(len(ns))]))) for kind in RECORD_KINDS}
    n = max(len(v) for v in lines.values())
    write_jsonl(land / "consents-gate.jsonl", [consent(f"pg{i}", scopes=("telemetry", "surveys"), granted=GRANTED)
                                               for i in range(n)])
    for kind, texts in lines.items():
        write_jsonl(land / f"{kind}.jsonl", list(texts))
    fast = data.draw(st.booleans())
    wh = tmp / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY, fast_path=fast)
    con = duckdb.connect(str(wh), read_only=True)
    refused = set(con.execute("SELECT source_file, line FROM quarantine").fetchall())
    con.close()
    assert not {f for f, _ in refused} & {"consents-gate.jsonl"}, rec.as_json()
    wrong = [(kind, i + 1, text[:120], _accepted(kind, text))
             for kind, texts in lines.items() for i, text in enumerate(texts)
             if _accepted(kind, text) == ((f"{kind}.jsonl", i + 1) in refused)]
    assert wrong == [], wrong


def test_a_100_character_consent_version_is_refused_by_both(tmp_path, protocol):
    """The drift the shared definition ends: pydantic refused it (max 64 characters), the ingest stored it."""
    long = {**consent("p1"), "consent_version": "v" * 100}
    with pytest.raises(LineRefused):
        parse_line("consents", json.dumps(long))
    rec, rows = _quarantine(tmp_path, protocol, {"consents.jsonl": [long]})
    assert rec.stored["consents"] == 0 and [r[2] for r in rows] == ["schema_violation"]


@pytest.mark.parametrize("fast", [True, False])
def test_an_external_score_for_an_outcome_flourish_scores_is_quarantined_with_its_own_reason(tmp_path, protocol, fast):
    """who5.percent is scored by Flourish from the responses (protocol source: flourish); an external value for
    it would give the readers two scores of one participant x wave to choose from. The same file otherwise
    clean, so both paths decide (the fast path refuses the file, the exact path the row)."""
    land = tmp_path / "landing"
    land.mkdir()
    external = {"participant_id": "p1", "study_id": "s1", "wave": "m1", "outcome": "clinic.total", "value": 12.5,
                "scored_at": "2026-02-01T00:00:00Z"}
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    write_jsonl(land / "scores.jsonl", [external, {**external, "outcome": "who5.percent", "value": 60.0}])
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY, fast_path=fast)
    assert rec.stored["scores"] == 1 and rec.quarantined == {"scored_by_flourish": 1}, rec.as_json()
    con = duckdb.connect(str(wh), read_only=True)
    assert con.execute("SELECT outcome, source FROM scores").fetchall() == [("clinic.total", "external")]
    assert con.execute("SELECT line, reason FROM quarantine").fetchall() == [(2, "scored_by_flourish")]
    con.close()
