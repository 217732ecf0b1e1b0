"""The one way from the warehouse to the statistics the analyses need, in DuckDB SQL.

Every reader here reads participants, scores and telemetry through the canonical relations
(:mod:`schemas.warehouse.relations`: one arm per participant, one score per participant x wave x outcome, one
definition of a telemetry metric), reduces them with GROUP BY, and returns the frozen statistic values of
:mod:`schemas.suffstats` that ``analysis`` takes (DESIGN.md, "Statistics from sufficient statistics"). The
connection is the caller's (``flows.warehouse.open_warehouse``); nothing here fits a model.

- the primary model: :func:`longitudinal_stats` runs the SQL text of
  :mod:`analysis.longitudinal.design` over :func:`observations_sql` (scores joined to arms);
  :func:`longitudinal_stats_from_frame` runs the same text on an in-memory frame (what the tests hold the
  numpy path to);
- the final-wave ANCOVA (baseline and the plan's covariates) and the tipping point: :func:`final_wave_cells`;
- prespecified subgroups: :func:`subgroup_cells`; telemetry metrics for CUPED: :func:`telemetry_cells`;
- the surrogate index: :func:`surrogate_frame` (the one reader that returns participant rows; why is in
  its docstring);
- the sample-ratio check and baseline balance: :func:`arm_counts`, :func:`baseline_moments`;
- per arm x wave paired moments (:func:`paired_moments`, what the DP release publishes with noise) and, for
  the public tier, the released cells themselves (:func:`released_cells`, :func:`released_statistics`; release
  tables only);
- :func:`plan_statistics`: all of the above that ``analysis.plan.run_plan`` takes, read before any model runs.

Every reader of floating-point sums runs on one DuckDB thread (:func:`_one_thread`), so the same warehouse gives
the same statistics to the last bit, and a fixed seed the same posterior draws (hardening finding D15).

The baseline is the outcome's value at the protocol's baseline wave (``StudyProtocol.baseline_wave``); a
participant without a baseline value is left out of the longitudinal and paired statistics (counted by
:func:`coverage`). Covariates named in the plan are read from ``scores`` at the baseline wave with
``outcome = <covariate name>`` (numeric).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import duckdb
import numpy as np

from analysis.errors import AnalysisInputError, AnalysisRefused, InsufficientData
from analysis.longitudinal import (
    DesignSpec,
    LongitudinalStats,
    analysis_frame,
    crossproducts_sql,
    slope_groups_sql,
    stats_from_rows,
)
from analysis.plan import (
    FinalWaveCells,
    OutcomeStatistics,
    PlanStatistics,
    ReleasedCells,
    ReleasedCounts,
    SurrogateInputs,
    Unavailable,
    final_wave,
    followup_waves,
)
from schemas.errors import FlourishError
from schemas.binary_stats import BinaryCountTable, NoisyBinaryCounts
from schemas.mmrm_stats import MMRMStatistics
from schemas.protocol import Outcome, StudyProtocol, SurrogateMetric
from schemas.sqltext import ident, literal, number, varchar_list
from schemas.suffstats import CellCrossProducts, Moments, NoisyPairedMoments, PairedMoments
from schemas.warehouse import relations

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "OutcomeHasNoData",
    "arm_counts",
    "binary_table",
    "baseline_moments",
    "coverage",
    "design_spec",
    "final_wave_cells",
    "longitudinal_stats",
    "longitudinal_stats_from_frame",
    "observations_sql",
    "observed_followup_waves",
    "paired_moments",
    "participant_rows_sql",
    "plan_statistics",
    "released_cells",
    "released_counts",
    "released_statistics",
    "require_covariates",
    "require_rows",
    "subgroup_cells",
    "surrogate_frame",
    "surrogate_inputs",
    "telemetry_cells",
]

SUBGROUPS = ("baseline_tercile", "stratum")
"""The prespecified subgroups the warehouse can define (see :func:`subgroup_cells`)."""


class OutcomeHasNoData(FlourishError):
    """The plan names an outcome (or a release, or a calibration study) with no rows in the warehouse."""


# ----------------------------------------------------------------------------------------------
# Reproducible sums
# ----------------------------------------------------------------------------------------------
@contextmanager
def _one_thread(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the block's queries on one DuckDB thread, then restore the connection's setting.

    Why: DuckDB aggregates in parallel and adds the threads' partial sums in the order the threads finish;
    floating-point addition is not associative, so a sum's last bits changed from one read to the next. NUTS
    turns any change in its input into different draws, so two analyses of the same warehouse with the same
    seed gave different estimates (D15: 12 of 62 differed in the third digit). One thread reads in storage
    order: the same file gives the same bits. The cost is small on this shared 2-core machine: the primary
    model's statistics at 1,000,000 participants x 6 waves took 27.9 s on one thread and 38.3 s on all threads in
    the same run of ``benchmarks/analysis.py`` (20-23 s and 20-25 s in an earlier pair of runs), 7.2 vs 6.5 s at
    200,000."""
    threads = int(con.execute("SELECT current_setting('threads')").fetchone()[0])
    con.execute("SET threads TO 1")
    try:
        yield
    finally:
        con.execute(f"SET threads TO {number(threads)}")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reproducible(reader: Callable[_P, _R]) -> Callable[_P, _R]:
    """A reader whose first argument is the connection, run under :func:`_one_thread`."""

    @functools.wraps(reader)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _one_thread(args[0]):  # type: ignore[arg-type]
            return reader(*args, **kwargs)

    return run


# ----------------------------------------------------------------------------------------------
# Waves
# ----------------------------------------------------------------------------------------------
def _followup(protocol: StudyProtocol, waves: Sequence[str] | None):
    """The protocol's follow-up waves (after the baseline wave), or those of them named in ``waves``."""
    return [w for w in protocol.waves if w.name != protocol.baseline_wave and (waves is None or w.name in waves)]


def require_rows(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: Outcome) -> None:
    """Refuse an outcome the plan names but the warehouse has no score of (a misspelt name, a missing feed)."""
    n = con.execute(f"SELECT count(*) FROM {relations.primary_scores(protocol, [outcome.name])}").fetchone()[0]
    if not n:
        raise OutcomeHasNoData(
            f"the plan names outcome {outcome.name!r}, which has no scores for study {protocol.study_id} in the warehouse"
        )


def observed_followup_waves(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: Outcome) -> list[str]:
    """Follow-up waves (protocol order) at which ``outcome`` has at least one score in the warehouse."""
    have = {r[0] for r in con.execute(
        f"SELECT DISTINCT wave FROM {relations.primary_scores(protocol, [outcome.name])}").fetchall()}
    return [w for w in protocol.wave_names if w != protocol.baseline_wave and w in have]


# ----------------------------------------------------------------------------------------------
# The primary model's cross-products
# ----------------------------------------------------------------------------------------------
def _covariate_relation(protocol: StudyProtocol, covariate: str) -> str:
    """A relation (participant, the covariate's design columns: ``analysis.plan.covariate_columns``). An outcome's
    covariate is its score at the baseline wave; a declared baseline covariate comes from the participants records
    (``participant_characteristics``): a numeric one as its number, a categorical one as one 0/1 dummy per level after
    the reference. A participant without the value has no row."""
    from analysis.plan import covariate_columns

    sid = protocol.study_id
    declared = protocol.baseline_covariate(covariate)
    if declared is None:
        return (f"(SELECT participant, value AS {ident(covariate)} FROM "
                f"{relations.primary_scores(protocol, [covariate], [protocol.baseline_wave])})")
    where = f"study_id = {literal(sid)} AND covariate = {literal(covariate)}"
    if declared.kind == "numeric":
        return (f"(SELECT participant, value_number AS {ident(covariate)} FROM participant_characteristics "
                f"WHERE {where} AND value_number IS NOT NULL)")
    dummies = ", ".join(f"CASE WHEN value_text = {literal(level)} THEN 1.0 ELSE 0.0 END AS {ident(col)}"
                        for level, col in zip((declared.levels or [])[1:], covariate_columns(protocol, [covariate]),
                                              strict=True))
    return f"(SELECT participant, {dummies} FROM participant_characteristics WHERE {where} AND value_text IS NOT NULL)"


def observations_sql(
    protocol: StudyProtocol, outcome: str, covariates: Sequence[str] = (), waves: Sequence[str] | None = None
) -> str:
    """A relation (parenthesised sub-query) with one row per participant x follow-up wave:
    participant, arm, wave, y, baseline, covariate columns (``analysis.plan.covariate_columns``) — the source the
    design SQL reads. ``waves`` restricts the follow-up waves (default: all of the protocol's)."""
    sid = protocol.study_id
    bw = protocol.baseline_wave
    follow = [w.name for w in _followup(protocol, waves)]
    if not follow:
        raise AnalysisInputError("the protocol has no follow-up wave after the baseline wave")
    from analysis.plan import covariate_columns

    cov_cte = "".join(f", cov{k} AS {_covariate_relation(protocol, c)}" for k, c in enumerate(covariates))
    cov_cols = "".join(f", cov{k}.{ident(col)}" for k, c in enumerate(covariates)
                       for col in covariate_columns(protocol, [c]))
    cov_join = "".join(f" JOIN cov{k} USING (participant)" for k in range(len(covariates)))
    return (
        f"(WITH base AS (SELECT participant, value AS baseline FROM {relations.primary_scores(protocol, [outcome], [bw])}), "
        f"arm_of AS (SELECT participant, arm FROM {relations.study_arms(sid)}), "
        f"fu AS (SELECT participant, wave, value AS y FROM {relations.primary_scores(protocol, [outcome], follow)})"
        f"{cov_cte} "
        f"SELECT fu.participant, arm_of.arm, fu.wave, fu.y, base.baseline{cov_cols} "
        f"FROM fu JOIN arm_of USING (participant) JOIN base USING (participant){cov_join}) AS obs"
    )


def participant_rows_sql(
    protocol: StudyProtocol, outcome: str, covariates: Sequence[str] = (), waves: Sequence[str] | None = None
) -> str:
    """The participants of :func:`observations_sql`, one row each (parenthesised sub-query): participant, arm,
    baseline, the covariate columns, and ``y0`` ... the score at each follow-up wave (``waves``, default all; NULL
    where there is none) — the wide source of ``analysis.mmrm.pattern_statistics_sql``. The scores come pivoted from
    the canonical relation (``relations.primary_scores_wide``, baseline wave and follow-up waves in one GROUP BY), so
    the arm and covariates join a million rows rather than one per score. A participant without a baseline or without
    a follow-up score is left out, as from :func:`observations_sql`."""
    from analysis.plan import covariate_columns

    follow = [w.name for w in _followup(protocol, waves)]
    if not follow:
        raise AnalysisInputError("the protocol has no follow-up wave after the baseline wave")
    sid = protocol.study_id
    scores = relations.primary_scores_wide(protocol, outcome, [protocol.baseline_wave, *follow])
    cov_cte = "".join(f", cov{k} AS {_covariate_relation(protocol, c)}" for k, c in enumerate(covariates))
    cov_cols = "".join(f", cov{k}.{ident(col)}" for k, c in enumerate(covariates)
                       for col in covariate_columns(protocol, [c]))
    cov_join = "".join(f" JOIN cov{k} USING (participant)" for k in range(len(covariates)))
    ys = "".join(f", s.score_{number(t + 1)} AS y{number(t)}" for t in range(len(follow)))
    any_followup = " OR ".join(f"s.score_{number(t + 1)} IS NOT NULL" for t in range(len(follow)))
    return (
        f"(WITH s AS {scores}, arm_of AS (SELECT participant, arm FROM {relations.study_arms(sid)}){cov_cte} "
        f"SELECT s.participant, arm_of.arm, s.score_0 AS baseline{cov_cols}{ys} "
        f"FROM s JOIN arm_of USING (participant){cov_join} WHERE s.score_0 IS NOT NULL AND ({any_followup})) AS obs"
    )


def observations_wide_sql(
    protocol: StudyProtocol, outcome: str, covariates: Sequence[str] = (), waves: Sequence[str] | None = None
) -> str:
    """The rows of :func:`observations_sql` (participant, arm, wave, y, baseline, covariate columns) unpivoted from
    :func:`participant_rows_sql`: each score is chosen in the pivot's one GROUP BY instead of a window over every
    score row, and the arm and covariates join one row per participant (the tests hold the two equal)."""
    from analysis.plan import covariate_columns

    follow = [w.name for w in _followup(protocol, waves)]
    cov_cols = "".join(f", {ident(col)}" for col in covariate_columns(protocol, covariates))
    ys = ", ".join(f"y{number(t)}" for t in range(len(follow)))
    return (f"(SELECT participant, arm, wave, y, baseline{cov_cols} FROM (SELECT participant, arm, baseline{cov_cols}, "
            f"unnest({varchar_list(follow)}) AS wave, unnest([{ys}]) AS y "
            f"FROM {participant_rows_sql(protocol, outcome, covariates, waves)}) AS long_rows WHERE y IS NOT NULL) AS obs")


def require_covariates(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: str,
                       covariates: Sequence[str], waves: Sequence[str] | None = None) -> None:
    """Refuse, naming the covariate and how many participants lack it, a plan whose covariate is missing for some of
    the participants the model would analyse (randomised, with a baseline and a follow-up score): leaving them out
    silently would change the analysed sample."""
    # the participants observations_sql would give rows, one row each (the pivoted read: no window over every score)
    analysed = participant_rows_sql(protocol, outcome, (), waves)
    for c in covariates:
        n_missing, n_all = con.execute(
            f"SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {_covariate_relation(protocol, c)} AS cv "
            f"WHERE cv.participant = a.participant)), count(*) FROM (SELECT participant FROM {analysed}) AS a"
        ).fetchone()
        if n_missing:
            declared = protocol.baseline_covariate(c)
            where = ("no participants record holds it" if declared is not None
                     else f"no {protocol.baseline_wave} score of it is stored")
            raise AnalysisInputError(
                f"covariate {c!r} {'declared' if declared is not None else 'named by the plan'} but {where} for "
                f"{n_missing} of the {n_all} participants the {outcome!r} model would analyse; send their values "
                "(null counts as missing) or take the covariate out of the plan")


def design_spec(protocol: StudyProtocol, covariates: Sequence[str] = (), waves: Sequence[str] | None = None) -> DesignSpec:
    """Arms (control first, then protocol order), follow-up waves with months (all, or ``waves``), the covariates'
    columns (numeric; a categorical covariate's dummies are columns of :func:`observations_sql`)."""
    from analysis.plan import covariate_columns

    arms = [protocol.control_arm] + [a for a in protocol.arm_names if a != protocol.control_arm]
    fu = _followup(protocol, waves)
    return DesignSpec(tuple(arms), tuple(w.name for w in fu), tuple(w.months for w in fu),
                      tuple((c, ()) for c in covariate_columns(protocol, covariates)))


def coverage(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: str | None = None) -> pd.DataFrame:
    """Per arm x follow-up wave: rows in the analysis, and follow-up rows left out for lack of a baseline."""
    name = outcome or protocol.primary_outcome.name
    source = observations_sql(protocol, name)
    sid = protocol.study_id
    follow = [w.name for w in _followup(protocol, None)]
    return con.execute(
        f"SELECT a.arm, s.wave, count(*) AS follow_up_rows, "
        f"count(*) FILTER (WHERE s.participant NOT IN (SELECT participant FROM {source})) AS without_baseline "
        f"FROM {relations.primary_scores(protocol, [name], follow)} s JOIN {relations.study_arms(sid)} a USING (participant) "
        f"GROUP BY ALL ORDER BY ALL"
    ).df()


def design_statistics(con: duckdb.DuckDBPyConnection, source: str, spec: DesignSpec, *, slopes: bool) -> LongitudinalStats:
    """Run the design's SQL text over ``source`` and parse its rows (analysis.longitudinal.design)."""
    global_sql, group_sql, baseline_sql = crossproducts_sql(spec, source)
    global_row = con.execute(global_sql).fetchone()
    group_rows = con.execute(group_sql).fetchall()
    baseline_row = con.execute(baseline_sql).fetchone()
    slope_rows = con.execute(slope_groups_sql(spec, source)).fetchall() if slopes else ()
    return stats_from_rows(spec, global_row, group_rows, baseline_row, slope_rows)


@_reproducible
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
    require_covariates(con, protocol, name, covs, waves)
    spec = design_spec(protocol, covs, waves)
    with _materialized(con, observations_wide_sql(protocol, name, covs, waves)) as source:
        present = {r[0] for r in con.execute(f"SELECT DISTINCT arm FROM {source}").fetchall()}
        missing = [a for a in spec.arms if a not in present]
        if missing:
            raise AnalysisInputError(f"arms {missing} have no follow-up {name!r} rows with a baseline in study "
                                     f"{protocol.study_id!r}")
        return design_statistics(con, source, spec, slopes=protocol.analysis.random_slopes)


@contextmanager
def _materialized(con: duckdb.DuckDBPyConnection, relation: str) -> Iterator[str]:
    """``relation`` computed once into a temporary table (its name, dropped on exit): the design SQL reads its
    source three or four times, and each read of the canonical score relation would choose every score again.
    The table holds what the relation does (pseudonyms, no raw id) and lives in this connection's memory only."""
    name = ident(f"flourish_obs_{uuid.uuid4().hex}")
    con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {relation}")
    try:
        yield name
    finally:
        con.execute(f"DROP TABLE IF EXISTS {name}")


def longitudinal_stats_from_frame(
    frame: pd.DataFrame, spec: DesignSpec, *, value: str = "outcome", slopes: bool = False
) -> LongitudinalStats:
    """The warehouse's SQL text run on a long frame in an in-memory DuckDB: the same statistics as
    ``analysis.longitudinal.crossproducts_from_frame`` computes in numpy (the tests hold them equal)."""
    f = analysis_frame(frame, spec, value=value)
    con = duckdb.connect(":memory:")
    try:
        con.register("obs_frame", f)
        return design_statistics(con, "obs_frame", spec, slopes=slopes)
    finally:
        con.close()


# ----------------------------------------------------------------------------------------------
# Per arm (x wave) moments: ANCOVA, subgroups, telemetry, balance, the DP release
# ----------------------------------------------------------------------------------------------
_PAIRED_SELECT = (
    "SELECT arm, wave, count(*) AS n, sum(baseline) AS sum_x, sum(y) AS sum_y, sum(baseline * baseline) AS sum_xx, "
    "sum(y * y) AS sum_yy, sum(baseline * y) AS sum_xy FROM {source} GROUP BY arm, wave ORDER BY arm, wave"
)


@_reproducible
def paired_moments(
    con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, *, outcome: str | None = None
) -> dict[tuple[str, str], PairedMoments]:
    """Per (arm, follow-up wave): n and the sums of x, y, x^2, y^2, xy (x = baseline, y = follow-up)."""
    name = outcome or protocol.primary_outcome.name
    rows = con.execute(_PAIRED_SELECT.format(source=observations_sql(protocol, name))).fetchall()
    return {(str(r[0]), str(r[1])): PairedMoments(int(r[2]), *(float(v) for v in r[3:])) for r in rows}


@_reproducible
def final_wave_cells(
    con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: Outcome, covariates: Sequence[str] | None = None
) -> FinalWaveCells:
    """The final-wave ANCOVA's statistics (``analysis.plan.FinalWaveCells``): per arm, the cross-products of
    W = (intercept, baseline, the covariates' columns) and the final-wave score y over the completers, and of W over
    the dropouts, in one GROUP BY arm x completer over one row per randomised participant with a baseline.

    ``covariates`` default to the plan's (``analysis.covariates``). Who counts: a participant randomised, with a
    baseline score; a completer has a final-wave score, a dropout has none (also one with no follow-up score at all,
    whom the MMRM's participant rows leave out but the tipping point imputes). A completer without a covariate value
    is refused, as the longitudinal models refuse it (:func:`require_covariates`); a dropout without one is counted
    (``dropouts_without_covariates``) and in no cell. An arm with baselines but no completer has a completers' cell of
    n = 0."""
    from analysis.plan import covariate_columns

    require_rows(con, protocol, outcome)
    covs = list(protocol.analysis.covariates if covariates is None else covariates)
    final = final_wave(protocol, outcome)
    require_covariates(con, protocol, outcome.name, covs, [final])
    sid = protocol.study_id
    w_cols = ("intercept", "baseline", *covariate_columns(protocol, covs))
    cov_cte = "".join(f", cov{k} AS {_covariate_relation(protocol, c)}" for k, c in enumerate(covs))
    cov_join = "".join(f" LEFT JOIN cov{k} USING (participant)" for k in range(len(covs)))
    w_exprs = ["CAST(s.score_0 AS DOUBLE)"] + [f"CAST(cov{k}.{ident(col)} AS DOUBLE)" for k, c in enumerate(covs)
                                               for col in covariate_columns(protocol, [c])]
    lacks = " OR ".join(["FALSE"] + [f"cov{k}.participant IS NULL" for k in range(len(covs))])
    # w0 is the intercept: its products are the other column's sums and count(*)
    w = ["1"] + [f"w{j}" for j in range(1, len(w_cols))]
    pairs = [(a, b) for a in range(len(w)) for b in range(a, len(w))]

    def total(*factors: str) -> str:
        kept = [f for f in factors if f != "1"]
        return f"sum({' * '.join(kept)})" if kept else "count(*)"

    sums = ", ".join([total(w[a], w[b]) for a, b in pairs] + [total(w[a], "y") for a in range(len(w))]
                     + [total("y", "y")])
    rows_sql = (
        f"WITH s AS {relations.primary_scores_wide(protocol, outcome.name, [protocol.baseline_wave, final])}, "
        f"arm_of AS (SELECT participant, arm FROM {relations.study_arms(sid)}){cov_cte} "
        "SELECT arm_of.arm, s.score_1 IS NOT NULL AS completer, " + lacks + " AS lacks, "
        + ", ".join(f"{e} AS w{j + 1}" for j, e in enumerate(w_exprs)) + ", CAST(s.score_1 AS DOUBLE) AS y "
        f"FROM s JOIN arm_of USING (participant){cov_join} WHERE s.score_0 IS NOT NULL")
    sql = (f"SELECT arm, completer, lacks, {sums} FROM ({rows_sql}) AS participant_rows "
           "GROUP BY arm, completer, lacks ORDER BY arm, completer, lacks")
    p = len(w_cols)
    completers: dict[str, CellCrossProducts] = {}
    dropouts: dict[str, CellCrossProducts] = {}
    without = 0
    for arm, completer, lacking, *values in con.execute(sql).fetchall():
        completers.setdefault(arm, CellCrossProducts.zero(w_cols))
        dropouts.setdefault(arm, CellCrossProducts.zero(w_cols))
        if lacking:
            if completer:  # require_covariates refused these above; a change between the two reads would land here
                raise AnalysisInputError(f"completers of {outcome.name} lack a covariate of {covs}")
            without += int(values[0])
            continue
        v = [0.0 if x is None else float(x) for x in values]  # a sum over no rows is NULL in SQL, and 0
        wtw = np.zeros((p, p))
        for (a, b), x in zip(pairs, v[:len(pairs)], strict=True):
            wtw[a, b] = wtw[b, a] = x
        wty, yty = np.array(v[len(pairs):len(pairs) + p]), v[-1]
        cell = CellCrossProducts(w_cols, int(v[0]), wtw, wty if completer else np.zeros(p), yty if completer else 0.0)
        if completer:
            completers[arm] = cell
        else:
            dropouts[arm] = cell
    return FinalWaveCells(completers, dropouts, without)


@_reproducible
def subgroup_cells(
    con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: Outcome, subgroup: str
) -> dict[str, dict[str, PairedMoments]]:
    """Per subgroup level x arm PairedMoments (baseline, final wave) of completers.

    Supported prespecified subgroups: ``baseline_tercile`` (terciles of this outcome's baseline over all
    randomized participants — pre-treatment, so valid; ``ntile(3)`` ordered by the baseline, ties by
    pseudonym, so the first groups take the remainder), ``stratum`` (the randomisation stratum) and any declared
    categorical baseline covariate (its level from the participants records; ``not recorded`` without one).
    """
    sid = protocol.study_id
    declared = protocol.baseline_covariate(subgroup)
    if subgroup == "baseline_tercile":
        level = "'T' || CAST(ntile(3) OVER (ORDER BY base.b, base.participant) AS VARCHAR)"
    elif subgroup == "stratum":
        level = "coalesce(a.stratum, 'none')"
    elif declared is not None and declared.kind == "categorical":
        level = (f"coalesce((SELECT any_value(pc.value_text) FROM participant_characteristics pc WHERE "
                 f"pc.participant = base.participant AND pc.study_id = {literal(sid)} AND pc.covariate = "
                 f"{literal(subgroup)}), 'not recorded')")
    else:
        raise AnalysisInputError(f"prespecified subgroup {subgroup!r} is not supported; use one of {', '.join(SUBGROUPS)}")
    sql = (
        f"WITH base AS (SELECT participant, value AS b FROM {relations.primary_scores(protocol, [outcome.name], [protocol.baseline_wave])}), "
        f"fin AS (SELECT participant, value AS y FROM {relations.primary_scores(protocol, [outcome.name], [final_wave(protocol, outcome)])}), "
        f"lv AS (SELECT base.participant, base.b, a.arm, {level} AS level FROM base JOIN {relations.study_arms(sid)} a "
        "USING (participant)) "
        "SELECT level, arm, count(*), sum(b), sum(y), sum(b * b), sum(y * y), sum(b * y) "
        "FROM lv JOIN fin USING (participant) GROUP BY 1, 2"
    )
    cells: dict[str, dict[str, PairedMoments]] = {}
    for r in con.execute(sql).fetchall():
        cells.setdefault(str(r[0]), {})[r[1]] = PairedMoments(int(r[2]), *(float(x) for x in r[3:]))
    return cells


@_reproducible
def telemetry_cells(
    con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, metric: SurrogateMetric
) -> dict[str, PairedMoments]:
    """Per arm PairedMoments of (pre-period, in-study) values of one telemetry metric
    (``schemas.warehouse.relations.telemetry_metric``; a ``mean_value`` metric leaves out participants
    without events in either window)."""
    sql = (
        "SELECT arm, count(*), sum(pre_value), sum(value), sum(pre_value * pre_value), sum(value * value), "
        f"sum(pre_value * value) FROM {relations.telemetry_metric(protocol.study_id, metric)} "
        "WHERE pre_value IS NOT NULL AND value IS NOT NULL GROUP BY arm"
    )
    return {r[0]: PairedMoments(int(r[1]), *(float(v) for v in r[2:])) for r in con.execute(sql).fetchall()}


def arm_counts(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> dict[str, int]:
    """Participants randomised to each arm (the sample-ratio check's counts)."""
    return {str(arm): int(n) for arm, n in con.execute(
        f"SELECT arm, count(*) FROM {relations.study_arms(protocol.study_id)} GROUP BY arm").fetchall()}


@_reproducible
def baseline_moments(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> dict[str, dict[str, Moments]]:
    """Per outcome x arm Moments of the baseline wave (the balance table's statistics)."""
    sid = protocol.study_id
    names = [o.name for o in protocol.outcomes]
    rows = con.execute(
        f"SELECT s.outcome, a.arm, count(*), sum(s.value), sum(s.value * s.value) "
        f"FROM {relations.primary_scores(protocol, names, [protocol.baseline_wave])} s "
        f"JOIN {relations.study_arms(sid)} a USING (participant) GROUP BY 1, 2"
    ).fetchall()
    cells: dict[str, dict[str, Moments]] = {}
    for outcome, arm, n, s, ss in rows:
        cells.setdefault(outcome, {})[arm] = Moments(int(n), float(s), float(ss))
    if not cells:
        raise OutcomeHasNoData(f"no baseline ({protocol.baseline_wave}) scores for study {protocol.study_id}")
    return cells


# ----------------------------------------------------------------------------------------------
# The surrogate index's participant rows
# ----------------------------------------------------------------------------------------------
@_reproducible
def surrogate_frame(
    con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, study_id: str, surrogate_waves: Sequence[str],
) -> pd.DataFrame:
    """One row per randomized participant of ``study_id``: arm, baseline and early-wave scores of the
    primary outcome, in-study telemetry metrics of the protocol, and the long-run outcome (primary at its
    wave; NaN where not yet observed). Conditional aggregation in DuckDB, no Python loop.

    Why rows and not moments: the surrogate index is an OLS whose covariance is the HC1 sandwich
    (Athey et al. 2019 need it robust to heteroskedasticity), and the sandwich's middle term sums
    z z' e^2 with the residuals of the fitted index, fourth moments that the bootstrap check resamples
    too. The frame holds the arm and a handful of numeric columns, never the pseudonym."""
    o = protocol.primary_outcome
    bw, lw = protocol.baseline_wave, final_wave(protocol, o)

    def pick(wave: str, name: str) -> str:
        return (f"max(CASE WHEN sc.wave = {literal(wave)} AND sc.outcome = {literal(o.name)} THEN sc.value END) "
                f"AS {ident(name)}")

    cols = [pick(bw, "baseline"), *[pick(w, f"{o.name}@{w}") for w in surrogate_waves], pick(lw, "long_run")]
    tel_sel, tel_join = [], []
    for i, m in enumerate(protocol.surrogates):
        tel_join.append(f"LEFT JOIN (SELECT participant, value AS v FROM {relations.telemetry_metric(study_id, m)}) t{i} "
                        "USING (participant)")
        tel_sel.append(f"any_value(t{i}.v) AS {ident(m.name)}")
    sql = (f"SELECT a.arm, {', '.join(cols + tel_sel)} FROM {relations.study_arms(study_id)} a "
           f"LEFT JOIN {relations.study_scores(study_id)} sc USING (participant) {' '.join(tel_join)} "
           "GROUP BY a.participant, a.arm ORDER BY a.participant")
    return con.execute(sql).df()


# ----------------------------------------------------------------------------------------------
# The public tier: DP releases only
# ----------------------------------------------------------------------------------------------
def _latest_release_cells(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: Outcome, query: str,
                          missing: str) -> tuple[dict[tuple[str, str], list[dict]], list[str], dict[str, str]]:
    """The rows of the latest release holding ``query``, by (arm, wave) cell; the outcome's follow-up waves it
    covers; and, per wave with a suppressed cell (its noisy count fell below min_cell_size), why that wave cannot be
    analysed. No such release: :class:`OutcomeHasNoData` with ``missing`` as its message."""
    latest = con.execute(
        "SELECT r.release_id FROM releases r WHERE r.study_id = ? AND EXISTS (SELECT 1 FROM release_values v "
        "WHERE v.release_id = r.release_id AND v.query = ?) ORDER BY r.created_at DESC LIMIT 1",
        [protocol.study_id, query],
    ).fetchone()
    if latest is None:
        raise OutcomeHasNoData(missing)
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for arm, wave, stat, value, sd, suppressed in con.execute(
            "SELECT arm, wave, statistic, value, noise_sd, suppressed FROM release_values "
            "WHERE release_id = ? AND query = ?", [latest[0], query]).fetchall():
        by_cell.setdefault((arm, wave), []).append({"statistic": stat, "value": value, "noise_sd": sd,
                                                    "suppressed": suppressed})
    waves = [w for w in followup_waves(protocol, outcome) if any(k[1] == w for k in by_cell)]
    unusable = {w: f"the DP release suppressed a cell of {outcome.name} at {w} (a noisy count below the protocol's "
                   f"min_cell_size)" for w in waves
                if any(r["suppressed"] for k, v in by_cell.items() if k[1] == w for r in v)}
    return by_cell, waves, unusable


def released_cells(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: Outcome) -> ReleasedCells:
    """The latest DP release of ``paired_moments:<outcome>`` as {(arm, wave): NoisyPairedMoments} and the
    follow-up waves it covers (up to the outcome's wave). Reads release tables only (public tier); a suppressed
    or incomplete cell raises InsufficientData."""
    by_cell, waves, unusable = _latest_release_cells(
        con, protocol, outcome, f"paired_moments:{outcome.name}",
        f"outcome {outcome.name!r} has no DP release of paired moments for study {protocol.study_id}; "
        "run `flourish release` first")
    # an earlier wave, which gets a small share of the budget, is reported not estimable; the release's last wave
    # sinks the outcome
    if waves and waves[-1] in unusable:
        raise InsufficientData(f"the released cells of {outcome.name} at {waves[-1]}", 1, 0,
                               "a release that suppressed one (a noisy count below the protocol's min_cell_size)")
    kept = [w for w in waves if w not in unusable]
    cells = {k: NoisyPairedMoments.from_release_rows(v) for k, v in by_cell.items() if k[1] in kept}
    return ReleasedCells(cells, tuple(kept), unusable)


def released_counts(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: Outcome) -> ReleasedCounts:
    """The latest DP release of ``binary_counts:<outcome>`` as {(arm, wave): NoisyBinaryCounts}, the follow-up waves
    it covers and, per wave with a suppressed cell (noisy n below min_cell_size), why it cannot be used (the plan
    reports that wave not estimable, or the outcome failed when it is the release's last). Release tables only."""
    by_cell, waves, unusable = _latest_release_cells(
        con, protocol, outcome, f"binary_counts:{outcome.name}",
        f"binary outcome {outcome.name!r} has no DP release of its counts for study {protocol.study_id}; "
        "run `flourish release` first (a release made before binary outcomes were released holds none)")
    cells = {k: NoisyBinaryCounts.from_release_rows(v) for k, v in by_cell.items() if k[1] not in unusable}
    return ReleasedCounts(cells, tuple(waves), unusable)


def released_statistics(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol
                        ) -> dict[str, ReleasedCells | ReleasedCounts | Unavailable]:
    """Every outcome's latest release (the public tier's only input): paired moments of a continuous outcome,
    counts of a binary one. An outcome without a release refuses the run (``flourish release`` comes first); a
    release whose cells cannot be used is that outcome's failure."""
    out: dict[str, ReleasedCells | ReleasedCounts | Unavailable] = {}
    for o in protocol.outcomes:
        if o.binary:
            out[o.name] = released_counts(con, protocol, o)
            continue
        try:
            out[o.name] = released_cells(con, protocol, o)
        except InsufficientData as exc:
            out[o.name] = Unavailable(f"its DP release cannot be used: {exc}")
    return out


# ----------------------------------------------------------------------------------------------
# Everything the plan needs, read before any model runs
# ----------------------------------------------------------------------------------------------
def surrogate_inputs(
    con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, calibration_study: str,
    surrogate_waves: Sequence[str] | None = None,
) -> SurrogateInputs:
    """The calibration cohort's and this study's surrogate rows. Surrogates: the primary outcome at
    ``surrogate_waves`` (default: the first follow-up wave) and the protocol's telemetry metrics."""
    o = protocol.primary_outcome
    waves = list(surrogate_waves) if surrogate_waves else followup_waves(protocol, o)[:1]
    unknown = [w for w in waves if w not in protocol.wave_names]
    if unknown:
        raise AnalysisRefused(f"surrogate wave(s) {unknown} are not waves of the protocol {protocol.wave_names}")
    n_cal = con.execute(f"SELECT count(*) FROM {relations.study_scores(calibration_study, [o.name])}").fetchone()[0]
    if not n_cal:
        raise OutcomeHasNoData(f"calibration study {calibration_study!r} has no {o.name} scores in the warehouse")
    return SurrogateInputs(calibration_study, tuple(waves), surrogate_frame(con, protocol, calibration_study, waves),
                           surrogate_frame(con, protocol, protocol.study_id, waves))


@_reproducible
def mmrm_stats(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, *, outcome: str,
               waves: Sequence[str]) -> MMRMStatistics:
    """The MMRM's pattern statistics of ``outcome`` over the follow-up ``waves`` (with the fourth-order sums the
    sandwich covariance needs): the SQL text of ``analysis.mmrm.sql`` over :func:`participant_rows_sql` (the
    participants of :func:`observations_sql`, one row each), one GROUP BY pattern."""
    from analysis.mmrm import pattern_statistics_from_rows, pattern_statistics_sql
    from analysis.plan import mmrm_design

    covariates = list(protocol.analysis.covariates)
    require_covariates(con, protocol, outcome, covariates, waves)
    design = mmrm_design(protocol, list(waves), covariates)
    source = participant_rows_sql(protocol, outcome, covariates, waves)
    rows = con.execute(pattern_statistics_sql(design, source, fourth_order=True, wide=True)).fetchall()
    return pattern_statistics_from_rows(design, rows, fourth_order=True)


@_reproducible
def binary_table(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, outcome: Outcome,
                 waves: Sequence[str]) -> BinaryCountTable:
    """A binary outcome's counts per arm (control first) x follow-up ``waves``: participants with the outcome at the
    wave and those with the event (a 0/1 score, or the score against the outcome's cut-off), one GROUP BY
    (``analysis.binary.binary_counts_sql``) over the canonical score and arm relations."""
    from analysis.binary import binary_counts

    sid = protocol.study_id
    arms = [protocol.control_arm] + [a for a in protocol.arm_names if a != protocol.control_arm]
    source = (f"(SELECT s.participant, a.arm, s.wave, s.value AS y FROM "
              f"{relations.primary_scores(protocol, [outcome.name], list(waves))} s JOIN {relations.study_arms(sid)} a "
              "USING (participant))")
    cut = outcome.cutoff
    return binary_counts(con, source, arms, list(waves), cutoff=cut[0] if cut else None,
                         event_at_or_above=cut[1] if cut else True)


def _outcome_statistics(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, o: Outcome) -> OutcomeStatistics:
    from analysis.binary import BinaryInputError
    from analysis.mmrm import StatisticsInputError

    observed = observed_followup_waves(con, protocol, o)
    if o.binary:
        if not observed:
            return OutcomeStatistics(o.name, (), Unavailable(f"{o.name} has no follow-up scores yet"),
                                     binary=Unavailable(f"{o.name} has no follow-up scores yet"))
        try:
            table: BinaryCountTable | Unavailable = binary_table(con, protocol, o, observed)
        except (BinaryInputError, AnalysisInputError, InsufficientData) as exc:
            table = Unavailable(str(exc))
        return OutcomeStatistics(o.name, tuple(observed), Unavailable(f"{o.name} is binary: analysed from counts"),
                                 binary=table)
    mmrm: MMRMStatistics | Unavailable | None = None
    if not observed:
        longitudinal: LongitudinalStats | Unavailable = Unavailable(
            f"{o.name} has no follow-up scores yet (only the baseline)")
    else:
        try:
            longitudinal = longitudinal_stats(con, protocol, outcome=o.name, waves=observed)
        except (AnalysisInputError, InsufficientData) as exc:  # the outcome's failure, reported by the plan
            longitudinal = Unavailable(str(exc))
        if protocol.analysis.primary_model(len(observed)) == "mmrm":
            try:
                mmrm = mmrm_stats(con, protocol, outcome=o.name, waves=observed)
            except (AnalysisInputError, InsufficientData, StatisticsInputError) as exc:
                mmrm = Unavailable(str(exc))
    if final_wave(protocol, o) not in observed:
        return OutcomeStatistics(o.name, tuple(observed), longitudinal, mmrm=mmrm)
    try:
        fw: FinalWaveCells | Unavailable = final_wave_cells(con, protocol, o)
    except AnalysisInputError as exc:  # the ANCOVA's and tipping point's failure, reported by the plan
        fw = Unavailable(str(exc))
    subgroups = ({sg: subgroup_cells(con, protocol, o, sg) for sg in protocol.analysis.subgroups}
                 if o.name == protocol.primary_outcome.name else {})
    return OutcomeStatistics(o.name, tuple(observed), longitudinal, fw, subgroups, mmrm=mmrm)


def plan_statistics(
    con: duckdb.DuckDBPyConnection,
    protocol: StudyProtocol,
    *,
    calibration_study: str | None = None,
    surrogate_waves: Sequence[str] | None = None,
) -> PlanStatistics:
    """Everything ``analysis.plan.run_plan`` needs. Refuses, before reading anything else, a plan that names a
    subgroup the warehouse cannot form or an outcome it has no score of."""
    categorical = [c.name for c in protocol.baseline_covariates if c.kind == "categorical"]
    unknown = [sg for sg in protocol.analysis.subgroups if sg not in SUBGROUPS and sg not in categorical]
    if unknown:
        raise AnalysisRefused(f"prespecified subgroup(s) {unknown} are not supported; use {' or '.join(SUBGROUPS)}")
    for o in protocol.outcomes:
        require_rows(con, protocol, o)
    return PlanStatistics(
        outcomes=tuple(_outcome_statistics(con, protocol, o) for o in protocol.outcomes),
        arm_counts=arm_counts(con, protocol),
        telemetry={m.name: telemetry_cells(con, protocol, m) for m in protocol.surrogates},
        surrogate=surrogate_inputs(con, protocol, calibration_study, surrogate_waves) if calibration_study else None,
    )
