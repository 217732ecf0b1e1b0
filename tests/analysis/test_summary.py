"""The outcome summary table: one plan, one exploratory flag, valid JSON."""

from __future__ import annotations

import json

import pytest

from analysis.summary import COLUMNS, OutcomeSummary, SummaryRow
from schemas.results import FIELDS, Effect


def _effect(**kw):
    base = dict(outcome="who5.percent", arm="coach", control="control", wave="long_run", estimate=3.0, sd=1.0,
                lower=1.0, upper=5.0, interval_level=0.95, p_benefit=0.99, p_above_mcid=0.1, p_in_rope=0.2,
                method="bayes", tier="trusted", n_arm=40, n_control=41)
    return Effect(**{**base, **kw})


def _row(plan_hash="a" * 64, exploratory=False, **kw):
    return SummaryRow(_effect(**kw), plan_hash, exploratory)


def test_columns_and_json():
    failed = _effect(method="ancova_final_wave", wave="m12", estimate=None, sd=None, lower=None, upper=None,
                     p_benefit=None, p_above_mcid=None, p_in_rope=None, reason="no residual variance")
    s = OutcomeSummary.of([_effect(), failed], plan_hash="a" * 64, exploratory=False)
    assert list(s.to_frame().columns) == list(COLUMNS)
    assert set(COLUMNS) == {*FIELDS, "plan_hash", "exploratory"}  # every field of the effect is a column
    rows = json.loads(s.to_json())
    assert rows[0]["wave"] == "long_run" and rows[0]["sd"] == 1.0 and rows[0]["interval_level"] == 0.95
    assert (rows[0]["n_arm"], rows[0]["n_control"], rows[0]["estimable"]) == (40, 41, True)
    assert rows[1]["estimable"] is False and rows[1]["estimate"] is None and rows[1]["reason"] == "no residual variance"


def test_one_plan_and_one_flag_per_summary():
    with pytest.raises(ValueError, match="one plan"):
        OutcomeSummary((_row(), _row(plan_hash="b" * 64)))
    with pytest.raises(ValueError, match="mix confirmatory and exploratory"):
        OutcomeSummary((_row(), _row(exploratory=True)))
