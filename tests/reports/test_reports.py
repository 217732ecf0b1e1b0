"""The three reports from the simulated studies: what each must say, and what it must never say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.reports import public_bundle, trusted_bundle, write_reports
from flows.study import load_study
from reports.bundle import ReportBundle
from reports import build_dashboard, build_regulator_report, build_trial_report
from reports.checklists import CONSORT_2025_ITEMS, consort_2025, consort_ai
from reports.consort import flow_counts_from_module, participant_flow_module
from reports.dashboard import EMBED_OPTIONS, javascript_bundle
from reports.text import suppressed
from reports.views import ARM_COLOURS, NO_TELEMETRY, default_views
from schemas.regulator import regulator_report_schema
from tests.support import REPO

SCHEMA_FILE = REPO / "schemas" / "json" / "regulator_report.schema.json"
TWO_MB = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def written(study, artifacts):
    return write_reports(study.study, study.warehouse, artifacts / "study")


@pytest.fixture(scope="module")
def sparse_written(sparse, artifacts):
    return write_reports(sparse.study, sparse.warehouse, artifacts / "sparse", charts=False)


def test_dashboard_is_one_offline_file_under_2_mb_with_one_bundle(written):
    html = written.dashboard.read_text(encoding="utf-8")
    size = written.dashboard.stat().st_size
    print(f"\ndashboard: {size:,} bytes ({written.dashboard})")
    assert size < TWO_MB
    assert html.count(javascript_bundle()) == 1  # one bundle shared by every chart
    assert "<script src" not in html and "<link" not in html and "@import" not in html and "@font-face" not in html
    specs = json.loads(re.search(r'<script type="application/json" id="flourish-specs">(.*?)</script>', html,
                                 re.S).group(1).replace("<\\/", "</"))
    assert len(specs) >= 5
    for spec in specs.values():
        assert spec["description"] and "url" not in json.dumps(spec.get("data", {}))
        text = json.dumps(spec)
        assert '"url"' not in text, "a chart loads data from a URL"
    assert EMBED_OPTIONS["actions"] == {"export": True, "source": False, "compiled": False, "editor": False}
    # the only http(s) strings outside the JS bundle are the specs' $schema identifiers (never fetched)
    outside = html.replace(javascript_bundle(), "")
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", outside))
    assert urls <= {"https://vega.github.io/schema/vega-lite/v6.4.1.json"}, urls


def test_every_chart_has_a_description_and_a_table_of_the_same_numbers(study):
    bundle = public_bundle(study.warehouse, load_study(study.study))
    for view in default_views(bundle):
        assert view.description
        if view.spec is not None:
            assert view.spec["description"] == view.description
            assert "<table" in view.table_html
            # the same numbers: every interval (or, for probabilities and budget shares, every percentage) the
            # table shows appears in the description too
            shown = (re.findall(r"\(-?[\d,.]+ to -?[\d,.]+\)", view.table_html)
                     or re.findall(r">(\d+%)<", view.table_html))
            assert shown and all(s in view.description for s in shown), view.key


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_arm_colours_reach_3_to_1_contrast_on_white_and_lines_have_points(study):
    for colour in ARM_COLOURS:
        assert (1.05) / (_luminance(colour) + 0.05) >= 3.0, colour  # WCAG 2.1 SC 1.4.11
    bundle = public_bundle(study.warehouse, load_study(study.study))
    for view in default_views(bundle):
        text = json.dumps(view.spec or {})
        for mark in re.findall(r'"mark": \{"type": "line"[^}]*\}', text):
            assert '"point"' in mark, (view.key, mark)


def test_effects_say_their_interval_includes_the_dp_noise(written):
    html = written.dashboard.read_text(encoding="utf-8")
    assert html.count("it includes the DP noise") >= 2
    assert "confirmatory" in html and "preregistered plan (SHA-256)" in html


def test_regulator_json_validates_against_the_shipped_schema(written):
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema == json.loads(json.dumps(regulator_report_schema(), sort_keys=True)), \
        "schemas/json/regulator_report.schema.json is stale: regenerate it from schemas.regulator"
    jsonschema.Draft202012Validator.check_schema(schema)
    document = json.loads(written.regulator_json.read_text(encoding="utf-8"))
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    results = document["clinicaltrials_gov"]["resultsSection"]
    assert set(results) == {"participantFlowModule", "baselineCharacteristicsModule", "outcomeMeasuresModule",
                            "adverseEventsModule"}
    waves = [w["name"] for w in document["design"]["waves"]]
    assert [p["title"].split(" ")[1] for p in results["participantFlowModule"]["periods"]] == waves  # waves = periods
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "tier": "trusted"}, schema, cls=jsonschema.Draft202012Validator)


def test_schema_export_writes_the_regulator_schema(tmp_path):
    res = CliRunner().invoke(app, ["schema", "export", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "regulator_report.schema.json").read_text()) == json.loads(SCHEMA_FILE.read_text())


def test_ctgov_participant_flow_round_trips_the_trusted_flow(study):
    trusted = trusted_bundle(study.warehouse, load_study(study.study))
    module = participant_flow_module(trusted)
    counts = flow_counts_from_module(json.loads(json.dumps(module)))
    ids = {a: f"FG{i:03d}" for i, a in enumerate(trusted.protocol.arm_names)}
    for arm in trusted.flow.arms:
        for i, w in enumerate(arm.waves):
            period = module["periods"][i]["title"]
            assert counts[(period, "STARTED", ids[arm.arm])] == w.entered
            assert counts[(period, "COMPLETED", ids[arm.arm])] == w.continued
            assert counts[(period, "ANSWERED AT THIS WAVE", ids[arm.arm])] == w.answered


def test_consort_checklist_keys_rows_by_name_and_version(study):
    bundle = trusted_bundle(study.warehouse, load_study(study.study))
    rows = consort_2025(bundle)
    assert len(rows) == len(CONSORT_2025_ITEMS) == 42
    assert len({r.key for r in rows}) == 42 and all(r.key.startswith("CONSORT 2025: ") for r in rows)
    assert {r.status for r in rows} <= {"filled", "needs a person", "not applicable"}
    assert all(r.detail for r in rows)  # filled says where, the others say why
    filled = {r.item for r in rows if r.status == "filled"}
    assert {"22a", "22b", "25", "26", "27", "10", "3", "21c"} <= filled
    assert len(filled) >= 20
    ai = consort_ai(bundle)
    assert len(ai) == 14 and all(r.key.startswith("CONSORT-AI 2020: ") for r in ai)
    assert next(r for r in ai if r.item == "5 (i)").status == "needs a person"  # no version in the simulated protocol


def test_consort_ai_versions_come_from_the_protocol(study):
    bundle = trusted_bundle(study.warehouse, load_study(study.study))
    regulatory = {"system_name": "Assistant", "system_version": "2026.11", "feature_versions": {
        "consented_guidance": "g-3", "anti_sycophancy": "c-1"}, "intended_purpose": "general wellbeing support",
        "classification": "general_wellness", "rationale": "no disease claim; general wellness intended use"}
    protocol = bundle.protocol.model_validate({**bundle.protocol.model_dump(mode="json"), "regulatory": regulatory})
    rows = {r.item: r for r in consort_ai(bundle.model_copy(update={"protocol": protocol}))}
    assert rows["5 (i)"].status == "filled" and "consented_guidance g-3" in rows["5 (i)"].detail
    html = build_trial_report(bundle.model_copy(update={"protocol": protocol}))
    assert "consented_guidance (g-3)" in html and "general wellbeing support" in html


def test_trial_report_sections(written, study):
    html = written.trial_report.read_text(encoding="utf-8")
    for needle in ("a randomised trial", "Participant flow", "entered = continued + exits", "Baseline characteristics",
                   "No p-values", "available n (arm / control)", "analysed n (arm / control)", "Harms",
                   "Missing-data sensitivity", "Deviations from the locked plan", "Reliability per wave and arm",
                   "CONSORT 2025 checklist", "CONSORT-AI items", "public (includes DP noise)", "ancova_final_wave"):
        assert needle in html, needle
    assert "p-value" not in html.split('id="baseline"')[1].split('id="outcomes"')[0].lower().replace("no p-values", "")
    assert "<script" not in html  # static: prints to PDF as it is


def test_dashboard_refuses_a_trusted_bundle(study):
    with pytest.raises(ValueError, match="public"):
        build_dashboard(trusted_bundle(study.warehouse, load_study(study.study)))


def test_builders_take_a_bundle_and_open_nothing(study, monkeypatch):
    """The builders get a bundle; with every way to open a database or a file for reading blocked they still build."""
    import builtins

    import duckdb

    protocol = load_study(study.study)
    public, trusted = public_bundle(study.warehouse, protocol), trusted_bundle(study.warehouse, protocol)
    javascript_bundle()  # vl-convert's bundle is cached by the first build; it is a library, not data

    def refuse(*args, **kwargs):
        raise AssertionError(f"a report builder opened {args[:1]}")

    real_open = builtins.open
    monkeypatch.setattr(duckdb, "connect", refuse)
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: refuse(f) if str(f).endswith((".duckdb", ".jsonl", ".csv",
                                                                                           ".parquet")) else real_open(f, *a, **k))
    assert build_dashboard(public) and build_trial_report(trusted) and build_regulator_report(public).html


def test_suppressed_cells_read_suppressed_in_every_report(sparse, sparse_written):
    protocol = load_study(sparse.study)
    bundle = public_bundle(sparse.warehouse, protocol)
    text = suppressed(protocol.privacy.min_cell_size)
    flow_cells = [v for v in bundle.values_of("consort_counts") if v.suppressed]
    assert flow_cells, "the sparse study should have suppressed participant counts"
    dashboard = sparse_written.dashboard.read_text(encoding="utf-8")
    trial = sparse_written.trial_report.read_text(encoding="utf-8")
    regulator = sparse_written.regulator_html.read_text(encoding="utf-8")
    document = json.loads(sparse_written.regulator_json.read_text(encoding="utf-8"))
    escaped = text.replace("<", "&lt;")
    for name, html in (("dashboard", dashboard), ("trial", trial), ("regulator", regulator)):
        assert escaped in html, name
    shown = {(c["arm"], c["stage"]): c["shown"] for c in document["population_and_flow"]["counts"]}
    for v in flow_cells:
        stage = "allocated" if v.statistic == "assigned" else v.wave
        assert shown[(v.arm, stage)] == text
        # never as 0 or blank: the dashboard's row for the cell says "suppressed"
        assert re.search(rf"<td>{re.escape(v.arm)}</td><td>{re.escape(stage)}</td><td class=\"num\">"
                         rf"<span class=\"suppressed\">{re.escape(escaped)}</span>", dashboard), (v.arm, stage)
    periods = document["clinicaltrials_gov"]["resultsSection"]["participantFlowModule"]["periods"]
    comments = [a for p in periods for m in p["milestones"] for a in m["achievements"] if a.get("comment") == text]
    assert comments and all("numSubjects" not in a for a in comments)


def test_a_study_without_telemetry_shows_no_telemetry_numbers(sparse, sparse_written, written):
    dashboard = sparse_written.dashboard.read_text(encoding="utf-8")
    assert NO_TELEMETRY in dashboard
    for name in ("sessions_per_week_first_4w", "feature_exposures_first_4w", "telemetry_means", "chart-telemetry"):
        assert name not in dashboard, name
    trial = sparse_written.trial_report.read_text(encoding="utf-8")
    assert "sessions_per_week" not in trial and "feature_exposures" not in trial
    # the study with telemetry does show the numbers
    assert "sessions_per_week_first_4w" in written.dashboard.read_text(encoding="utf-8")


def test_charts_are_written_as_png_and_svg(written):
    names = {p.name for p in written.charts}
    for key in ("enrolment", "trajectories", "forest", "probabilities", "telemetry", "budget"):
        assert f"{key}.svg" in names and f"{key}.png" in names
    for p in written.charts:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG") if p.suffix == ".png" else data.lstrip().startswith(b"<svg")


def test_cli_report_dashboard(study, tmp_path):
    res = CliRunner().invoke(app, ["report", "dashboard", str(study.study), "--warehouse", str(study.warehouse),
                                   "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert Path(out["dashboard"]).is_file() and out["bytes"] < TWO_MB
    res = CliRunner().invoke(app, ["report", "dashboard", str(study.study), "--warehouse", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_trial_report_prints_to_pdf_with_chromium(study, tmp_path):
    from tests.reports.browser import ensure_chromium

    ensure_chromium()
    paths = write_reports(study.study, study.warehouse, tmp_path, charts=False, pdf=True)
    assert paths.pdf_note == "" and paths.trial_pdf is not None
    data = paths.trial_pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 50_000


def test_sections_filled_later_render_when_present(study):
    """Safety counts from a future DP release, the compliance table and the divergence monitor: absent they read
    "not available"; present they are shown, a suppressed cell as suppressed."""
    from reports.bundle import ComplianceCell, DivergenceStatus, Safety, SafetyCount

    protocol = load_study(study.study)
    bundle = public_bundle(study.warehouse, protocol)
    html = build_dashboard(bundle)
    assert "Survey compliance per arm and wave: not available" in html
    # the divergence monitor is filled from the public tier's stored checks (flows.reports); absent it is not available
    assert "Divergence monitor: <b>" in html and bundle.divergence.tier == "public"
    assert "Engagement-vs-flourishing divergence monitor: not available" in build_dashboard(bundle.model_copy(
        update={"divergence": ReportBundle.model_fields["divergence"].default}))
    k = protocol.privacy.min_cell_size
    safety = Safety(source="dp_release", flags=("phq2_positive",), counts=(
        SafetyCount(arm="control", wave="m1", flag="phq2_positive", n_participants=21.4, noise_sd=3.0),
        SafetyCount(arm="guidance", wave="m1", flag="phq2_positive", n_participants=None, noise_sd=3.0, suppressed=True)))
    filled = bundle.model_copy(update={
        "safety": safety, "divergence": DivergenceStatus(status="no divergence", detail="checked at m3"),
        "compliance": (ComplianceCell(arm="control", wave="m1", prompted=80.2, answered=70.1, noise_sd=2.0),
                       ComplianceCell(arm="candor", wave="m1", prompted=None, answered=None, suppressed=True))})
    html = build_dashboard(filled)
    assert "chart-safety" in html and "21 (" in html and suppressed(k).replace("<", "&lt;") in html
    assert "no divergence" in html and "80.2" in html
    doc = build_regulator_report(filled).document
    events = doc["clinicaltrials_gov"]["resultsSection"]["adverseEventsModule"]["otherEvents"]
    assert events[0]["term"] == "phq2_positive" and events[0]["stats"][0]["numAffected"] == 21
    assert doc["post_market_monitoring"]["divergence_monitor"] == "no divergence"
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()), cls=jsonschema.Draft202012Validator)


def test_a_study_without_a_privacy_section_gets_all_three_reports(study, tmp_path):
    """A trial that plans no DP release leaves the privacy section out (issue 20); its reports crashed on
    protocol.privacy (found running Beat the Blues through `flourish run`). Every report is built, says that the
    study releases nothing, and the regulator JSON still validates."""
    protocol = load_study(study.study)
    bare = protocol.model_copy(update={"privacy": None})
    public, trusted = public_bundle(study.warehouse, bare), trusted_bundle(study.warehouse, bare)
    html = build_dashboard(public)
    assert "plans no DP release" in html
    assert "plans no DP release" in build_trial_report(trusted)
    doc = build_regulator_report(public).document
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()), cls=jsonschema.Draft202012Validator)
    assert doc["privacy"]["epsilon_total"] == {"not_available": "the protocol plans no DP release (it has "
                                                                "no privacy section)"}
