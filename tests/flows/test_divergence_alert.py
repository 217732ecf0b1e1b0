"""The divergence monitor through the warehouse: a study whose feature raises sessions while WHO-5 falls, analysed by
the pipeline's analyze stage. The monitor's rows and the decision rule land in ``divergence_status`` and
``decision_table`` (migration 0090, beside the run's ``analysis_summary`` rows), and the divergence is an alert of the
pipeline's run (``pipeline_runs.alerts``)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import yaml

from flows.warehouse import open_warehouse
from tests.support.telemetry import sessions_around_assignment, write_study

PROTOCOL = {
    "study_id": "diverge",
    "title": "A feature that raises use and lowers wellbeing",
    "arms": [{"name": "control", "control": True}, {"name": "hook"}],
    "waves": [{"name": "w0", "day": 0, "instruments": ["who5"]}, {"name": "w1", "day": 30, "instruments": ["who5"]},
              {"name": "w3", "day": 91, "instruments": ["who5"]}],
    "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "w3", "mcid": 10, "ni_margin": 2},
    "surrogates": [{"name": "sessions_per_week", "event_type": "session_start", "window_days": 14}],
}
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _fill(path, n=600, seed=19):
    rng = np.random.default_rng(seed)
    pid = [f"p{i:04d}" for i in range(n)]
    arm = np.where(np.arange(n) % 2 == 0, "control", "hook")
    hook = (arm == "hook").astype(float)
    assigned = [T0 + timedelta(hours=int(h)) for h in rng.integers(0, 500, n)]
    trait = rng.normal(0, 1, n)
    scores = []
    for wave, harm, drop in (("w0", 0.0, 0.0), ("w1", 6.0, 0.1), ("w3", 8.0, 0.2)):
        seen = rng.random(n) >= drop
        who5 = 55 + 14 * trait - harm * hook + rng.normal(0, 9, n)
        scores += [("diverge", pid[i], wave, "who5.percent", float(who5[i])) for i in range(n) if seen[i]]
    events = sessions_around_assignment(rng, "diverge", pid, assigned, np.where(hook > 0, 1.4, 1.0))
    write_study(path, "diverge", pid, arm, assigned, scores, events)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("diverge")
    (d / "study.yaml").write_text(yaml.safe_dump(PROTOCOL, sort_keys=False))
    _fill(d / "wh.duckdb")
    return d


def test_the_analyze_stage_stores_the_monitor_and_raises_the_divergence_as_an_alert(study, monkeypatch):
    from flows.pipeline import study_flow

    monkeypatch.setenv("FLOURISH_ORCHESTRATOR", "inline")
    record = study_flow.fn(str(study / "study.yaml"), str(study / "wh.duckdb"), analyze="always", release=False,
                           only=["analyze"])
    assert [s["state"] for s in record["stages"]] == ["completed"], record
    assert record["alerts"] and all(a.startswith("DIVERGENCE (trusted): hook raised sessions_per_week")
                                    for a in record["alerts"])
    with open_warehouse(study / "wh.duckdb", read_only=True) as con:
        (alerts,) = con.execute("SELECT alerts FROM pipeline_runs WHERE run_id = ?", [record["run_id"]]).fetchone()
        assert json.loads(alerts) == record["alerts"]
        rows = con.execute("SELECT wave, status, harm_estimate, margin, p_iut, p_quadrant, run_id FROM divergence_status "
                           "ORDER BY wave").fetchall()
        assert [(w, s) for w, s, *_ in rows] == [("w1", "divergence"), ("w3", "divergence")]
        assert all(h > m and p < 0.05 and q > 0.9 for _, _, h, m, p, q, _ in rows)
        analysis_run = con.execute("SELECT DISTINCT run_id FROM analysis_summary").fetchall()
        assert {r[-1] for r in rows} == {analysis_run[0][0]}  # beside the run's outcome summary
        decision = con.execute("SELECT DISTINCT decision FROM decision_table WHERE arm = 'hook'").fetchall()
        assert decision == [("do_not_ship",)]
        kinds = con.execute("SELECT criterion_kind, criterion_passed FROM decision_table ORDER BY 1").fetchall()
        assert kinds == [("no_divergence", False), ("primary_success", False)]
