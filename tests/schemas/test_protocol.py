"""The study protocol refuses values that would crash, spin or mislead later (D18), with one sentence each."""

from __future__ import annotations

import pytest
import yaml

from schemas.protocol import ProtocolError, load_protocol


def _protocol(**over) -> dict:
    base = {
        "study_id": "s1", "title": "t",
        "arms": [{"name": "control", "control": True}, {"name": "b"}],
        "waves": [{"name": "baseline", "day": 0, "instruments": ["who5"]}, {"name": "m1", "day": 30, "instruments": ["who5"]}],
        "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m1"},
        "privacy": {"epsilon": 1.0},
    }
    for dotted, value in over.items():
        target = base
        *path, last = dotted.split(".")
        for key in path:
            target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
        target[last] = value
    return base


def _load(tmp_path, data) -> object:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, bytes) else "", encoding="utf-8")
    if isinstance(data, bytes):
        path.write_bytes(data)
    return load_protocol(path)


@pytest.mark.parametrize("field, value, needle", [
    ("privacy.epsilon", float("inf"), "finite"),                  # crashed preregister (JSON cannot hold inf)
    ("arms.1.allocation", float("inf"), "finite"),
    ("privacy.epsilon", True, "number"),                         # was taken as epsilon 1
    ("privacy.epsilon", 1e308, "less than or equal"),            # release spun for ever in epsilon_to_rho
    ("privacy.min_cell_size", 1e30, "integer"),                  # reserved the whole budget, then crashed
    ("privacy.min_cell_size", 10**30, "less than or equal"),
    ("analysis.draws", 10**12, "less than or equal"),            # aborted analyze allocating 40 TB
    ("analysis.rhat_max", 0, "greater than"),
    ("analysis.ess_bulk_min", -5, "greater than"),
    ("waves.1.day", 10**18, "less than or equal"),
    ("analysis.subgroups", ["no_such_subgroup"], "subgroup"),     # locked, then refused 17 s into analyze
    ("analysis.covariates", ["no_such_covariate"], "covariate"),  # locked, then a misleading error in analyze
])
def test_values_that_break_later_are_refused_when_the_protocol_is_read(tmp_path, field, value, needle):
    with pytest.raises(ProtocolError, match=needle):
        _load(tmp_path, _protocol(**{field: value}))


def test_a_protocol_that_is_not_utf8_is_one_sentence(tmp_path):
    with pytest.raises(ProtocolError, match="UTF-8"):
        _load(tmp_path, b"study_id: s1\ntitle: caf\xe9\n")


def test_sensible_values_still_load(tmp_path):
    p = _load(tmp_path, _protocol(**{"privacy.epsilon": 8, "analysis.draws": 2000, "analysis.subgroups": ["stratum"],
                                     "analysis.covariates": ["who5.percent"]}))
    assert p.privacy.epsilon == 8.0 and p.analysis.draws == 2000


def test_a_trial_scored_outside_flourish_needs_no_instrument_and_no_budget(tmp_path):
    """Issue 20: a study scored outside Flourish listed a library instrument on every wave as a placeholder, and had
    to declare a privacy budget although it planned no release."""
    data = {"study_id": "btheb", "title": "Beat the Blues",
            "arms": [{"name": "TAU", "control": True}, {"name": "BtheB"}],
            "waves": [{"name": "pre", "day": 0}, {"name": "m2", "day": 60}, {"name": "m8", "day": 240}],
            "primary_outcome": {"name": "bdi", "source": "external", "wave": "m8", "direction": "lower_is_better",
                                "lower_bound": 0, "upper_bound": 63}}
    p = _load(tmp_path, data)
    assert p.privacy is None and p.planned_releases() == [] and p.wave("m2").instruments == []


def _external(**over) -> dict:
    data = {"study_id": "btheb", "title": "Beat the Blues",
            "arms": [{"name": "TAU", "control": True}, {"name": "BtheB"}],
            "waves": [{"name": "pre", "day": 0}, {"name": "m8", "day": 240}],
            "primary_outcome": {"name": "bdi", "source": "external", "wave": "m8", "direction": "lower_is_better"}}
    data.update(over)
    return data


@pytest.mark.parametrize("covariates, plan, needle", [
    ([{"name": "drug", "kind": "categorical"}], {}, "at least two levels"),
    ([{"name": "drug", "kind": "categorical", "levels": ["No", "No"]}], {}, "distinct"),
    ([{"name": "age", "levels": ["young", "old"]}], {}, "numeric and takes no levels"),
    ([{"name": "drug", "kind": "categorical", "levels": ["No", "Yes"]}], {"covariates": ["length"]}, "known:"),
    ([{"name": "age"}], {"subgroups": ["age"]}, "declared categorical baseline covariate"),
    ([{"name": "bdi"}], {}, "also outcomes"),
])
def test_baseline_covariates_are_declared_with_their_levels(tmp_path, covariates, plan, needle):
    with pytest.raises(ProtocolError, match=needle):
        _load(tmp_path, _external(baseline_covariates=covariates, analysis=plan))


def test_a_declared_categorical_covariate_may_be_a_covariate_and_a_subgroup(tmp_path):
    p = _load(tmp_path, _external(
        baseline_covariates=[{"name": "drug", "kind": "categorical", "levels": ["No", "Yes"]}, {"name": "age"}],
        analysis={"covariates": ["drug", "age"], "subgroups": ["drug"]}))
    from analysis.plan import covariate_columns

    assert covariate_columns(p, p.analysis.covariates) == ("drug[Yes]", "age")


@pytest.mark.parametrize("outcome, needle", [
    ({"event_at_or_above": 10}, "must say kind: binary"),
    ({"kind": "binary", "event_at_or_above": 10, "event_at_or_below": 4}, "not both"),
    ({"name": "phq9.total", "instrument": "phq9", "source": "flourish", "kind": "binary"}, "needs a cut-off"),
])
def test_a_binary_outcome_says_where_its_event_comes_from(tmp_path, outcome, needle):
    data = _external()
    data["primary_outcome"] = {**data["primary_outcome"], **outcome}
    if outcome.get("instrument"):
        data["waves"] = [{"name": "pre", "day": 0, "instruments": ["phq9"]}, {"name": "m8", "day": 240, "instruments": ["phq9"]}]
    with pytest.raises(ProtocolError, match=needle):
        _load(tmp_path, data)


def test_a_binary_outcome_from_a_cut_off_and_from_0_1_scores(tmp_path):
    data = _external(waves=[{"name": "pre", "day": 0, "instruments": ["phq9"]}, {"name": "m8", "day": 240, "instruments": ["phq9"]}])
    data["primary_outcome"] = {"name": "phq9.total", "instrument": "phq9", "wave": "m8", "kind": "binary",
                               "event_at_or_above": 10, "direction": "lower_is_better"}
    p = _load(tmp_path, data)
    assert p.primary_outcome.binary and p.primary_outcome.cutoff == (10.0, True)
    q = _load(tmp_path, _external(primary_outcome={"name": "pep", "source": "external", "kind": "binary", "wave": "m8"}))
    assert q.primary_outcome.binary and q.primary_outcome.cutoff is None
