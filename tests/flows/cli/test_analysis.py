"""End to end on a small synthetic warehouse: preregister, refusals, analyze --json, deviation, SRM."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from flows.cli.analysis import register
from flows.warehouse import open_warehouse
from tests.support.telemetry import sessions_around_assignment, write_study
from tests.support.plan import ml_fit_stand_in

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

PROTOCOL = {
    "study_id": "cli-study",
    "title": "Coach vs control",
    "arms": [{"name": "control", "control": True}, {"name": "coach"}],
    "waves": [
        {"name": "w0", "day": 0, "instruments": ["who5", "phq9", "swls"]},
        {"name": "w1", "day": 30, "instruments": ["who5", "phq9", "swls"]},
        {"name": "w3", "day": 91, "instruments": ["who5", "phq9", "swls"]},
    ],
    "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "w3", "mcid": 10, "rope": 2},
    "secondary_outcomes": [
        {"name": "phq9.total", "instrument": "phq9", "wave": "w3", "direction": "lower_is_better"},
        {"name": "swls.total", "instrument": "swls", "wave": "w3"},
    ],
    "surrogates": [{"name": "sessions_per_week", "event_type": "session_start", "window_days": 14}],
    "privacy": {"epsilon": 1.0},
    # the Bayesian random-intercept model through the warehouse (the MMRM's CLI path: tests/flows/cli/test_trials.py)
    "analysis": {"effect_shape": "per_wave", "subgroups": ["baseline_tercile"], "chains": 2, "draws": 400,
                 "tune": 400, "ess_bulk_min": 150, "model": "random_intercept"},
}
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _fill(path, n=240, seed=3):
    rng = np.random.default_rng(seed)
    pid = [f"p{i:04d}" for i in range(n)]
    arm = np.where(np.arange(n) % 2 == 0, "control", "coach")
    assigned = [T0 + timedelta(hours=int(h)) for h in rng.integers(0, 500, n)]
    treat = (arm == "coach").astype(float)
    trait = rng.normal(0, 1, n)
    scores = []
    for wave, months, drop in (("w0", 0, 0.0), ("w1", 1, 0.1), ("w3", 3, 0.2)):
        eff = 0.0 if wave == "w0" else 1.0
        seen = rng.random(n) >= drop
        who5 = 50 + 12 * trait + eff * 8 * treat + rng.normal(0, 8, n)
        phq9 = 9 - 3 * trait - eff * 1.5 * treat + rng.normal(0, 3, n)
        swls = 20 + 4 * trait + rng.normal(0, 3, n)
        for name, v in (("who5.percent", who5), ("phq9.total", phq9), ("swls.total", swls)):
            scores += [("cli-study", pid[i], wave, name, float(v[i])) for i in range(n) if seen[i]]
    events = sessions_around_assignment(rng, "cli-study", pid, assigned, np.where(arm == "coach", 1.3, 1.0))
    write_study(path, "cli-study", pid, arm, assigned, scores, events)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "study.yaml").write_text(yaml.safe_dump(PROTOCOL, sort_keys=False))
    _fill(d / "wh.duckdb")
    app = typer.Typer()
    register(app)
    return d, app


@pytest.fixture()
def fast_fit(monkeypatch):
    import analysis.longitudinal

    monkeypatch.setattr(analysis.longitudinal, "fit_from_crossproducts", ml_fit_stand_in)


def _run(app, *args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_end_to_end(study, fast_fit):
    d, app = study
    yaml_path, wh = d / "study.yaml", d / "wh.duckdb"

    # 1. no lock yet: refused in one sentence, exit 2
    r = _run(app, "analyze", yaml_path, "--warehouse", wh, "--json")
    assert r.exit_code == 2 and "no preregistered plan" in r.output and "--exploratory" in r.output

    # 2. lock; a second lock of the same plan is refused
    r = _run(app, "preregister", yaml_path, "--warehouse", wh, "--json")
    assert r.exit_code == 0, r.output
    entry = json.loads(r.output)
    assert entry["kind"] == "lock" and len(entry["plan_hash"]) == 64
    r = _run(app, "preregister", yaml_path, "--warehouse", wh)
    assert r.exit_code == 2 and "already locked" in r.output

    # 3. confirmatory analysis
    r = _run(app, "analyze", yaml_path, "--warehouse", wh, "--json")
    assert r.exit_code == 0, r.output
    rows = pd.DataFrame(json.loads(r.output))
    assert {"outcome", "arm", "wave", "estimate", "lower", "upper", "p_benefit", "p_above_mcid", "p_in_rope",
            "method", "tier", "plan_hash", "exploratory"} <= set(rows.columns)
    assert (rows["plan_hash"] == entry["plan_hash"]).all() and not rows["exploratory"].any()
    lr = rows[(rows.outcome == "who5.percent") & (rows.wave == "long_run") & (rows.method == "ml_stand_in")].iloc[0]
    assert lr["lower"] < 8 < lr["upper"] and lr["p_benefit"] > 0.95  # simulated effect: +8 WHO-5 points
    phq = rows[(rows.outcome == "phq9.total") & (rows.method == "ancova_final_wave")].iloc[0]
    swl = rows[(rows.outcome == "swls.total") & (rows.method == "ancova_final_wave")].iloc[0]
    # Holm over the two secondary outcomes: the smaller p doubles, the larger is max(p, 2 * smaller)
    ps = sorted([phq["p_value"], swl["p_value"]])
    assert sorted([phq["p_adjusted"], swl["p_adjusted"]]) == pytest.approx([min(1, 2 * ps[0]), min(1, max(ps[1], 2 * ps[0]))])
    prim = rows[(rows.outcome == "who5.percent") & (rows.method == "ancova_final_wave")].iloc[0]
    assert pd.isna(prim["p_adjusted"])  # the primary is tested alone
    assert (rows.method == "tipping_point_delta").sum() == 1
    assert rows.loc[rows.method == "tipping_point_delta", "estimate"].iloc[0] > 0
    sub = rows[rows.method == "ancova_subgroup_partial_pooling"]
    assert sorted(sub["subgroup"]) == ["baseline_tercile=T1", "baseline_tercile=T2", "baseline_tercile=T3"]
    cup = rows[rows.method == "cuped"].iloc[0]
    assert cup["outcome"] == "sessions_per_week" and cup["estimate"] > 0
    with open_warehouse(wh, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM analysis_summary").fetchone()[0] == len(rows)

    # 4. a changed protocol is not the locked plan: refused, or exploratory on every row
    changed = {**PROTOCOL, "title": "Coach vs control (amended)"}
    (d / "changed.yaml").write_text(yaml.safe_dump(changed))
    r = _run(app, "analyze", d / "changed.yaml", "--warehouse", wh)
    assert r.exit_code == 2 and "locked at" in r.output
    r = _run(app, "analyze", d / "changed.yaml", "--warehouse", wh, "--exploratory", "--json")
    assert r.exit_code == 0, r.output
    assert all(row["exploratory"] for row in json.loads(r.output))
    r = _run(app, "preregister", d / "changed.yaml", "--warehouse", wh)
    assert r.exit_code == 2 and "--deviation" in r.output
    r = _run(app, "preregister", d / "changed.yaml", "--warehouse", wh, "--deviation", "title amended", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["kind"] == "deviation"

    # 5. SRM and balance on the ingested assignments (120:120 -> chi-square 0)
    r = _run(app, "srm", yaml_path, "--warehouse", wh, "--json")
    out = json.loads(r.output)
    assert out["srm"]["chi_square"] == pytest.approx(0.0) and not out["srm"]["mismatch"]
    assert {b["variable"] for b in out["balance"]} == {"who5.percent", "phq9.total", "swls.total"}


def test_outcome_without_rows_and_failed_diagnostics_are_refused(study):
    from flows.analysis_flows import AnalysisRefused, run_analysis
    from flows.statistics import OutcomeHasNoData
    from schemas.protocol import StudyProtocol

    d, _ = study
    ghost = {**PROTOCOL, "secondary_outcomes": [{"name": "gad7.total", "instrument": "who5", "wave": "w3"}]}
    with open_warehouse(d / "wh.duckdb") as con:
        with pytest.raises(OutcomeHasNoData, match="gad7.total"):
            run_analysis(con, StudyProtocol.model_validate(ghost), exploratory=True)
        from dataclasses import replace

        from analysis.results import Diagnostics

        def failing_fit(*args, **kwargs):
            return replace(ml_fit_stand_in(*args, **kwargs), diagnostics=Diagnostics(False, 1.05, 80.0, 3, ("R-hat 1.050 > 1.01",)))

        before = con.execute("SELECT count(*) FROM analysis_summary").fetchone()[0]
        with pytest.raises(AnalysisRefused, match="failed its diagnostics: R-hat 1.050.*nothing was published"):
            run_analysis(con, StudyProtocol.model_validate(PROTOCOL), exploratory=True, fit=failing_fit)
        assert con.execute("SELECT count(*) FROM analysis_summary").fetchone()[0] == before


def test_randomize_command(study, tmp_path):
    d, app = study
    people = pd.DataFrame({"participant_id": [f"x{i}" for i in range(50)]})
    people.to_csv(tmp_path / "people.csv", index=False)
    r = _run(app, "randomize", d / "study.yaml", "--participants", tmp_path / "people.csv", "--out",
             tmp_path / "alloc.csv", "--seed", 42, "--json")
    assert r.exit_code == 0, r.output
    alloc = pd.read_csv(tmp_path / "alloc.csv")
    assert alloc["arm"].value_counts().to_dict() == {"control": 25, "coach": 25}
    r2 = _run(app, "randomize", d / "study.yaml", "--participants", tmp_path / "people.csv", "--out",
              tmp_path / "alloc2.csv", "--seed", 42)
    assert r2.exit_code == 0 and pd.read_csv(tmp_path / "alloc2.csv").equals(alloc)
    r3 = _run(app, "randomize", d / "study.yaml", "--participants", tmp_path / "nope.csv", "--out",
              tmp_path / "a.csv", "--seed", 1)
    assert r3.exit_code == 2 and "does not exist" in r3.output


@pytest.mark.slow  # compiles the PyMC model with numba (~30-50 s on a loaded 2-core machine)
def test_primary_model_from_warehouse(study):
    """The real sampler on the warehouse statistics: the simulated +8 WHO-5 points at w3 is recovered, and a second
    run of the same plan gives identical rows."""
    from flows.analysis_flows import run_analysis
    from schemas.protocol import StudyProtocol

    d, _ = study
    proto = {**PROTOCOL, "secondary_outcomes": [], "surrogates": [],
             "analysis": {**PROTOCOL["analysis"], "draws": 1000, "tune": 1000, "ess_bulk_min": 400, "subgroups": []}}
    with open_warehouse(d / "wh.duckdb") as con:
        run = run_analysis(con, StudyProtocol.model_validate(proto), exploratory=True, store=False)
        again = run_analysis(con, StudyProtocol.model_validate(proto), exploratory=True, store=False)
    # D15: the same data, plan and seed give the same estimates (the second fit reuses the compiled model)
    assert again.summary.rows == run.summary.rows
    res = run.results["who5.percent"]
    assert res.diagnostics.passed and 200 < res.n_participants <= 240  # those with a follow-up score
    lr = res.effect("coach", "long_run")
    assert lr.lower < 8 < lr.upper and lr.p_benefit > 0.95
    assert all(r.exploratory for r in run.summary.rows)


def test_public_tier_reads_only_dp_releases(study):
    """--tier public: cells come from release_values (latest release), the model is the noise-aware one."""
    from analysis.results import Diagnostics
    from flows.analysis_flows import run_analysis
    from flows.statistics import OutcomeHasNoData
    from schemas.results import Effect
    from schemas.protocol import StudyProtocol
    from schemas.suffstats import PAIRED_STATISTICS

    d, _ = study
    proto = StudyProtocol.model_validate({**PROTOCOL, "secondary_outcomes": []})
    seen = {}

    def stub_public(cells, plan, *, control, waves, outcome, direction, mcid, rope):
        seen.update(cells=cells, waves=waves, control=control)
        e = Effect(outcome=outcome, arm="coach", control=control, wave="long_run", method="bayes_noise_aware_ancova",
                   tier="public", estimate=7.5, sd=2.0, lower=3.6, upper=11.4, interval_level=0.95, p_benefit=0.99,
                   p_above_mcid=0.2, p_in_rope=0.0, direction=direction)
        return type("R", (), {"effects": (e,), "diagnostics": Diagnostics(True, 1.0, 900.0, 0)})()

    with open_warehouse(d / "wh.duckdb") as con:
        with pytest.raises(OutcomeHasNoData, match="no DP release"):
            run_analysis(con, proto, tier="public", exploratory=True, fit=stub_public, store=False)
        con.execute("INSERT INTO releases VALUES ('r1', 'cli-study', now(), 'gaussian', 'zcdp', 0.1, 1.0, 1e-6, 10, "
                    "'[]', 'x', 'test', '')")
        vals = [("r1", "cli-study", "paired_moments:who5.percent", "who5.percent", arm, wave, stat,
                 100.0 + i, 1.5, False)
                for arm in ("control", "coach") for wave in ("w1", "w3") for i, stat in enumerate(PAIRED_STATISTICS)]
        con.executemany("INSERT INTO release_values VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", vals)
        run = run_analysis(con, proto, tier="public", exploratory=True, fit=stub_public, store=False)
    assert seen["waves"] == ["w1", "w3"] and seen["control"] == "control"
    cell = seen["cells"][("coach", "w3")]
    assert (cell.n, cell.sum_xy, cell.noise_sd_sum_y) == (100.0, 105.0, 1.5)
    assert [(r.effect.tier, r.effect.wave, r.exploratory) for r in run.summary.rows] == [("public", "long_run", True)]
    assert "trusted tier only" in run.notes[0]


def test_surrogate_forecast_from_a_calibration_study_in_the_warehouse(tmp_path):
    """A running study at w1 (no w3 yet) and an earlier study with w3 observed. By construction
    Y_w3 = 10 + 0.8 S_w1 + 1.0 sessions_per_week + 0.1 baseline + noise, the arm moves S_w1 by +6 and
    sessions by +30% (+0.9/week on average), so the true long-run effect is 0.8*6 + 0.9 = 5.7 points."""
    from analysis.plan import surrogate_forecast
    from flows.statistics import surrogate_inputs
    from schemas.protocol import StudyProtocol

    rng = np.random.default_rng(11)
    proto = StudyProtocol.model_validate({**PROTOCOL, "study_id": "run-study", "secondary_outcomes": []})
    with open_warehouse(tmp_path / "wh.duckdb") as con:
        for sid, n, has_long in (("calib-study", 1500, True), ("run-study", 1500, False)):
            pid = np.array([f"{sid}-{i}" for i in range(n)])
            arm = np.where(np.arange(n) % 2 == 0, "control", "coach")
            treat = (arm == "coach") & (sid == "run-study")
            assigned = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 300, n), unit="h")
            base = rng.normal(50, 15, n)
            s1 = 20 + 0.6 * base + 6 * treat + rng.normal(0, 8, n)
            k_in = rng.poisson(rng.gamma(3, 1, n) * 2 * np.where(treat, 1.3, 1.0))
            y = 10 + 0.8 * s1 + 1.0 * (k_in / 2.0) + 0.1 * base + rng.normal(0, 6, n)
            con.register("a_df", pd.DataFrame({"p": pid, "arm": arm, "t": assigned}))
            con.execute(f"INSERT INTO assignments SELECT p, '{sid}', arm, t, NULL, 'b' FROM a_df")
            waves = [("w0", base), ("w1", s1)] + ([("w3", y)] if has_long else [])
            sc = pd.concat([pd.DataFrame({"p": pid, "w": w, "v": v}) for w, v in waves])
            con.register("s_df", sc)
            con.execute(f"INSERT INTO scores (study_id, participant, wave, outcome, value) "
                        f"SELECT '{sid}', p, w, 'who5.percent', v FROM s_df")
            who = np.repeat(np.arange(n), k_in)
            ev = pd.DataFrame({"e": [f"{sid}-e{j}" for j in range(who.size)], "p": pid[who],
                               "ts": assigned[who] + pd.to_timedelta(rng.uniform(0.01, 13.9, who.size), unit="D")})
            con.register("e_df", ev)
            con.execute(f"INSERT INTO events SELECT e, p, '{sid}', ts, 's', 'session_start', NULL, NULL, 'b' FROM e_df")
        (eff,) = surrogate_forecast(surrogate_inputs(con, proto, "calib-study"), proto)
    assert eff.arm == "coach" and eff.effect.method == "surrogate_index_delta" and eff.effect.outcome == "who5.percent"
    assert eff.effect.lower < 5.7 < eff.effect.upper and abs(eff.effect.estimate - 5.7) < 3 * eff.effect.sd
    assert eff.se_first_stage > 0 and "surrogacy" in eff.assumptions[0]


def test_srm_note_and_tampered_registry(tmp_path):
    from flows.analysis_flows import PreregistrationRefused, plan_lock, preregister, run_analysis
    from schemas.protocol import StudyProtocol

    _fill(tmp_path / "wh.duckdb", n=240)
    proto = StudyProtocol.model_validate({**PROTOCOL, "secondary_outcomes": [], "surrogates": []})
    with open_warehouse(tmp_path / "wh.duckdb") as con:
        # 80 extra control assignments: 200 vs 120 against 1:1 -> chi-square 2 * 40^2 / 160 = 20, p = 7.7e-6
        con.executemany("INSERT INTO assignments VALUES (?, 'cli-study', 'control', ?, NULL, 'b2')",
                        [(f"extra{i}", T0) for i in range(80)])
        run = run_analysis(con, proto, exploratory=True, fit=ml_fit_stand_in, store=False)
        assert any(n.startswith("SAMPLE RATIO MISMATCH") and "p = 7.7e-06" in n for n in run.notes)
        # the registry is append-only: an edited row breaks the chain and every later read refuses
        preregister(con, proto)
        assert plan_lock(con, proto).locked
        con.execute("UPDATE plan_registry SET reason = 'rewritten' WHERE seq = 1")
        with pytest.raises(PreregistrationRefused, match="altered"):
            plan_lock(con, proto)


def test_a_sampler_that_cannot_start_is_a_clean_refusal(study):
    from flows.analysis_flows import AnalysisRefused, run_analysis
    from schemas.protocol import StudyProtocol

    def broken(*args, **kwargs):
        raise RuntimeError("All initialization points failed\n\nCaused by: ...")

    d, _ = study
    with open_warehouse(d / "wh.duckdb") as con:
        with pytest.raises(AnalysisRefused, match=r"could not be fitted \(All initialization points failed\)"):
            run_analysis(con, StudyProtocol.model_validate(PROTOCOL), exploratory=True, fit=broken, store=False)


def test_running_study_reports_observed_waves_and_no_long_run_estimate(tmp_path, fast_fit):
    """Before the long-run wave closes, analyze gives per-wave effects for the waves with data, a note
    saying the study is running, and no long-run or final-wave row (there is nothing to estimate it from)."""
    from flows.analysis_flows import run_analysis
    from schemas.protocol import StudyProtocol

    _fill(tmp_path / "wh.duckdb")
    with open_warehouse(tmp_path / "wh.duckdb") as con:
        con.execute("DELETE FROM scores WHERE wave = 'w3'")
        run = run_analysis(con, StudyProtocol.model_validate(PROTOCOL), exploratory=True, store=False)
    rows = run.summary.to_frame()
    model_rows = rows[rows.method == "ml_stand_in"]
    assert set(model_rows.wave) == {"w1"} and set(model_rows.outcome) == {"who5.percent", "phq9.total", "swls.total"}
    assert not (rows.wave == "long_run").any() and not (rows.wave == "w3").any()
    assert any("STUDY RUNNING" in n and "who5.percent" in n and "w3" in n for n in run.notes)
    assert (rows.method == "cuped").any()  # telemetry does not wait for the final wave


def test_analyze_without_telemetry_publishes_no_number_for_the_metric(tmp_path, fast_fit):
    """Issue 15: on a study with no telemetry, analyze --json printed CUPED rows with estimate 0.0 and interval
    [0.0, 0.0]. The metric's rows are now marked not estimable with the reason and carry no number."""
    _fill(tmp_path / "wh.duckdb")
    with open_warehouse(tmp_path / "wh.duckdb") as con:
        con.execute("DELETE FROM events")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(PROTOCOL, sort_keys=False))
    app = typer.Typer()
    register(app)
    r = _run(app, "analyze", tmp_path / "study.yaml", "--warehouse", tmp_path / "wh.duckdb", "--exploratory", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    metric = [row for row in rows if row["outcome"] == "sessions_per_week"]
    assert metric and all(not row["estimable"] and row["estimate"] is None and row["lower"] is None
                          and row["upper"] is None and row["sd"] is None and "does not vary" in row["reason"]
                          for row in metric)
    # every other row is estimable and carries its uncertainty, interval level and n per arm
    for row in rows:
        if row["outcome"] != "sessions_per_week" and row["method"] != "tipping_point_delta":
            assert row["estimable"] and row["sd"] > 0 and row["interval_level"] == 0.95, row
            assert row["n_arm"] > 0 and row["n_control"] > 0, row



def test_a_suppressed_cell_costs_its_wave_only_unless_it_is_the_last(tmp_path):
    """A release suppresses a cell whose noisy count fell below min_cell_size. At an earlier wave (which gets a small
    share of the budget) that wave's public rows say so and the long-run row still publishes; at the release's last
    wave the outcome cannot be analysed."""
    from analysis.plan import run_public_plan
    from flows.statistics import released_cells
    from analysis.errors import InsufficientData
    from schemas.protocol import StudyProtocol
    from schemas.suffstats import PAIRED_STATISTICS

    proto = StudyProtocol.model_validate({**PROTOCOL, "secondary_outcomes": []})
    rng = np.random.default_rng(3)

    def cell(arm, wave, suppressed):
        x = rng.uniform(20, 80, 300)
        y = np.clip(0.6 * x + rng.normal(20, 12, 300) + (3 if arm == "coach" else 0), 0, 100)
        xs, ys = x - 50, y - 50
        stats = dict(zip(PAIRED_STATISTICS, (300.0, xs.sum(), ys.sum(), xs @ xs, ys @ ys, xs @ ys), strict=True))
        rows = [(s, None if suppressed else v, 2.0) for s, v in stats.items()]
        return rows + [("center", None if suppressed else 50.0, 0.0), ("half_range", None if suppressed else 50.0, 0.0)]

    for suppressed_wave, last_fails in (("w1", False), ("w3", True)):
        with open_warehouse(tmp_path / f"{suppressed_wave}.duckdb") as con:
            con.execute("INSERT INTO releases VALUES ('r1', 'cli-study', now(), 'gaussian', 'zcdp', 0.1, 1.0, 1e-6, 10, "
                        "'[]', 'x', 'test', '')")
            con.executemany("INSERT INTO release_values VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                ("r1", "cli-study", "paired_moments:who5.percent", "who5.percent", arm, wave, stat, value, sd,
                 value is None)
                for arm in ("control", "coach") for wave in ("w1", "w3")
                for stat, value, sd in cell(arm, wave, wave == suppressed_wave and arm == "coach")])
            if last_fails:
                with pytest.raises(InsufficientData, match="at w3"):
                    released_cells(con, proto, proto.primary_outcome)
                continue
            release = released_cells(con, proto, proto.primary_outcome)
        assert release.waves == ("w3",) and "suppressed a cell of who5.percent at w1" in release.unusable["w1"]
        result = run_public_plan({"who5.percent": release}, proto)
        rows = {e.wave: e for e in result.effects}
        assert not rows["w1"].estimable and "suppressed" in rows["w1"].reason
        assert rows["long_run"].estimable and rows["w3"].estimable
