"""The rules come from the protocol and the instrument definitions, and the GX suites carry their severity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import instruments
from flows.quality import DEFAULT_SEVERITY, QualitySettings, build_rules, study_period, wave_window
from flows.quality.rules import SEVERITIES, allowed_outcome_waves, known_outcomes


def test_score_bounds_come_from_the_instrument_scale_and_the_protocol(protocol):
    rules = {r.name: r for r in build_rules(protocol)}
    who5 = instruments.load("who5")
    for score in ("raw", "percent"):
        lo, hi = who5.score_range(score)
        assert rules[f"score_in_range[who5.{score}]"].kwargs == {"column": "value", "min_value": lo, "max_value": hi}
    assert rules["score_in_range[clinic.total]"].kwargs == {"column": "value", "min_value": 0, "max_value": 63}
    assert rules["item_in_range[who5]"].kwargs == {"column": "value", "min_value": who5.scale_min,
                                                   "max_value": who5.scale_max}
    assert rules["score_in_range[who5.percent]"].where == ("outcome", "who5.percent")


def test_known_outcomes_and_waves_follow_the_protocol(protocol):
    assert known_outcomes(protocol) == ["clinic.total", "who5.percent", "who5.raw"]
    pairs = allowed_outcome_waves(protocol)
    assert ("who5.raw", "m1") in pairs and ("clinic.total", "baseline") in pairs and ("who5.raw", "m6") not in pairs
    rules = {r.name: r for r in build_rules(protocol)}
    assert rules["assignment_arm_allowed"].kwargs["value_set"] == ["control", "guidance"]
    assert [n for n in rules if n.startswith("completeness[")] == ["completeness[baseline]", "completeness[m1]"]


def test_every_rule_has_a_default_severity_and_a_one_line_description(protocol):
    rules = build_rules(protocol)
    assert {r.family for r in rules} == set(DEFAULT_SEVERITY)
    assert all(r.severity == DEFAULT_SEVERITY[r.family] for r in rules)
    assert all(r.description and "\n" not in r.description for r in rules)
    assert len({r.name for r in rules}) == len(rules)
    assert set(DEFAULT_SEVERITY.values()) <= set(SEVERITIES)


def test_the_gx_suites_carry_gx_severity_and_the_generated_bounds(protocol):
    from flows.quality.validate import expectation_suites

    settings = QualitySettings(severity={"event_in_study_period": "info"})
    rules = build_rules(protocol, settings)
    suites = expectation_suites(rules)
    assert set(suites) == {r.frame for r in rules}
    by_name = {e.meta["flourish_rule"]: e for s in suites.values() for e in s.expectations}
    assert set(by_name) == {r.name for r in rules}
    for r in rules:
        assert str(getattr(by_name[r.name].severity, "value", by_name[r.name].severity)) == r.severity
    assert by_name["score_in_range[clinic.total]"].max_value == 63
    assert str(by_name["event_in_study_period"].severity.value) == "info"


def test_wave_window_and_study_period_are_the_one_time_rule(protocol):
    m1 = protocol.wave("m1")
    w = wave_window(m1)
    assert (w.opens_days, w.closes_days) == (m1.day - m1.window_days, m1.day + m1.window_days) == (23.0, 37.0)
    first, last = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    period = study_period(protocol, first, last)
    assert period.starts == first - timedelta(days=7)  # the baseline window opens a week before assignment
    assert period.ends == last + timedelta(days=37)
    data = protocol.model_dump(mode="json")
    data["surrogates"] = [{"name": "s", "event_type": "session_start", "window_days": 60}]
    with_surrogate = type(protocol).model_validate(data)
    period = study_period(with_surrogate, first, last)
    assert (period.starts, period.ends) == (first - timedelta(days=60), last + timedelta(days=60))
