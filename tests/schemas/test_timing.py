"""Survey timing: response windows in the participant's local time, and the compliance table that reconciles.

The windows are computed by ``schemas.warehouse.relations`` in DuckDB (ICU time zones); these tests put rows
straight into a migrated warehouse and read the relations back. Daylight-saving dates (tz database 2026):
Europe/London changes on 29 March (GMT -> BST) and 25 October (BST -> GMT); America/New_York on 8 March (EST ->
EDT) and 1 November (EDT -> EST).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.warehouse import connect
from schemas.protocol import StudyProtocol
from schemas.records import TIME_ZONES
from schemas.sqltext import literal
from schemas.warehouse import relations

AS_OF = literal("2027-06-01T00:00:00+00:00") + "::TIMESTAMPTZ"


def _protocol(window: dict | None = None, late: str | None = None, timezone: str | None = None) -> StudyProtocol:
    """Two arms; waves baseline (day 0) and m1 (day 14, with ``window`` when given)."""
    m1 = {"name": "m1", "day": 14, "instruments": ["who5"]}
    if window is not None:
        m1["response_window"] = window
    data = {
        "study_id": "s1", "title": "timing",
        "arms": [{"name": "control", "control": True}, {"name": "guidance"}],
        "waves": [{"name": "baseline", "day": 0, "instruments": ["who5"]}, m1],
        "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m1"},
    }
    if late is not None:
        data["analysis"] = {"late_responses": late}
    if timezone is not None:
        data["schedule"] = {"timezone": timezone, "enrolment_start": "2026-01-01", "enrolment_end": "2026-12-31"}
    return StudyProtocol.model_validate(data)


@pytest.fixture
def con(tmp_path):
    c = connect(tmp_path / "w.duckdb")
    yield c
    c.close()


def _assign(con, pid: str, at: str, arm: str = "control") -> None:
    con.execute("INSERT INTO assignments VALUES (?, 's1', ?, ?::TIMESTAMPTZ, NULL, 'b')", [pid, arm, at])


def _respond(con, rid: str, pid: str, at: str, wave: str = "m1", instrument: str = "who5") -> None:
    con.execute("INSERT INTO responses VALUES (?, ?, 's1', ?, '1', ?, ?::TIMESTAMPTZ, 5, 'b')", [rid, pid, instrument, wave, at])


def _prompt(con, qid: str, pid: str, scheduled: str, tz: str, wave: str = "m1", instrument: str | None = None,
            sent: str | None = None, expired: str | None = None) -> None:
    con.execute("INSERT INTO prompts VALUES (?, ?, 's1', ?, ?, 'v1', ?::TIMESTAMPTZ, ?::TIMESTAMPTZ, NULL, NULL, NULL, "
                "?::TIMESTAMPTZ, ?, 'b')", [qid, pid, wave, instrument, scheduled, sent, expired, tz])


def _late(con, protocol) -> dict[str, bool | None]:
    return dict(con.execute(f"SELECT response_id, late FROM {relations.response_windows(protocol)}").fetchall())


NINE_LOCAL = {"opens_at": "09:00", "expires_after_hours": 48}


@pytest.mark.parametrize("tz, assigned, opens, naive", [
    # London, spring: assigned 20 Mar 10:00 GMT; day 14 is 3 Apr, 09:00 BST = 08:00 UTC
    ("Europe/London", "2026-03-20T10:00:00Z", "2026-04-03T08:00:00Z", "2026-04-03T09:00:00Z"),
    # London, autumn: assigned 20 Oct 10:00 BST (09:00 UTC); day 14 is 3 Nov, 09:00 GMT = 09:00 UTC
    ("Europe/London", "2026-10-20T09:00:00Z", "2026-11-03T09:00:00Z", "2026-11-03T08:00:00Z"),
    # New York, spring: assigned 1 Mar 10:00 EST (15:00 UTC); day 14 is 15 Mar, 09:00 EDT = 13:00 UTC
    ("America/New_York", "2026-03-01T15:00:00Z", "2026-03-15T13:00:00Z", "2026-03-15T14:00:00Z"),
    # New York, autumn: assigned 20 Oct 10:00 EDT (14:00 UTC); day 14 is 3 Nov, 09:00 EST = 14:00 UTC
    ("America/New_York", "2026-10-20T14:00:00Z", "2026-11-03T14:00:00Z", "2026-11-03T13:00:00Z"),
])
def test_a_window_opens_at_local_clock_time_across_the_daylight_saving_change(con, tz, assigned, opens, naive):
    """09:00 local on the wave's day is 09:00 on the wall clock whichever side of the change it falls. ``naive`` is
    where a window computed with the offset the participant had at assignment would open, an hour off: an answer
    half-way between the two is judged by the local clock."""
    protocol = _protocol(NINE_LOCAL)
    _assign(con, "p1", assigned)
    _prompt(con, "q1", "p1", opens, tz)
    t_open, t_naive = datetime.fromisoformat(opens), datetime.fromisoformat(naive)
    between = min(t_open, t_naive) + timedelta(minutes=30)
    _respond(con, "r1", "p1", between.isoformat())
    got = con.execute(f"SELECT opens_at, late FROM {relations.response_windows(protocol)}").fetchall()
    assert got == [(t_open, t_open > t_naive)]


def test_expiry_counts_real_hours_across_the_change(con):
    """Scheduled 28 Mar 09:00 GMT, 24 hours: it expires 29 Mar 09:00 UTC, which is 10:00 BST on the clock."""
    protocol = _protocol({"opens_at": "00:00", "expires_after_hours": 24, "opens_day": 13})
    _assign(con, "p1", "2026-03-15T09:00:00Z")
    _prompt(con, "q1", "p1", "2026-03-28T09:00:00Z", "Europe/London")
    _respond(con, "r1", "p1", "2026-03-29T08:30:00Z")  # 09:30 BST: late by the clock, inside by elapsed hours
    assert _late(con, protocol) == {"r1": False}
    con.execute("UPDATE responses SET submitted_at = '2026-03-29T09:00:01Z'")
    assert _late(con, protocol) == {"r1": True}


def test_grace_and_expiry_from_sent(con):
    protocol = _protocol({"opens_at": "09:00", "expires_after_hours": 24, "expires_from": "sent", "grace_hours": 2})
    _assign(con, "p1", "2026-05-01T08:00:00Z")  # 09:00 BST; m1 opens 15 May 09:00 BST = 08:00 UTC
    _prompt(con, "q1", "p1", "2026-05-15T08:00:00Z", "Europe/London", sent="2026-05-15T14:00:00Z")
    _respond(con, "r1", "p1", "2026-05-16T15:59:00Z")  # sent + 24 h + 1 h 59: in the grace
    assert _late(con, protocol) == {"r1": False}
    con.execute("UPDATE responses SET submitted_at = '2026-05-16T16:00:01Z'")
    assert _late(con, protocol) == {"r1": True}


def test_a_participant_who_moves_has_each_window_in_the_zone_of_that_prompt(con):
    """Waves m1 (London) and m3 (New York) open at 09:00 local; a response at 08:30 local is early in each zone,
    though it would be inside the window in the other zone."""
    protocol = StudyProtocol.model_validate({
        "study_id": "s1", "title": "timing", "arms": [{"name": "control", "control": True}, {"name": "b"}],
        "waves": [{"name": "baseline", "day": 0, "instruments": ["who5"]},
                  {"name": "m1", "day": 30, "instruments": ["who5"], "response_window": NINE_LOCAL},
                  {"name": "m3", "day": 91, "instruments": ["who5"], "response_window": NINE_LOCAL}],
        "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m3"}})
    _assign(con, "p1", "2026-01-10T12:00:00Z")
    _prompt(con, "q-m1", "p1", "2026-02-09T09:00:00Z", "Europe/London", wave="m1")  # 9 Feb, GMT
    _prompt(con, "q-m3", "p1", "2026-04-11T13:00:00Z", "America/New_York", wave="m3")  # 11 Apr 09:00 EDT
    _respond(con, "m1-early", "p1", "2026-02-09T08:30:00Z", wave="m1")  # 08:30 London (03:30 New York)
    _respond(con, "m3-early", "p1", "2026-04-11T12:30:00Z", wave="m3")  # 08:30 New York (13:30 London)
    assert _late(con, protocol) == {"m1-early": True, "m3-early": True}
    con.execute("UPDATE responses SET submitted_at = submitted_at + INTERVAL 1 HOUR")  # 09:30 local in each
    assert _late(con, protocol) == {"m1-early": False, "m3-early": False}
    zones = dict(con.execute(f"SELECT wave, timezone FROM {relations.response_windows(protocol)}").fetchall())
    assert zones == {"m1": "Europe/London", "m3": "America/New_York"}


def test_without_a_prompt_the_study_zone_decides_and_without_a_window_nothing_is_late(con):
    _assign(con, "p1", "2026-03-20T10:00:00Z")
    _respond(con, "r1", "p1", "2026-04-03T08:30:00Z")  # 09:30 BST, 08:30 UTC
    assert _late(con, _protocol(NINE_LOCAL, timezone="Europe/London")) == {"r1": False}
    assert _late(con, _protocol(NINE_LOCAL)) == {"r1": True}  # UTC: opens 09:00 UTC
    assert _late(con, _protocol(None)) == {"r1": None}


def _score(con, pid: str, wave: str, value: float, outcome: str = "who5.percent", source: str = "flourish") -> None:
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, source, scored_at) "
                "VALUES ('s1', ?, ?, ?, ?, ?, now())", [pid, wave, outcome, value, source])


def test_the_plan_rule_leaves_late_answers_out_of_the_primary_scores(con):
    _assign(con, "p1", "2026-03-20T10:00:00Z")
    _assign(con, "p2", "2026-03-20T10:00:00Z")
    _respond(con, "r1", "p1", "2026-04-03T08:30:00Z")
    _respond(con, "r2", "p2", "2026-04-20T08:30:00Z")  # 17 days late
    for p in ("p1", "p2"):
        _score(con, p, "m1", 50.0)
    _score(con, "p2", "m1", 11.0, outcome="clinic.total", source="external")

    def kept(protocol):
        return sorted(con.execute(f"SELECT participant, outcome FROM {relations.primary_scores(protocol)}").fetchall())

    everyone = [("p1", "who5.percent"), ("p2", "clinic.total"), ("p2", "who5.percent")]
    tz = "Europe/London"
    assert kept(_protocol(None)) == everyone  # no window declared: today's behaviour
    assert kept(_protocol(NINE_LOCAL, timezone=tz)) == [("p1", "who5.percent"), ("p2", "clinic.total")]
    assert kept(_protocol(NINE_LOCAL, late="exclude", timezone=tz)) == [("p1", "who5.percent"), ("p2", "clinic.total")]
    assert kept(_protocol(NINE_LOCAL, late="include", timezone=tz)) == everyone
    # the late answer is kept in the warehouse and flagged
    assert con.execute("SELECT count(*) FROM responses").fetchone()[0] == 2


def test_a_declared_window_and_the_plan_rule_leave_an_unwindowed_protocol_hash_alone():
    from analysis.prereg import canonical_protocol

    assert "response_window" not in canonical_protocol(_protocol(None))
    assert "late_responses" not in canonical_protocol(_protocol(None))
    assert "response_window" in canonical_protocol(_protocol(NINE_LOCAL))
    assert _protocol(NINE_LOCAL).waves[1].response_window.opens_at == time(9, 0)


def test_every_contract_time_zone_is_one_duckdb_can_compute_with():
    con = duckdb.connect()
    known = {r[0] for r in con.execute("SELECT name FROM pg_timezone_names()").fetchall()}
    assert set(TIME_ZONES) <= known, sorted(set(TIME_ZONES) - known)[:10]


# -- the compliance table reconciles ---------------------------------------------------------------------------

def _statuses(con, protocol, as_of=AS_OF) -> dict[str, str]:
    return dict(con.execute(f"SELECT prompt_id, status FROM {relations.prompt_compliance(protocol, as_of)}").fetchall())


def test_each_prompt_has_one_status(con):
    protocol = _protocol({"opens_at": "09:00", "expires_after_hours": 48}, timezone="Europe/London")
    for p in ("a", "b", "c", "d", "e"):
        _assign(con, p, "2026-03-20T10:00:00Z")
        # c: the scheduler reported it expired (before the protocol's window closes)
        _prompt(con, f"q-{p}", p, "2026-04-03T08:00:00Z", "Europe/London",
                expired="2026-04-03T20:00:00Z" if p == "c" else None)
    _respond(con, "ra", "a", "2026-04-03T09:00:00Z")  # in window
    _respond(con, "rb", "b", "2026-04-09T09:00:00Z")  # late
    running = literal("2026-04-04T00:00:00+00:00") + "::TIMESTAMPTZ"
    assert _statuses(con, protocol, running) == {"q-a": "answered_in_window", "q-b": "late", "q-c": "expired",
                                                 "q-d": "unanswered", "q-e": "unanswered"}
    assert _statuses(con, protocol)["q-d"] == "expired"  # its window closed before AS_OF


_TIMES = st.integers(0, 40 * 24).map(lambda h: f"2026-03-{1 + h // 96 % 28:02d}T{h % 24:02d}:00:00Z")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(0, 11), st.sampled_from(["baseline", "m1"]),
                               st.sampled_from([None, "who5", "swls"]), _TIMES, st.booleans(),
                               st.sampled_from(list(TIME_ZONES[:40]) + ["Europe/London", "America/New_York"]),
                               st.lists(st.tuples(st.sampled_from(["who5", "swls"]), _TIMES), max_size=2)),
                     max_size=25),
       windowed=st.booleans(), as_of_hours=st.integers(0, 60 * 24))
def test_prompted_equals_in_window_plus_late_plus_expired_plus_unanswered(tmp_path_factory, rows, windowed,
                                                                          as_of_hours):
    """Whatever prompts and responses the warehouse holds (repeated prompts, wave-level and instrument prompts,
    responses before or after), per arm x wave: prompted = answered in window + late + expired + unanswered, and
    prompted is the number of prompts of record of randomised participants."""
    con = connect(tmp_path_factory.mktemp("compliance") / "w.duckdb")
    try:
        protocol = _protocol({"opens_at": "09:00", "expires_after_hours": 36, "grace_hours": 3} if windowed else None)
        for p in range(10):  # participants 10 and 11 are not randomised
            _assign(con, f"p{p}", "2026-02-20T10:00:00Z", "control" if p % 2 else "guidance")
        rid = 0
        for i, (p, wave, inst, at, expired, tz, answers) in enumerate(rows):
            _prompt(con, f"q{i}", f"p{p}", at, tz, wave=wave, instrument=inst, expired=at if expired else None)
            for a_inst, a_at in answers:
                rid += 1
                _respond(con, f"r{rid}", f"p{p}", a_at, wave=wave, instrument=a_inst)
        as_of = literal(f"2026-03-01T00:00:00+00:00") + f"::TIMESTAMPTZ + to_hours({as_of_hours})"
        table = con.execute(f"SELECT arm, wave, prompted, answered_in_window, late, expired, unanswered "
                            f"FROM {relations.compliance_table(protocol, as_of)}").fetchall()
        for arm, wave, prompted, inw, late, expired, unanswered in table:
            assert prompted == inw + late + expired + unanswered, (arm, wave)
        of_record = {(p, wave, inst) for p, wave, inst, *_ in rows if p < 10}
        assert sum(r[2] for r in table) == len(of_record)
        if not windowed:
            assert sum(r[4] for r in table) == 0  # nothing is late without a window
    finally:
        con.close()


def test_compliance_as_of_is_utc_whatever_the_session_zone(con):
    con.execute("SET TimeZone = 'America/New_York'")
    protocol = _protocol(NINE_LOCAL, timezone="Europe/London")
    _assign(con, "p1", "2026-03-20T10:00:00Z")
    _prompt(con, "q1", "p1", "2026-04-03T08:00:00Z", "Europe/London")
    _respond(con, "r1", "p1", "2026-04-03T08:30:00Z")
    assert _late(con, protocol) == {"r1": False}
    assert _statuses(con, protocol) == {"q1": "answered_in_window"}
    assert datetime(2026, 4, 3, 8, tzinfo=UTC) == con.execute(
        f"SELECT opens_at FROM {relations.response_windows(protocol)}").fetchone()[0]
