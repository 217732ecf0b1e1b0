"""The study pipeline (`flourish run`, `flourish score`): stages in order, every run recorded, unchanged inputs
cached, a rerun never spends privacy budget twice, a failed stage stops the ones after it.

Runs inline (FLOURISH_ORCHESTRATOR=inline): the same stage functions Prefect runs, without a server; the Prefect
path of the same commands is exercised by the demo test and tests/flows/test_prefect_server.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.simulation import simulate
from tests.support.spine import KEY


def _fast_plan(study: Path) -> None:
    """The simulated protocol with a small sampler budget: these tests are about the pipeline, not the model."""
    data = yaml.safe_load(study.read_text())
    data["analysis"].update({"chains": 1, "draws": 200, "tune": 200, "rhat_max": 1.2, "ess_bulk_min": 20})
    data["secondary_outcomes"] = []
    study.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    simulate(root / "sim", 240, seed=4, truth_draws=2_000)
    _fast_plan(root / "sim" / "study.yaml")
    (root / "k.key").write_text(KEY.decode())
    return root


def _run(*args: object):
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res


def _count(wh: Path, sql: str) -> int:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def test_run_then_rerun_is_cached_and_spends_nothing_twice(study, monkeypatch):
    monkeypatch.setenv("FLOURISH_ORCHESTRATOR", "inline")
    wh = study / "w.duckdb"
    first = _run("run", study / "sim" / "study.yaml", "--landing", study / "sim" / "landing", "--warehouse", wh,
                 "--key-file", study / "k.key", "--json")
    assert first.exit_code == 0, first.output
    rec = json.loads(first.stdout)
    assert [(s["stage"], s["state"]) for s in rec["stages"]] == [
        ("ingest", "completed"), ("score", "completed"), ("quality", "completed"), ("analyze", "completed"),
        ("release", "completed"), ("reports", "completed")]
    reports = study / "reports"  # the default: beside the warehouse file
    written = {p.name for p in reports.iterdir()}
    assert {"dashboard.html", "trial-report.html", "regulator-report.html", "regulator-report.json"} <= written
    assert _count(wh, "SELECT count(*) FROM scores") > 0
    assert _count(wh, "SELECT count(*) FROM analysis_summary") > 0
    assert _count(wh, "SELECT count(*) FROM releases") == 2  # the protocol plans two (after m3 and m12)
    # the release stage fits the public tier on what it released, so the dashboard and regulator report show effects
    assert _count(wh, "SELECT count(*) FROM analysis_summary WHERE tier = 'public'") > 0
    stage = next(s for s in rec["stages"] if s["stage"] == "release")
    assert stage["summary"]["public_analysis"]["rows"] > 0
    dashboard = (reports / "dashboard.html").read_text()
    assert "no public-tier analysis" not in dashboard and "no analysis of this tier" not in dashboard
    ledger = _count(wh, "SELECT count(*) FROM privacy_ledger")
    summaries = _count(wh, "SELECT count(*) FROM analysis_summary")

    second = _run("run", study / "sim" / "study.yaml", "--landing", study / "sim" / "landing", "--warehouse", wh,
                  "--key-file", study / "k.key", "--json")
    assert second.exit_code == 0, second.output
    assert {s["state"] for s in json.loads(second.stdout)["stages"]} == {"cached"}
    assert _count(wh, "SELECT count(*) FROM privacy_ledger") == ledger  # no budget spent twice
    assert _count(wh, "SELECT count(*) FROM analysis_summary") == summaries
    assert _count(wh, "SELECT count(*) FROM pipeline_runs WHERE state = 'completed'") == 2
    assert _count(wh, "SELECT count(*) FROM pipeline_stages") == 12
    assert _count(wh, "SELECT count(*) FROM quality_results") > 0

    # a new batch invalidates what depends on the data; the planned release is made already, so it stays cached
    extra = study / "sim" / "landing" / "events-late.jsonl"
    source = next((study / "sim" / "landing").glob("events*.jsonl")).read_text().splitlines()[:3]
    extra.write_text("".join(json.dumps(json.loads(line) | {"event_id": f"late-{i}"}) + "\n"
                             for i, line in enumerate(source)))
    try:
        third = _run("run", study / "sim" / "study.yaml", "--landing", study / "sim" / "landing", "--warehouse", wh,
                     "--key-file", study / "k.key", "--json")
    finally:
        extra.unlink()
    assert third.exit_code == 0, third.output
    states = {s["stage"]: s["state"] for s in json.loads(third.stdout)["stages"]}
    assert states == {"ingest": "completed", "score": "completed", "quality": "completed", "analyze": "completed",
                      "release": "cached", "reports": "completed"}
    assert _count(wh, "SELECT count(*) FROM privacy_ledger") == ledger

    # a report file removed by hand is written again, though nothing else changed
    (reports / "trial-report.html").unlink()
    fourth = _run("run", study / "sim" / "study.yaml", "--warehouse", wh, "--json")
    assert fourth.exit_code == 0, fourth.output
    states = {s["stage"]: s["state"] for s in json.loads(fourth.stdout)["stages"]}
    assert states["reports"] == "completed" and states["analyze"] == "cached"
    assert (reports / "trial-report.html").is_file()


def test_ingest_then_score_then_analyze_as_separate_commands(study, monkeypatch):
    """The new user's path of issue 17 (hardening D5: real studies could not be scored): `flourish ingest` of their
    own folder, then `score`, then `analyze`."""
    monkeypatch.setenv("FLOURISH_ORCHESTRATOR", "inline")
    wh = study / "separate.duckdb"
    sim = study / "sim"
    assert _run("ingest", sim / "landing", "--study", sim / "study.yaml", "--warehouse", wh, "--key-file",
                study / "k.key", "--json").exit_code == 0
    scored = _run("score", sim / "study.yaml", "--warehouse", wh, "--json")
    assert scored.exit_code == 0, scored.output
    assert [s["stage"] for s in json.loads(scored.stdout)["stages"]] == ["score"]
    assert _count(wh, "SELECT count(*) FROM scores WHERE source = 'flourish'") > 0
    analyzed = _run("analyze", sim / "study.yaml", "--warehouse", wh, "--exploratory", "--json")
    assert analyzed.exit_code == 0, analyzed.output


def test_a_failed_stage_stops_the_stages_after_it(study, monkeypatch):
    """A protocol that does not match the locked plan: the analysis refuses, the release is not made."""
    monkeypatch.setenv("FLOURISH_ORCHESTRATOR", "inline")
    wh = study / "failing.duckdb"
    sim = study / "sim"
    shutil.copy(study / "w.duckdb", wh) if (study / "w.duckdb").exists() else None
    changed = study / "changed.yaml"
    data = yaml.safe_load((sim / "study.yaml").read_text())
    data["title"] = "a different plan"
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    res = _run("run", changed, "--landing", sim / "landing", "--warehouse", wh, "--key-file", study / "k.key",
               "--no-preregister", "--json")
    assert res.exit_code == 2
    stages = {s["stage"]: s for s in json.loads(res.stdout)["stages"]}
    assert stages["analyze"]["state"] == "failed" and "preregister" in stages["analyze"]["message"]
    assert stages["release"]["state"] == "skipped" and "analyze stage failed" in stages["release"]["message"]
    assert "error: the analyze stage failed" in res.stderr if hasattr(res, "stderr") else True


def test_a_critical_quality_failure_stops_analysis_and_release_and_names_the_expectation(study, monkeypatch):
    """Issue 17: out-of-range scores injected past the ingest (straight into the warehouse) fail a critical
    expectation: no analysis and no release are written, and the message names the expectation."""
    monkeypatch.setenv("FLOURISH_ORCHESTRATOR", "inline")
    wh = study / "bad-scores.duckdb"
    sim = study / "sim"
    assert _run("ingest", sim / "landing", "--study", sim / "study.yaml", "--warehouse", wh, "--key-file",
                study / "k.key").exit_code == 0
    assert _run("score", sim / "study.yaml", "--warehouse", wh).exit_code == 0
    con = duckdb.connect(str(wh))
    participant = con.execute("SELECT participant FROM assignments LIMIT 1").fetchone()[0]
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, source) "
                "VALUES ('flourish-sim', ?, 'm1', 'who5.percent', 250.0, 'external')", [participant])
    con.close()
    res = _run("run", sim / "study.yaml", "--warehouse", wh, "--json")
    assert res.exit_code == 2
    stages = {s["stage"]: s for s in json.loads(res.stdout)["stages"]}
    assert stages["quality"]["state"] == "failed"
    assert "score_in_range[who5.percent]" in stages["quality"]["message"]
    assert stages["analyze"]["state"] == "skipped" and stages["release"]["state"] == "skipped"
    assert _count(wh, "SELECT count(*) FROM analysis_summary") == 0
    assert _count(wh, "SELECT count(*) FROM releases") == 0 and _count(wh, "SELECT count(*) FROM privacy_ledger") == 0
    assert _count(wh, "SELECT count(*) FROM quality_results WHERE NOT success AND severity = 'critical'") >= 1


def test_a_quality_warning_is_recorded_and_the_run_goes_on(study, monkeypatch):
    """A warning-level failure (a response long after its wave's window) is recorded; analysis and release run."""
    monkeypatch.setenv("FLOURISH_ORCHESTRATOR", "inline")
    wh = study / "late-response.duckdb"
    sim = study / "sim"
    assert _run("ingest", sim / "landing", "--study", sim / "study.yaml", "--warehouse", wh, "--key-file",
                study / "k.key").exit_code == 0
    con = duckdb.connect(str(wh))
    con.execute("INSERT INTO responses SELECT response_id || '-late', participant, study_id, instrument, "
                "instrument_version, wave, submitted_at + INTERVAL 400 DAY, items_answered, batch_id FROM responses "
                "WHERE wave = 'm1' LIMIT 1")
    con.close()
    res = _run("run", sim / "study.yaml", "--warehouse", wh, "--json")
    assert res.exit_code == 0, res.output
    stages = {s["stage"]: s for s in json.loads(res.stdout)["stages"]}
    assert stages["quality"]["state"] == "completed" and "response_in_wave_window" in stages["quality"]["summary"]["failed"]
    assert stages["analyze"]["state"] == "completed" and stages["release"]["state"] == "completed"


def test_a_stage_that_crashes_ends_the_run_failed_with_the_stage_named_and_raises(study, monkeypatch):
    """A bug inside a stage (not a FlourishError) keeps its traceback, and the run's record does not stay
    `running`: it is `failed`, naming the stage and the exception's type (never its text, which may hold data)."""
    import flows.pipeline as pipeline

    monkeypatch.setenv("FLOURISH_ORCHESTRATOR", "inline")
    wh = study / "crash.duckdb"

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("participant p-0001 says hello")

    monkeypatch.setattr(pipeline.score_stage, "fn", broken)
    with pytest.raises(ModuleNotFoundError):
        pipeline.study_flow.fn(str(study / "sim" / "study.yaml"), str(wh), str(study / "sim" / "landing"),
                               str(study / "k.key"), analyze="never", release=False, reports=False)
    con = duckdb.connect(str(wh), read_only=True)
    try:
        (state, message), = con.execute("SELECT state, message FROM pipeline_runs").fetchall()
        stages = con.execute("SELECT stage, state, message FROM pipeline_stages ORDER BY seq").fetchall()
    finally:
        con.close()
    assert state == "failed" and "score" in message and "ModuleNotFoundError" in message
    assert "p-0001" not in message
    assert [s[:2] for s in stages] == [("ingest", "completed"), ("score", "failed")]
    assert "ModuleNotFoundError" in stages[1][2] and "p-0001" not in stages[1][2]
