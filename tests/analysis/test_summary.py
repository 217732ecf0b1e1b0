"""The outcome summary table: one plan, one exploratory flag, valid JSON."""

from __future__ import annotations

import json

import pytest

from analysis.summary import COLUMNS, OutcomeSummary, SummaryRow


def _row(**kw):
    base = dict(outcome="who5.percent", arm="coach", wave="long_run", estimate=3.0, lower=1.0, upper=5.0,
                p_benefit=0.99, p_above_mcid=0.1, p_in_rope=0.2, method="bayes", tier="trusted",
                plan_hash="a" * 64, exploratory=False)
    return SummaryRow(**{**base, **kw})


def test_columns_and_json():
    s = OutcomeSummary.of([_row(), _row(method="ancova_final_wave", wave="m12", p_value=float("nan"))])
    assert list(s.to_frame().columns) == list(COLUMNS)
    rows = json.loads(s.to_json())
    assert rows[0]["wave"] == "long_run" and rows[1]["p_value"] is None


def test_one_plan_and_one_flag_per_summary():
    with pytest.raises(ValueError, match="one plan"):
        OutcomeSummary.of([_row(), _row(plan_hash="b" * 64)])
    with pytest.raises(ValueError, match="mix confirmatory and exploratory"):
        OutcomeSummary.of([_row(), _row(exploratory=True)])
