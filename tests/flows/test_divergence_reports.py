"""The divergence monitor in the reports: the loaders fill the bundle's ``divergence`` section from the stored
``divergence_status`` rows of the latest run of a tier; the public bundle reads the public tier's rows only (the
trusted tier's numbers come from participant-level effects and never leave), and the dashboard and the regulator
report's post-market monitoring section show the status with its numbers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from analysis.divergence import FIELDS, DivergenceStatus
from flows.analysis_flows import store_monitor
from flows.reports import public_bundle, public_connection, trusted_bundle
from flows.warehouse import open_warehouse
from reports import build_dashboard, build_regulator_report
from reports.bundle import NotAvailable
from schemas.protocol import StudyProtocol
from tests.flows.test_divergence_alert import PROTOCOL

T = datetime(2026, 6, 1, tzinfo=timezone.utc)
PROTOCOL = PROTOCOL | {"privacy": {"epsilon": 4.0}}


def _row(tier: str, status: str, wave: str = "w3", **numbers) -> DivergenceStatus:
    base = dict(arm="hook", control="control", wave=wave, outcome="who5.percent", metric="sessions_per_week",
                tier=tier, status=status, alpha=0.05, margin=2.0, direction="higher_is_better")
    return DivergenceStatus(**base, **numbers)


DIVERGED = dict(engagement_estimate=1.7, engagement_sd=0.3, flourishing_estimate=-8.1, flourishing_sd=1.2,
                harm_estimate=8.1, p_engagement=1e-6, p_harm=2e-7, p_iut=1e-6, p_quadrant=0.999)
CLEAN = dict(engagement_estimate=1.1, engagement_sd=0.6, flourishing_estimate=0.4, flourishing_sd=2.0,
             harm_estimate=-0.4, p_engagement=0.03, p_harm=0.88, p_iut=0.88, p_quadrant=0.01)


@pytest.fixture()
def warehouse(tmp_path):
    path = tmp_path / "w.duckdb"
    with open_warehouse(path) as con:
        # an older public run that diverged, then the latest public run: one clean wave and one suppressed
        store_monitor(con, "pub-old", "diverge", "h", False, [_row("public", "divergence", **DIVERGED)], (), T)
        store_monitor(con, "pub-new", "diverge", "h", False,
                      [_row("public", "no_divergence", "w1", **CLEAN),
                       _row("public", "indeterminate", reason="the flourishing release cell is suppressed")],
                      (), T + timedelta(days=7))
        store_monitor(con, "tru-1", "diverge", "h", False, [_row("trusted", "divergence", **DIVERGED)], (),
                      T + timedelta(days=8))
    return path


def test_the_public_bundle_reads_the_public_tiers_latest_checks_only(warehouse):
    protocol = StudyProtocol.model_validate(PROTOCOL)
    with public_connection(warehouse, "diverge") as con:
        tiers = con.execute("SELECT DISTINCT tier FROM divergence_status").fetchall()
    assert tiers == [("public",)]  # the trusted rows are not even copied
    d = public_bundle(warehouse, protocol).divergence
    assert d.tier == "public" and d.status == "indeterminate"  # a suppressed measure is never a pass
    assert {c.wave: c.status for c in d.checks} == {"w1": "no_divergence", "w3": "indeterminate"}
    assert "suppressed" in d.detail and "pub-new" in d.detail and "8.1" not in d.detail
    t = trusted_bundle(warehouse, protocol).divergence
    assert t.tier == "trusted" and t.status == "divergence" and "+8.1" in t.detail and "IUT p = 1e-06" in t.detail


def test_the_dashboard_and_regulator_report_show_the_status_with_its_numbers(warehouse):
    bundle = public_bundle(warehouse, StudyProtocol.model_validate(PROTOCOL))
    html = build_dashboard(bundle)
    assert "Divergence monitor: <b>indeterminate</b>" in html and "Divergence checks" in html and "no divergence" in html
    report = build_regulator_report(bundle)
    assert report.document["post_market_monitoring"]["divergence_monitor"] == "indeterminate"
    assert "suppressed" in report.html.split("Post-market monitoring")[1]


def test_without_stored_checks_the_section_says_why(tmp_path):
    with open_warehouse(tmp_path / "w.duckdb"):
        pass
    d = public_bundle(tmp_path / "w.duckdb", StudyProtocol.model_validate(PROTOCOL)).divergence
    assert isinstance(d, NotAvailable) and "no public-tier check" in d.reason


def test_a_public_bundle_refuses_the_trusted_tiers_checks(warehouse):
    protocol = StudyProtocol.model_validate(PROTOCOL)
    trusted = trusted_bundle(warehouse, protocol).divergence
    public = public_bundle(warehouse, protocol)
    with pytest.raises(ValueError, match="trusted tier's divergence"):
        type(public).model_validate(public.model_dump() | {"divergence": trusted.model_dump()})


def test_fields_of_the_monitor_are_the_tables_columns(warehouse):
    with open_warehouse(warehouse, read_only=True) as con:
        cols = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                          "'divergence_status' ORDER BY ordinal_position").fetchall()]
    assert cols[5:] == list(FIELDS)
