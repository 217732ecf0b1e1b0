"""The quality stage: reduce the warehouse, validate, store, and stop the pipeline on a critical failure.

``run_quality_gates`` is what the pipeline's quality stage calls between scoring and analysis (thin, as
STYLE.md 2 asks: the rules are :mod:`flows.quality.rules`, the reductions :mod:`flows.quality.frames`,
the validation :mod:`flows.quality.validate`). Results are stored before a critical failure is raised, so
the run that stopped the pipeline is on the page.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from flows.quality.frames import reduce_warehouse
from flows.quality.report import QualityReport
from flows.quality.rules import QualitySettings, build_rules
from flows.quality.store import store_report
from schemas.errors import FlourishError

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

    from schemas.protocol import StudyProtocol


class QualityRunError(FlourishError, ValueError):
    """A quality run asked for with arguments it cannot use (an empty run id, a naive time)."""


def run_quality_gates(
    con: duckdb.DuckDBPyConnection,
    protocol: StudyProtocol,
    *,
    run_id: str,
    as_of: datetime | None = None,
    settings: QualitySettings | None = None,
    store: bool = True,
    raise_on_critical: bool = True,
) -> QualityReport:
    """Validate the study's warehouse against its generated rules; store one row per expectation; return the
    report, or raise :class:`flows.quality.report.QualityGateFailed` (after storing) when a critical
    expectation failed and ``raise_on_critical``.

    ``as_of`` is the time against which a wave counts as due for completeness (default: now, UTC); pass it to
    make a run reproducible. Warnings and info failures never raise.
    """
    if not run_id or not str(run_id).strip():
        raise QualityRunError("a quality run needs a non-empty run_id")
    if as_of is not None and as_of.tzinfo is None:
        raise QualityRunError("as_of must be a time with a UTC offset, not a naive time")
    started = time.perf_counter()
    checked_at = datetime.now(timezone.utc)
    as_of = (as_of or checked_at).astimezone(timezone.utc)
    settings = settings or QualitySettings()

    from flows.quality.validate import gx_version, validate

    rules = build_rules(protocol, settings)
    frames, context = reduce_warehouse(con, protocol, as_of=as_of, settings=settings)
    results = validate(rules, frames)
    period = context.get("study_period")
    results = [dataclasses.replace(r, observed={**(r.observed or {}), "study_period": period})
               if r.family == "event_in_study_period" else r for r in results]
    report = QualityReport(run_id=str(run_id), study_id=protocol.study_id, checked_at=checked_at, as_of=as_of,
                           run_seconds=time.perf_counter() - started, results=tuple(results), gx_version=gx_version())
    if store:
        store_report(con, report)
    if raise_on_critical:
        report.raise_for_critical()
    return report


def new_run_id(now: datetime | None = None) -> str:
    """``quality-20261206T021400Z-1a2b3c``: sortable by time, unique across processes."""
    import secrets

    t = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"quality-{t:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
