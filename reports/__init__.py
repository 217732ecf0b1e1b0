"""Reports people can read: the public dashboard, the trial report (CONSORT 2025) and the regulator report.

Builders take a :class:`reports.bundle.ReportBundle` and return text; they never open a warehouse (``flows.reports``
fills the bundle and writes the files). ``reports`` imports only ``reports`` and ``schemas``.
"""

from reports.bundle import ReportBundle
from reports.dashboard import build_dashboard

__all__ = ["ReportBundle", "build_dashboard"]
