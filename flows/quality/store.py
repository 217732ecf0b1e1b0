"""The ``quality_results`` table (migration 0070): one row per expectation per run, and reading runs back.

Writing a run is one transaction that first deletes the run's rows, so a retried run with the same
``run_id`` (a Prefect retry) replaces itself instead of adding a second copy.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from flows.quality.report import ExpectationResult, QualityReport
from schemas.warehouse import transaction

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

COLUMNS = ("run_id", "study_id", "checked_at", "as_of", "run_seconds", "seq", "expectation", "family",
           "expectation_type", "table_name", "column_name", "severity", "success", "observed", "checked_count",
           "unexpected_count", "unit", "examples", "rule", "description", "error", "gx_version")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, allow_nan=False)


def report_rows(report: QualityReport) -> list[tuple[Any, ...]]:
    return [(report.run_id, report.study_id, report.checked_at, report.as_of, report.run_seconds, seq, r.name,
             r.family, r.expectation_type, r.table, r.column, r.severity, r.success,
             None if r.observed is None else _json(r.observed), r.checked_count, r.unexpected_count, r.unit,
             _json([dict(e) for e in r.examples]), _json(dict(r.rule)), r.description, r.error, report.gx_version)
            for seq, r in enumerate(report.results)]


def store_report(con: duckdb.DuckDBPyConnection, report: QualityReport) -> int:
    """Write (or replace) the run's rows; return how many were written."""
    rows = report_rows(report)
    placeholders = ", ".join(["?"] * len(COLUMNS))
    with transaction(con):
        con.execute("DELETE FROM quality_results WHERE run_id = ?", [report.run_id])
        if rows:
            con.executemany(f"INSERT INTO quality_results ({', '.join(COLUMNS)}) VALUES ({placeholders})", rows)
    return len(rows)


def load_reports(con: duckdb.DuckDBPyConnection, study_id: str | None = None, *, runs: int | None = None,
                 run_ids: list[str] | None = None) -> tuple[QualityReport, ...]:
    """Stored runs, newest first (of one study when given; the ``runs`` newest, or the named ``run_ids``)."""
    where, params = [], []
    if study_id is not None:
        where.append("study_id = ?")
        params.append(study_id)
    if run_ids is not None:
        where.append("list_contains(?, run_id)")
        params.append(list(run_ids))
    cond = f"WHERE {' AND '.join(where)}" if where else ""
    heads = con.execute(
        f"SELECT run_id, max(checked_at) AS t FROM quality_results {cond} GROUP BY run_id ORDER BY t DESC, run_id "
        + ("LIMIT ?" if runs is not None else ""), params + ([int(runs)] if runs is not None else [])).fetchall()
    if not heads:
        return ()
    ids = [h[0] for h in heads]
    rows = con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM quality_results WHERE list_contains(?, run_id) ORDER BY run_id, seq",
        [ids]).fetchall()
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    return tuple(_report(grouped[i]) for i in ids)


def _utc(t: datetime) -> datetime:
    return t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _report(rows: list[tuple[Any, ...]]) -> QualityReport:
    first = dict(zip(COLUMNS, rows[0]))
    results = []
    for row in rows:
        d = dict(zip(COLUMNS, row))
        results.append(ExpectationResult(
            name=d["expectation"], family=d["family"], expectation_type=d["expectation_type"], table=d["table_name"],
            column=d["column_name"], severity=d["severity"], success=bool(d["success"]),
            observed=None if d["observed"] is None else json.loads(d["observed"]),
            checked_count=d["checked_count"], unexpected_count=d["unexpected_count"], unit=d["unit"],
            examples=tuple(json.loads(d["examples"])), rule=json.loads(d["rule"]), description=d["description"],
            error=d["error"]))
    return QualityReport(run_id=first["run_id"], study_id=first["study_id"], checked_at=_utc(first["checked_at"]),
                         as_of=_utc(first["as_of"]), run_seconds=float(first["run_seconds"]), results=tuple(results),
                         gx_version=first["gx_version"])
