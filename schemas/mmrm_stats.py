r"""Pattern statistics: what a Gaussian MMRM needs from the data, as frozen values that add.

The MMRM (``analysis/mmrm``) models participant i's outcomes at the follow-up waves it has,
y_i = (y_it : t in S_i), as N(B_S z_i, Sigma_SS): z_i is the participant's covariate vector (intercept,
non-control arm dummies, baseline, numeric covariates), B (T x p) holds the wave-specific means and
S_i is the participant's *missingness pattern*, the set of follow-up waves it was observed at. Group
the participants by pattern. For pattern S (m = |S| waves) this module keeps

    n_S                       participants with that pattern
    Szz_S = sum_i z_i z_i'     (p x p)
    Szy_S = sum_i z_i y_i'     (p x m)
    Syy_S = sum_i y_i y_i'     (m x m)

**Why these suffice (ML and REML).** With r_i = y_i - B_S z_i and V_S = Sigma_SS,

    sum_{i in S} r_i' V_S^{-1} r_i = tr( V_S^{-1} R_S(B) ),
    R_S(B) = Syy_S - B_S Szy_S - Szy_S' B_S' + B_S Szz_S B_S'

(a trace of a sum of outer products), so

    -2 log L_ML   = sum_S [ n_S m log 2 pi + n_S log det V_S + tr(V_S^{-1} R_S(B)) ]

depends on the data only through (n_S, Szz_S, Szy_S, Syy_S). The REML criterion adds
log det(X'V^{-1}X) and replaces N log 2 pi by (N - q) log 2 pi (Harville 1977, JASA 72:320; the SAS /
``mmrm`` convention, see ``analysis/mmrm/__init__.py``); with vec(B) = M beta the information is

    X'V^{-1}X = M' [ sum_S Szz_S (x) E_S' V_S^{-1} E_S ] M,     X'V^{-1}y = M' vec( sum_S E_S' V_S^{-1} Szy_S' )

(E_S the m x T selection of the pattern's waves, (x) the Kronecker product), again functions of Szz_S
and Szy_S only. Participants are independent, so statistics of disjoint participant sets add
(``a + b`` pools sites, batches, days): per pattern, counts and sums add.

**Fourth-order sums for the sandwich.** The empirical ("sandwich", CR0; Liang & Zeger 1986,
Biometrika 73:13; ``mmrm``'s ``vcov = "Empirical"``) covariance of beta-hat is Phi (sum_i s_i s_i') Phi
with Phi = (X'V^{-1}X)^{-1} and the participant's score s_i = X_i'V^{-1}r_i = M'(z_i (x) u_i),
u_i = E_S' V_S^{-1} r_i. Then sum_i s_i s_i' = M' [sum_S (I (x) P_S) K_S (I (x) P_S') ] M with
P_S = E_S' V_S^{-1} and K_S = sum_{i in S} (z_i z_i') (x) (r_i r_i'), whose entries are

    K_S[a,b,s,t] = sum z_a z_b y_s y_t - sum_c B_sc sum z_a z_b z_c y_t - sum_c B_tc sum z_a z_b z_c y_s
                   + sum_{c,d} B_sc B_td sum z_a z_b z_c z_d.

So the sandwich needs, per pattern, the fourth-order sums ``zzyy`` = sum (z z') (x) (y y') (p, p, m, m),
``zzzy`` = sum z_a z_b z_c y_t (p, p, p, m) and ``zzzz`` = sum z_a z_b z_c z_d (p, p, p, p). They are
optional (``fourth_order``): the likelihood never needs them.

**Sizes.** With T = 6 follow-up waves and p = 5 z-columns (intercept, two arm dummies, baseline, one
covariate) a complete-case pattern holds, counting distinct entries of the symmetric arrays,
1 + 15 (Szz) + 30 (Szy) + 21 (Syy) = 67 numbers for the likelihood, plus 15 x 21 (zzyy) + 35 x 6 (zzzy) +
70 (zzzz) = 595 for the sandwich: 662 numbers. Arrays are held dense here (91 + 2,275 floats, about
19 kB) because the algebra wants them so; the SQL computes only the distinct entries. At most 2^6 - 1 = 63
patterns exist, 6 under monotone drop-out: the statistics never grow with the number of participants.

No I/O here; ``analysis/mmrm/sql.py`` has the GROUP BY that computes these in DuckDB.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from schemas.suffstats import InsufficientData

FOURTH_ORDER_FIELDS: tuple[str, ...] = ("zzyy", "zzzy", "zzzz")


class IncompatibleStatistics(ValueError):
    """Two pattern statistics cannot be combined (different z-columns, waves, patterns or orders)."""


def _frozen(a: np.ndarray | Iterable, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.array(a, dtype=float, copy=True)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class PatternStatistics:
    """The sums of one missingness pattern (see the module docstring for the algebra).

    ``observed`` lists the indices (0-based, ascending) of the follow-up waves the pattern's
    participants were observed at; arrays are over those m waves in that order.
    """

    observed: tuple[int, ...]
    n_participants: int
    szz: np.ndarray
    szy: np.ndarray
    syy: np.ndarray
    zzyy: np.ndarray | None = None
    zzzy: np.ndarray | None = None
    zzzz: np.ndarray | None = None

    def __post_init__(self) -> None:
        observed = tuple(int(t) for t in self.observed)
        if not observed or list(observed) != sorted(set(observed)) or observed[0] < 0:
            raise ValueError(f"observed must be distinct ascending wave indices, got {self.observed}")
        if int(self.n_participants) < 1:
            raise ValueError("a pattern holds at least one participant")
        p, m = np.asarray(self.szz).shape[0], len(observed)
        object.__setattr__(self, "observed", observed)
        object.__setattr__(self, "n_participants", int(self.n_participants))
        object.__setattr__(self, "szz", _frozen(self.szz, (p, p), "szz"))
        object.__setattr__(self, "szy", _frozen(self.szy, (p, m), "szy"))
        object.__setattr__(self, "syy", _frozen(self.syy, (m, m), "syy"))
        shapes = {"zzyy": (p, p, m, m), "zzzy": (p, p, p, m), "zzzz": (p, p, p, p)}
        present = [getattr(self, f) is not None for f in FOURTH_ORDER_FIELDS]
        if any(present) and not all(present):
            raise ValueError("the fourth-order sums come together: give zzyy, zzzy and zzzz, or none")
        if all(present):
            for f in FOURTH_ORDER_FIELDS:
                object.__setattr__(self, f, _frozen(getattr(self, f), shapes[f], f))

    @property
    def fourth_order(self) -> bool:
        return self.zzzz is not None

    @property
    def n_waves_observed(self) -> int:
        return len(self.observed)

    def __add__(self, other: PatternStatistics) -> PatternStatistics:
        if type(other) is not PatternStatistics:
            raise TypeError(f"cannot add PatternStatistics and {type(other).__name__}")
        if self.observed != other.observed:
            raise IncompatibleStatistics(f"patterns {self.observed} and {other.observed} do not add")
        if self.szz.shape != other.szz.shape or self.fourth_order != other.fourth_order:
            raise IncompatibleStatistics("pattern statistics over different z-columns or orders do not add")
        extra = {f: getattr(self, f) + getattr(other, f) for f in FOURTH_ORDER_FIELDS} if self.fourth_order else {}
        return PatternStatistics(self.observed, self.n_participants + other.n_participants, self.szz + other.szz,
                                 self.szy + other.szy, self.syy + other.syy, **extra)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.szz, self.szy, self.syy) + ((self.zzyy, self.zzzy, self.zzzz) if self.fourth_order else ())

    def __eq__(self, other: object) -> bool:
        return (type(other) is PatternStatistics and (self.observed, self.n_participants, self.fourth_order)
                == (other.observed, other.n_participants, other.fourth_order)
                and all(np.array_equal(a, b) for a, b in zip(self._arrays(), other._arrays(), strict=True)))

    def allclose(self, other: PatternStatistics, rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        return ((self.observed, self.n_participants, self.fourth_order)
                == (other.observed, other.n_participants, other.fourth_order)
                and all(np.allclose(a, b, rtol=rtol, atol=atol) for a, b in zip(self._arrays(), other._arrays(), strict=True)))

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class MMRMStatistics:
    """Pattern statistics of one outcome: the z-column names, the follow-up waves in time order and one
    :class:`PatternStatistics` per observed pattern (sorted). ``+`` pools disjoint participant sets; a
    participant split across the two operands would be counted as two (the statistics cannot tell)."""

    z_columns: tuple[str, ...]
    waves: tuple[str, ...]
    patterns: tuple[PatternStatistics, ...]

    def __post_init__(self) -> None:
        z_columns, waves = tuple(map(str, self.z_columns)), tuple(map(str, self.waves))
        if len(set(z_columns)) != len(z_columns) or len(set(waves)) != len(waves):
            raise ValueError("z-column and wave names must be unique")
        merged: dict[tuple[int, ...], PatternStatistics] = {}
        for pat in self.patterns:
            if pat.szz.shape[0] != len(z_columns):
                raise IncompatibleStatistics(f"pattern {pat.observed} has {pat.szz.shape[0]} z-columns, expected {len(z_columns)}")
            if pat.observed[-1] >= len(waves):
                raise IncompatibleStatistics(f"pattern {pat.observed} names a wave beyond the {len(waves)} waves")
            merged[pat.observed] = merged[pat.observed] + pat if pat.observed in merged else pat
        if len({p.fourth_order for p in merged.values()}) > 1:
            raise IncompatibleStatistics("some patterns have fourth-order sums and others do not")
        object.__setattr__(self, "z_columns", z_columns)
        object.__setattr__(self, "waves", waves)
        object.__setattr__(self, "patterns", tuple(merged[k] for k in sorted(merged)))

    # -- construction from raw rows (the numpy reference the SQL path is tested against) ----------
    @classmethod
    def from_arrays(cls, z: np.ndarray, y: np.ndarray, z_columns: Sequence[str], waves: Sequence[str], *,
                    fourth_order: bool = False) -> MMRMStatistics:
        """From a participant x z-column matrix ``z`` and a participant x wave matrix ``y`` whose NaN
        entries are the waves a participant was not observed at. Participants with no observed wave add
        nothing to the likelihood and are left out."""
        za, ya = np.asarray(z, dtype=float), np.asarray(y, dtype=float)
        if za.ndim != 2 or ya.ndim != 2 or za.shape[0] != ya.shape[0]:
            raise ValueError(f"z (participants x p) and y (participants x T) must pair row by row, got {za.shape}, {ya.shape}")
        if za.shape[1] != len(z_columns) or ya.shape[1] != len(waves):
            raise ValueError(f"z has {za.shape[1]} columns for {len(z_columns)} names; y {ya.shape[1]} for {len(waves)} waves")
        if not np.all(np.isfinite(za)):
            raise ValueError("z contains NaN or infinite values; the covariates must be complete")
        if np.any(np.isinf(ya)):
            raise ValueError("y contains infinite values")
        seen = ~np.isnan(ya)
        keys = seen @ (1 << np.arange(ya.shape[1]))  # the pattern as a bit mask, wave t = bit t
        patterns = []
        for key in np.unique(keys[keys > 0]):
            rows = keys == key
            obs = tuple(int(t) for t in np.flatnonzero(seen[np.argmax(rows)]))
            zs, ys = za[rows], ya[rows][:, list(obs)]
            extra = {}
            if fourth_order:
                extra = {"zzyy": np.einsum("ia,ib,is,it->abst", zs, zs, ys, ys),
                         "zzzy": np.einsum("ia,ib,ic,it->abct", zs, zs, zs, ys),
                         "zzzz": np.einsum("ia,ib,ic,id->abcd", zs, zs, zs, zs)}
            patterns.append(PatternStatistics(obs, int(rows.sum()), zs.T @ zs, zs.T @ ys, ys.T @ ys, **extra))
        return cls(tuple(z_columns), tuple(waves), tuple(patterns))

    # -- algebra -------------------------------------------------------------------------------
    def __add__(self, other: MMRMStatistics) -> MMRMStatistics:
        if type(other) is not MMRMStatistics:
            raise TypeError(f"cannot add MMRMStatistics and {type(other).__name__}")
        if (self.z_columns, self.waves) != (other.z_columns, other.waves):
            raise IncompatibleStatistics(f"statistics over {self.z_columns} x {self.waves} and "
                                         f"{other.z_columns} x {other.waves} do not add")
        if self.patterns and other.patterns and self.fourth_order != other.fourth_order:
            raise IncompatibleStatistics("cannot add statistics with fourth-order sums to statistics without them")
        return MMRMStatistics(self.z_columns, self.waves, self.patterns + other.patterns)

    def __eq__(self, other: object) -> bool:
        return (type(other) is MMRMStatistics and (self.z_columns, self.waves) == (other.z_columns, other.waves)
                and self.patterns == other.patterns)

    __hash__ = None  # type: ignore[assignment]

    def allclose(self, other: MMRMStatistics, rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        """Equality up to summation order (SQL and numpy add in different orders)."""
        return ((self.z_columns, self.waves) == (other.z_columns, other.waves)
                and len(self.patterns) == len(other.patterns)
                and all(a.allclose(b, rtol, atol) for a, b in zip(self.patterns, other.patterns, strict=True)))

    # -- summaries ----------------------------------------------------------------------------------
    @property
    def fourth_order(self) -> bool:
        return bool(self.patterns) and self.patterns[0].fourth_order

    @property
    def n_participants(self) -> int:
        return sum(p.n_participants for p in self.patterns)

    @property
    def n_obs(self) -> int:
        """Observed participant x wave values."""
        return sum(p.n_participants * p.n_waves_observed for p in self.patterns)

    def participants_at(self) -> np.ndarray:
        """Participants observed at each wave."""
        counts = np.zeros(len(self.waves), dtype=int)
        for p in self.patterns:
            counts[list(p.observed)] += p.n_participants
        return counts

    def z_crossproducts(self) -> np.ndarray:
        """sum over participants of z z' (p x p); with an intercept column it holds the z means and variances."""
        if not self.patterns:
            raise InsufficientData("z cross-products", 1, 0, "statistics without participants")
        return sum(p.szz for p in self.patterns)

    def second_order(self) -> MMRMStatistics:
        """The same statistics without the fourth-order sums (what the likelihood needs)."""
        return MMRMStatistics(self.z_columns, self.waves,
                              tuple(PatternStatistics(p.observed, p.n_participants, p.szz, p.szy, p.syy) for p in self.patterns))

    def transformed(self, z_map: np.ndarray, y_scale: float, y_from_z: np.ndarray) -> MMRMStatistics:
        """Statistics of z* = A z and y*_t = c y_t + d'z (every wave alike), an affine map of the outcome and
        the covariates written linearly because z holds the intercept:

            Szz* = A Szz A',   Szy* = A (c Szy + Szz d 1'),
            Syy* = c^2 Syy + c (Syz d 1' + 1 d'Szy) + (d'Szz d) 1 1'.

        Used to standardise before sampling. The fourth-order sums are dropped (the likelihood never needs them).
        """
        a = np.asarray(z_map, dtype=float)
        d = np.asarray(y_from_z, dtype=float).reshape(-1)
        c = float(y_scale)
        p = len(self.z_columns)
        if a.shape != (p, p) or d.shape != (p,) or not c > 0:
            raise ValueError(f"z_map must be ({p}, {p}), y_from_z ({p},) and y_scale > 0")
        out = []
        for pat in self.patterns:
            ones = np.ones(pat.n_waves_observed)
            szd = pat.szz @ d
            syd = pat.szy.T @ d
            szy = a @ (c * pat.szy + np.outer(szd, ones))
            syy = c * c * pat.syy + c * (np.outer(syd, ones) + np.outer(ones, syd)) + float(d @ szd) * np.outer(ones, ones)
            out.append(PatternStatistics(pat.observed, pat.n_participants, a @ pat.szz @ a.T, szy, syy))
        return MMRMStatistics(self.z_columns, self.waves, tuple(out))


__all__ = ["FOURTH_ORDER_FIELDS", "IncompatibleStatistics", "MMRMStatistics", "PatternStatistics"]
