"""Data-quality gates: expectations generated from the study protocol and the instrument definitions,
validated with Great Expectations 1.x on DuckDB reductions of the warehouse, stored per run, rendered offline.

- :func:`run_quality_gates` (``gates.py``): the pipeline's quality stage; a critical failure raises
  :class:`QualityGateFailed` (a ``FlourishError``: one sentence naming the failed expectations).
- ``rules.py``: the rules and their default severities, :func:`wave_window` and :func:`study_period`
  (each time rule defined once), :class:`QualitySettings` (overrides and thresholds).
- ``frames.py``: the warehouse reduced in DuckDB to frames that do not grow with the number of participants.
- ``validate.py``: rules to GX suites and GX results back to :class:`ExpectationResult` (the only module that
  imports Great Expectations, lazily: it costs about 10 s).
- ``store.py``: the ``quality_results`` table (migration 0070); ``page.py``: :func:`render_quality_page`.

Importing this package does not import Great Expectations.
"""

from flows.quality.gates import QualityRunError, new_run_id, run_quality_gates
from flows.quality.page import render_quality_page
from flows.quality.report import ExpectationResult, QualityGateFailed, QualityReport
from flows.quality.rules import (
    DEFAULT_SEVERITY,
    QualityConfigError,
    QualitySettings,
    Rule,
    StudyPeriod,
    WaveWindow,
    build_rules,
    study_period,
    wave_window,
)
from flows.quality.store import load_reports, store_report

__all__ = [
    "DEFAULT_SEVERITY",
    "ExpectationResult",
    "QualityConfigError",
    "QualityGateFailed",
    "QualityReport",
    "QualityRunError",
    "QualitySettings",
    "Rule",
    "StudyPeriod",
    "WaveWindow",
    "build_rules",
    "load_reports",
    "new_run_id",
    "render_quality_page",
    "run_quality_gates",
    "store_report",
    "study_period",
    "wave_window",
]
