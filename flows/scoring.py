"""Prefect task: score a study's responses from the warehouse into ``scores`` and ``safety_flags``.

Thin by design (STYLE.md 2): read ``response_items`` for the study, call the pure
``instruments.score_study``, replace the study's rows in one transaction. Rows with
``source = 'external'`` (scores delivered from outside) are never touched.

The tables belong to the warehouse migrations (``0001_spine.sql`` for ``scores``,
``0010_instruments.sql`` for ``safety_flags`` and ``psychometrics``); ``connect`` applies them.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
from prefect import task

import instruments
from flows.warehouse import connect
from schemas.warehouse import transaction






def _latest_items(con: duckdb.DuckDBPyConnection, study_id: str):
    """Item answers of the study's responses. A participant may resubmit an instrument within a wave: the
    latest submission counts (the same rule the DP releases use for their one-response-per-wave bound)."""
    return con.execute(
        """SELECT ri.participant, ri.wave, ri.instrument, ri.instrument_version, ri.item_code, ri.value
           FROM response_items ri
           JOIN (SELECT response_id FROM responses WHERE study_id = $study
                 QUALIFY row_number() OVER (PARTITION BY participant, wave, instrument
                                            ORDER BY submitted_at DESC, response_id DESC) = 1) latest
             USING (response_id)
           WHERE ri.study_id = $study""", {"study": study_id},
    ).df()


@task(name="score-responses", persist_result=False, cache_policy=None)
def score_responses(warehouse_path: str | Path, study_id: str) -> dict[str, int]:
    """Score every response of ``study_id``; return ``{"responses": n_items_read, "scores": n, "safety_flags": n}``."""
    con = connect(warehouse_path)
    try:
        items = _latest_items(con, study_id)
        scores, safety = instruments.score_study(items)
        scores = scores.assign(study_id=study_id)
        safety = safety.assign(study_id=study_id)
        with transaction(con):
            con.execute("DELETE FROM scores WHERE study_id = ? AND source = 'flourish'", [study_id])
            con.register("new_scores", scores)
            con.execute(
                "INSERT INTO scores (study_id, participant, wave, outcome, value, items_answered, prorated, source, "
                "scored_at) SELECT study_id, participant, wave, outcome, value, items_answered, prorated, "
                "'flourish', now() FROM new_scores"
            )
            con.execute("DELETE FROM safety_flags WHERE study_id = ?", [study_id])
            con.register("new_safety", safety)
            con.execute(
                "INSERT INTO safety_flags SELECT study_id, participant, wave, instrument, instrument_version, flag, "
                "observed, op, threshold, basis, source FROM new_safety"
            )
        return {"responses": len(items), "scores": len(scores), "safety_flags": len(safety)}
    finally:
        con.close()


@task(name="compute-psychometrics", persist_result=False, cache_policy=None)
def compute_psychometrics(warehouse_path: str | Path, study_id: str) -> int:
    """Alpha and omega per instrument score x wave x arm into ``psychometrics`` (study's rows replaced)."""
    con = connect(warehouse_path)
    try:
        items = _latest_items(con, study_id)
        assignments = con.execute("SELECT participant, arm FROM assignments WHERE study_id = ?", [study_id]).df()
        if assignments.empty:  # no arms known yet: pooled statistics only
            assignments = None
        table = instruments.study_psychometrics(items, assignments).assign(study_id=study_id)
        with transaction(con):
            con.execute("DELETE FROM psychometrics WHERE study_id = ?", [study_id])
            con.register("new_psychometrics", table)
            con.execute(
                "INSERT INTO psychometrics SELECT study_id, instrument, instrument_version, outcome, wave, arm, "
                "n_items, n_obs, alpha, alpha_ci_lower, alpha_ci_upper, omega, note FROM new_psychometrics"
            )
        return len(table)
    finally:
        con.close()
