"""The one GROUP BY that reduces a long outcome relation to MMRM pattern statistics.

:func:`pattern_statistics_sql` returns SQL text; the caller executes it wherever the data are (DuckDB
here, the same text on a warehouse) and hands the rows to :func:`pattern_statistics_from_rows`. The
source relation has one row per participant x follow-up wave with columns

    participant   any type; identifies the participant
    arm           the participant's arm (one of the design's arms, the same on every row)
    wave          the follow-up wave (one of the design's waves; rows of other waves are ignored)
    y             the outcome (DOUBLE-castable; NULL = not observed, ignored like a missing row)
    baseline      the baseline value (when the design has one; the same on every row of a participant)
    <covariates>  each design covariate, numeric, the same on every row of a participant

First each participant's rows collapse to one row (z and the outcome at each wave, NULL where not
observed, and the pattern as a bit mask: bit t set when wave t was observed); then one GROUP BY
pattern sums the products. Rows that would make the statistics wrong are counted, not dropped:
a participant with two rows at one wave, an arm that is missing or not in the design, or an arm,
baseline or covariate that differs between its rows (or a missing baseline or covariate). :func:`pattern_statistics_from_rows` refuses such data
with :class:`StatisticsInputError`, which says how many participants and why.

A source that is already one row per participant (``wide=True``) skips the collapse: columns ``arm``, ``baseline``
(when the design has one), the covariates, and ``y0`` ... ``y<n-1>``, the outcome at ``design.waves[t]`` (NULL = not
observed; a row observed at no wave is ignored). It cannot have two rows at one wave or an arm that differs between
rows; a missing arm, baseline or covariate is still counted. The warehouse reader builds this row straight from the
score rows (``schemas.warehouse.relations.primary_scores_wide``): at a million participants the long relation's
window, joins and second GROUP BY were four fifths of the time.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.errors import AnalysisInputError
from schemas.sqltext import ident, literal
from analysis.mmrm.design import BASELINE, MMRMDesign
from schemas.mmrm_stats import MMRMStatistics, PatternStatistics

if TYPE_CHECKING:  # pragma: no cover
    import duckdb


class StatisticsInputError(AnalysisInputError):
    """The source relation breaks the contract of :func:`pattern_statistics_sql`."""

    def __init__(self, problems: dict[str, int]):
        self.problems = {k: v for k, v in problems.items() if v}
        super().__init__("the outcome rows cannot be summarised: " + "; ".join(
            f"{n} participants {what}" for what, n in self.problems.items()))


def _sum(factors: tuple[str, ...], arm_dummies: frozenset[str]) -> str:
    """sum over participants of a product of per-participant columns, with the multiplications the design
    makes pointless left out (this is the hot path: hundreds of sums over every participant): the intercept
    z0 is 1; an arm dummy is 0/1, so a repeated one is itself; two different arms' dummies are never both 1,
    so their product is 0 for everyone."""
    kept = [f for f in factors if f != "z0"]
    arms = {f for f in kept if f in arm_dummies}
    if len(arms) > 1:
        return "CAST(0 AS DOUBLE)"
    kept = sorted(arms) + [f for f in kept if f not in arm_dummies]
    return f"sum({' * '.join(kept)})" if kept else "count(*)"


def _aggregates(p: int, n_w: int, fourth_order: bool, n_arm_dummies: int = 0) -> list[tuple[str, str]]:
    """(kind, SQL expression) of every sum, in the order :func:`pattern_statistics_from_rows` reads them.
    Only the distinct entries of each symmetric array are summed; z1..z{n_arm_dummies} are the arm dummies."""
    arms = frozenset(f"z{a}" for a in range(1, n_arm_dummies + 1))
    pairs_z = list(itertools.combinations_with_replacement(range(p), 2))
    pairs_y = list(itertools.combinations_with_replacement(range(n_w), 2))
    out: list[tuple[str, str]] = []
    out += [("zz", _sum((f"z{a}", f"z{b}"), arms)) for a, b in pairs_z]
    out += [("zy", _sum((f"z{a}", f"y{t}"), arms)) for a in range(p) for t in range(n_w)]
    out += [("yy", _sum((f"y{s}", f"y{t}"), arms)) for s, t in pairs_y]
    if fourth_order:
        out += [("zzyy", _sum((f"z{a}", f"z{b}", f"y{s}", f"y{t}"), arms)) for a, b in pairs_z for s, t in pairs_y]
        out += [("zzzy", _sum((f"z{a}", f"z{b}", f"z{c}", f"y{t}"), arms))
                for a, b, c in itertools.combinations_with_replacement(range(p), 3) for t in range(n_w)]
        out += [("zzzz", _sum((f"z{a}", f"z{b}", f"z{c}", f"z{d}"), arms))
                for a, b, c, d in itertools.combinations_with_replacement(range(p), 4)]
    return out


_PROBLEMS = ("have two or more rows at one wave", "have an arm that is missing or not in the design",
             "have an arm, baseline or covariate that is missing or differs between their rows")


def _arm_index(design: MMRMDesign) -> str:
    """The arm as its index in the design (-1: not a design arm, or missing): integer aggregates per participant
    instead of string ones, which were most of the long query's time."""
    return "CASE CAST(arm AS VARCHAR) " + " ".join(
        f"WHEN {literal(a)} THEN {k}" for k, a in enumerate(design.arms)) + " ELSE -1 END"


def _fixed_columns(design: MMRMDesign) -> list[tuple[str, str]]:
    """(name, SQL) of the participant-level columns after the arm: the baseline, then the covariates, as DOUBLE."""
    return ([("b", "CAST(baseline AS DOUBLE)")] if design.baseline else []) + [
        (f"c{k}", f"CAST({ident(c)} AS DOUBLE)") for k, c in enumerate(design.covariates)]


def _wide_rows_sql(design: MMRMDesign, source: str) -> str:
    """One row per participant of a source that is one already (module docstring): the same columns as the long
    source's collapse gives, without a GROUP BY."""
    n_w = len(design.waves)
    fixed = _fixed_columns(design)
    pattern = " + ".join(f"(CASE WHEN y{t} IS NULL THEN 0 ELSE {1 << t} END)" for t in range(n_w))
    z_exprs = ["CAST(1 AS DOUBLE)"] + [f"CAST(arm = {k} AS DOUBLE)" for k in range(1, len(design.arms))]
    z_exprs += [name for name, _ in fixed]
    missing = " OR ".join(["FALSE"] + [f"{name} IS NULL" for name, _ in fixed])  # a missing arm is unknown_arm
    cols = ", ".join(
        ["pattern", "bit_count(pattern) AS n_rows", "FALSE AS duplicate", "arm < 0 AS unknown_arm",
         f"{missing} AS inconsistent"] + [f"{e} AS z{a}" for a, e in enumerate(z_exprs)] + [f"y{t}" for t in range(n_w)])
    inner = ", ".join([f"CAST({pattern} AS BIGINT) AS pattern", f"{_arm_index(design)} AS arm"]
                      + [f"{expr} AS {name}" for name, expr in fixed]
                      + [f"CAST(y{t} AS DOUBLE) AS y{t}" for t in range(n_w)])
    return f"SELECT {cols} FROM (SELECT {inner} FROM {source}) WHERE pattern <> 0"


def pattern_statistics_sql(design: MMRMDesign, source: str, *, fourth_order: bool = False, wide: bool = False) -> str:
    """SQL over ``source`` (a table or view name, or a parenthesised sub-query) giving one row per
    missingness pattern: the pattern bit mask, participants, observation rows, the three problem counts
    and the sums (module docstring). With ``fourth_order`` it also sums the fourth-order products the
    sandwich covariance needs (schemas/mmrm_stats.py). With ``wide`` the source is one row per participant
    (module docstring)."""
    n_fixed = len(_fixed_columns(design))
    sums = ", ".join(expr for _, expr in _aggregates(1 + len(design.treated) + n_fixed, len(design.waves),
                                                      fourth_order, len(design.treated)))
    per_participant = _wide_rows_sql(design, source) if wide else _long_rows_sql(design, source)
    return (f"SELECT pattern, count(*) AS n_participants, sum(n_rows) AS n_rows, "
            f"sum(CAST(duplicate AS INTEGER)), sum(CAST(unknown_arm AS INTEGER)), sum(CAST(inconsistent AS INTEGER)), "
            f"{sums} FROM ({per_participant}) GROUP BY pattern ORDER BY pattern")


def _long_rows_sql(design: MMRMDesign, source: str) -> str:
    """One row per participant of a long source (one row per participant x wave): the collapse of the module
    docstring, with the problem flags."""
    n_w = len(design.waves)
    wave_index = "CASE CAST(wave AS VARCHAR) " + " ".join(
        f"WHEN {literal(w)} THEN {t}" for t, w in enumerate(design.waves)) + " END"
    # participant-level columns that must agree between a participant's rows
    fixed = _fixed_columns(design)
    obs_cols = ", ".join(["participant", f"{_arm_index(design)} AS arm", f"{wave_index} AS t", "CAST(y AS DOUBLE) AS y"]
                         + [f"{expr} AS {name}" for name, expr in fixed])
    waves_in = ", ".join(literal(w) for w in design.waves)
    obs = f"SELECT {obs_cols} FROM {source} WHERE y IS NOT NULL AND CAST(wave AS VARCHAR) IN ({waves_in})"

    # z columns in design order: intercept, arm dummies, baseline, covariates (all DOUBLE: SQL number
    # literals are DECIMALs, whose sums of products overflow at scale)
    z_exprs = ["CAST(1 AS DOUBLE)"]
    z_exprs += [f"CAST(any_value(arm) = {k} AS DOUBLE)" for k in range(1, len(design.arms))]
    z_exprs += [f"any_value({name})" for name, _ in fixed]
    # min <> max rather than count(DISTINCT ...): distinct aggregates need a hash set per participant
    inconsistent = " OR ".join(["min(arm) <> max(arm)"] + [
        f"count({name}) <> count(*) OR min({name}) <> max({name})" for name, _ in fixed])
    per = ", ".join(
        ["bit_or(CAST(1 AS BIGINT) << t) AS pattern", "count(*) AS n_rows",
         "count(*) <> bit_count(bit_or(CAST(1 AS BIGINT) << t)) AS duplicate",
         "min(arm) < 0 AS unknown_arm",
         f"coalesce({inconsistent}, TRUE) AS inconsistent"]
        + [f"{e} AS z{a}" for a, e in enumerate(z_exprs)]
        + [f"max(CASE WHEN t = {t} THEN y END) AS y{t}" for t in range(n_w)])
    return f"SELECT {per} FROM ({obs}) GROUP BY participant"


def _symmetric_from(values: dict[tuple[int, ...], float], shape: tuple[int, ...], groups: tuple[int, ...]) -> np.ndarray:
    """Dense array from the sums over sorted index tuples, symmetric within each index group
    (``groups`` gives the group sizes, e.g. (2, 2) for z_a z_b y_s y_t)."""
    out = np.empty(shape)
    for idx in itertools.product(*(range(n) for n in shape)):
        key: list[int] = []
        at = 0
        for g in groups:
            key += sorted(idx[at:at + g])
            at += g
        out[idx] = values[tuple(key)]
    return out


def pattern_statistics_from_rows(design: MMRMDesign, rows: Sequence[Sequence[Any]], *,
                                 fourth_order: bool = False) -> MMRMStatistics:
    """:class:`MMRMStatistics` from the rows of :func:`pattern_statistics_sql` (same ``fourth_order``).

    Raises :class:`StatisticsInputError` when any participant broke the relation's contract."""
    p, n_w = len(design.z_columns), len(design.waves)
    aggs = _aggregates(p, n_w, fourth_order, len(design.treated))
    problems = dict.fromkeys(_PROBLEMS, 0)
    for row in rows:  # refuse before reading any sum: a broken participant can make them NULL
        for what, count in zip(_PROBLEMS, row[3:6], strict=True):
            problems[what] += int(count or 0)
    if any(problems.values()):
        raise StatisticsInputError(problems)
    patterns = []
    for row in rows:
        mask, n = int(row[0]), int(row[1])
        obs = tuple(t for t in range(n_w) if mask >> t & 1)
        by_kind: dict[str, dict[tuple[int, ...], float]] = {}
        index_iters = {
            "zz": itertools.combinations_with_replacement(range(p), 2),
            "zy": ((a, t) for a in range(p) for t in range(n_w)),
            "yy": itertools.combinations_with_replacement(range(n_w), 2),
            "zzyy": (ab + st for ab in itertools.combinations_with_replacement(range(p), 2)
                     for st in itertools.combinations_with_replacement(range(n_w), 2)),
            "zzzy": (abc + (t,) for abc in itertools.combinations_with_replacement(range(p), 3) for t in range(n_w)),
            "zzzz": itertools.combinations_with_replacement(range(p), 4),
        }
        for (kind, _), value in zip(aggs, row[6:], strict=True):
            key = next(index_iters[kind])
            by_kind.setdefault(kind, {})[key] = value
        # keep the sums over the pattern's waves (the others are NULL: no participant has them), renumbered
        pos = {t: k for k, t in enumerate(obs)}

        def pick(kind: str, wave_slots: tuple[int, ...]) -> dict[tuple[int, ...], float]:
            kept = {}
            for key, value in by_kind[kind].items():
                if all(key[s] in pos for s in wave_slots):
                    kept[tuple(pos[k] if s in wave_slots else k for s, k in enumerate(key))] = float(value)
            return kept

        m = len(obs)
        szz = _symmetric_from(by_kind["zz"], (p, p), (2,))
        zy = pick("zy", (1,))
        szy = np.array([[zy[(a, s)] for s in range(m)] for a in range(p)])
        syy = _symmetric_from(pick("yy", (0, 1)), (m, m), (2,))
        extra = {}
        if fourth_order:
            extra = {"zzyy": _symmetric_from(pick("zzyy", (2, 3)), (p, p, m, m), (2, 2)),
                     "zzzy": _symmetric_from(pick("zzzy", (3,)), (p, p, p, m), (3, 1)),
                     "zzzz": _symmetric_from(by_kind["zzzz"], (p, p, p, p), (4,))}
        patterns.append(PatternStatistics(obs, n, szz, szy, syy, **extra))
    return MMRMStatistics(design.z_columns, design.waves, tuple(patterns))


def pattern_statistics(con: duckdb.DuckDBPyConnection, source: str, design: MMRMDesign, *,
                       fourth_order: bool = False, wide: bool = False) -> MMRMStatistics:
    """Run :func:`pattern_statistics_sql` on the table or view named ``source`` (quoted as an identifier; for a
    sub-query, run :func:`pattern_statistics_sql` itself) on an open connection and parse the rows (the
    convenience path)."""
    rows = con.execute(pattern_statistics_sql(design, ident(source), fourth_order=fourth_order, wide=wide)).fetchall()
    return pattern_statistics_from_rows(design, rows, fourth_order=fourth_order)


__all__ = ["BASELINE", "StatisticsInputError", "pattern_statistics", "pattern_statistics_from_rows",
           "pattern_statistics_sql"]
