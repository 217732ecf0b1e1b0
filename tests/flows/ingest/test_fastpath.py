"""The clean-file fast path must never change what an ingest stores or quarantines.

Each test ingests the same landing folder twice, with the fast path on and with it off
(``fast_path=False``, i.e. FLOURISH_FAST_PATH=0: every row through the exact path), and compares the reconciliation and
every row of the warehouse. The fast path may only ever store files in which every row is clean;
hostile lines (unknown keys with null values, repeated keys, escapes, naive timestamps, numbers
written as strings, blank lines, a byte-order mark) must send the file to the exact path.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flows.ingest.fastpath as fastpath_mod
from flows.ingest import ingest_batch

from tests.support.spine import KEY, consent, event, write_jsonl

PIDS = [f"p{i}@example.org" for i in range(6)]  # p5 has no consent; p4 withdraws on 2026-01-05




def _snapshot(wh: Path) -> dict:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        out = {}
        for table, order in [("events", "event_id, participant, ts"), ("quarantine", "source_file, line, reason"),
                             ("consents", "participant, granted_at"), ("batch_files", "file_name"),
                             ("erasure_log", "rows_deleted"), ("tombstones", "participant")]:
            # erasure ids and times are fresh per run; everything else must match
            exclude = {"erasure_log": " EXCLUDE (erasure_id, erased_at)", "tombstones": " EXCLUDE (erased_at)"}.get(table, "")
            out[table] = con.execute(f"SELECT *{exclude} FROM {table} ORDER BY {order}").fetchall()
        return out
    finally:
        con.close()


def _both(tmp_path: Path, land: Path, protocol):
    results = []
    for on in (True, False):
        wh = tmp_path / f"w-{'fast' if on else 'exact'}.duckdb"
        rec = ingest_batch(land, protocol, wh, KEY, fast_path=on).as_json()
        if rec["erased_on_withdrawal"]:
            rec["erased_on_withdrawal"].pop("erasure_id")
        results.append((rec, _snapshot(wh)))
    return results


def _consents(land: Path) -> None:
    rows = [consent(p) for p in PIDS[:4]] + [consent(PIDS[4], withdrawn="2026-01-05T00:00:00Z")]
    write_jsonl(land / "consents.jsonl", rows)


def _clean_event(i: int, pid: str, day: int = 3, **over) -> dict:
    return event(f"e{i}", pid, ts=f"2026-01-{day:02d}T10:00:00-05:00", **over)


def _compact(d: dict) -> str:
    return json.dumps(d, separators=(",", ":"))


# A line of an events file: a clean record in one of two layouts, or one hostile variant.
def _line(kind: str, i: int, pid: str, style: str) -> str | bytes:
    e = _clean_event(i, pid, feature=None if i % 3 else "guidance", value=None if i % 2 else float(i))
    dump = _compact if style == "compact" else json.dumps
    if kind == "clean":
        return dump(e)
    if kind == "missing_optional":
        e.pop("feature")
        e.pop("value")
        return dump(e)
    if kind == "unknown_null":
        return dump({**e, "bogus": None})
    if kind == "unknown_str":
        return dump({**e, "bogus": "x"})
    if kind == "repeated_key":
        return dump(e)[:-1] + ', "event_id": "again"}'
    if kind == "repeated_null_key":  # in the file's own layout: a count of '"feature":null' bytes would credit it
        return dump({**e, "feature": None})[:-1] + (',"feature":null}' if style == "compact" else ', "feature": null}')
    if kind == "missing_and_unknown_null":  # an optional key left out and an unknown null key: balanced bytes
        e.pop("feature")
        return dump({**e, "featur": None})
    if kind == "escaped":
        return dump({**e, "session_id": 'say "hi"'})
    if kind == "naive_ts":
        return dump({**e, "ts": "2026-01-03T10:00:00"})
    if kind == "number_as_string":
        return dump({**e, "value": "1.5"})
    if kind == "required_null":
        return dump({**e, "session_id": None})
    if kind == "trailing_comma":  # DuckDB's parser takes it; JSON (and the contract) does not
        return dump(e)[:-1] + (",}" if style == "compact" else ", }")
    if kind == "comma_bracket_in_a_string":  # valid JSON: the same characters inside a string
        return dump({**e, "session_id": "a,}"})
    if kind == "form_feed_after":  # DuckDB's line reader takes it as a blank, JSON does not (second audit)
        return dump(e).encode() + b"\x0c"
    if kind == "vertical_tab_before":
        return b"\x0b" + dump(e).encode()
    if kind == "blank":
        return "   "
    if kind == "malformed":
        return dump(e)[:-3]
    if kind == "late_after_withdrawal":
        return dump(_clean_event(i, PIDS[4], day=9))
    raise AssertionError(kind)


KINDS = ["clean", "missing_optional", "unknown_null", "unknown_str", "repeated_key", "repeated_null_key",
         "missing_and_unknown_null", "trailing_comma", "comma_bracket_in_a_string", "form_feed_after",
         "vertical_tab_before", "escaped", "naive_ts",
         "number_as_string", "required_null", "blank", "malformed", "late_after_withdrawal"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(
    st.tuples(st.sampled_from(["compact", "spaced"]),
              # mostly clean lines, so that whole clean files (the fast path's case) are common
              st.lists(st.tuples(st.sampled_from(["clean"] * 12 + ["missing_optional"] * 3 + KINDS),
                                 st.integers(0, 400), st.sampled_from(PIDS[:4] * 3 + PIDS)), min_size=1, max_size=12)),
    min_size=1, max_size=3))
def test_fast_path_stores_and_quarantines_exactly_what_the_exact_path_does(tmp_path_factory, protocol, files):
    tmp_path = tmp_path_factory.mktemp("fp")
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    for n, (style, lines) in enumerate(files):
        write_jsonl(land / f"events-{n}.jsonl", [_line(k, i, p, style) for k, i, p in lines])
    (fast_rec, fast_rows), (exact_rec, exact_rows) = _both(tmp_path, land, protocol)
    assert fast_rec == exact_rec
    assert fast_rows == exact_rows


def test_clean_files_take_the_fast_path_and_hostile_ones_do_not(tmp_path, protocol, monkeypatch):
    """The property above would hold trivially if the fast path never stored anything: check it does."""
    stored_fast: list[list[str]] = []
    real = fastpath_mod.try_run

    def spy(con, run, *args, **kwargs):
        outcome = real(con, run, *args, **kwargs)
        if outcome.stored:
            stored_fast.append(sorted(f.name for f, _ in run))
        return outcome

    monkeypatch.setattr(fastpath_mod, "try_run", spy)
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    write_jsonl(land / "events-a.jsonl", [_line("clean", i, PIDS[i % 4], "compact") for i in range(30)])
    write_jsonl(land / "events-b.jsonl", [_line("clean", 100 + i, PIDS[i % 4], "spaced") for i in range(30)]
                + [_line("missing_optional", 200, PIDS[0], "spaced")])
    write_jsonl(land / "events-c.jsonl", [_line("clean", 300 + i, PIDS[i % 4], "compact") for i in range(5)]
                + [_line("unknown_null", 400, PIDS[1], "compact")])
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY, fast_path=True)
    # a and b are clean (b in Python's default layout, with optional fields left out); c has an unknown key
    assert ["events-a.jsonl"] in stored_fast or ["events-a.jsonl", "events-b.jsonl"] in stored_fast
    assert all("events-c.jsonl" not in group for group in stored_fast)
    assert rec.quarantined == {"schema_violation": 1}
    assert rec.stored["events"] == 30 + 31 + 5


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("clean", "missing_optional")])
def test_each_hostile_line_keeps_its_file_off_the_fast_path(tmp_path, protocol, kind):
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    write_jsonl(land / "events-x.jsonl", [_line("clean", i, PIDS[i % 4], "compact") for i in range(10)]
                + [_line(kind, 50, PIDS[2], "compact")])
    (fast_rec, fast_rows), (exact_rec, exact_rows) = _both(tmp_path, land, protocol)
    assert fast_rec == exact_rec and fast_rows == exact_rows
    # an escaped quote and a number written as a string are valid (stored, by the exact path); a blank line
    # is skipped, not a row
    valid = ("escaped", "blank", "number_as_string", "comma_bracket_in_a_string")
    assert sum(exact_rec["quarantined"].values()) == (0 if kind in valid else 1), exact_rec
    if kind == "trailing_comma":
        assert exact_rec["quarantined"] == {"malformed_json": 1}


def test_a_byte_order_mark_is_read_the_same_either_way(tmp_path, protocol):
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    body = "\n".join(_line("clean", i, PIDS[i % 4], "compact") for i in range(5)) + "\n"
    (land / "events-bom.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode())
    (fast_rec, fast_rows), (exact_rec, exact_rows) = _both(tmp_path, land, protocol)
    assert fast_rec == exact_rec and fast_rows == exact_rows
    assert exact_rec["stored"]["events"] == 5


def test_a_repeat_across_files_and_batches_is_a_duplicate_either_way(tmp_path, protocol):
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    write_jsonl(land / "events-1.jsonl", [_line("clean", i, PIDS[i % 4], "compact") for i in range(8)])
    write_jsonl(land / "events-2.jsonl", [_line("clean", i, PIDS[i % 4], "compact") for i in range(5, 12)])
    (fast_rec, fast_rows), (exact_rec, exact_rows) = _both(tmp_path, land, protocol)
    assert fast_rec == exact_rec and fast_rows == exact_rows
    assert exact_rec["quarantined"] == {"duplicate": 3}
    # a later batch repeating stored events: duplicates again, through either path
    land2 = tmp_path / "landing2"
    land2.mkdir()
    write_jsonl(land2 / "events-3.jsonl", [_line("clean", i, PIDS[i % 4], "compact") for i in range(10, 14)])
    for on in (True, False):
        rec = ingest_batch(land2, protocol, tmp_path / f"w-{'fast' if on else 'exact'}.duckdb", KEY, fast_path=on)
        assert rec.quarantined == {"duplicate": 2} and rec.stored["events"] == 2


def test_a_withdrawing_participants_event_never_makes_another_participants_event_a_duplicate(tmp_path, protocol):
    """Found by the property above (intermittently): p4 withdraws in this batch and has event e0 in one file, p0 has
    e0 in another. The exact path kept p4's e0 among the batch's gathered events until the batch's end, so p0's e0
    was quarantined as a duplicate of a row that the batch then erased; the fast path withheld p4's events from every
    table and stored p0's. The event key is the event id within the study (README, gate.RECORD_KEY), and the rows of
    a participant the batch erases are discarded, never stored: they are no key for anyone (gate.stored_keys)."""
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    write_jsonl(land / "events-0.jsonl", [_line("clean", 0, PIDS[4], "compact")])
    write_jsonl(land / "events-1.jsonl", [_line("clean", 0, PIDS[0], "compact")])
    (fast_rec, fast_rows), (exact_rec, exact_rows) = _both(tmp_path, land, protocol)
    assert fast_rec == exact_rec and fast_rows == exact_rows
    assert exact_rec["quarantined"] == {} and exact_rec["stored"]["events"] == 2
    assert exact_rec["erased_on_withdrawal"]["rows_deleted"] >= 1  # p4's e0, withheld and counted as erased
    assert len(exact_rows["events"]) == 1  # p0's e0


def test_events_a_withdrawal_erases_are_no_keys_in_the_same_file_or_across_batches(tmp_path, protocol):
    """The same rule wherever the erased participant's event sits: earlier in the same file (a repeat inside one
    chunk), or stored by an earlier batch whose participant withdraws in this one; and a withdrawing participant's
    own event sent twice is stored (then erased) twice by either path, not once by one and twice by the other."""
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    write_jsonl(land / "events-0.jsonl", [_line("clean", 0, PIDS[4], "compact"), _line("clean", 0, PIDS[0], "compact"),
                                          _line("clean", 1, PIDS[4], "compact")])
    write_jsonl(land / "events-1.jsonl", [_line("clean", 1, PIDS[4], "spaced")])
    (fast_rec, fast_rows), (exact_rec, exact_rows) = _both(tmp_path, land, protocol)
    assert fast_rec == exact_rec and fast_rows == exact_rows
    assert exact_rec["quarantined"] == {} and [r[0] for r in exact_rows["events"]] == ["e0"]

    first, second = tmp_path / "b1", tmp_path / "b2"
    first.mkdir()
    second.mkdir()
    write_jsonl(first / "consents.jsonl", [consent(p) for p in PIDS[:2]])
    write_jsonl(first / "events-0.jsonl", [_line("clean", 7, PIDS[1], "compact")])
    write_jsonl(second / "consents.jsonl", [consent(PIDS[1], withdrawn="2026-01-05T00:00:00Z")])
    write_jsonl(second / "events-0.jsonl", [_line("clean", 7, PIDS[0], "compact")])
    for on in (True, False):
        wh = tmp_path / f"w2-{'fast' if on else 'exact'}.duckdb"
        ingest_batch(first, protocol, wh, KEY, fast_path=on)
        rec = ingest_batch(second, protocol, wh, KEY, fast_path=on)
        assert rec.quarantined == {} and rec.stored["events"] == 1, on
    assert _snapshot(tmp_path / "w2-fast.duckdb")["events"] == _snapshot(tmp_path / "w2-exact.duckdb")["events"]


def test_a_file_name_that_reads_as_a_glob_is_still_its_own_file(tmp_path, protocol):
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    write_jsonl(land / "events-1.jsonl", [_line("clean", i, PIDS[i % 4], "compact") for i in range(4)])
    write_jsonl(land / "events-[1].jsonl", [_line("clean", 10 + i, PIDS[i % 4], "compact") for i in range(3)])
    (fast_rec, fast_rows), (exact_rec, exact_rows) = _both(tmp_path, land, protocol)
    assert fast_rec == exact_rec and fast_rows == exact_rows
    assert exact_rec["stored"]["events"] == 7 and exact_rec["quarantined"] == {}


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(st.sampled_from([
        b'{"feature":null,"value":null}', b'{"a":"\\"q"}', b'"', b"", b"\xef\xbb\xbf{}", b"null", b"\r",
        b'{"a":1,}', b'{"a":[1, ]}', b",", b" \t", b" }", b"]", b"{}\x0c", b"\x0b{}",
    ]), max_size=12),
    trailing_newline=st.booleans(),
    block=st.integers(min_value=1, max_value=40),
)
def test_file_facts_do_not_depend_on_the_block_size(tmp_path_factory, lines, trailing_newline, block):
    """Counting in blocks equals counting the whole file at once."""
    from flows.ingest.fastpath import facts as fastpath

    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    path = tmp_path_factory.mktemp("facts") / "events.jsonl"
    path.write_bytes(data)
    expected = fastpath.FileFacts(
        lines=data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0),
        bom=data.startswith(b"\xef\xbb\xbf"),
        trailing_comma=re.search(rb",[ \t\r\n]*[}\]]", data) is not None,
        vt_or_ff=b"\x0b" in data or b"\x0c" in data,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "BLOCK", block)
        assert fastpath.file_facts(path) == expected


# Assignments and external scores take the fast path too: the same equivalence, over two batches (the second
# repeats, conflicts with and follows the erasure of records of the first).
def _scalar_line(kind: str, variant: str, pid: str, i: int) -> str:
    if kind == "assignments":
        rec = {"participant_id": pid, "study_id": "s1", "arm": "control" if i % 2 else "guidance",
               "assigned_at": "2026-01-01T01:00:00+01:00", "stratum": None if i % 3 else "north"}
        time_field = "assigned_at"
    else:
        rec = {"participant_id": pid, "study_id": "s1", "wave": "m1" if i % 2 else "baseline",
               "outcome": "clinic.total", "value": float(i % 40), "scored_at": "2026-01-03T09:00:00Z"}
        time_field = "scored_at"
    if variant == "unknown_key":
        rec["bogus"] = None
    elif variant == "late":  # after p4's withdrawal
        rec[time_field] = "2026-02-01T00:00:00Z"
    elif variant == "unknown_name":
        rec["arm" if kind == "assignments" else "outcome"] = "nope"
    elif variant == "number_as_string" and kind == "scores":
        rec["value"] = "7"
    elif variant == "naive_ts":
        rec[time_field] = "2026-01-03T09:00:00"
    return _compact(rec)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(
    st.sampled_from(["assignments", "scores"]),
    st.sampled_from(["clean"] * 6 + ["unknown_key", "late", "unknown_name", "number_as_string", "naive_ts"]),
    st.sampled_from(PIDS), st.integers(0, 3)), min_size=1, max_size=10), min_size=1, max_size=2))
def test_assignments_and_scores_are_stored_alike_by_both_paths(tmp_path_factory, protocol, batches):
    tmp_path = tmp_path_factory.mktemp("fp")
    outcomes = []
    for on in (True, False):
        wh = tmp_path / f"w-{on}.duckdb"
        recs = []
        for b, lines in enumerate(batches):
            land = tmp_path / f"landing-{on}-{b}"
            land.mkdir()
            if b == 0:
                _consents(land)
            for kind in ("assignments", "scores"):
                rows = [_scalar_line(k, v, p, i) for k, v, p, i in lines if k == kind]
                if rows:
                    write_jsonl(land / f"{kind}-{b}.jsonl", rows)
            rec = ingest_batch(land, protocol, wh, KEY, fast_path=on).as_json()
            rec.pop("batch_id")
            if rec["erased_on_withdrawal"]:
                rec["erased_on_withdrawal"].pop("erasure_id")
            recs.append(rec)
        con = duckdb.connect(str(wh), read_only=True)
        try:
            tables = {t: con.execute(f"SELECT * EXCLUDE (batch_id) FROM {t} ORDER BY ALL").fetchall()
                      for t in ("assignments", "scores")}
            tables["quarantine"] = con.execute(
                "SELECT source_file, line, reason, participant FROM quarantine ORDER BY ALL").fetchall()
        finally:
            con.close()
        outcomes.append((recs, tables))
    assert outcomes[0] == outcomes[1]


def test_clean_assignment_and_score_files_take_the_fast_path(tmp_path, protocol, monkeypatch):
    stored_fast: list[str] = []
    real = fastpath_mod.try_run

    def spy(con, run, *args, **kwargs):
        outcome = real(con, run, *args, **kwargs)
        stored_fast.extend(f.name for f, _ in run if outcome.stored)
        return outcome

    monkeypatch.setattr(fastpath_mod, "try_run", spy)
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    write_jsonl(land / "assignments.jsonl", [_scalar_line("assignments", "clean", p, i) for i, p in enumerate(PIDS[:4])])
    write_jsonl(land / "scores.jsonl", [_scalar_line("scores", "clean", p, i) for i, p in enumerate(PIDS[:4])])
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY, fast_path=True)
    assert sorted(stored_fast) == ["assignments.jsonl", "scores.jsonl"]
    assert rec.stored["assignments"] == 4 and rec.stored["scores"] == 4 and rec.quarantined == {}


# Responses (nested items, checked against the instrument's item bounds) and consents take the fast path too:
# the same equivalence over two batches, every hostile item and scope shape included.
def _response_line(variant: str, pid: str, i: int) -> str:
    items = {f"WHO5_{k}": (i + k) % 6 for k in range(1, 6)}
    rec = {"response_id": f"r{i}", "participant_id": pid, "study_id": "s1", "instrument": "who5",
           "instrument_version": "1", "wave": "m1" if i % 2 else "baseline", "submitted_at": "2026-01-03T09:00:00Z",
           "items": items}
    if variant == "skipped_item":
        items["WHO5_2"] = None
    elif variant == "unordered":
        rec["items"] = dict(reversed(list(items.items())))
    elif variant == "answer_as_string":
        items["WHO5_3"] = "4"
    elif variant == "answer_as_float":
        items["WHO5_3"] = 4.0
    elif variant == "out_of_range":
        items["WHO5_1"] = 6
    elif variant == "not_integer":
        items["WHO5_1"] = 2.5
    elif variant in ("*", "\\", ""):  # hostile item keys (the audit's D7): an unknown code, never a crash
        items[variant] = 1
    elif variant == "unknown_code":
        items["WHO5_9"] = 1
    elif variant == "items_not_object":
        rec["items"] = [1, 2]
    elif variant == "unknown_version":
        rec["instrument_version"] = "7"
    elif variant == "late":  # after p4's withdrawal
        rec["submitted_at"] = "2026-02-01T00:00:00Z"
    text = _compact(rec)
    if variant == "repeated_code":
        text = text.replace('"WHO5_1":', '"WHO5_1":1,"WHO5_1":', 1)
    return text


def _consent_line(variant: str, pid: str, i: int) -> str:
    rec = consent(pid, granted=f"2026-01-0{1 + i % 2}T00:00:00Z")
    if variant == "withdrawn":
        rec["withdrawn_at"] = "2026-01-05T00:00:00Z"
    elif variant == "surveys_only":
        rec["scopes"] = ["surveys"]
    elif variant == "unknown_scope":
        rec["scopes"] = ["telemetry", "marketing"]
    elif variant == "scopes_as_text":
        rec["scopes"] = "telemetry;surveys"
    elif variant == "long_version":
        rec["consent_version"] = "v" * 65
    return _compact(rec)


def _tables(wh: Path, tables: dict[str, str]) -> dict:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        out = {t: con.execute(sql).fetchall() for t, sql in tables.items()}
        out["quarantine"] = con.execute(
            "SELECT source_file, line, reason, participant FROM quarantine ORDER BY ALL").fetchall()
        out["tombstones"] = con.execute("SELECT count(*) FROM tombstones").fetchall()
        return out
    finally:
        con.close()


def _both_over_batches(tmp_path: Path, protocol, batches: list[dict[str, list[str]]], tables: dict[str, str]):
    outcomes = []
    for on in (True, False):
        wh = tmp_path / f"w-{on}.duckdb"
        recs = []
        for b, files in enumerate(batches):
            land = tmp_path / f"landing-{on}-{b}"
            land.mkdir()
            for name, rows in files.items():
                if rows:
                    write_jsonl(land / name, rows)
            rec = ingest_batch(land, protocol, wh, KEY, fast_path=on).as_json()
            rec.pop("batch_id")
            if rec["erased_on_withdrawal"]:
                rec["erased_on_withdrawal"].pop("erasure_id")
            recs.append(rec)
        outcomes.append((recs, _tables(wh, tables)))
    return outcomes


RESPONSE_VARIANTS = ["clean"] * 8 + ["skipped_item", "unordered", "answer_as_string", "answer_as_float",
                                      "out_of_range", "not_integer", "*", "\\", "", "unknown_code",
                                      "items_not_object", "unknown_version", "late", "repeated_code"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(st.sampled_from(RESPONSE_VARIANTS), st.sampled_from(PIDS),
                                           st.integers(0, 6)), min_size=1, max_size=10), min_size=1, max_size=2))
def test_responses_are_stored_alike_by_both_paths(tmp_path_factory, protocol, batches):
    tmp_path = tmp_path_factory.mktemp("fp")
    files = []
    for b, lines in enumerate(batches):
        f = {f"responses-{b}.jsonl": [_response_line(v, p, i) for v, p, i in lines]}
        if b == 0:
            f["consents.jsonl"] = [_compact(consent(p)) for p in PIDS[:4]] + [
                _compact(consent(PIDS[4], withdrawn="2026-01-05T00:00:00Z"))]
        files.append(f)
    tables = {"responses": "SELECT * EXCLUDE (batch_id) FROM responses ORDER BY ALL",
              "response_items": "SELECT * FROM response_items ORDER BY ALL"}
    fast, exact = _both_over_batches(tmp_path, protocol, files, tables)
    assert fast == exact


@pytest.mark.parametrize("variant", sorted(set(RESPONSE_VARIANTS)))
def test_each_response_variant_alone_is_stored_alike_by_both_paths(tmp_path, protocol, variant):
    """Each variant once in an otherwise clean file (the file the fast path would store whole): a skipped item's
    null was refused by the exact path alone before this test existed."""
    consents = [_compact(consent(p)) for p in PIDS[:4]] + [_compact(consent(PIDS[4], withdrawn="2026-01-05T00:00:00Z"))]
    files = [{"consents.jsonl": consents,
              "responses.jsonl": [_response_line("clean", PIDS[i % 4], i) for i in range(6)]
              + [_response_line(variant, PIDS[4] if variant == "late" else PIDS[1], 50)]}]
    tables = {"responses": "SELECT * EXCLUDE (batch_id) FROM responses ORDER BY ALL",
              "response_items": "SELECT * FROM response_items ORDER BY ALL"}
    fast, exact = _both_over_batches(tmp_path, protocol, files, tables)
    assert fast == exact
    valid = {"clean", "skipped_item", "unordered", "answer_as_string", "answer_as_float"}
    assert sum(exact[0][0]["quarantined"].values()) == (0 if variant in valid else 1), exact[0][0]


def test_a_run_withholds_the_records_of_a_participant_the_batch_erases_and_counts_them_as_erased(
        tmp_path, protocol, monkeypatch):
    """A run of responses or prompts holds back the rows of a participant whose withdrawal this batch brings, as
    events always were: inserting them and deleting them again at the batch's end made its commit about ten times
    slower (fastpath/load.py). The warehouse and the erasure receipt, table by table, are what the exact path (which
    stores, then erases) leaves."""
    held: list[dict[str, int]] = []
    real = fastpath_mod.try_run

    def spy(con, run, *args, **kwargs):
        outcome = real(con, run, *args, **kwargs)
        if outcome.stored:
            held.append(dict(outcome.withheld))
        return outcome

    monkeypatch.setattr(fastpath_mod, "try_run", spy)
    consents = [_compact(consent(p)) for p in PIDS[:4]] + [_compact(consent(PIDS[4], withdrawn="2026-01-05T00:00:00Z"))]
    prompts = [_compact({"prompt_id": f"q{i}", "participant_id": PIDS[i % 5], "study_id": "s1", "wave": "baseline",
                         "schedule_version": "1", "scheduled_at": "2026-01-02T09:00:00Z",
                         "timezone": "Europe/London"}) for i in range(10)]
    responses = [_response_line("skipped_item" if i == 4 else "clean", PIDS[i % 5], i) for i in range(10)]
    files = [{"consents.jsonl": consents, "prompts.jsonl": prompts, "responses.jsonl": responses}]
    tables = {"responses": "SELECT * EXCLUDE (batch_id) FROM responses ORDER BY ALL",
              "response_items": "SELECT * FROM response_items ORDER BY ALL",
              "prompts": "SELECT * EXCLUDE (batch_id) FROM prompts ORDER BY ALL",
              "erasure_log": "SELECT detail FROM erasure_log"}
    fast, exact = _both_over_batches(tmp_path, protocol, files, tables)
    assert fast == exact
    # p4 (every fifth record): 2 prompts, 2 responses of 5 items each, withheld by the fast path's runs
    assert sorted(held, key=len) == [{"prompts": 2}, {"responses": 2, "response_items": 10}]
    detail = json.loads(exact[1]["erasure_log"][0][0])
    assert {t: detail["rows_deleted"][t] for t in ("prompts", "responses", "response_items")} == \
        {"prompts": 2, "responses": 2, "response_items": 10}
    assert exact[0][0]["stored"]["responses"] == 10 and exact[0][0]["quarantined"] == {}


CONSENT_VARIANTS = ["clean"] * 6 + ["withdrawn", "surveys_only", "unknown_scope", "scopes_as_text", "long_version"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(st.sampled_from(CONSENT_VARIANTS), st.sampled_from(PIDS),
                                           st.integers(0, 1)), min_size=1, max_size=8), min_size=1, max_size=2))
def test_consents_are_stored_alike_by_both_paths(tmp_path_factory, protocol, batches):
    """Repeats in a file and across batches, withdrawals (erasing the participant at the batch's end, so a later
    batch's consent of theirs is withdrawn), and scopes of every shape."""
    tmp_path = tmp_path_factory.mktemp("fp")
    files = [{f"consents-{b}.jsonl": [_consent_line(v, p, i) for v, p, i in lines],
              f"events-{b}.jsonl": [_compact(_clean_event(100 * b + k, p)) for k, p in enumerate(PIDS)]}
             for b, lines in enumerate(batches)]
    tables = {"consents": "SELECT * EXCLUDE (batch_id) FROM consents ORDER BY ALL",
              "events": "SELECT * EXCLUDE (batch_id) FROM events ORDER BY ALL"}
    fast, exact = _both_over_batches(tmp_path, protocol, files, tables)
    assert fast == exact


def test_clean_response_and_consent_files_take_the_fast_path(tmp_path, protocol, monkeypatch):
    """The two properties above would hold trivially if the fast path never stored responses or consents."""
    runs: list[str] = []
    chunks: list[str] = []
    real_run, real_chunk = fastpath_mod.try_run, fastpath_mod.try_chunk

    def spy_run(con, run, *args, **kwargs):
        outcome = real_run(con, run, *args, **kwargs)
        runs.extend(f.name for f, _ in run if outcome.stored)
        return outcome

    def spy_chunk(con, chunk, kind, *args, **kwargs):
        stored = real_chunk(con, chunk, kind, *args, **kwargs)
        if stored is not None:
            chunks.append(kind)
        return stored

    monkeypatch.setattr(fastpath_mod, "try_run", spy_run)
    monkeypatch.setattr(fastpath_mod, "try_chunk", spy_chunk)
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    write_jsonl(land / "responses.jsonl", [_response_line("clean", p, i) for i, p in enumerate(PIDS[:4])]
                + [_response_line("skipped_item", PIDS[0], 9)])
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY, fast_path=True)
    assert runs == ["responses.jsonl"] and chunks == ["consents"]
    assert rec.stored["responses"] == 5 and rec.stored["consents"] == 5 and rec.quarantined == {}
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), count(value) FROM response_items").fetchall() == [(25, 24)]
    con.close()
