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

import flows.ingest.batch as ingest_mod
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
    real = ingest_mod._ingest_clean_files

    def spy(con, files, *args, **kwargs):
        ok, out = real(con, files, *args, **kwargs)
        if ok:
            stored_fast.append(sorted(f.name for f, _ in files))
        return ok, out

    monkeypatch.setattr(ingest_mod, "_ingest_clean_files", spy)
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
    from flows.ingest import fastpath

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
    real = ingest_mod._ingest_clean_files

    def spy(con, files, *args, **kwargs):
        ok, out = real(con, files, *args, **kwargs)
        stored_fast.extend(f.name for f, _ in files if ok)
        return ok, out

    monkeypatch.setattr(ingest_mod, "_ingest_clean_files", spy)
    land = tmp_path / "landing"
    land.mkdir()
    _consents(land)
    write_jsonl(land / "assignments.jsonl", [_scalar_line("assignments", "clean", p, i) for i, p in enumerate(PIDS[:4])])
    write_jsonl(land / "scores.jsonl", [_scalar_line("scores", "clean", p, i) for i, p in enumerate(PIDS[:4])])
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY, fast_path=True)
    assert sorted(stored_fast) == ["assignments.jsonl", "scores.jsonl"]
    assert rec.stored["assignments"] == 4 and rec.stored["scores"] == 4 and rec.quarantined == {}
