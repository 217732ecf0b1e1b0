"""Acceptance in a real browser: each report opened from disk in headless Chromium with the network blocked.

For every HTML file: no console error, no request other than the file itself (measured from the DevTools network
log), every chart rendered marks (counted in its SVG), and a full-page screenshot kept under ``reports-artifacts/``
(its path printed). Debian's ``chromium`` and ``chromium-driver`` are installed when missing (``.ci/run`` does too).
"""

from __future__ import annotations

import pytest

from flows.reports import public_bundle, write_reports
from flows.study import load_study
from reports.views import default_views
from tests.reports.browser import chromium, open_page


@pytest.fixture(scope="module")
def pages(study, sparse, artifacts):
    return {"study": write_reports(study.study, study.warehouse, artifacts / "browser-study", charts=False),
            "sparse": write_reports(sparse.study, sparse.warehouse, artifacts / "browser-sparse", charts=False)}


@pytest.mark.slow
def test_reports_render_offline_in_headless_chromium(pages, artifacts, study):
    results = {}
    with chromium() as driver:
        for name, paths in pages.items():
            results[(name, "dashboard")] = open_page(driver, paths.dashboard, artifacts / f"{name}-dashboard.png")
            for kind, path in (("trial", paths.trial_report), ("regulator", paths.regulator_html)):
                results[(name, kind)] = open_page(driver, path, artifacts / f"{name}-{kind}.png",
                                                  chart_selector=".no-live-charts", figure_selector="figure[data-chart]")
    print()
    for (name, kind), r in results.items():
        print(f"{name} {kind}: {sum(r.marks.values())} marks in {len(r.marks)} charts {r.marks}; "
              f"requests {r.requests}; screenshot {r.screenshot}")
        assert r.errors == [], (name, kind, r.errors)
        assert r.outside_requests() == [], (name, kind, r.outside_requests())
        assert r.requests == [r.url], (name, kind, r.requests)
        assert r.marks and all(n > 0 for n in r.marks.values()), (name, kind, r.marks)
        assert r.screenshot.stat().st_size > 10_000
    dash = results[("study", "dashboard")]
    assert set(dash.rendered.values()) == {"true"}
    # every chart drew at least one mark per row of its data (points, rules, bars; lines add their own paths)
    bundle = public_bundle(study.warehouse, load_study(study.study))
    for view in default_views(bundle):
        if view.spec is not None:
            assert view.marks_expected > 0, view.key
            assert dash.marks[f"chart-{view.key}"] >= view.marks_expected, (view.key, dash.marks, view.marks_expected)
    assert {"chart-enrolment", "chart-trajectories", "chart-forest", "chart-probabilities", "chart-telemetry",
            "chart-budget"} <= set(dash.marks)
    assert "consort-flow" in results[("study", "trial")].marks
    assert "chart-telemetry" not in results[("sparse", "dashboard")].marks
