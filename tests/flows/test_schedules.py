"""`flourish serve`: deployments from the protocol's schedule in its IANA time zone, wave closes, late runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.schedules import (
    PlannedDeployment,
    closed_waves,
    late_runs_to_make,
    planned_deployments,
    release_id,
    wave_closes,
)
from flows.simulation.field_study import protocol as simulated_protocol
from schemas.protocol import StudyProtocol, dump_protocol

LONDON = ZoneInfo("Europe/London")


def _scheduled(**schedule) -> StudyProtocol:
    data = simulated_protocol().model_dump(mode="json")
    data["schedule"] = {"timezone": "Europe/London", "enrolment_start": "2026-01-05", "enrolment_end": "2026-03-31",
                        "nightly_ingest": "30 1 * * *", **schedule}
    return StudyProtocol.model_validate(data)


def test_serve_list_shows_the_protocols_schedules_and_only_closed_waves_are_due(tmp_path):
    protocol = _scheduled()
    study = tmp_path / "study.yaml"
    study.write_text(dump_protocol(protocol))
    # m6 closes 2026-03-31 + 182 + 30 days at 03:00 London; m12 on 2027-04-21: between the two
    res = CliRunner().invoke(app, ["serve", str(study), "--landing", str(tmp_path), "--warehouse",
                                   str(tmp_path / "w.duckdb"), "--list", "--as-of", "2026-12-01T09:00:00+00:00",
                                   "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    nightly = rows["flourish-sim-nightly-ingest"]
    assert nightly["cron"] == "30 1 * * *" and nightly["timezone"] == "Europe/London"
    assert nightly["next_runs"][0] == "2026-12-02T01:30:00+00:00"
    assert rows["flourish-sim-weekly-report"]["cron"] == "0 6 * * 1"
    assert rows["flourish-sim-wave-close-m6"]["due_now"] is True          # closed, never run: a run now
    assert rows["flourish-sim-wave-close-m12"]["due_now"] is False        # still open: no run now
    assert rows["flourish-sim-wave-close-m12"]["next_runs"] == ["2027-04-21T03:00:00+01:00"]
    # earlier closed waves are covered by the latest one under the default late-run policy
    assert "flourish-sim-wave-close-m3" not in rows


def test_every_missed_wave_close_is_run_when_the_policy_says_so():
    protocol = _scheduled(late_runs="every_missed")
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    planned = planned_deployments(protocol, study="s.yaml", landing="l", warehouse="w.duckdb", key_file=None, now=now,
                                  waves_run={"baseline"})
    due = [d.parameters["wave"] for d in planned if d.due_now]
    assert due == [w for w in closed_waves(protocol, now) if w != "baseline"]


def test_late_run_policy_after_a_three_hour_outage_on_a_half_hourly_schedule():
    outage_start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    missed = [outage_start + timedelta(minutes=30 * k) for k in range(6)]
    assert late_runs_to_make("latest_only", missed) == [missed[-1]]
    assert late_runs_to_make("every_missed", missed) == missed
    assert late_runs_to_make("latest_only", []) == []


@pytest.mark.parametrize("day", ["2027-03-28", "2026-10-25"])  # London spring-forward and fall-back
def test_a_nightly_job_runs_exactly_once_on_the_days_clocks_change(day):
    job = PlannedDeployment("n", "p", "nightly_ingest", "30 1 * * *", None, "Europe/London", {})
    start = datetime.fromisoformat(day).replace(tzinfo=LONDON) - timedelta(days=2)
    runs = job.next_runs(start, n=6)
    on_day = [r for r in runs if r.astimezone(LONDON).date().isoformat() == day]
    assert len(on_day) == 1
    assert len({r.astimezone(LONDON).date() for r in runs}) == 6  # one a day, none doubled or lost


def test_wave_closes_are_local_times_in_the_study_time_zone():
    protocol = _scheduled(wave_close_time="03:00")
    closes = {c.wave: c.closes_at for c in wave_closes(protocol)}
    m1 = protocol.wave("m1")
    local = closes["m1"].astimezone(LONDON)
    assert local.date().isoformat() == (datetime(2026, 3, 31) + timedelta(days=m1.day + m1.window_days)).date().isoformat()
    assert (local.hour, local.minute) == (3, 0)
    assert closes["m1"].utcoffset() == timedelta(0)


def test_a_study_without_a_schedule_runs_on_demand_and_cannot_be_served(tmp_path):
    protocol = simulated_protocol()
    assert closed_waves(protocol, datetime(2000, 1, 1, tzinfo=UTC)) == protocol.wave_names
    study = tmp_path / "study.yaml"
    study.write_text(dump_protocol(protocol))
    res = CliRunner().invoke(app, ["serve", str(study), "--landing", str(tmp_path), "--warehouse",
                                   str(tmp_path / "w.duckdb"), "--list"])
    assert res.exit_code == 2 and "declares no schedule" in res.output


def test_planned_release_ids_are_unique_and_stable():
    protocol = _scheduled()
    data = protocol.model_dump(mode="json")
    data["privacy"]["releases"] = [{"after_wave": "m3", "share": 0.4}, {"after_wave": "m12", "share": 0.6}]
    protocol = StudyProtocol.model_validate(data)
    ids = [release_id(protocol, "h", r) for r in protocol.planned_releases()]
    assert len(set(ids)) == 2 and ids == [release_id(protocol, "h", r) for r in protocol.planned_releases()]
    assert release_id(protocol, "other-plan", protocol.planned_releases()[0]) != ids[0]
    with pytest.raises(ValueError, match="more than the whole budget"):
        data["privacy"]["releases"] = [{"after_wave": "m3", "share": 0.6}, {"after_wave": "m12", "share": 0.6}]
        StudyProtocol.model_validate(data)


@pytest.mark.slow
def test_serve_runs_a_closed_waves_close_and_its_schedules_stay_active_after_it_stops(tmp_path):
    """End to end with Prefect: `flourish serve` creates the deployments, runs the wave close that is due (every
    stage, the reports included), and when the process stops its schedules are still active (Prefect pauses served
    schedules by default, #16363)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import duckdb

    from flows.simulation import simulate
    from tests.support import REPO
    from tests.support.spine import KEY

    simulate(tmp_path / "sim", 60, seed=2, truth_draws=1_000)
    data = yaml_load(tmp_path / "sim" / "study.yaml")
    data["schedule"] = {"timezone": "Europe/London", "enrolment_start": "2025-01-06", "enrolment_end": "2025-02-28"}
    data["waves"] = data["waves"][:2]  # baseline and m1: both long closed
    data["primary_outcome"]["wave"] = data["secondary_outcomes"][0]["wave"] = data["waves"][1]["name"]
    data["secondary_outcomes"], data["surrogates"] = [], []
    data["privacy"]["releases"] = [{"after_wave": data["waves"][1]["name"], "share": 1.0}]  # the kept wave's
    data["analysis"].update({"chains": 1, "draws": 200, "tune": 200, "rhat_max": 1.2, "ess_bulk_min": 20})
    study = tmp_path / "study.yaml"
    study.write_text(dump_protocol(StudyProtocol.model_validate(data)))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "FLOURISH_PSEUDONYM_KEY": KEY.decode(),
           "FLOURISH_ORCHESTRATOR": "prefect"}
    env.pop("PREFECT_API_URL", None)
    wh = tmp_path / "w.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", str(study), "--landing",
                             str(tmp_path / "sim" / "landing"), "--warehouse", str(wh)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, done = time.monotonic() + 420, []
        while time.monotonic() < deadline and not done and proc.poll() is None:
            time.sleep(3)
            if wh.exists():
                try:
                    con = duckdb.connect(str(wh), read_only=True)
                    done = con.execute("SELECT trigger FROM pipeline_runs WHERE state = 'completed'").fetchall()
                    con.close()
                except duckdb.Error:  # the run holds the write lock
                    continue
        assert done == [(f"schedule:wave_close:{data['waves'][1]['name']}",)], (
            proc.stderr.read() if proc.poll() is not None else done)
        con = duckdb.connect(str(wh), read_only=True)
        stages = dict(con.execute("SELECT stage, state FROM pipeline_stages").fetchall())
        con.close()
        assert stages == {"ingest": "completed", "score": "completed", "quality": "completed",
                          "analyze": "completed", "release": "completed", "reports": "completed"}
        assert (tmp_path / "reports" / "dashboard.html").is_file()  # beside the warehouse
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    check = ("from flows.prefect_server import prefect_api\n"
             "from prefect.client.orchestration import get_client\n"
             "with prefect_api():\n"
             "    with get_client(sync_client=True) as c:\n"
             "        print(sorted((d.name, all(s.active for s in d.schedules)) for d in c.read_deployments()))\n")
    listed = subprocess.run([sys.executable, "-c", check], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert "('flourish-sim-nightly-ingest', True)" in listed.stdout, listed.stderr[-2000:]
    assert "('flourish-sim-weekly-report', True)" in listed.stdout


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_served_flow_run_loads_the_pipeline_as_a_module_and_sees_the_top_level_packages(tmp_path):
    """A served run's process loads the flow from the deployment's entrypoint. From a file path
    (``flows/pipeline.py:...``) Prefect puts ``flows/`` first on ``sys.path``; ``import reports.bundle`` then finds
    ``flows/reports.py`` and fails, so a served run that wrote the reports crashed after the release stage."""
    import subprocess
    import sys

    from flows.cli.pipeline import runner_deployments
    from tests.support import REPO

    planned = planned_deployments(_scheduled(), study="s.yaml", landing="l", warehouse="w.duckdb", key_file=None,
                                  now=datetime(2025, 1, 1, tzinfo=UTC))
    entrypoints = {d.entrypoint for d in runner_deployments(planned)}
    assert len(entrypoints) == 1
    load = ("import sys\n"
            "from prefect.flows import load_flow_from_entrypoint\n"
            f"flow = load_flow_from_entrypoint({entrypoints.pop()!r})\n"
            "import reports.bundle, statistics\n"
            "print(flow.fn.__module__, statistics.__file__.startswith(sys.base_prefix))\n")
    res = subprocess.run([sys.executable, "-c", load], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["flows.pipeline", "True"]
