"""The pipeline's record and its stage cache.

Every ``flourish run`` (and every scheduled run) writes one row to ``pipeline_runs`` and one per stage to
``pipeline_stages`` (migration 0080), kept for good: what ran, in which state, how long, and on which inputs.

A stage whose inputs have not changed is not run again: it is *cached*. Its cache key is the SHA-256 of what it
depends on, stated explicitly rather than left to Prefect's default policies (research/orchestration.md: Prefect's
``INPUTS``/``TASK_SOURCE`` policies hash task arguments and source text, and two tasks with identical source
text were reported to share an entry, PrefectHQ/prefect#23062):

- the code version (:func:`code_version`: the project's own source, SQL and instrument definitions),
- the protocol (its preregistration hash, ``analysis.prereg.plan_hash``) and, where it matters, its lock,
- the data (:func:`data_version`: the study's ingested batches, each named by the content hashes of its files,
  and every erasure and re-keying since), for the ingest the landing folder's listing, for every stage after
  scoring the stored scores themselves (:func:`scores_fingerprint`), for the analysis the plan registry (a lock or
  a deviation).

The cache lives in the warehouse beside the data it describes, so a copied warehouse carries it and an
erasure (which changes :func:`data_version`) invalidates every later stage.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import duckdb

STAGES = ("ingest", "score", "quality", "analyze", "release", "reports")
_SOURCE_PACKAGES = ("schemas", "instruments", "privacy", "analysis", "reports", "flows")
_SOURCE_SUFFIXES = (".py", ".sql", ".yaml", ".json")


def _digest(parts: Iterable[object]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


@cache
def code_version() -> str:
    """SHA-256 of the project's own source files (Python, SQL, instrument definitions), read once per process.

    A package version string would not change while the code does during development; the source itself does."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for package in _SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(root)).encode("utf-8") + b"\0")
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def landing_listing(landing: str | Path) -> str:
    """SHA-256 of the landing folder's listing: every file's relative path, size and modification time.

    Cheap (no file is read), so an unchanged folder is recognised without hashing gigabytes; a changed file is
    still read and recognised by its content hash inside the ingest, which skips files it has seen."""
    root = Path(landing)
    entries = []
    for path in sorted(root.rglob("*")):
        try:
            st = path.lstat()
        except OSError:
            continue
        if path.is_file() or path.is_symlink():
            entries.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return _digest(entries)


def data_version(con: duckdb.DuckDBPyConnection, study_id: str) -> str:
    """SHA-256 of what the study's data are made of: its batches (a batch id is a hash of its files' content
    hashes) and the erasures and re-keyings since."""
    batches = con.execute("SELECT batch_id FROM batches WHERE study_id = ? ORDER BY batch_id", [study_id]).fetchall()
    erasures = con.execute("SELECT erasure_id FROM erasure_log ORDER BY erasure_id").fetchall()
    rekeys = con.execute("SELECT rekey_id FROM rekey_log ORDER BY rekey_id").fetchall()
    return _digest([batches, erasures, rekeys])


def scores_fingerprint(con: duckdb.DuckDBPyConnection, study_id: str) -> tuple[int, int]:
    """Count and order-free hash sum of the study's stored scores: the stages after scoring depend on the scores
    themselves, and a score written past the ingest (a repair, a bug, tampering) must not hide behind a cached
    quality gate. One scan of the scores table (about a second per 10 million rows)."""
    count, total = con.execute(
        "SELECT count(*), coalesce(sum(hash(participant, wave, outcome, value, source)::HUGEINT), 0) "
        "FROM scores WHERE study_id = ?", [study_id]).fetchone()
    return int(count), int(total)


def results_version(con: duckdb.DuckDBPyConnection, study_id: str) -> str:
    """SHA-256 of what the reports read besides the data: the stored analysis runs, the DP releases of the ledger,
    the quality runs and the plan registry (the reports stage is cached only while none of them changed)."""
    analyses = con.execute("SELECT DISTINCT run_id FROM analysis_summary WHERE study_id = ? ORDER BY 1",
                           [study_id]).fetchall()
    releases = con.execute("SELECT DISTINCT release_id FROM privacy_ledger WHERE study_id = ? ORDER BY 1",
                           [study_id]).fetchall()
    quality = con.execute("SELECT DISTINCT run_id FROM quality_results WHERE study_id = ? ORDER BY 1",
                          [study_id]).fetchall()
    registry = con.execute("SELECT entry_hash FROM plan_registry WHERE study_id = ? ORDER BY seq",
                           [study_id]).fetchall()
    return _digest([analyses, releases, quality, registry])


def cache_key(stage: str, *inputs: object) -> str:
    """The cache key of a stage: its name, the code version and its inputs."""
    return _digest([stage, code_version(), *inputs])


@dataclass(frozen=True)
class StageResult:
    """What one stage of a run did: its state (completed, cached, skipped, failed), time and a JSON-able summary."""

    stage: str
    state: str
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    cache_key: str | None = None


def start_run(con: duckdb.DuckDBPyConnection, study_id: str, trigger: str) -> str:
    run_id = f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    con.execute("INSERT INTO pipeline_runs (run_id, study_id, trigger, started_at, state) VALUES (?, ?, ?, ?, 'running')",
                [run_id, study_id, trigger, datetime.now(UTC)])
    return run_id


def record_stage(con: duckdb.DuckDBPyConnection, run_id: str, seq: int, result: StageResult, started_at: datetime) -> None:
    con.execute(
        "INSERT INTO pipeline_stages (run_id, stage, seq, state, cache_key, started_at, seconds, summary, message) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, result.stage, seq, result.state, result.cache_key, started_at, result.seconds,
         json.dumps(result.summary, sort_keys=True, default=str), result.message])


def finish_run(con: duckdb.DuckDBPyConnection, run_id: str, state: str, message: str | None = None,
               alerts: list[str] | None = None) -> None:
    con.execute("UPDATE pipeline_runs SET finished_at = ?, state = ?, message = ?, alerts = ? WHERE run_id = ?",
                [datetime.now(UTC), state, message, json.dumps(alerts or []), run_id])


def cached_summary(con: duckdb.DuckDBPyConnection, study_id: str, stage: str, key: str) -> dict[str, Any] | None:
    """The summary of the latest completed run of ``stage`` with this cache key for the study, or None."""
    row = con.execute(
        "SELECT s.summary FROM pipeline_stages s JOIN pipeline_runs r USING (run_id) "
        "WHERE r.study_id = ? AND s.stage = ? AND s.cache_key = ? AND s.state = 'completed' "
        "ORDER BY s.started_at DESC LIMIT 1", [study_id, stage, key]).fetchone()
    return None if row is None else json.loads(row[0])


def run_history(con: duckdb.DuckDBPyConnection, study_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The study's latest runs with their stages, newest first."""
    runs = con.execute(
        "SELECT run_id, trigger, started_at, finished_at, state, message, alerts FROM pipeline_runs "
        "WHERE study_id = ? ORDER BY started_at DESC LIMIT ?", [study_id, limit]).fetchall()
    out = []
    for run_id, trigger, started, finished, state, message, alerts in runs:
        stages = con.execute("SELECT stage, state, seconds, message FROM pipeline_stages WHERE run_id = ? ORDER BY seq",
                             [run_id]).fetchall()
        out.append({"run_id": run_id, "trigger": trigger, "started_at": started, "finished_at": finished,
                    "state": state, "message": message, "alerts": json.loads(alerts),
                    "stages": [{"stage": s, "state": st, "seconds": sec, "message": m} for s, st, sec, m in stages]})
    return out
