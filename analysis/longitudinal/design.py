"""The primary model's design and its sufficient statistics: the SQL text, and the numpy path for frames.

One indicator column per follow-up wave (these sum to the intercept), one indicator per (non-control arm,
wave), the baseline, and the plan's covariates (categorical ones as treatment-coded dummies). Every plan is
a linear (or, for the saturating shape, non-linear) map from a few parameters to these coefficients
(:func:`analysis.longitudinal.likelihood.plan_constraint`), so one set of statistics serves every plan.

The list of columns is defined once (:meth:`DesignSpec.columns`); each :class:`DesignColumn` says how it
is computed both as SQL over an observation relation (:meth:`DesignColumn.sql`, what the warehouse runs)
and in numpy over a frame (:meth:`DesignColumn.values`, what :func:`crossproducts_from_frame` runs), side by
side, and ``tests/flows/test_statistics.py`` holds the two to the same numbers. This module only writes
SQL text and parses the rows it returns (:func:`stats_from_rows`); running it on a connection is the
warehouse's business (``flows.statistics``), never analysis's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError, InsufficientData
from schemas.sqltext import ident, literal
from schemas.suffstats import CrossProducts, GroupCrossProducts, Moments, SlopeGroupCrossProducts

__all__ = [
    "DesignColumn",
    "DesignSpec",
    "LongitudinalStats",
    "analysis_frame",
    "crossproducts_from_frame",
    "crossproducts_sql",
    "design_spec_from_frame",
    "slope_groups_sql",
    "stats_from_rows",
]


@dataclass(frozen=True)
class DesignColumn:
    """One column of the design: its name, its role, and what it indicates or carries.

    ``role`` is ``wave`` (indicator of ``wave``), ``effect`` (indicator of ``arm`` at ``wave``),
    ``baseline``, or ``covariate`` (the numeric ``variable``, or with ``level`` the dummy of that level)."""

    name: str
    role: str
    wave: str | None = None
    months: float | None = None
    arm: str | None = None
    variable: str | None = None
    level: str | None = None

    def sql(self) -> str:
        """The column as a SQL expression over a relation with columns arm, wave, baseline and the covariates."""
        if self.role == "wave":
            return f"CASE WHEN wave = {literal(self.wave)} THEN 1.0 ELSE 0.0 END"
        if self.role == "effect":
            return f"CASE WHEN arm = {literal(self.arm)} AND wave = {literal(self.wave)} THEN 1.0 ELSE 0.0 END"
        if self.role == "baseline":
            return "CAST(baseline AS DOUBLE)"
        if self.level is None:
            return f"CAST({ident(self.variable)} AS DOUBLE)"
        return f"CASE WHEN CAST({ident(self.variable)} AS VARCHAR) = {literal(self.level)} THEN 1.0 ELSE 0.0 END"

    def values(self, frame: pd.DataFrame) -> np.ndarray:
        """The same column in numpy over a frame prepared by :func:`analysis_frame`."""
        if self.role == "wave":
            return (frame["wave"] == self.wave).to_numpy(float)
        if self.role == "effect":
            return ((frame["arm"] == self.arm) & (frame["wave"] == self.wave)).to_numpy(float)
        if self.role == "baseline":
            return frame["baseline"].to_numpy(float)
        if self.level is None:
            return frame[self.variable].to_numpy(float)
        return (frame[self.variable].astype(str) == self.level).to_numpy(float)

    def info(self) -> dict[str, str]:
        """Metadata carried in ``CrossProducts.column_info`` (which arm and wave a column belongs to)."""
        if self.role == "wave":
            return {"role": "wave", "wave": self.wave, "months": repr(float(self.months))}
        if self.role == "effect":
            return {"role": "effect", "arm": self.arm, "wave": self.wave}
        if self.role == "baseline":
            return {"role": "baseline"}
        return {"role": "covariate"} if self.level is None else {"role": "covariate", "variable": self.variable}


@dataclass(frozen=True)
class DesignSpec:
    """Which columns the design has: arms (control first), follow-up waves with months, covariates.

    ``covariates`` maps each covariate to ``()`` for a numeric one, or to its category levels
    (reference level first) for a categorical one, which becomes one dummy per non-reference level.
    """

    arms: tuple[str, ...]
    waves: tuple[str, ...]
    months: tuple[float, ...]
    covariates: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if len(self.arms) < 2:
            raise AnalysisInputError(f"the design needs a control and at least one other arm, got {self.arms}")
        if len(self.waves) < 1 or len(self.waves) != len(self.months):
            raise AnalysisInputError("each follow-up wave needs its months since assignment")

    @property
    def control(self) -> str:
        return self.arms[0]

    @property
    def treated(self) -> tuple[str, ...]:
        return self.arms[1:]

    def columns(self) -> tuple[DesignColumn, ...]:
        """The design's columns in order: waves, arm x wave effects, baseline, covariates."""
        cols = [DesignColumn(f"wave[{w}]", "wave", wave=w, months=float(mo))
                for w, mo in zip(self.waves, self.months, strict=True)]
        cols += [DesignColumn(f"arm[{a}]:wave[{w}]", "effect", wave=w, arm=a) for a in self.treated for w in self.waves]
        cols.append(DesignColumn("baseline", "baseline"))
        for name, levels in self.covariates:
            if not levels:
                cols.append(DesignColumn(name, "covariate", variable=name))
            else:
                cols += [DesignColumn(f"{name}[{lev}]", "covariate", variable=name, level=lev) for lev in levels[1:]]
        return tuple(cols)

    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns())

    def column_info(self) -> tuple[tuple[str, str, str], ...]:
        return tuple((c.name, k, v) for c in self.columns() for k, v in c.info().items())

    def months_of(self, wave: str) -> float:
        return self.months[self.waves.index(wave)]


@dataclass(frozen=True)
class LongitudinalStats:
    """Everything the primary model needs: the cross-products, the baseline moments (for the prior
    scale and standardisation) and the design spec."""

    spec: DesignSpec
    cross: CrossProducts
    baseline: Moments

    def __add__(self, other: LongitudinalStats) -> LongitudinalStats:
        if not isinstance(other, LongitudinalStats):
            raise TypeError(f"cannot add LongitudinalStats and {type(other).__name__}")
        if self.spec != other.spec:
            raise ValueError("cannot pool statistics of different designs")
        return LongitudinalStats(self.spec, self.cross + other.cross, self.baseline + other.baseline)

    def _indicator_rows(self, xx: np.ndarray, arm: str, wave: str) -> float:
        """Rows (or, in a group's S_xx, participants) of ``arm`` at ``wave``: the diagonal of X'X (S_xx) at the
        indicator columns, the control arm's being the wave's minus the treated arms'."""
        cols = list(self.cross.columns)

        def diag(name: str) -> float:
            j = cols.index(name)
            return float(xx[j, j])

        if arm != self.spec.control:
            return diag(f"arm[{arm}]:wave[{wave}]")
        return diag(f"wave[{wave}]") - sum(diag(f"arm[{a}]:wave[{wave}]") for a in self.spec.treated)

    def n_at(self, arm: str, wave: str) -> int:
        """Participants of ``arm`` with an outcome at ``wave`` (each has at most one row a wave)."""
        return int(round(self._indicator_rows(self.cross.xtx, arm, wave)))

    def n_participants(self, arm: str) -> int:
        """Participants of ``arm`` in the statistics: a participant with m rows contributes m to the diagonal of
        its group's S_xx summed over the arm's indicator columns (its column sums are its rows at each wave)."""
        total = sum(self._indicator_rows(g.sxsx, arm, w) / g.rows_per_participant
                    for g in self.cross.groups for w in self.spec.waves)
        return int(round(total))


# ----------------------------------------------------------------------------------------------
# SQL text (run by flows.statistics on the warehouse, or on an in-memory frame in the tests)
# ----------------------------------------------------------------------------------------------
def crossproducts_sql(spec: DesignSpec, source: str) -> tuple[str, str, str]:
    """Three SQL statements over ``source`` (a relation with columns participant, arm, wave, y,
    baseline and the covariates; one row per observed follow-up value):

    1. global sums: n_obs, sum(c_j c_k) for j <= k, sum(c_j y), sum(y y);
    2. per group of participants with m rows: K_m, sums of s_j s_k, s_j s_y, s_y^2 over participants
       (participant sums first, in a sub-query; no Python loop over participants);
    3. baseline moments over participants (one baseline per participant).

    :func:`stats_from_rows` reads what they return.
    """
    cols = spec.columns()
    p = len(cols)
    design = ", ".join(f"{c.sql()} AS c{j}" for j, c in enumerate(cols))
    design_rel = f"(SELECT participant, CAST(y AS DOUBLE) AS y, {design} FROM {source})"
    pairs = [(j, k) for j in range(p) for k in range(j, p)]
    glob = ", ".join(
        ["count(*) AS n_obs"]
        + [f"sum(c{j} * c{k}) AS xx_{j}_{k}" for j, k in pairs]
        + [f"sum(c{j} * y) AS xy_{j}" for j in range(p)]
        + ["sum(y * y) AS yy"]
    )
    global_sql = f"SELECT {glob} FROM {design_rel}"
    sums = ", ".join(["count(*) AS m"] + [f"sum(c{j}) AS s{j}" for j in range(p)] + ["sum(y) AS sy"])
    per_participant = f"(SELECT {sums} FROM {design_rel} GROUP BY participant)"
    grp = ", ".join(
        ["m", "count(*) AS k"]
        + [f"sum(s{j} * s{k}) AS xx_{j}_{k}" for j, k in pairs]
        + [f"sum(s{j} * sy) AS xy_{j}" for j in range(p)]
        + ["sum(sy * sy) AS yy"]
    )
    group_sql = f"SELECT {grp} FROM {per_participant} GROUP BY m ORDER BY m"
    baseline_sql = (
        "SELECT count(*) AS n, sum(b) AS s, sum(b * b) AS ss FROM "
        f"(SELECT participant, any_value(CAST(baseline AS DOUBLE)) AS b FROM {source} GROUP BY participant)"
    )
    return global_sql, group_sql, baseline_sql


def slope_groups_sql(spec: DesignSpec, source: str) -> str:
    """SQL for the random-slope statistics over ``source`` (same relation as :func:`crossproducts_sql`).

    Time is the wave's months since assignment. Per participant: m rows, sum t, sum t^2 and the sums
    a0 = 1'[X, y] and a1 = t'[X, y]; then per group of participants sharing (m, sum t, sum t^2):
    the count and the sums of a0 a0', a0 a1' and a1 a1' (schemas.suffstats.SlopeGroupCrossProducts).
    """
    cols = spec.columns()
    q = len(cols) + 1  # augmented with y as the last column
    # DOUBLE throughout: SQL number literals are DECIMALs, whose sums of products overflow HUGEINT at scale
    t_expr = "CAST(CASE " + " ".join(f"WHEN wave = {literal(w)} THEN {float(mo)!r}"
                                     for w, mo in zip(spec.waves, spec.months, strict=True)) + " END AS DOUBLE)"
    design = ", ".join([f"CAST({c.sql()} AS DOUBLE) AS c{j}" for j, c in enumerate(cols)]
                       + [f"CAST(y AS DOUBLE) AS c{q - 1}"])
    rel = f"(SELECT participant, {t_expr} AS t, {design} FROM {source})"
    sums = ", ".join(["count(*) AS m", "round(sum(t), 9) AS st", "round(sum(t * t), 9) AS stt"]
                     + [f"sum(c{j}) AS a{j}" for j in range(q)] + [f"sum(t * c{j}) AS b{j}" for j in range(q)])
    upper = [(j, k) for j in range(q) for k in range(j, q)]
    aggs = (["m", "st", "stt", "count(*) AS k"]
            + [f"sum(a{j} * a{k})" for j, k in upper]
            + [f"sum(a{j} * b{k})" for j in range(q) for k in range(q)]
            + [f"sum(b{j} * b{k})" for j, k in upper])
    return f"SELECT {', '.join(aggs)} FROM (SELECT {sums} FROM {rel} GROUP BY participant) GROUP BY m, st, stt ORDER BY m, st, stt"


def _symmetric(upper: Sequence[float], p: int) -> np.ndarray:
    """The p x p symmetric matrix whose upper triangle, row by row (j <= k), is ``upper``."""
    m = np.zeros((p, p))
    m[np.triu_indices(p)] = upper
    return m + np.triu(m, 1).T


def _floats(values: Sequence[float | None]) -> list[float]:
    return [0.0 if v is None else float(v) for v in values]  # SQL sums over no rows are NULL, and are 0


def _unpack(row: Sequence[float], p: int, offset: int) -> tuple[np.ndarray, np.ndarray, float]:
    n = p * (p + 1) // 2
    vals = _floats(row[offset:offset + n + p + 1])
    return _symmetric(vals[:n], p), np.array(vals[n:n + p]), vals[n + p]


def stats_from_rows(
    spec: DesignSpec,
    global_row: Sequence[float],
    group_rows: Sequence[Sequence[float]],
    baseline_row: Sequence[float],
    slope_rows: Sequence[Sequence[float]] = (),
) -> LongitudinalStats:
    """The values of what :func:`crossproducts_sql` (and :func:`slope_groups_sql`) return, as statistics.

    Refuses a design with no row at all (there is nothing to fit, and no sum is a statistic of it)."""
    p = len(spec.columns())
    n_obs = int(global_row[0])
    if n_obs == 0:
        raise InsufficientData("the longitudinal model", 1, 0, "follow-up rows with a baseline")
    xtx, xty, yty = _unpack(global_row, p, 1)
    groups = []
    for row in group_rows:
        sxx, sxy, syy = _unpack(row, p, 2)
        groups.append(GroupCrossProducts(int(row[0]), int(row[1]), sxx, sxy, syy))
    q = p + 1
    n_upper = q * (q + 1) // 2
    slopes = []
    for row in slope_rows:
        vals = _floats(row[4:])  # w00 upper triangle, w01 whole (row-major), w11 upper triangle
        w00 = _symmetric(vals[:n_upper], q)
        w01 = np.array(vals[n_upper:n_upper + q * q]).reshape(q, q)
        w11 = _symmetric(vals[n_upper + q * q:], q)
        slopes.append(SlopeGroupCrossProducts(int(row[0]), float(row[1]), float(row[2]), int(row[3]), w00, w01, w11))
    cross = CrossProducts(spec.column_names(), n_obs, xtx, xty, yty, tuple(groups), spec.column_info(), tuple(slopes))
    n_b, s_b, ss_b = baseline_row
    return LongitudinalStats(spec, cross, Moments(int(n_b), float(s_b or 0.0), float(ss_b or 0.0)))


# ----------------------------------------------------------------------------------------------
# Frames: the numpy path (fit_longitudinal), the reference the SQL is tested against
# ----------------------------------------------------------------------------------------------
def design_spec_from_frame(
    frame: pd.DataFrame,
    *,
    control: str,
    waves: Mapping[str, float],
    covariates: Sequence[str] = (),
    arms: Sequence[str] | None = None,
) -> DesignSpec:
    """Arms (control first, then the others sorted), waves in months order, covariate levels
    (non-numeric columns become categorical with sorted levels, the first the reference)."""
    present = sorted(map(str, frame["arm"].unique()))
    if control not in present:
        raise AnalysisInputError(f"control arm {control!r} is not in the data; arms present: {present}")
    arm_list = [control] + [a for a in (arms or present) if a != control]
    missing = [a for a in arm_list if a not in present]
    if missing:
        raise AnalysisInputError(f"arms {missing} have no follow-up rows in the data")
    covs: list[tuple[str, tuple[str, ...]]] = []
    for c in covariates:
        if c not in frame.columns:
            raise AnalysisInputError(f"the plan names covariate {c!r}, which the frame lacks (columns: {list(frame.columns)})")
        col = frame[c]
        if col.isna().any():
            raise AnalysisInputError(f"covariate {c!r} has missing values; impute or drop them before the fit")
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            covs.append((c, tuple(sorted(map(str, col.unique())))))
        else:
            covs.append((c, ()))
    order = sorted(waves.items(), key=lambda kv: kv[1])
    return DesignSpec(tuple(arm_list), tuple(w for w, _ in order), tuple(float(m) for _, m in order), tuple(covs))


def analysis_frame(frame: pd.DataFrame, spec: DesignSpec, *, value: str = "outcome") -> pd.DataFrame:
    """The rows of a long frame the design reads: columns participant, arm, wave, y, baseline and the
    covariates; rows with a missing outcome dropped (missing at random is the model's assumption), waves
    not in ``spec`` ignored. Categorical covariates become text, so SQL and numpy compare the same labels."""
    needed = ["participant", "arm", "wave", value, "baseline", *[c for c, _ in spec.covariates]]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise AnalysisInputError(f"the frame lacks columns {absent}; it needs {needed}")
    f = frame[needed].copy()
    f = f.rename(columns={value: "y"}) if value != "y" else f
    f["wave"] = f["wave"].astype(str)
    f["arm"] = f["arm"].astype(str)
    for c, levels in spec.covariates:
        if levels:
            f[c] = f[c].astype(str)
    f = f[f["y"].notna() & f["wave"].isin(spec.waves)]
    if f["baseline"].isna().any():
        raise AnalysisInputError("some rows lack a baseline value; the model adjusts for baseline, so drop or impute them")
    return f.reset_index(drop=True)


def crossproducts_from_frame(
    frame: pd.DataFrame, spec: DesignSpec, *, value: str = "outcome", slopes: bool = False
) -> LongitudinalStats:
    """The statistics of a long frame in numpy (each column from :meth:`DesignColumn.values`), equal to
    what the warehouse's SQL gives on the same rows (tested)."""
    f = analysis_frame(frame, spec, value=value)
    if f.empty:
        raise InsufficientData("the longitudinal model", 1, 0, "follow-up rows with a baseline")
    x = np.column_stack([c.values(f) for c in spec.columns()])
    months = dict(zip(spec.waves, spec.months, strict=True))
    time = f["wave"].map(months).to_numpy(float) if slopes else None
    cross = CrossProducts.from_arrays(x, f["y"], f["participant"].to_numpy(), spec.column_names(), spec.column_info(),
                                      time=time)
    first = f.groupby("participant", sort=False)["baseline"].first().to_numpy(float)
    return LongitudinalStats(spec, cross, Moments.from_arrays(first))
