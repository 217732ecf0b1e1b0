"""Sufficient statistics: frozen values that add.

Every model in ``analysis/`` sees the data only through these types (DESIGN.md, "Statistics from
sufficient statistics"). They follow GrowthBook's ``gbstats`` habit: a statistic is a small frozen
value, ``a + b`` pools two disjoint sets of rows (sites, batches, days), and each type has a
classmethod that builds it from raw numpy arrays, which is what the property tests compare the
DuckDB path against.

- :class:`Moments` — n, sum y, sum y^2 of one cell.
- :class:`PairedMoments` — baseline x and follow-up y of one arm x wave cell (ANCOVA statistics).
- :class:`CellCrossProducts` — one cell's W'W, W'y, y'y over a participant-level design W (intercept, baseline,
  covariates): the final-wave ANCOVA with covariates, per arm.
- :class:`NoisyPairedMoments` — the same six statistics as released by the privacy tier, each with
  the standard deviation of the (Gaussian) noise added to it; adding two releases adds the values and
  the noise variances (independent noise).
- :class:`CrossProducts` — what the Gaussian random-intercept model's marginal likelihood needs:
  global X'X, X'y, y'y, the number of observation rows, and per group of participants with the same
  number of observed rows m: the number of participants and the sums over participants of
  s_x s_x', s_x s_y and s_y^2 where s = the participant's column sums (see
  ``analysis/longitudinal.py`` for the algebra).

No I/O here. The error raised when a statistic is asked of too few rows, :class:`InsufficientData`,
lives here because ``analysis`` imports ``schemas`` and never the reverse; ``analysis.errors``
re-exports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from schemas.errors import FlourishError

PAIRED_STATISTICS: tuple[str, ...] = ("n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy")
"""Names of the paired statistics, as used in the ``release_values.statistic`` column."""


class InsufficientData(FlourishError, ValueError):
    """A statistic needs more rows than the cell has (e.g. a variance from fewer than 2 rows).

    Raised instead of returning a plausible default (a zero variance, a zero effect)."""

    def __init__(self, what: str, needed: int, have: float, where: str = ""):
        self.what, self.needed, self.have, self.where = what, needed, have, where
        loc = f" in {where}" if where else ""
        super().__init__(f"{what} needs at least {needed} rows{loc}, the data have {have:g}")


def _same_type(a: object, b: object) -> None:
    if type(a) is not type(b):
        raise TypeError(f"cannot add {type(a).__name__} and {type(b).__name__}")


def _as_1d(values: np.ndarray | Iterable[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; drop or impute them before summarising")
    return arr


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Moments:
    """n, sum of y and sum of y^2 of one cell."""

    n: int
    sum_y: float
    sum_yy: float

    @classmethod
    def from_arrays(cls, y: np.ndarray | Iterable[float]) -> Moments:
        arr = _as_1d(y, "y")
        return cls(n=int(arr.size), sum_y=float(arr.sum()), sum_yy=float(np.dot(arr, arr)))

    @classmethod
    def zero(cls) -> Moments:
        return cls(0, 0.0, 0.0)

    def __add__(self, other: Moments) -> Moments:
        _same_type(self, other)
        return Moments(self.n + other.n, self.sum_y + other.sum_y, self.sum_yy + other.sum_yy)

    @property
    def mean(self) -> float:
        if self.n < 1:
            raise InsufficientData("a mean", 1, self.n)
        return self.sum_y / self.n

    @property
    def variance(self) -> float:
        """Sample variance (denominator n - 1); never 0 for lack of data."""
        if self.n < 2:
            raise InsufficientData("a variance", 2, self.n)
        return max(self.sum_yy - self.sum_y**2 / self.n, 0.0) / (self.n - 1)

    @property
    def sd(self) -> float:
        return math.sqrt(self.variance)


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedMoments:
    """Baseline x and follow-up y of one arm x wave cell: the statistics of an ANCOVA."""

    n: int
    sum_x: float
    sum_y: float
    sum_xx: float
    sum_yy: float
    sum_xy: float

    @classmethod
    def from_arrays(cls, x: np.ndarray | Iterable[float], y: np.ndarray | Iterable[float]) -> PairedMoments:
        xa, ya = _as_1d(x, "x (baseline)"), _as_1d(y, "y (follow-up)")
        if xa.shape != ya.shape:
            raise ValueError(f"x and y must pair row by row, got {xa.size} and {ya.size} values")
        return cls(
            n=int(xa.size),
            sum_x=float(xa.sum()),
            sum_y=float(ya.sum()),
            sum_xx=float(np.dot(xa, xa)),
            sum_yy=float(np.dot(ya, ya)),
            sum_xy=float(np.dot(xa, ya)),
        )

    @classmethod
    def zero(cls) -> PairedMoments:
        return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def __add__(self, other: PairedMoments) -> PairedMoments:
        _same_type(self, other)
        return PairedMoments(*(getattr(self, s) + getattr(other, s) for s in PAIRED_STATISTICS))

    def as_dict(self) -> dict[str, float]:
        return {s: getattr(self, s) for s in PAIRED_STATISTICS}

    @property
    def x(self) -> Moments:
        return Moments(self.n, self.sum_x, self.sum_xx)

    @property
    def y(self) -> Moments:
        return Moments(self.n, self.sum_y, self.sum_yy)

    @property
    def covariance(self) -> float:
        if self.n < 2:
            raise InsufficientData("a covariance", 2, self.n)
        return (self.sum_xy - self.sum_x * self.sum_y / self.n) / (self.n - 1)

    @property
    def slope(self) -> float:
        """OLS slope of y on x within the cell."""
        return self.covariance / self.x.variance


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CellCrossProducts:
    """One cell's participants (one row each: an arm's completers, or its participants missing the outcome) as the
    cross-products of a participant-level design W and an outcome y: ``wtw`` = W'W, ``wty`` = W'y, ``yty`` = y'y over
    ``n`` rows. ``columns`` name W's columns; the first is the intercept (so ``wtw[0]`` holds the column sums and
    ``wtw[0, 0]`` = n). A cell without the outcome (participants missing it) has ``wty`` = 0 and ``yty`` = 0.

    What the final-wave ANCOVA with covariates needs per arm (``analysis.missing.statistics_from_cells``): with
    W = (1, baseline) it is :class:`PairedMoments` (``from_paired``, ``paired``)."""

    columns: tuple[str, ...]
    n: int
    wtw: np.ndarray
    wty: np.ndarray
    yty: float

    def __post_init__(self) -> None:
        p = len(self.columns)
        if not p or self.columns[0] != "intercept":
            raise ValueError(f"the first column of a cell's design is the intercept, got {self.columns}")
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "wtw", _frozen_array(self.wtw, (p, p), "wtw"))
        object.__setattr__(self, "wty", _frozen_array(self.wty, (p,), "wty"))
        object.__setattr__(self, "yty", float(self.yty))
        if self.wtw[0, 0] != self.n:
            raise ValueError(f"the intercept's sum of squares ({self.wtw[0, 0]}) must be the row count ({self.n})")

    @classmethod
    def from_arrays(cls, w: np.ndarray, y: np.ndarray | None, columns: Iterable[str]) -> CellCrossProducts:
        """From the design rows ``w`` (intercept first) and the outcome ``y`` (None: a cell without it)."""
        wa = np.asarray(w, dtype=float).reshape(len(w), -1)
        ya = np.zeros(len(wa)) if y is None else np.asarray(y, dtype=float).reshape(-1)
        return cls(tuple(columns), len(wa), wa.T @ wa, wa.T @ ya, float(ya @ ya))

    @classmethod
    def zero(cls, columns: Iterable[str]) -> CellCrossProducts:
        cols = tuple(columns)
        return cls(cols, 0, np.zeros((len(cols), len(cols))), np.zeros(len(cols)), 0.0)

    @classmethod
    def from_paired(cls, cell: PairedMoments | Moments) -> CellCrossProducts:
        """W = (intercept, baseline) from paired moments (x = baseline), or from a baseline's moments without the
        outcome."""
        if isinstance(cell, Moments):
            return cls(("intercept", "baseline"), cell.n, [[cell.n, cell.sum_y], [cell.sum_y, cell.sum_yy]],
                       [0.0, 0.0], 0.0)
        return cls(("intercept", "baseline"), cell.n, [[cell.n, cell.sum_x], [cell.sum_x, cell.sum_xx]],
                   [cell.sum_y, cell.sum_xy], cell.sum_yy)

    @property
    def paired(self) -> PairedMoments:
        """The (baseline, outcome) paired moments: W's second column is the baseline."""
        return PairedMoments(self.n, float(self.wtw[0, 1]), float(self.wty[0]), float(self.wtw[1, 1]), self.yty,
                             float(self.wty[1]))

    def __add__(self, other: CellCrossProducts) -> CellCrossProducts:
        _same_type(self, other)
        if self.columns != other.columns:
            raise ValueError(f"cells with different designs do not add: {self.columns} and {other.columns}")
        return CellCrossProducts(self.columns, self.n + other.n, self.wtw + other.wtw, self.wty + other.wty,
                                 self.yty + other.yty)

    def __eq__(self, other: object) -> bool:
        return (type(other) is CellCrossProducts and self.columns == other.columns and self.n == other.n
                and np.array_equal(self.wtw, other.wtw) and np.array_equal(self.wty, other.wty)
                and self.yty == other.yty)

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoisyPairedMoments:
    """The six paired statistics as released by the privacy tier, with the noise SD of each.

    ``value`` fields are floats (noise makes even n fractional); ``noise_sd_<statistic>`` is the
    standard deviation of the zero-mean Gaussian noise the mechanism added (0 for an exact value).
    Two releases over disjoint participants add: values add, noise variances add.
    """

    n: float
    sum_x: float
    sum_y: float
    sum_xx: float
    sum_yy: float
    sum_xy: float
    noise_sd_n: float = 0.0
    noise_sd_sum_x: float = 0.0
    noise_sd_sum_y: float = 0.0
    noise_sd_sum_xx: float = 0.0
    noise_sd_sum_yy: float = 0.0
    noise_sd_sum_xy: float = 0.0
    center: float = 0.0  # the sums are of x - center and y - center (the release centres at the bounds' midpoint)
    half_range: float | None = None  # the clipping bounds are center +- half_range (public; None: not released)

    def __post_init__(self) -> None:
        for s in PAIRED_STATISTICS:
            sd = getattr(self, f"noise_sd_{s}")
            if not (sd >= 0 and math.isfinite(sd)):
                raise ValueError(f"noise_sd of {s} must be a finite number >= 0, got {sd}")
        if not math.isfinite(self.center):
            raise ValueError(f"center must be a finite number, got {self.center}")
        if self.half_range is not None and not (math.isfinite(self.half_range) and self.half_range > 0):
            raise ValueError(f"half_range must be a finite number > 0, got {self.half_range}")

    def __add__(self, other: NoisyPairedMoments) -> NoisyPairedMoments:
        _same_type(self, other)
        if (self.center, self.half_range) != (other.center, other.half_range):
            raise ValueError(f"cells centred at {self.center} and {other.center} (or with other bounds) do not add")
        kwargs: dict[str, float | None] = {"center": self.center, "half_range": self.half_range}
        for s in PAIRED_STATISTICS:
            kwargs[s] = getattr(self, s) + getattr(other, s)
            kwargs[f"noise_sd_{s}"] = math.hypot(getattr(self, f"noise_sd_{s}"), getattr(other, f"noise_sd_{s}"))
        return NoisyPairedMoments(**kwargs)

    def value(self, statistic: str) -> float:
        return float(getattr(self, _check_statistic(statistic)))

    def sd_of(self, statistic: str) -> float:
        """Noise standard deviation of one statistic (``'n'``, ``'sum_x'``, ...)."""
        return float(getattr(self, f"noise_sd_{_check_statistic(statistic)}"))

    @property
    def values(self) -> np.ndarray:
        return np.array([getattr(self, s) for s in PAIRED_STATISTICS])

    @property
    def noise_sds(self) -> np.ndarray:
        return np.array([getattr(self, f"noise_sd_{s}") for s in PAIRED_STATISTICS])

    @classmethod
    def exact(cls, stats: PairedMoments) -> NoisyPairedMoments:
        """An exact (noise-free) statistic in the noisy type, e.g. for a trusted-tier comparison."""
        return cls(**{s: float(getattr(stats, s)) for s in PAIRED_STATISTICS})

    @classmethod
    def with_gaussian_noise(
        cls,
        stats: PairedMoments,
        noise_sd: Mapping[str, float],
        rng: np.random.Generator,
        center: float = 0.0,
        half_range: float | None = None,
    ) -> NoisyPairedMoments:
        """Centre the exact statistics at ``center`` (as the release does) and add independent Gaussian noise of the
        given SD to each (simulation helper; real releases come from OpenDP in ``privacy/``)."""
        c, n, sx, sy = float(center), float(stats.n), float(stats.sum_x), float(stats.sum_y)
        centred = {"n": n, "sum_x": sx - n * c, "sum_y": sy - n * c,
                   "sum_xx": float(stats.sum_xx) - 2 * c * sx + n * c * c,
                   "sum_yy": float(stats.sum_yy) - 2 * c * sy + n * c * c,
                   "sum_xy": float(stats.sum_xy) - c * (sx + sy) + n * c * c}
        kwargs: dict[str, float | None] = {"center": c, "half_range": half_range}
        for s in PAIRED_STATISTICS:
            sd = float(noise_sd.get(s, 0.0))
            kwargs[s] = centred[s] + (float(rng.normal(0.0, sd)) if sd > 0 else 0.0)
            kwargs[f"noise_sd_{s}"] = sd
        return cls(**kwargs)

    @classmethod
    def from_release_rows(cls, rows: Iterable[Mapping[str, object]]) -> NoisyPairedMoments:
        """Build from ``release_values`` rows of one (outcome, arm, wave) cell.

        Each row needs ``statistic`` (one of n, sum_x, sum_y, sum_xx, sum_yy, sum_xy), ``value`` and
        ``noise_sd``; a row with ``suppressed`` true makes the cell unusable (raises InsufficientData).
        Every statistic must appear exactly once.
        """
        plan = {"center": 0.0, "half_range": None}  # releases made before the centring hold sums of the values
        noisy = []
        for row in rows:
            if row["statistic"] in plan:  # public constants of the release plan, not noisy statistics
                if row.get("suppressed") or row.get("value") is None:
                    raise InsufficientData("the released cell's centre", 1, 0, "a suppressed cell")
                plan[str(row["statistic"])] = float(row["value"])  # type: ignore[arg-type]
            else:
                noisy.append(row)
        values, sds = noisy_release_values(noisy, PAIRED_STATISTICS, _check_statistic)
        return cls(**values, **sds, **plan)

    def uncentred(self) -> dict[str, float]:
        """The six sums of the values themselves (x and y, not x - center): exact only for an exact cell (with
        noise, the count's noise would mix into every sum)."""
        c, n, sx, sy = self.center, self.n, self.sum_x, self.sum_y
        return {"n": n, "sum_x": sx + n * c, "sum_y": sy + n * c, "sum_xx": self.sum_xx + 2 * c * sx + n * c * c,
                "sum_yy": self.sum_yy + 2 * c * sy + n * c * c, "sum_xy": self.sum_xy + c * (sx + sy) + n * c * c}


def noisy_release_values(rows: Iterable[Mapping[str, object]], expected: Sequence[str],
                         check: Callable[[str], str]) -> tuple[dict[str, float], dict[str, float]]:
    """The values and noise SDs (``noise_sd_<statistic>``) of one release cell's noisy rows: each statistic
    (``check`` names it or raises) exactly once and all of ``expected``; a suppressed or value-less row makes the
    cell unusable (InsufficientData), a repeated or missing statistic is a malformed release (ValueError)."""
    values: dict[str, float] = {}
    sds: dict[str, float] = {}
    for row in rows:
        stat = check(str(row["statistic"]))
        if row.get("suppressed"):
            raise InsufficientData(f"the released statistic {stat}", 1, 0, "a suppressed cell")
        if stat in values:
            raise ValueError(f"statistic {stat} appears twice in one release cell")
        if row.get("value") is None:
            raise InsufficientData(f"the released statistic {stat}", 1, 0, "a cell without a value")
        values[stat] = float(row["value"])  # type: ignore[arg-type]
        sds[f"noise_sd_{stat}"] = float(row.get("noise_sd") or 0.0)  # type: ignore[arg-type]
    missing = [s for s in expected if s not in values]
    if missing:
        raise ValueError(f"release cell lacks statistics {missing}")
    return values, sds


def _check_statistic(statistic: str) -> str:
    if statistic not in PAIRED_STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; expected one of {PAIRED_STATISTICS}")
    return statistic


# --------------------------------------------------------------------------------------------
def _frozen_array(a: np.ndarray | Iterable, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.array(a, dtype=float, copy=True)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class GroupCrossProducts:
    """Participants with the same number of observed rows ``rows_per_participant`` (m).

    ``sxsx`` = sum_i s_x,i s_x,i' (p x p), ``sxsy`` = sum_i s_x,i s_y,i (p), ``sysy`` = sum_i s_y,i^2,
    where s_x,i = X_i' 1 and s_y,i = y_i' 1 are participant i's column sums.
    """

    rows_per_participant: int
    n_participants: int
    sxsx: np.ndarray
    sxsy: np.ndarray
    sysy: float

    def __post_init__(self) -> None:
        p = np.asarray(self.sxsy).reshape(-1).size
        object.__setattr__(self, "sxsx", _frozen_array(self.sxsx, (p, p), "sxsx"))
        object.__setattr__(self, "sxsy", _frozen_array(self.sxsy, (p,), "sxsy"))
        object.__setattr__(self, "sysy", float(self.sysy))

    def __add__(self, other: GroupCrossProducts) -> GroupCrossProducts:
        _same_type(self, other)
        if self.rows_per_participant != other.rows_per_participant:
            raise ValueError("only groups with the same rows per participant add")
        return GroupCrossProducts(
            self.rows_per_participant,
            self.n_participants + other.n_participants,
            self.sxsx + other.sxsx,
            self.sxsy + other.sxsy,
            self.sysy + other.sysy,
        )

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is GroupCrossProducts
            and self.rows_per_participant == other.rows_per_participant
            and self.n_participants == other.n_participants
            and np.array_equal(self.sxsx, other.sxsx)
            and np.array_equal(self.sxsy, other.sxsy)
            and self.sysy == other.sysy
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class SlopeGroupCrossProducts:
    """Participants whose observed rows share Z'Z, for a model with random intercepts AND slopes.

    With Z_i = [1, t_i] (the participant's rows, t = time), participants with the same number of rows
    m, the same sum of times ``sum_t`` and sum of squared times ``sum_tt`` share Z_i'Z_i, hence the
    same marginal covariance. For W_i = [X_i, y_i] (augmented with the outcome as last column) let
    a0_i = 1'W_i and a1_i = t_i'W_i; then ``w00`` = sum a0 a0', ``w01`` = sum a0 a1', ``w11`` = sum a1 a1'
    over the group's ``n_participants`` participants ((p + 1) x (p + 1) each). ``w00`` repeats what
    :class:`GroupCrossProducts` holds, grouped more finely.
    """

    rows_per_participant: int
    sum_t: float
    sum_tt: float
    n_participants: int
    w00: np.ndarray
    w01: np.ndarray
    w11: np.ndarray

    def __post_init__(self) -> None:
        q = np.asarray(self.w00).shape[0]
        for name in ("w00", "w01", "w11"):
            object.__setattr__(self, name, _frozen_array(getattr(self, name), (q, q), name))
        object.__setattr__(self, "sum_t", float(self.sum_t))
        object.__setattr__(self, "sum_tt", float(self.sum_tt))

    @property
    def key(self) -> tuple[int, float, float]:
        return (self.rows_per_participant, round(self.sum_t, 9), round(self.sum_tt, 9))

    def __add__(self, other: SlopeGroupCrossProducts) -> SlopeGroupCrossProducts:
        _same_type(self, other)
        if self.key != other.key:
            raise ValueError("only slope groups with the same rows and times add")
        return SlopeGroupCrossProducts(self.rows_per_participant, self.sum_t, self.sum_tt,
                                       self.n_participants + other.n_participants,
                                       self.w00 + other.w00, self.w01 + other.w01, self.w11 + other.w11)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is SlopeGroupCrossProducts
            and self.key == other.key
            and self.n_participants == other.n_participants
            and all(np.array_equal(getattr(self, n), getattr(other, n)) for n in ("w00", "w01", "w11"))
        )

    def allclose(self, other: SlopeGroupCrossProducts, rtol: float, atol: float) -> bool:
        return (self.key, self.n_participants) == (other.key, other.n_participants) and all(
            np.allclose(getattr(self, n), getattr(other, n), rtol=rtol, atol=atol) for n in ("w00", "w01", "w11"))

    def transformed(self, t: np.ndarray) -> SlopeGroupCrossProducts:
        return SlopeGroupCrossProducts(self.rows_per_participant, self.sum_t, self.sum_tt, self.n_participants,
                                       t.T @ self.w00 @ t, t.T @ self.w01 @ t, t.T @ self.w11 @ t)

    __hash__ = None  # type: ignore[assignment]


def _merge_slope_groups(*parts: Iterable[SlopeGroupCrossProducts]) -> tuple[SlopeGroupCrossProducts, ...]:
    merged: dict[tuple[int, float, float], SlopeGroupCrossProducts] = {}
    for part in parts:
        for g in part:
            merged[g.key] = merged[g.key] + g if g.key in merged else g
    return tuple(merged[k] for k in sorted(merged))


@dataclass(frozen=True, eq=False)
class CrossProducts:
    """Sufficient statistics of a Gaussian random-intercept model y = X b + u_i + e.

    ``columns`` names the columns of X (the design); ``xtx`` = X'X, ``xty`` = X'y, ``yty`` = y'y over
    all ``n_obs`` observation rows; ``groups`` holds one :class:`GroupCrossProducts` per distinct
    number of rows per participant, sorted by that number. Adding pools disjoint participants
    (same columns required); a participant split across the two operands would be wrong to add.
    ``column_info`` carries design metadata (e.g. which arm and wave a column belongs to) as a tuple of
    (column, key, value) strings so the value stays hashable and comparable. ``slope_groups``
    (:class:`SlopeGroupCrossProducts`, empty unless computed with a time variable) serve a model with
    random slopes on time.
    """

    columns: tuple[str, ...]
    n_obs: int
    xtx: np.ndarray
    xty: np.ndarray
    yty: float
    groups: tuple[GroupCrossProducts, ...]
    column_info: tuple[tuple[str, str, str], ...] = ()
    slope_groups: tuple[SlopeGroupCrossProducts, ...] = ()

    def __post_init__(self) -> None:
        p = len(self.columns)
        if len(set(self.columns)) != p:
            raise ValueError(f"column names must be unique, got {self.columns}")
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "xtx", _frozen_array(self.xtx, (p, p), "xtx"))
        object.__setattr__(self, "xty", _frozen_array(self.xty, (p,), "xty"))
        object.__setattr__(self, "yty", float(self.yty))
        groups = tuple(sorted(self.groups, key=lambda g: g.rows_per_participant))
        if len({g.rows_per_participant for g in groups}) != len(groups):
            raise ValueError("each rows-per-participant value may appear in one group only")
        for g in groups:
            if g.sxsy.shape != (p,):
                raise ValueError(f"group with {g.rows_per_participant} rows has {g.sxsy.size} columns, expected {p}")
        if sum(g.rows_per_participant * g.n_participants for g in groups) != self.n_obs:
            raise ValueError("groups do not account for every observation row (sum of m * n_participants != n_obs)")
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "column_info", tuple(tuple(t) for t in self.column_info))
        slopes = _merge_slope_groups(self.slope_groups)
        if slopes:
            if any(g.w00.shape != (p + 1, p + 1) for g in slopes):
                raise ValueError(f"slope groups must be ({p + 1}, {p + 1}) augmented cross-products")
            if sum(g.rows_per_participant * g.n_participants for g in slopes) != self.n_obs:
                raise ValueError("slope groups do not account for every observation row")
        object.__setattr__(self, "slope_groups", slopes)

    # -- construction from raw rows ------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        participant: np.ndarray,
        columns: Iterable[str],
        column_info: Iterable[tuple[str, str, str]] = (),
        time: np.ndarray | None = None,
    ) -> CrossProducts:
        """From a design matrix X (rows = observations), outcome y and participant ids (numpy path,
        the reference the DuckDB path is tested against); with ``time``, also the slope groups."""
        cols = tuple(columns)
        xa = np.asarray(x, dtype=float)
        ya = _as_1d(y, "y")
        if xa.ndim != 2 or xa.shape != (ya.size, len(cols)):
            raise ValueError(f"x must be (rows, {len(cols)}), got {xa.shape} for {ya.size} rows")
        if not np.all(np.isfinite(xa)):
            raise ValueError("x contains NaN or infinite values")
        pid = np.asarray(participant)
        _, inverse = np.unique(pid, return_inverse=True)
        k = int(inverse.max()) + 1 if inverse.size else 0
        sx = np.zeros((k, len(cols)))
        np.add.at(sx, inverse, xa)
        sy = np.bincount(inverse, weights=ya, minlength=k)
        m = np.bincount(inverse, minlength=k)
        groups = []
        for size in np.unique(m):
            sel = m == size
            groups.append(GroupCrossProducts(int(size), int(sel.sum()), sx[sel].T @ sx[sel], sx[sel].T @ sy[sel],
                                             float(sy[sel] @ sy[sel])))
        slopes: list[SlopeGroupCrossProducts] = []
        if time is not None:
            t = _as_1d(time, "time")
            if t.size != ya.size or not np.all(np.isfinite(t)):
                raise ValueError("time must be finite and have one value per row")
            w = np.column_stack([xa, ya])
            a0 = np.zeros((k, w.shape[1]))
            a1 = np.zeros((k, w.shape[1]))
            np.add.at(a0, inverse, w)
            np.add.at(a1, inverse, w * t[:, None])
            st = np.round(np.bincount(inverse, weights=t, minlength=k), 9)
            stt = np.round(np.bincount(inverse, weights=t * t, minlength=k), 9)
            keys = sorted(set(zip(m.tolist(), st.tolist(), stt.tolist())))
            for mm, s1, s2 in keys:
                sel = (m == mm) & (st == s1) & (stt == s2)
                slopes.append(SlopeGroupCrossProducts(int(mm), s1, s2, int(sel.sum()), a0[sel].T @ a0[sel],
                                                      a0[sel].T @ a1[sel], a1[sel].T @ a1[sel]))
        return cls(cols, int(ya.size), xa.T @ xa, xa.T @ ya, float(ya @ ya), tuple(groups), tuple(column_info),
                   tuple(slopes))

    # -- algebra -------------------------------------------------------------------------------
    def __add__(self, other: CrossProducts) -> CrossProducts:
        _same_type(self, other)
        if self.columns != other.columns:
            raise ValueError(f"cannot add cross-products over different columns: {self.columns} vs {other.columns}")
        if bool(self.slope_groups) != bool(other.slope_groups):
            raise ValueError("cannot add cross-products with slope groups to cross-products without them")
        merged: dict[int, GroupCrossProducts] = {g.rows_per_participant: g for g in self.groups}
        for g in other.groups:
            m = g.rows_per_participant
            merged[m] = merged[m] + g if m in merged else g
        return CrossProducts(
            self.columns,
            self.n_obs + other.n_obs,
            self.xtx + other.xtx,
            self.xty + other.xty,
            self.yty + other.yty,
            tuple(merged.values()),
            self.column_info or other.column_info,
            _merge_slope_groups(self.slope_groups, other.slope_groups),
        )

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is CrossProducts
            and self.columns == other.columns
            and self.n_obs == other.n_obs
            and np.array_equal(self.xtx, other.xtx)
            and np.array_equal(self.xty, other.xty)
            and self.yty == other.yty
            and self.groups == other.groups
            and self.slope_groups == other.slope_groups
        )

    __hash__ = None  # type: ignore[assignment]

    def allclose(self, other: CrossProducts, rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        """Equality up to floating-point summation order (SQL and numpy add in different orders)."""
        if self.columns != other.columns or self.n_obs != other.n_obs or len(self.groups) != len(other.groups):
            return False
        close = lambda a, b: bool(np.allclose(a, b, rtol=rtol, atol=atol))  # noqa: E731
        if not (close(self.xtx, other.xtx) and close(self.xty, other.xty) and close(self.yty, other.yty)):
            return False
        for g, h in zip(self.groups, other.groups, strict=True):
            if (g.rows_per_participant, g.n_participants) != (h.rows_per_participant, h.n_participants):
                return False
            if not (close(g.sxsx, h.sxsx) and close(g.sxsy, h.sxsy) and close(g.sysy, h.sysy)):
                return False
        if len(self.slope_groups) != len(other.slope_groups):
            return False
        return all(g.allclose(h, rtol, atol) for g, h in zip(self.slope_groups, other.slope_groups, strict=True))

    # -- convenience -----------------------------------------------------------------------------
    @property
    def n_participants(self) -> int:
        return sum(g.n_participants for g in self.groups)

    def info(self, key: str) -> dict[str, str]:
        """Column -> value of one metadata key (e.g. ``info('arm')``)."""
        return {c: v for c, k, v in self.column_info if k == key}

    def transformed(self, t: np.ndarray, columns: Iterable[str]) -> CrossProducts:
        """Cross-products of the linearly transformed augmented matrix [X, y] T.

        ``t`` is (p + 1) x (q + 1) with last column giving the new y and the first q the new X.
        Because participant sums are linear too, every block transforms as W'W -> T' W'W T. Used to
        centre and scale columns (the intercept lives in X, so affine maps of columns are linear).
        """
        t = np.asarray(t, dtype=float)
        p = len(self.columns)
        cols = tuple(columns)
        if t.shape != (p + 1, len(cols) + 1):
            raise ValueError(f"t must be ({p + 1}, {len(cols) + 1}), got {t.shape}")

        def aug(xx: np.ndarray, xy: np.ndarray, yy: float) -> np.ndarray:
            w = np.empty((p + 1, p + 1))
            w[:p, :p], w[:p, p], w[p, :p], w[p, p] = xx, xy, xy, yy
            return t.T @ w @ t

        g_all = aug(self.xtx, self.xty, self.yty)
        q = len(cols)
        groups = []
        for g in self.groups:
            a = aug(g.sxsx, g.sxsy, g.sysy)
            groups.append(GroupCrossProducts(g.rows_per_participant, g.n_participants, a[:q, :q], a[:q, q], a[q, q]))
        slopes = tuple(g.transformed(t) for g in self.slope_groups)
        return CrossProducts(cols, self.n_obs, g_all[:q, :q], g_all[:q, q], g_all[q, q], tuple(groups), self.column_info,
                             slopes)


__all__ = [
    "PAIRED_STATISTICS",
    "CellCrossProducts",
    "CrossProducts",
    "GroupCrossProducts",
    "InsufficientData",
    "Moments",
    "NoisyPairedMoments",
    "PairedMoments",
    "SlopeGroupCrossProducts",
]

# Field names are part of the contract with the privacy tier's release rows; keep them in sync.
assert tuple(f.name for f in fields(PairedMoments)) == PAIRED_STATISTICS
