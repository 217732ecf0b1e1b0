"""Binary outcomes: the counts per arm x wave, as frozen values that add.

A binary outcome (responder, remission, a screen above its cut-off, "pancreatitis after the procedure") observed
once per participant per wave is summarised without loss, for every per-wave comparison of arms, by two numbers
per arm x wave cell: the participants observed there, ``n``, and those with the event, ``events``. The binomial
likelihood of a cell is p^events (1 - p)^(n - events): the pair (n, events) is sufficient for the cell's risk p,
so the risk difference, risk ratio, odds ratio, the Pearson and exact tests and the conjugate beta-binomial
posterior of each arm (``analysis/binary.py``) are functions of the counts alone. Counts of disjoint
participant sets add (``a + b`` pools sites, batches, days), as :mod:`schemas.suffstats` does for moments.

What the counts do NOT carry: which participant was counted at which wave. A model of the association of one
participant's outcomes across waves (a GEE's sandwich over waves, a transition model) needs the joint counts of
response profiles, not these margins; ``analysis/binary.py`` says what that means for the longitudinal summary.

- :class:`BinaryCounts` -- n and events of one cell.
- :class:`BinaryCountTable` -- one outcome's cells over the arms (control first) and waves of a design; every
  arm x wave combination is present (a cell nobody reached is ``BinaryCounts(0, 0)``), so two tables of the
  same design always add.
- :class:`NoisyBinaryCounts` -- one cell as the privacy tier releases it: events and non-events, each with the
  known SD of the Gaussian noise added to it (``privacy/release.py``, query kind ``binary_counts``).

No I/O here; ``analysis/binary.py`` has the GROUP BY that computes a table in DuckDB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from schemas.suffstats import InsufficientData, noisy_release_values


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer count, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


@dataclass(frozen=True)
class BinaryCounts:
    """Participants observed in one cell (``n``) and those among them with the event (``events``)."""

    n: int
    events: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _count(self.n, "n"))
        object.__setattr__(self, "events", _count(self.events, "events"))
        if self.events > self.n:
            raise ValueError(f"events ({self.events}) cannot exceed participants n ({self.n})")

    @classmethod
    def from_arrays(cls, y: np.ndarray | Iterable[float]) -> BinaryCounts:
        """From one cell's outcomes, each 0 or 1 (booleans too); anything else (NaN included) is refused:
        drop the unobserved rows before counting, as the SQL path drops NULLs."""
        arr = np.asarray(list(y) if not isinstance(y, np.ndarray) else y, dtype=float).reshape(-1)
        bad = ~np.isin(arr, (0.0, 1.0))
        if bad.any():
            raise ValueError(f"a binary outcome takes the values 0 and 1; {int(bad.sum())} values are not "
                             "(NaN included: drop unobserved rows first)")
        return cls(int(arr.size), int(arr.sum()))

    @classmethod
    def zero(cls) -> BinaryCounts:
        return cls(0, 0)

    def __add__(self, other: BinaryCounts) -> BinaryCounts:
        if type(other) is not BinaryCounts:
            raise TypeError(f"cannot add BinaryCounts and {type(other).__name__}")
        return BinaryCounts(self.n + other.n, self.events + other.events)

    @property
    def non_events(self) -> int:
        return self.n - self.events

    @property
    def risk(self) -> float:
        """events / n, the observed proportion; a cell without participants has none (never a silent 0)."""
        if self.n < 1:
            raise InsufficientData("a risk (proportion with the event)", 1, self.n)
        return self.events / self.n


@dataclass(frozen=True)
class BinaryCountTable:
    """One binary outcome's counts per arm x wave.

    ``arms`` lists the control first; ``waves`` are in time order (the last is the long-run wave). ``cells`` maps
    every (arm, wave) pair to its :class:`BinaryCounts`; pairs not given are filled with zero counts, so the
    table is always complete. Held as a sorted tuple of ((arm, wave), counts) so the value stays hashable.
    """

    arms: tuple[str, ...]
    waves: tuple[str, ...]
    cells: Mapping[tuple[str, str], BinaryCounts] | tuple[tuple[tuple[str, str], BinaryCounts], ...] = ()

    def __post_init__(self) -> None:
        arms, waves = tuple(map(str, self.arms)), tuple(map(str, self.waves))
        if len(arms) < 2 or len(set(arms)) != len(arms):
            raise ValueError(f"a table needs a control and at least one other arm, all distinct; got {arms}")
        if not waves or len(set(waves)) != len(waves):
            raise ValueError(f"a table needs distinct waves, got {waves}")
        given = dict(self.cells)
        unknown = [k for k in given if k[0] not in arms or k[1] not in waves]
        if unknown:
            raise ValueError(f"cells {sorted(unknown)} are outside the arms {arms} x waves {waves}")
        for key, counts in given.items():
            if type(counts) is not BinaryCounts:
                raise TypeError(f"cell {key} must hold BinaryCounts, got {type(counts).__name__}")
        full = tuple(((a, w), given.get((a, w), BinaryCounts.zero())) for a in arms for w in waves)
        object.__setattr__(self, "arms", arms)
        object.__setattr__(self, "waves", waves)
        object.__setattr__(self, "cells", full)

    # -- construction from raw rows (the numpy reference the SQL path is tested against) ----------
    @classmethod
    def from_arrays(cls, arm: Sequence[object] | np.ndarray, wave: Sequence[object] | np.ndarray,
                    y: Sequence[float] | np.ndarray, *, arms: Sequence[str], waves: Sequence[str]) -> BinaryCountTable:
        """From parallel row arrays (one row per participant x wave, y in {0, 1}); rows whose arm or wave is not
        in the design are refused, not dropped."""
        arm_a, wave_a = np.asarray(arm).astype(str), np.asarray(wave).astype(str)
        y_a = np.asarray(y, dtype=float)
        if not (arm_a.shape == wave_a.shape == y_a.shape) or y_a.ndim != 1:
            raise ValueError(f"arm, wave and y must be 1-d and pair row by row, got {arm_a.shape}, {wave_a.shape}, {y_a.shape}")
        outside = ~np.isin(arm_a, list(arms)) | ~np.isin(wave_a, list(waves))
        if outside.any():
            raise ValueError(f"{int(outside.sum())} rows have an arm or wave outside the design {tuple(arms)} x {tuple(waves)}")
        cells = {(a, w): BinaryCounts.from_arrays(y_a[(arm_a == a) & (wave_a == w)]) for a in arms for w in waves}
        return cls(tuple(arms), tuple(waves), cells)

    # -- algebra -------------------------------------------------------------------------------
    def __add__(self, other: BinaryCountTable) -> BinaryCountTable:
        if type(other) is not BinaryCountTable:
            raise TypeError(f"cannot add BinaryCountTable and {type(other).__name__}")
        if (self.arms, self.waves) != (other.arms, other.waves):
            raise ValueError(f"tables over {self.arms} x {self.waves} and {other.arms} x {other.waves} do not add")
        mine, theirs = dict(self.cells), dict(other.cells)
        return BinaryCountTable(self.arms, self.waves, {k: mine[k] + theirs[k] for k in mine})

    # -- access --------------------------------------------------------------------------------
    @property
    def control(self) -> str:
        return self.arms[0]

    @property
    def treated(self) -> tuple[str, ...]:
        return self.arms[1:]

    @property
    def final_wave(self) -> str:
        return self.waves[-1]

    def cell(self, arm: str, wave: str) -> BinaryCounts:
        if arm not in self.arms or wave not in self.waves:
            raise KeyError(f"no cell ({arm!r}, {wave!r}) in {self.arms} x {self.waves}")
        return dict(self.cells)[(arm, wave)]

    def as_rows(self) -> list[dict[str, object]]:
        """One dict per cell (arm, wave, n, events), e.g. for a release table or a data frame."""
        return [{"arm": a, "wave": w, "n": c.n, "events": c.events} for (a, w), c in self.cells]


BINARY_STATISTICS = ("events", "non_events")
"""The two released coordinates of a cell; n is their sum (derived, post-processing)."""


@dataclass(frozen=True)
class NoisyBinaryCounts:
    """One arm x wave cell of a binary outcome as released: ``events`` and ``non_events`` with independent zero-mean
    Gaussian noise of SD ``noise_sd_events`` and ``noise_sd_non_events`` (0 for an exact value).

    The release perturbs the two disjoint counts rather than (n, events): one participant is in exactly one of them
    per wave, which halves the L2 sensitivity's square (``privacy/release.py``). ``n`` is their sum, with noise SD
    sqrt(sd_events^2 + sd_non_events^2). Noise makes the values fractional and may make either negative (so
    ``events > n``): they are kept as released; the public model (``analysis/public_binary.py``) handles them.
    Cells of disjoint participant sets add (values add, noise variances add).
    """

    events: float
    non_events: float
    noise_sd_events: float = 0.0
    noise_sd_non_events: float = 0.0

    def __post_init__(self) -> None:
        for name in ("events", "non_events"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
            sd = getattr(self, f"noise_sd_{name}")
            if not (math.isfinite(sd) and sd >= 0):
                raise ValueError(f"noise_sd_{name} must be a finite number >= 0, got {sd}")

    @property
    def n(self) -> float:
        return self.events + self.non_events

    @property
    def noise_sd_n(self) -> float:
        return math.hypot(self.noise_sd_events, self.noise_sd_non_events)

    def __add__(self, other: NoisyBinaryCounts) -> NoisyBinaryCounts:
        if type(other) is not NoisyBinaryCounts:
            raise TypeError(f"cannot add NoisyBinaryCounts and {type(other).__name__}")
        return NoisyBinaryCounts(self.events + other.events, self.non_events + other.non_events,
                                 math.hypot(self.noise_sd_events, other.noise_sd_events),
                                 math.hypot(self.noise_sd_non_events, other.noise_sd_non_events))

    @classmethod
    def exact(cls, counts: BinaryCounts) -> NoisyBinaryCounts:
        """Exact counts as a cell without noise (the public model on them is the trusted beta-binomial's)."""
        return cls(float(counts.events), float(counts.non_events))

    @classmethod
    def with_gaussian_noise(cls, counts: BinaryCounts, noise_sd_events: float, noise_sd_non_events: float,
                            rng: np.random.Generator) -> NoisyBinaryCounts:
        """Simulation helper: exact counts plus numpy Gaussian noise of the given SDs (a real release draws its noise
        with OpenDP in ``privacy/``)."""
        return cls(counts.events + (float(rng.normal(0.0, noise_sd_events)) if noise_sd_events > 0 else 0.0),
                   counts.non_events + (float(rng.normal(0.0, noise_sd_non_events)) if noise_sd_non_events > 0 else 0.0),
                   float(noise_sd_events), float(noise_sd_non_events))

    @classmethod
    def from_release_rows(cls, rows: Iterable[Mapping[str, object]]) -> NoisyBinaryCounts:
        """From the ``release_values`` rows of one (outcome, arm, wave) cell of a ``binary_counts`` query: rows
        ``events`` and ``non_events`` (the derived ``n`` is ignored); a suppressed or value-less row raises
        InsufficientData, a missing or repeated statistic ValueError."""
        def check(stat: str) -> str:
            if stat not in BINARY_STATISTICS:
                raise ValueError(f"a binary release cell holds events and non_events, not {stat!r}")
            return stat

        values, sds = noisy_release_values([r for r in rows if r["statistic"] != "n"], BINARY_STATISTICS, check)
        return cls(**values, **sds)


__all__ = ["BINARY_STATISTICS", "BinaryCountTable", "BinaryCounts", "NoisyBinaryCounts"]
