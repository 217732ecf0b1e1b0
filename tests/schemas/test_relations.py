"""The wide score relation is the long one pivoted: the same participant x wave wins, whatever rows the warehouse holds.

``relations.primary_scores_wide`` picks each participant x wave's score with an aggregate (the arg_min of the sort
key of ``SCORE_PRECEDENCE``'s ORDER BY) where ``relations.primary_scores`` uses a window; the MMRM reads the wide one,
every other reader the long one, so the two must never disagree: on duplicates, on NULL ``scored_at`` and
``batch_id``, on NaN values, on external scores beside Flourish ones, and on late answers the plan leaves out.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.warehouse import connect
from schemas.warehouse import relations
from tests.schemas.test_timing import NINE_LOCAL, _assign, _protocol, _respond

WAVES = ["baseline", "m1"]


def _insert(con, rows) -> None:
    if rows:
        con.executemany("INSERT INTO scores (study_id, participant, wave, outcome, value, source, scored_at, batch_id) "
                        "VALUES ('s1', ?, ?, ?, ?, ?, ?::TIMESTAMPTZ, ?)", rows)


def _pivoted_long(con, protocol, outcome: str) -> dict[str, tuple]:
    long = con.execute(f"SELECT participant, wave, value FROM {relations.primary_scores(protocol, [outcome], WAVES)}"
                       ).fetchall()
    out: dict[str, list] = {}
    for participant, wave, value in long:
        out.setdefault(participant, [None] * len(WAVES))[WAVES.index(wave)] = value
    return {p: tuple(v) for p, v in out.items()}


def _wide(con, protocol, outcome: str) -> dict[str, tuple]:
    rows = con.execute(f"SELECT * FROM {relations.primary_scores_wide(protocol, outcome, WAVES)}").fetchall()
    assert len({r[0] for r in rows}) == len(rows)  # one row per participant
    return {r[0]: tuple(r[1:]) for r in rows}


score_rows = st.lists(st.tuples(
    st.sampled_from(["p1", "p2", "p3"]),
    st.sampled_from(WAVES + ["m2"]),
    st.sampled_from(["who5.percent", "clinic.total"]),
    st.sampled_from([10.0, 20.0, 20.0, 35.5, math.nan]),
    st.sampled_from(["flourish", "external", "partner"]),
    st.sampled_from([None, "2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z"]),
    st.sampled_from([None, "a", "b"]),
), max_size=30)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    con = connect(tmp_path_factory.mktemp("w") / "w.duckdb")
    yield con
    con.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=score_rows)
def test_the_wide_relation_is_the_long_one_pivoted(warehouse, rows):
    warehouse.execute("DELETE FROM scores")
    _insert(warehouse, rows)
    protocol = _protocol(None)
    for outcome in ("who5.percent", "clinic.total"):
        assert _wide(warehouse, protocol, outcome) == _pivoted_long(warehouse, protocol, outcome)


def test_late_answers_leave_the_wide_relation_as_they_leave_the_long_one(tmp_path):
    con = connect(tmp_path / "w.duckdb")
    try:
        for p in ("p1", "p2", "p3", "p4"):
            _assign(con, p, "2026-03-20T10:00:00Z")
        _respond(con, "r1", "p1", "2026-04-03T08:30:00Z")  # in the window
        for p, rid in (("p2", "r2"), ("p3", "r3"), ("p4", "r4")):
            _respond(con, rid, p, "2026-04-20T08:30:00Z")  # 17 days late
        _insert(con, [
            ("p1", "baseline", "who5.percent", 40.0, "flourish", None, None),
            ("p1", "m1", "who5.percent", 50.0, "flourish", None, None),
            ("p2", "baseline", "who5.percent", 41.0, "flourish", None, None),
            ("p2", "m1", "who5.percent", 51.0, "flourish", None, None),  # late: left out, the baseline stays
            ("p3", "m1", "who5.percent", 52.0, "flourish", None, None),  # late and nothing else: no row
            # a Flourish score wins over an external one (a warehouse filled before the ingest refused the
            # external), and a late winner is left out without the external taking its place
            ("p4", "baseline", "who5.percent", 43.0, "flourish", None, None),
            ("p4", "m1", "who5.percent", 53.0, "flourish", None, None),
            ("p4", "m1", "who5.percent", 99.0, "external", "2026-06-01T00:00:00Z", "z"),
            ("p2", "m1", "clinic.total", 11.0, "external", None, None),  # an external outcome's score is kept
        ])
        protocol = _protocol(NINE_LOCAL, late="exclude", timezone="Europe/London")
        assert relations.late_excluded(protocol)
        want = {"p1": (40.0, 50.0), "p2": (41.0, None), "p4": (43.0, None)}
        assert _pivoted_long(con, protocol, "who5.percent") == want
        assert _wide(con, protocol, "who5.percent") == want
        assert _wide(con, protocol, "clinic.total") == _pivoted_long(con, protocol, "clinic.total") == {"p2": (None, 11.0)}
    finally:
        con.close()


def test_the_wide_relation_needs_a_wave():
    with pytest.raises(ValueError):
        relations.primary_scores_wide(_protocol(None), "who5.percent", [])
