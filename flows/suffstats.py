"""Sufficient statistics from the warehouse, in DuckDB SQL (no participant rows in Python).

- :func:`longitudinal_stats` — the primary model's cross-products (global X'X, X'y, y'y and, per
  number of observed follow-up rows, the cross-products of per-participant sums) for one outcome.
  The SQL text is :func:`analysis.longitudinal.crossproducts_sql`, the same one
  ``analysis.fit_longitudinal`` runs on an in-memory frame, so both paths give the same numbers;
  only the source relation differs (built here from ``scores`` joined to ``assignments``).
- :func:`paired_moments` — per arm x wave :class:`PairedMoments` (baseline x, follow-up y): the
  ANCOVA statistics the privacy tier releases with noise.
- :func:`paired_moments_from_frame` — the same from a long frame (in-memory DuckDB).

The baseline is the outcome's value at the protocol's baseline wave (``StudyProtocol.baseline_wave``);
a participant without a baseline value is left out of these statistics (counted by
:func:`coverage`). Covariates named in the plan are read from ``scores`` at the baseline wave with
``outcome = <covariate name>`` (numeric). One score per participant, wave and outcome: the canonical
``schemas.warehouse.relations.study_scores`` (the DP releases read the same). The connection is the caller's (``flows.warehouse.open_warehouse``).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.longitudinal import DesignSpec, LongitudinalStats, compute_longitudinal_stats
from schemas.sqltext import ident, literal
from schemas.warehouse import relations
from schemas.protocol import StudyProtocol
from schemas.suffstats import PairedMoments

__all__ = [
    "coverage",
    "design_spec",
    "longitudinal_stats",
    "observations_sql",
    "paired_moments",
    "paired_moments_from_frame",
]


def _followup(protocol: StudyProtocol, waves: Sequence[str] | None):
    """The protocol's follow-up waves (after the baseline wave), or those of them named in ``waves``."""
    return [w for w in protocol.waves if w.name != protocol.baseline_wave and (waves is None or w.name in waves)]


def observations_sql(
    protocol: StudyProtocol, outcome: str, covariates: Sequence[str] = (), waves: Sequence[str] | None = None
) -> str:
    """A relation (parenthesised sub-query) with one row per participant x follow-up wave:
    participant, arm, wave, y, baseline, covariates — the source the design SQL reads.
    ``waves`` restricts the follow-up waves (default: all of the protocol's)."""
    sid = protocol.study_id
    bw = protocol.baseline_wave
    follow = [w.name for w in _followup(protocol, waves)]
    if not follow:
        raise AnalysisInputError("the protocol has no follow-up wave after the baseline wave")
    cov_cte = "".join(
        f", cov{k} AS (SELECT participant, value AS {ident(c)} FROM {relations.study_scores(sid, [c], [bw])})"
        for k, c in enumerate(covariates)
    )
    cov_cols = "".join(f", cov{k}.{ident(c)}" for k, c in enumerate(covariates))
    cov_join = "".join(f" JOIN cov{k} USING (participant)" for k in range(len(covariates)))
    return (
        f"(WITH base AS (SELECT participant, value AS baseline FROM {relations.study_scores(sid, [outcome], [bw])}), "
        f"arm_of AS (SELECT participant, arm FROM {relations.study_arms(sid)}), "
        f"fu AS (SELECT participant, wave, value AS y FROM {relations.study_scores(sid, [outcome], follow)})"
        f"{cov_cte} "
        f"SELECT fu.participant, arm_of.arm, fu.wave, fu.y, base.baseline{cov_cols} "
        f"FROM fu JOIN arm_of USING (participant) JOIN base USING (participant){cov_join}) AS obs"
    )


def design_spec(protocol: StudyProtocol, covariates: Sequence[str] = (), waves: Sequence[str] | None = None) -> DesignSpec:
    """Arms (control first, then protocol order), follow-up waves with months (all, or ``waves``), numeric covariates."""
    arms = [protocol.control_arm] + [a for a in protocol.arm_names if a != protocol.control_arm]
    fu = _followup(protocol, waves)
    return DesignSpec(tuple(arms), tuple(w.name for w in fu), tuple(w.months for w in fu),
                      tuple((c, ()) for c in covariates))


def coverage(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: str | None = None) -> pd.DataFrame:
    """Per arm x follow-up wave: rows in the analysis, and follow-up rows left out for lack of a baseline."""
    name = outcome or protocol.primary_outcome.name
    source = observations_sql(protocol, name)
    sid = protocol.study_id
    follow = [w.name for w in _followup(protocol, None)]
    return con.execute(
        f"SELECT a.arm, s.wave, count(*) AS follow_up_rows, "
        f"count(*) FILTER (WHERE s.participant NOT IN (SELECT participant FROM {source})) AS without_baseline "
        f"FROM {relations.study_scores(sid, [name], follow)} s JOIN {relations.study_arms(sid)} a USING (participant) "
        f"GROUP BY ALL ORDER BY ALL"
    ).df()


def longitudinal_stats(
    con: duckdb.DuckDBPyConnection,
    protocol: StudyProtocol,
    *,
    outcome: str | None = None,
    covariates: Sequence[str] | None = None,
    waves: Sequence[str] | None = None,
) -> LongitudinalStats:
    """Cross-products of the primary model for ``outcome`` (default: the primary outcome), over the
    protocol's follow-up waves or only ``waves`` (a running study's waves with data)."""
    name = outcome or protocol.primary_outcome.name
    covs = list(protocol.analysis.covariates if covariates is None else covariates)
    spec = design_spec(protocol, covs, waves)
    source = observations_sql(protocol, name, covs, waves)
    present = {r[0] for r in con.execute(f"SELECT DISTINCT arm FROM {source}").fetchall()}
    missing = [a for a in spec.arms if a not in present]
    if missing:
        raise AnalysisInputError(f"arms {missing} have no follow-up {name!r} rows with a baseline in study {protocol.study_id!r}")
    return compute_longitudinal_stats(con, source, spec, slopes=protocol.analysis.random_slopes)


_PAIRED_SELECT = (
    "SELECT arm, wave, count(*) AS n, sum(baseline) AS sum_x, sum(y) AS sum_y, sum(baseline * baseline) AS sum_xx, "
    "sum(y * y) AS sum_yy, sum(baseline * y) AS sum_xy FROM {source} GROUP BY arm, wave ORDER BY arm, wave"
)


def _to_cells(rows: list[tuple]) -> dict[tuple[str, str], PairedMoments]:
    return {(str(r[0]), str(r[1])): PairedMoments(int(r[2]), *(float(v) for v in r[3:])) for r in rows}


def paired_moments(
    con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, *, outcome: str | None = None
) -> dict[tuple[str, str], PairedMoments]:
    """Per (arm, follow-up wave): n and the sums of x, y, x^2, y^2, xy (x = baseline, y = follow-up)."""
    name = outcome or protocol.primary_outcome.name
    return _to_cells(con.execute(_PAIRED_SELECT.format(source=observations_sql(protocol, name))).fetchall())


def paired_moments_from_frame(frame: pd.DataFrame, *, value: str = "outcome") -> dict[tuple[str, str], PairedMoments]:
    """The same statistics from a long frame (participant, arm, wave, value, baseline)."""
    f = frame[["participant", "arm", "wave", value, "baseline"]].rename(columns={value: "y"})
    f = f[f["y"].notna()].astype({"arm": str, "wave": str})
    con = duckdb.connect(":memory:")
    try:
        con.register("obs_frame", f)
        return _to_cells(con.execute(_PAIRED_SELECT.format(source="obs_frame")).fetchall())
    finally:
        con.close()
