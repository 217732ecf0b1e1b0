"""Reports people can read: the public dashboard, the trial report (CONSORT 2025) and the regulator report.

Builders take a :class:`reports.bundle.ReportBundle` and return text; they never open a warehouse (``flows.reports``
fills the bundle and writes the files). ``reports`` imports only ``reports`` and ``schemas``.

- :func:`build_dashboard` (public bundle): one offline HTML file, one inlined Vega bundle for every chart;
- :func:`build_trial_report` (trusted bundle): CONSORT 2025 and CONSORT-AI, static SVG, no script;
- :func:`build_regulator_report` (public bundle): HTML plus a JSON document valid against
  ``schemas/json/regulator_report.schema.json`` (``flourish schema export`` writes it too);
- :func:`write_chart_images`: every dashboard chart as SVG and PNG for documents.
"""

from reports.bundle import ReportBundle
from reports.dashboard import build_dashboard
from reports.images import write_chart_images
from reports.regulator import RegulatorOutput, build_regulator_report

from reports.trial import build_trial_report

__all__ = ["RegulatorOutput", "build_regulator_report", "ReportBundle", "build_dashboard", "build_trial_report",
           "write_chart_images"]
