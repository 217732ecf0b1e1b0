"""Prefect task: score a study's responses from the warehouse into ``scores`` and ``safety_flags``.

Thin by design (STYLE.md 2): read ``response_items`` for the study, call the pure
``instruments.score_study``, replace the study's rows in one transaction. Rows with
``source = 'external'`` (scores delivered from outside) are never touched.

The two tables are created here with ``CREATE TABLE IF NOT EXISTS`` until the warehouse
migrations own them (``scores`` is already in ``0001_spine.sql``; inserts name their columns
so either definition works). TODO(lead): fold ``SAFETY_FLAGS_DDL`` and ``PSYCHOMETRICS_DDL``
into a migration.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
from prefect import task

import instruments

SCORES_DDL = """
CREATE TABLE IF NOT EXISTS scores (
    study_id        VARCHAR NOT NULL,
    participant     VARCHAR NOT NULL,
    wave            VARCHAR NOT NULL,
    outcome         VARCHAR NOT NULL,
    value           DOUBLE NOT NULL,
    items_answered  INTEGER,
    prorated        BOOLEAN NOT NULL DEFAULT false,
    source          VARCHAR NOT NULL DEFAULT 'flourish'
)"""

SAFETY_FLAGS_DDL = """
CREATE TABLE IF NOT EXISTS safety_flags (
    study_id            VARCHAR NOT NULL,
    participant         VARCHAR NOT NULL,
    wave                VARCHAR NOT NULL,
    instrument          VARCHAR NOT NULL,
    instrument_version  VARCHAR NOT NULL,
    flag                VARCHAR NOT NULL,
    observed            DOUBLE NOT NULL,
    op                  VARCHAR NOT NULL,
    threshold           DOUBLE NOT NULL,
    basis               VARCHAR NOT NULL,   -- item | score | partial_sum
    source              VARCHAR NOT NULL
)"""


PSYCHOMETRICS_DDL = """
CREATE TABLE IF NOT EXISTS psychometrics (
    study_id            VARCHAR NOT NULL,
    instrument          VARCHAR NOT NULL,
    instrument_version  VARCHAR NOT NULL,
    outcome             VARCHAR NOT NULL,
    wave                VARCHAR NOT NULL,
    arm                 VARCHAR NOT NULL,   -- 'all' pools the arms
    n_items             INTEGER NOT NULL,
    n_obs               INTEGER NOT NULL,
    alpha               DOUBLE,
    alpha_ci_lower      DOUBLE,
    alpha_ci_upper      DOUBLE,
    omega               DOUBLE,
    note                VARCHAR NOT NULL    -- why a statistic is NULL, '' otherwise
)"""


@task(name="score-responses")
def score_responses(warehouse_path: str | Path, study_id: str) -> dict[str, int]:
    """Score every response of ``study_id``; return ``{"responses": n_items_read, "scores": n, "safety_flags": n}``."""
    con = duckdb.connect(str(warehouse_path))
    try:
        con.execute(SCORES_DDL)
        con.execute(SAFETY_FLAGS_DDL)
        items = con.execute(
            "SELECT participant, wave, instrument, instrument_version, item_code, value "
            "FROM response_items WHERE study_id = ?", [study_id],
        ).df()
        scores, safety = instruments.score_study(items)
        scores = scores.assign(study_id=study_id)
        safety = safety.assign(study_id=study_id)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM scores WHERE study_id = ? AND source = 'flourish'", [study_id])
            con.register("new_scores", scores)
            # the migrated schema (0001_spine.sql) also has scored_at; fill it when present
            has_scored_at = con.execute(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'scores' AND column_name = 'scored_at'"
            ).fetchone()[0]
            extra_col, extra_val = (", scored_at", ", now()") if has_scored_at else ("", "")
            con.execute(
                "INSERT INTO scores (study_id, participant, wave, outcome, value, items_answered, prorated, source"
                f"{extra_col}) SELECT study_id, participant, wave, outcome, value, items_answered, prorated, "
                f"'flourish'{extra_val} FROM new_scores"
            )
            con.execute("DELETE FROM safety_flags WHERE study_id = ?", [study_id])
            con.register("new_safety", safety)
            con.execute(
                "INSERT INTO safety_flags SELECT study_id, participant, wave, instrument, instrument_version, flag, "
                "observed, op, threshold, basis, source FROM new_safety"
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return {"responses": len(items), "scores": len(scores), "safety_flags": len(safety)}
    finally:
        con.close()


@task(name="compute-psychometrics")
def compute_psychometrics(warehouse_path: str | Path, study_id: str) -> int:
    """Alpha and omega per instrument score x wave x arm into ``psychometrics`` (study's rows replaced)."""
    con = duckdb.connect(str(warehouse_path))
    try:
        con.execute(PSYCHOMETRICS_DDL)
        items = con.execute(
            "SELECT participant, wave, instrument, instrument_version, item_code, value "
            "FROM response_items WHERE study_id = ?", [study_id],
        ).df()
        assignments = con.execute(
            "SELECT participant, arm FROM assignments WHERE study_id = ?", [study_id]
        ).df() if _has_table(con, "assignments") else None
        table = instruments.study_psychometrics(items, assignments).assign(study_id=study_id)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM psychometrics WHERE study_id = ?", [study_id])
            con.register("new_psychometrics", table)
            con.execute(
                "INSERT INTO psychometrics SELECT study_id, instrument, instrument_version, outcome, wave, arm, "
                "n_items, n_obs, alpha, alpha_ci_lower, alpha_ci_upper, omega, note FROM new_psychometrics"
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return len(table)
    finally:
        con.close()


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])
