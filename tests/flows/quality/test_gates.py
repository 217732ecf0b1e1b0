"""The quality gates read like their spec: a critical failure stops the run and names the expectation, a
warning is recorded and lets it go on, every run leaves one row per expectation, counts reconcile with the
warehouse, and nothing about a participant reaches the results."""

from __future__ import annotations

import re
import socket
from datetime import timedelta

import pytest

from flows.quality import (
    QualityConfigError,
    QualityGateFailed,
    QualitySettings,
    build_rules,
    load_reports,
    run_quality_gates,
)
from tests.flows.quality.conftest import AS_OF, T0, pid


def _run(con, protocol, run_id="run-1", **kw):
    return run_quality_gates(con, protocol, run_id=run_id, as_of=kw.pop("as_of", AS_OF), **kw)


def _stored(con, run_id):
    return con.execute("SELECT expectation, severity, success, unexpected_count FROM quality_results "
                       "WHERE run_id = ? ORDER BY seq", [run_id]).fetchall()


# -- the simulated study, through the project's own ingest and scoring ----------------------------


def test_clean_simulated_study_passes_and_counts_reconcile(simulated):
    study, con = simulated
    report = _run(con, study.protocol)
    assert report.passed and not report.critical_failures
    n_items = con.execute("SELECT count(value) FROM response_items").fetchone()[0]
    by_family = {}
    for r in report.results:
        by_family.setdefault(r.family, []).append(r)
    assert sum(r.checked_count for r in by_family["item_in_range"]) == n_items
    assert report.result("score_unique").checked_count == con.execute(
        "SELECT count(DISTINCT (participant, wave, outcome)) FROM scores").fetchone()[0]
    assert report.result("score_in_range[who5.percent]").checked_count == con.execute(
        "SELECT count(*) FROM scores WHERE outcome = 'who5.percent'").fetchone()[0]
    assert report.result("event_in_study_period").checked_count == con.execute("SELECT count(*) FROM events").fetchone()[0]
    assert report.result("assignment_ratio_srm").checked_count == con.execute(
        "SELECT count(DISTINCT participant) FROM assignments").fetchone()[0]


def test_out_of_range_scores_past_the_ingest_fail_critically_and_the_message_names_them(simulated):
    study, con = simulated
    con.execute("UPDATE scores SET value = 250 WHERE outcome = 'who5.percent' AND wave = 'm3' AND participant IN "
                "(SELECT participant FROM scores WHERE outcome = 'who5.percent' AND wave = 'm3' ORDER BY 1 LIMIT 3)")
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value) SELECT study_id, participant, wave, "
                "outcome, -4 FROM scores WHERE outcome = 'phq2.total' ORDER BY participant, wave LIMIT 2")

    with pytest.raises(QualityGateFailed) as caught:
        _run(con, study.protocol, run_id="bad-run")

    message = str(caught.value)
    assert "score_in_range[who5.percent] (3 of" in message and "score_in_range[phq2.total] (2 of" in message
    assert "score_unique" in message  # the two injected phq2 rows duplicate a key as well
    assert "\n" not in message and "score_in_range[swls.total]" not in message
    report = caught.value.report
    who5 = report.result("score_in_range[who5.percent]")
    assert (who5.severity, who5.success, who5.unexpected_count) == ("critical", False, 3)
    assert who5.examples == ({"wave": "m3", "value": 250.0, "rows": 3},)
    assert who5.observed["max"] == 250.0
    # stored before raising: the run that stopped the pipeline is in the warehouse
    stored = {name: (sev, ok, n) for name, sev, ok, n in _stored(con, "bad-run")}
    assert stored["score_in_range[who5.percent]"] == ("critical", False, 3)
    assert len(stored) == len(build_rules(study.protocol))


def test_out_of_range_items_fail_critically(simulated):
    study, con = simulated
    con.execute("UPDATE response_items SET value = 9 WHERE item_code = 'WHO5_1' AND response_id IN "
                "(SELECT response_id FROM response_items WHERE item_code = 'WHO5_1' ORDER BY 1 LIMIT 4)")
    report = _run(con, study.protocol, raise_on_critical=False)
    assert not report.passed
    assert [r.name for r in report.critical_failures] == ["item_in_range[who5]"]
    assert report.result("item_in_range[who5]").examples == ({"item_code": "WHO5_1", "value": 9.0, "rows": 4},)


def test_a_warning_lets_the_run_go_on_and_is_recorded(simulated):
    study, con = simulated
    removed = con.execute("DELETE FROM scores WHERE wave = 'm3' AND participant IN (SELECT participant FROM scores "
                          "WHERE wave = 'm3' AND outcome = 'who5.percent' ORDER BY 1 LIMIT 60)").fetchone()[0]
    assert removed > 0
    report = _run(con, study.protocol, run_id="warned")  # no raise
    m3 = report.result("completeness[m3]")
    assert (m3.severity, m3.success) == ("warning", False)
    assert m3.observed["completeness"] < 0.7 and m3.unexpected_count == m3.observed["due"] - m3.observed["scored"]
    assert report.passed and report.verdict == "passed with warnings"
    assert ("completeness[m3]", "warning", False, m3.unexpected_count) in _stored(con, "warned")


def test_severity_is_overridden_by_name_or_family_and_typos_are_refused(simulated):
    study, con = simulated
    con.execute("UPDATE scores SET value = 101 WHERE outcome = 'who5.percent' AND participant = "
                "(SELECT min(participant) FROM scores)")
    settings = QualitySettings(severity={"score_in_range[who5.percent]": "warning", "completeness": "info"})
    report = _run(con, study.protocol, settings=settings)
    assert report.passed and report.result("score_in_range[who5.percent]").severity == "warning"
    assert {r.severity for r in report.results if r.family == "completeness"} == {"info"}
    with pytest.raises(QualityConfigError, match="no quality rule"):
        QualitySettings(severity={"score_in_rang": "warning"})
    with pytest.raises(QualityConfigError, match="critical, warning, info"):
        QualitySettings(severity={"completeness": "fatal"})


def test_every_run_leaves_one_row_per_expectation_and_a_retry_replaces_itself(simulated):
    study, con = simulated
    n_rules = len(build_rules(study.protocol))
    first = _run(con, study.protocol, run_id="run-a")
    _run(con, study.protocol, run_id="run-b")
    _run(con, study.protocol, run_id="run-a")  # a retried run with the same id
    counts = dict(con.execute("SELECT run_id, count(*) FROM quality_results GROUP BY 1").fetchall())
    assert counts == {"run-a": n_rules, "run-b": n_rules}
    back = load_reports(con, study.protocol.study_id)
    assert [r.run_id for r in back] == ["run-a", "run-b"]  # newest first
    assert back[0].results == first.results  # the stored rows read back as the same values
    assert load_reports(con, study.protocol.study_id, runs=1)[0].run_id == "run-a"


def test_no_participant_id_or_pseudonym_reaches_the_results(simulated):
    study, con = simulated
    con.execute("UPDATE scores SET value = 999 WHERE outcome = 'swls.total'")  # many failures, many examples
    con.execute("INSERT INTO assignments SELECT participant, study_id, 'placebo', assigned_at, stratum, batch_id "
                "FROM assignments LIMIT 5")
    _run(con, study.protocol, run_id="leaky?", raise_on_critical=False)
    stored = " ".join(str(v) for row in con.execute("SELECT * FROM quality_results").fetchall() for v in row)
    pseudonyms = {r[0] for r in con.execute("SELECT DISTINCT participant FROM assignments").fetchall()}
    raw_ids = set(re.findall(r'"participant_id":\s*"([^"]+)"', (study.landing / "assignments.jsonl").read_text()))
    assert pseudonyms and raw_ids
    assert not any(p in stored for p in pseudonyms)
    assert not any(r in stored for r in raw_ids)


def test_the_run_opens_no_socket(simulated, monkeypatch):
    study, con = simulated
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    assert _run(con, study.protocol).passed
    assert attempts == []


# -- each rule's edges, on a small hand-built warehouse -----------------------------------------


def test_the_small_warehouse_is_clean(small):
    con, protocol, _ = small
    report = _run(con, protocol)
    failed = [r.name for r in report.results if not r.success]
    assert failed == []
    assert report.result("score_in_range[clinic.total]").rule == {"column": "value", "min_value": 0.0, "max_value": 63.0}


def test_wave_window_edges(small):
    con, protocol, people = small
    assigned = T0 + timedelta(hours=3)  # participant 3
    # exactly on the m1 window's close (day 30 + 7) counts; a second later is one day late
    con.execute("UPDATE responses SET submitted_at = ? WHERE response_id = 'r-3-m1'", [assigned + timedelta(days=37)])
    assert _run(con, protocol, run_id="edge").result("response_in_wave_window").success
    con.execute("UPDATE responses SET submitted_at = ? WHERE response_id = 'r-3-m1'",
                [assigned + timedelta(days=37, seconds=1)])
    con.execute("UPDATE responses SET submitted_at = ? WHERE response_id = 'r-5-baseline'",
                [T0 + timedelta(hours=5) - timedelta(days=9, hours=12)])  # 2.5 days before the baseline window
    report = _run(con, protocol, run_id="late")
    window = report.result("response_in_wave_window")
    assert (window.severity, window.success, window.unexpected_count) == ("warning", False, 2)
    assert sorted(window.examples, key=lambda e: e["wave"]) == [
        {"wave": "baseline", "instrument": "who5", "days_outside_window": -3.0, "rows": 1},
        {"wave": "m1", "instrument": "who5", "days_outside_window": 1.0, "rows": 1}]
    assert report.passed


def test_resubmissions_are_noted_and_only_the_latest_is_judged(small):
    con, protocol, people = small
    p = people[2]
    # an earlier submission far outside the window, superseded by the in-window one: the window rule judges the latest
    con.execute("INSERT INTO responses VALUES ('r-2-m1-early', ?, 's1', 'who5', '1', 'm1', ?, 5, 'b2')",
                [p, T0 + timedelta(days=1)])
    report = _run(con, protocol)
    assert report.result("response_in_wave_window").success
    resub = report.result("response_resubmitted")
    assert (resub.severity, resub.success, resub.unexpected_count) == ("info", False, 1)
    assert report.result("response_latest_unambiguous").success
    # two submissions at the same latest time: which counts is decided by the response id
    latest = con.execute("SELECT submitted_at FROM responses WHERE response_id = 'r-2-m1'").fetchone()[0]
    con.execute("INSERT INTO responses VALUES ('r-2-m1-twin', ?, 's1', 'who5', '1', 'm1', ?, 5, 'b2')", [p, latest])
    tied = _run(con, protocol, run_id="tied").result("response_latest_unambiguous")
    assert (tied.severity, tied.success, tied.unexpected_count) == ("warning", False, 1)


def test_responses_from_participants_never_randomised_are_a_warning(small):
    con, protocol, _ = small
    con.execute("INSERT INTO responses VALUES ('r-x', ?, 's1', 'who5', '1', 'baseline', ?, 5, 'b2')", [pid(777), T0])
    report = _run(con, protocol)
    r = report.result("response_participant_randomized")
    assert (r.severity, r.success, r.unexpected_count) == ("warning", False, 1)
    assert r.examples == ({"wave": "baseline", "instrument": "who5", "randomized": False, "rows": 1},)
    assert report.result("response_in_wave_window").success  # no assignment: its window is not judged
    assert report.passed


def test_two_scores_for_one_key_fail_critically(small):
    con, protocol, people = small
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value) VALUES ('s1', ?, 'm1', 'who5.raw', 16)",
                [people[0]])
    with pytest.raises(QualityGateFailed, match=r"score_unique \(1 of 200 score keys\)"):
        _run(con, protocol)


def test_unknown_outcomes_and_waves_fail_critically(small):
    con, protocol, people = small
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value) VALUES "
                "('s1', ?, 'm1', 'gad7.total', 3), ('s1', ?, 'm6', 'who5.raw', 10), ('s1', ?, 'baseline', 'clinic.total', 5)",
                [people[0], people[1], people[2]])
    report = _run(con, protocol, raise_on_critical=False)
    assert {r.name for r in report.critical_failures} == {"score_outcome_known", "score_wave_known"}
    assert report.result("score_outcome_known").examples == ({"outcome": "gad7.total", "wave": "m1", "rows": 1},)
    assert report.result("score_wave_known").unexpected_count == 2  # gad7 anywhere; who5 at an unknown wave
    # an outcome delivered from outside may arrive at any protocol wave
    assert "clinic.total" not in str(report.result("score_wave_known").examples)


def test_arms_and_allocation(small):
    con, protocol, people = small
    con.execute("INSERT INTO assignments VALUES (?, 's1', 'placebo', ?, NULL, 'b2')", [pid(900), T0])
    con.execute("INSERT INTO assignments VALUES (?, 's1', 'guidance', ?, NULL, 'b2')", [people[0], T0 + timedelta(days=2)])
    report = _run(con, protocol, raise_on_critical=False)
    assert {r.name for r in report.critical_failures} == {"assignment_arm_allowed", "assignment_one_arm"}
    assert report.result("assignment_arm_allowed").examples == ({"arm": "placebo", "rows": 1},)
    assert report.result("assignment_one_arm").unexpected_count == 2
    srm = report.result("assignment_ratio_srm")
    assert srm.success and srm.observed["counts"] == {"control": 20, "guidance": 20}
    # 120 more in control: a sample-ratio mismatch far past p < 0.0005
    con.executemany("INSERT INTO assignments VALUES (?, 's1', 'control', ?, NULL, 'b3')",
                    [[pid(1000 + i), T0] for i in range(120)])
    srm = _run(con, protocol, run_id="srm", raise_on_critical=False).result("assignment_ratio_srm")
    assert (srm.severity, srm.success) == ("critical", False) and srm.observed["p_value"] < 1e-6


def test_completeness_counts_only_participants_whose_window_has_closed(small):
    con, protocol, people = small
    con.execute("DELETE FROM scores WHERE wave = 'm1' AND outcome = 'who5.percent' AND list_contains(?, participant)",
                [people[:4]])
    # m1 closes at day 37 after assignment; participants were assigned an hour apart from T0
    mid = T0 + timedelta(days=37, hours=9, minutes=30)  # windows of participants 0..9 have closed
    report = _run(con, protocol, as_of=mid)
    m1 = report.result("completeness[m1]")
    assert m1.observed == {"completeness": 0.6, "due": 10, "scored": 6} and not m1.success
    before = _run(con, protocol, run_id="early", as_of=T0 + timedelta(days=20)).result("completeness[m1]")
    assert before.success and before.observed == {"completeness": None, "due": 0, "scored": 0}


def test_events_outside_the_study_period_are_a_warning(small):
    con, protocol, people = small
    con.execute("INSERT INTO events VALUES ('e-old', ?, 's1', ?, 'x', 'message', NULL, NULL, 'b2')",
                [people[0], T0 - timedelta(days=30)])  # the baseline window opens 7 days before the first assignment
    report = _run(con, protocol)
    ev = report.result("event_in_study_period")
    assert (ev.severity, ev.success, ev.unexpected_count) == ("warning", False, 1)
    assert ev.examples == ({"type": "message", "days_outside_period": -23.0, "rows": 1},)
    assert ev.observed["study_period"]["starts"].startswith("2025-12-29T09:00:00")
    assert report.passed


def test_naive_as_of_and_empty_run_id_are_refused(small):
    con, protocol, _ = small
    from flows.quality import QualityRunError

    with pytest.raises(QualityRunError, match="UTC offset"):
        run_quality_gates(con, protocol, run_id="x", as_of=AS_OF.replace(tzinfo=None))
    with pytest.raises(QualityRunError, match="run_id"):
        run_quality_gates(con, protocol, run_id=" ", as_of=AS_OF)


def test_an_empty_warehouse_judges_nothing_and_passes(tmp_path, protocol):
    from flows.warehouse import connect

    con = connect(tmp_path / "empty.duckdb")
    try:
        report = _run(con, protocol)
    finally:
        con.close()
    assert report.passed and all(r.success for r in report.results)
    assert report.result("assignment_ratio_srm").observed is None


def test_the_late_share_of_prompts_is_a_warning_that_counts_the_simulated_late_answers(simulated):
    """The simulator answers about 4% of follow-up prompts late: under the default 10% line every wave passes;
    with a 1% line the follow-up waves fail as warnings (the run goes on) and count exactly the late prompts."""
    study, con = simulated
    late = dict(con.execute("SELECT wave, count(*) FILTER (WHERE status = 'late') FROM "
                            f"{_compliance(study.protocol)} GROUP BY wave").fetchall())
    assert sum(late.values()) > 0
    report = _run(con, study.protocol)
    assert all(r.success for r in report.results if r.family == "prompt_late_share")
    strict = _run(con, study.protocol, run_id="strict", settings=QualitySettings(late_share_max=0.01))
    assert strict.passed and not strict.critical_failures
    results = {r.name: r for r in strict.results if r.family == "prompt_late_share"}
    assert {n for n, r in results.items() if not r.success} == {f"prompt_late_share[{w}]" for w, n in late.items() if n}
    assert all(r.unexpected_count == late[r.name[len("prompt_late_share["):-1]] for r in results.values())
    assert all(r.severity == "warning" for r in results.values())


def _compliance(protocol):
    from schemas.sqltext import literal
    from schemas.warehouse.relations import prompt_compliance

    return prompt_compliance(protocol, literal(AS_OF.isoformat()) + "::TIMESTAMPTZ")
