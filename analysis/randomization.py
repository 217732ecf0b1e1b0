"""Randomization, sample-ratio-mismatch check and baseline balance.

- :func:`block_randomize`: stratified permuted-block randomization (Rosenberger & Lachin,
  *Randomization in Clinical Trials*, 2nd ed. 2016, ch. 3 and 7; CONSORT 2010 item 8b). Within each
  stratum, participants (in the order they are listed, i.e. enrolment order) are allocated in
  blocks; a block holds each arm ``w_arm`` times, where ``w`` is the protocol's allocation ratio
  reduced to the smallest integers, times ``block_multiplier``. Every complete block is exactly
  balanced; only a stratum's last block may be incomplete. Each stratum draws its permutations
  from its own random stream, derived from the seed and the stratum label, so adding a stratum
  never changes another stratum's allocation.
- :func:`srm_test`: Pearson chi-square goodness of fit of observed arm counts against the
  protocol's ratios (Fabijan et al. 2019, "Diagnosing Sample Ratio Mismatch in Online Controlled
  Experiments", KDD; the SRM check of GrowthBook/Optimizely uses the same test). A mismatch is
  flagged at p < 0.0005 by default, the threshold GrowthBook uses, because the check runs often.
- :func:`balance_table`: per arm mean and SD of baseline variables and the standardized mean
  difference against control, d = (m_arm - m_ctl) / sqrt((s_arm^2 + s_ctl^2) / 2)
  (Austin 2009, Stat Med 28:3083, eq. 1); |d| > 0.1 is the usual flag for imbalance.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd
from schemas.errors import FlourishError


class RandomizationError(FlourishError, ValueError):
    """Inputs that cannot be randomized or tested as given."""


def integer_ratios(ratios: Mapping[str, float], *, max_block: int = 64) -> dict[str, int]:
    """Allocation ratios as the smallest integers with the same proportions (2, 1, 1 -> 2, 1, 1; 1.5, 1 -> 3, 2)."""
    if not ratios:
        raise RandomizationError("at least one arm is needed")
    fracs = {a: Fraction(float(r)).limit_denominator(max_block) for a, r in ratios.items()}
    if any(f <= 0 for f in fracs.values()):
        raise RandomizationError(f"allocation ratios must be positive, got {dict(ratios)}")
    lcm = math.lcm(*(f.denominator for f in fracs.values()))
    ints = {a: int(f * lcm) for a, f in fracs.items()}
    g = math.gcd(*ints.values())
    out = {a: v // g for a, v in ints.items()}
    if sum(out.values()) > max_block:
        raise RandomizationError(f"allocation ratios {dict(ratios)} need blocks larger than {max_block}")
    return out


def _stratum_seed(seed: int, stratum: str) -> list[int]:
    digest = hashlib.sha256(stratum.encode("utf-8")).digest()
    return [int(seed) & 0xFFFFFFFF, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()]


def block_randomize(
    participants: pd.DataFrame,
    ratios: Mapping[str, float],
    *,
    seed: int,
    strata: Sequence[str] = (),
    participant_col: str = "participant_id",
    block_multiplier: int = 1,
) -> pd.DataFrame:
    """Allocate each participant to an arm; returns ``participant_col, stratum, arm, block``.

    ``strata`` names columns of ``participants``; the stratum label joins their values with '|'
    (``'all'`` without strata). Same inputs and seed give the same allocation.
    """
    if participant_col not in participants.columns:
        raise RandomizationError(f"participants table has no {participant_col!r} column")
    missing = [s for s in strata if s not in participants.columns]
    if missing:
        raise RandomizationError(f"participants table lacks stratification column(s) {missing}")
    if participants[participant_col].duplicated().any():
        dup = participants.loc[participants[participant_col].duplicated(), participant_col].iloc[0]
        raise RandomizationError(f"participant {dup!r} is listed twice")
    if block_multiplier < 1:
        raise RandomizationError("block_multiplier must be at least 1")
    weights = integer_ratios(ratios)
    block = np.repeat(np.array(list(weights), dtype=object), [w * block_multiplier for w in weights.values()])
    if strata:
        labels = participants[strata[0]].astype(str)
        for col in strata[1:]:
            labels = labels + "|" + participants[col].astype(str)
    else:
        labels = pd.Series("all", index=participants.index)
    arms = np.empty(len(participants), dtype=object)
    blocks = np.empty(len(participants), dtype=np.int64)
    positions = pd.Series(np.arange(len(participants)), index=participants.index)
    for label, idx in positions.groupby(labels.values, sort=True):
        n = len(idx)
        rng = np.random.default_rng(_stratum_seed(seed, str(label)))
        n_blocks = -(-n // len(block))
        seq = np.concatenate([rng.permutation(block) for _ in range(n_blocks)])[:n]
        arms[idx.values] = seq
        blocks[idx.values] = np.arange(n) // len(block) + 1
    return pd.DataFrame({
        participant_col: participants[participant_col].to_numpy(),
        "stratum": labels.to_numpy(),
        "arm": arms,
        "block": blocks,
    })


@dataclass(frozen=True)
class SRMResult:
    """Sample-ratio-mismatch test: Pearson chi-square of observed counts vs planned ratios."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi_square: float
    df: int
    p_value: float
    threshold: float
    mismatch: bool


def srm_test(observed: Mapping[str, int], ratios: Mapping[str, float], *, threshold: float = 0.0005) -> SRMResult:
    """Chi-square = sum (O - E)^2 / E with E = N * ratio / sum(ratios), df = arms - 1 (Fabijan et al. 2019)."""
    from scipy.stats import chi2

    unknown = set(observed) - set(ratios)
    if unknown:
        raise RandomizationError(f"assignments name arm(s) {sorted(unknown)} that the protocol does not have")
    arms = list(ratios)
    obs = np.array([int(observed.get(a, 0)) for a in arms], dtype=float)
    total = obs.sum()
    if total <= 0:
        raise RandomizationError("no assignments to test")
    r = np.array([float(ratios[a]) for a in arms])
    exp = total * r / r.sum()
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = len(arms) - 1
    p = float(chi2.sf(stat, df))
    return SRMResult(
        observed={a: int(o) for a, o in zip(arms, obs)}, expected={a: float(e) for a, e in zip(arms, exp)},
        chi_square=stat, df=df, p_value=p, threshold=threshold, mismatch=p < threshold,
    )


@dataclass(frozen=True)
class BalanceRow:
    variable: str
    arm: str
    n: int
    mean: float
    sd: float
    smd_vs_control: float | None  # None for the control arm itself


def balance_table(
    frame: pd.DataFrame, *, variables: Sequence[str], control: str, arm_col: str = "arm",
    imbalance_smd: float = 0.1,
) -> pd.DataFrame:
    """Per variable x arm: n, mean, SD (ddof=1) and SMD vs control (Austin 2009, eq. 1).

    Returns a tidy frame with an ``imbalanced`` flag (|SMD| > ``imbalance_smd``).
    """
    if arm_col not in frame.columns:
        raise RandomizationError(f"balance table needs an {arm_col!r} column")
    if control not in set(frame[arm_col]):
        raise RandomizationError(f"control arm {control!r} has no participants")
    rows: list[BalanceRow] = []
    for var in variables:
        if var not in frame.columns:
            raise RandomizationError(f"baseline variable {var!r} is not in the data")
        g = frame.groupby(arm_col, sort=True)[var].agg(["count", "mean", "std"])
        m_c, s_c = g.loc[control, "mean"], g.loc[control, "std"]
        for arm, r in g.iterrows():
            smd = None
            if arm != control:
                pooled = math.sqrt((r["std"] ** 2 + s_c**2) / 2.0)
                smd = float((r["mean"] - m_c) / pooled) if pooled > 0 else float("nan")
            rows.append(BalanceRow(var, str(arm), int(r["count"]), float(r["mean"]), float(r["std"]), smd))
    out = pd.DataFrame([r.__dict__ for r in rows])
    out["imbalanced"] = out["smd_vs_control"].abs() > imbalance_smd
    return out


def balance_from_moments(
    cells: Mapping[str, Mapping[str, object]], *, control: str, imbalance_smd: float = 0.1
) -> pd.DataFrame:
    """The balance table from per variable x arm ``Moments`` (a GROUP BY in the warehouse), same
    columns as :func:`balance_table`."""
    rows: list[BalanceRow] = []
    for var in cells:
        by_arm = cells[var]
        if control not in by_arm:
            raise RandomizationError(f"control arm {control!r} has no baseline {var!r} values")
        c = by_arm[control]
        for arm in sorted(by_arm):
            m = by_arm[arm]
            smd = None
            if arm != control:
                pooled = math.sqrt((m.variance + c.variance) / 2.0)  # type: ignore[attr-defined]
                smd = float((m.mean - c.mean) / pooled) if pooled > 0 else float("nan")  # type: ignore[attr-defined]
            rows.append(BalanceRow(var, str(arm), int(m.n), float(m.mean), float(m.sd), smd))  # type: ignore[attr-defined]
    out = pd.DataFrame([r.__dict__ for r in rows], columns=["variable", "arm", "n", "mean", "sd", "smd_vs_control"])
    out["imbalanced"] = out["smd_vs_control"].abs() > imbalance_smd
    return out
