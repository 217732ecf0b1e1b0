r"""Public tier of a binary outcome: risk difference, risk ratio and odds ratio from DP-released counts only.

The release (``privacy/release.py``, query kind ``binary_counts``) publishes, per arm a and follow-up wave w, the
participants with the event and those without, each plus independent Gaussian noise of a known SD:
e~ = e + N(0, s_e^2), f~ = f + N(0, s_f^2) (e events, f = n - e non-events). Noise makes the released counts
fractional and can make either negative (so "events > n"); nothing here clamps them before the model sees them.

Model (noise-aware, as Bernstein & Sheldon 2018, "Differentially private Bayesian inference for exponential
families", NeurIPS: the released statistics' likelihood includes the noise; here the latent counts are integrated
out exactly rather than through a Gaussian approximation of the sufficient statistics):

    risk p ~ Uniform(0, 1),  cell size n with prior proportional to n + 1,  e | n, p ~ Binomial(n, p),
    e~ | e ~ Normal(e, s_e^2),  f~ | f ~ Normal(n - e, s_f^2),  independently per cell.

Under these priors the latent counts (e, f) are a priori flat on {0, 1, 2, ...}^2 (the prior mass of (e, f) is
pi(n) C(n, e) B(e + 1, f + 1) = pi(n) / (n + 1) = constant) and p | e, f ~ Beta(e + 1, f + 1) (the conjugate
beta-binomial of ``analysis/binary.py`` with its default uniform prior). The posterior therefore factorises:

    e | e~ ~ Normal(e~, s_e^2) truncated to e >= 0,   f | f~ ~ Normal(f~, s_f^2) truncated to f >= 0,
    p | e, f ~ Beta(e + 1, f + 1),

(a release with Laplace noise, ``privacy.mechanism: laplace``, is read as Gaussian noise of the same SD, an
approximation, as the continuous public model reads it), with the integer lattice of the counts relaxed to the
half-line (at noise SDs of several counts, which every
release at epsilon <= a few has, the lattice changes the posterior by far less than its Monte Carlo error; with
no noise the model is exactly the trusted tier's beta-binomial). The truncation at zero is how a negative noisy
count is handled: it is evidence that the count is small, never a negative risk. Draws of p for the treated arm
and for control give the risk difference p1 - p2 (risk units: posterior mean, SD, equal-tailed interval,
P(benefit)), the risk ratio p1 / p2 and the odds ratio (posterior median and equal-tailed interval), by seeded
Monte Carlo (``draws`` per comparison, default 100,000: the Monte Carlo SE of a 95% interval end is about 0.01
posterior SDs).

Why this and not the delta method: a delta-method interval (the known noise variances added to the counts'
sampling variances, e.g. Var(p~) ~ p(1 - p)/n + (f^2 s_e^2 + e^2 s_f^2)/n^4) needs a rule for a noisy count below
0 or above n and is symmetric where the posterior is not (rare events, small cells, epsilon 0.5); the latent-count
posterior needs neither, costs a few milliseconds, and has the trusted beta-binomial as its zero-noise limit.
The delta method is kept for :func:`binary_width_ratio` (a planning figure the release prints), where a clamped
plug-in is documented there. Calibration over simulated studies: ``tests/analysis/test_public_binary.py`` (400
studies per setting, 300 and 1,000 per arm, epsilon 1 and 0.5) and ``benchmarks/calibration.py --binary``.

Not estimable (a row with its reason, never a number):

- a cell the release suppressed (its noisy n below the protocol's min_cell_size): that wave's rows;
- a ratio whose logarithm the release cannot support: when the posterior probability that a count the ratio
  divides by or takes the log of (events of either arm for the risk ratio; events and non-events for the odds
  ratio) is below 1 exceeds the interval's tail probability (1 - level) / 2, the released count is consistent with
  zero, the trusted tier's zero-cell refusal (``analysis.binary.ZeroCellRefused``) cannot be ruled out, and the
  ratio's interval would be the uniform prior's. The risk difference stays estimable (as Newcombe's interval does
  on the trusted tier with a zero cell).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisInputError, InsufficientData
from analysis.results import Diagnostics
from schemas.binary_stats import NoisyBinaryCounts
from schemas.results import LONG_RUN, Effect

__all__ = ["PUBLIC_BINARY_METHOD", "PublicBinaryResult", "RATIO_METHODS", "binary_width_ratio", "count_below_one",
           "fit_public_binary", "latent_count_draws", "risk_difference_posterior", "risk_draws"]

PUBLIC_BINARY_METHOD = "bayes_binomial_noise_aware"
"""The method label of the public tier's risk-difference rows of a binary outcome (risk units)."""
RATIO_METHODS = {"risk_ratio": "risk_ratio_noise_aware", "odds_ratio": "odds_ratio_noise_aware"}


def latent_count_draws(released: np.ndarray | float, noise_sd: np.ndarray | float, size: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Draws of a latent count c >= 0 given its released value c~ = c + N(0, sd^2) and a flat prior on [0, inf):
    Normal(c~, sd^2) truncated to [0, inf), by inversion in log space (exact in the far tail, where a noisy count
    many SDs below 0 would make a plain inversion return infinity). Vectorised: ``released`` and ``noise_sd`` of
    shape S give draws of shape S + (size,). A zero SD gives the released value, clamped at 0 (an exact count)."""
    from scipy.special import log_ndtr, ndtri_exp

    m = np.asarray(released, dtype=float)[..., None]
    sd = np.asarray(noise_sd, dtype=float)[..., None]
    u = rng.random(np.broadcast_shapes(m.shape, sd.shape)[:-1] + (size,))
    with np.errstate(divide="ignore", invalid="ignore"):
        # W = -(c - m) / sd is a standard normal truncated to W < m / sd: W = Phi^-1(u Phi(m / sd))
        w = ndtri_exp(np.log(u) + log_ndtr(np.where(sd > 0, m / np.where(sd > 0, sd, 1.0), 0.0)))
        draws = np.where(sd > 0, m - sd * w, np.maximum(m, 0.0))
    return np.maximum(draws, 0.0)  # rounding can leave -1e-13 at the boundary


def risk_draws(events: np.ndarray | float, non_events: np.ndarray | float, sd_events: np.ndarray | float,
               sd_non_events: np.ndarray | float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Posterior draws of a cell's risk (module docstring): latent counts, then p ~ Beta(e + 1, f + 1)."""
    e = latent_count_draws(events, sd_events, size, rng)
    f = latent_count_draws(non_events, sd_non_events, size, rng)
    return rng.beta(e + 1.0, f + 1.0)


def count_below_one(released: float, noise_sd: float) -> float:
    """P(latent count < 1 | released value) under the truncated-normal posterior (1 or 0 for an exact count)."""
    from scipy.special import log_ndtr

    if noise_sd <= 0:
        return 1.0 if released < 1 else 0.0
    lo = float(log_ndtr(released / noise_sd))  # log P(c >= 0) = log Phi(m / sd)
    tail = float(log_ndtr((released - 1.0) / noise_sd))  # log P(c >= 1) = log Phi((m - 1) / sd)
    return float(-math.expm1(tail - lo))


@dataclass(frozen=True)
class RiskDifferencePosterior:
    """Posterior summaries of p1 - p2 over any leading shape (one study, or many simulated ones)."""

    mean: np.ndarray
    sd: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    p_below_zero: np.ndarray


def risk_difference_posterior(treated: Sequence[np.ndarray | float], control: Sequence[np.ndarray | float], *,
                              level: float = 0.95, draws: int = 100_000,
                              rng: np.random.Generator) -> tuple[RiskDifferencePosterior, np.ndarray, np.ndarray]:
    """The posterior of the risk difference from released (events, non_events, sd_events, sd_non_events) of the
    treated and the control cell (each entry a float or an array of the same leading shape), vectorised over the
    leading shape: the summaries, and the risk draws of each arm (shape leading + (draws,))."""
    p1 = risk_draws(*treated, size=draws, rng=rng)
    p2 = risk_draws(*control, size=draws, rng=rng)
    rd = p1 - p2
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(rd, [tail, 1 - tail], axis=-1)
    return RiskDifferencePosterior(rd.mean(axis=-1), rd.std(axis=-1, ddof=1), lo, hi, (rd < 0).mean(axis=-1)), p1, p2


@dataclass(frozen=True)
class PublicBinaryResult:
    """The public tier's rows of one binary outcome, and the released cells they came from."""

    outcome: str
    control: str
    arms: tuple[str, ...]
    waves: tuple[str, ...]
    effects: tuple[Effect, ...]
    diagnostics: Diagnostics
    cells: Mapping[tuple[str, str], NoisyBinaryCounts]
    draws: int
    seed: int
    noise_aware: bool = True

    def effect(self, arm: str, wave: str = LONG_RUN, method: str = PUBLIC_BINARY_METHOD) -> Effect:
        for e in self.effects:
            if (e.arm, e.wave, e.method) == (arm, wave, method):
                return e
        raise KeyError(f"no {method} effect for arm {arm!r} at wave {wave!r}")


def _check_cell(cell: NoisyBinaryCounts, who: str, outcome: str, wave: str) -> None:
    if type(cell) is not NoisyBinaryCounts:
        raise AnalysisInputError(f"the released cell of {who} at {wave} must be NoisyBinaryCounts, got "
                                 f"{type(cell).__name__}")
    if not cell.n >= 1:
        raise InsufficientData(f"the released counts of {outcome} at {wave}", 1, float(cell.n),
                               f"arm {who!r} (its noisy n)")


def _ratio_refusal(measure: str, cells: Mapping[str, NoisyBinaryCounts], tail: float) -> str | None:
    """Why a ratio cannot be estimated from these released cells (module docstring), or None."""
    needs = ("events",) if measure == "risk_ratio" else ("events", "non_events")
    for arm, cell in cells.items():
        for stat in needs:
            value, sd = getattr(cell, stat), getattr(cell, f"noise_sd_{stat}")
            p0 = count_below_one(value, sd)
            if p0 > tail:
                return (f"the released {stat.replace('_', '-')} of {arm} ({value:.1f}, noise SD {sd:.1f}) are "
                        f"consistent with zero (posterior probability {p0:.2f} that the count is below 1), so the "
                        f"{measure.replace('_', ' ')}'s logarithm is not supported by the release; its interval "
                        "would be the prior's. The risk difference is reported")
    return None


def fit_public_binary(
    cells: Mapping[tuple[str, str], NoisyBinaryCounts],
    *,
    control: str,
    waves: Sequence[str],
    outcome: str = "outcome",
    direction: str = "lower_is_better",
    level: float = 0.95,
    mcid: float | None = None,
    rope: float | None = None,
    unusable: Mapping[str, str] | None = None,
    draws: int = 100_000,
    seed: int = 20261122,
    noise_aware: bool = True,
) -> PublicBinaryResult:
    """Every treated arm against ``control`` at every wave of ``waves`` (the last also as ``long_run``) from the
    released cells (module docstring). ``unusable`` maps a wave to why its cells cannot be used (a suppressed cell):
    its rows say so. ``mcid``/``rope`` are in risk units (ignored unless in (0, 1)). ``noise_aware=False`` treats the
    released counts as exact (clamped at 0): the naive model, for calibration comparisons only."""
    if direction not in ("higher_is_better", "lower_is_better"):
        raise ValueError(f"direction must be higher_is_better or lower_is_better, got {direction!r}")
    if not 0.5 < level < 1:
        raise ValueError(f"the interval level must be in (0.5, 1), got {level}")
    if draws < 10_000:
        raise ValueError(f"draws must be at least 10,000 for stable interval ends, got {draws}")
    started = time.perf_counter()
    unusable = dict(unusable or {})
    arms = [control] + sorted({a for a, _ in cells} - {control})
    if len(arms) < 2:
        raise AnalysisInputError(f"need the control arm {control!r} and at least one other arm in the released cells")
    if not waves:
        raise AnalysisInputError(f"the release of {outcome} covers no follow-up wave")
    missing = [(a, w) for a in arms for w in waves if w not in unusable and (a, w) not in cells]
    if missing:
        raise AnalysisInputError(f"released cells missing for {missing}")
    mcid = mcid if mcid is not None and 0 < mcid < 1 else None
    rope = rope if rope is not None and 0 < rope < 1 else None
    tail = (1.0 - level) / 2
    method_of = {"risk_difference": PUBLIC_BINARY_METHOD, **RATIO_METHODS}
    effects: list[Effect] = []
    rng = np.random.default_rng(seed)
    for w in waves:
        labels = [w, LONG_RUN] if w == waves[-1] else [w]
        for a in arms[1:]:
            base = dict(outcome=outcome, arm=a, control=control, tier="public", interval_level=level,
                        direction=direction)
            why = unusable.get(w)
            if why is None:
                try:
                    for who in (a, control):
                        _check_cell(cells[(who, w)], who, outcome, w)
                except InsufficientData as exc:
                    why = str(exc)
            if why is not None:
                effects += [Effect(**base, wave=label, method=m, reason=why) for label in labels
                            for m in method_of.values()]
                continue
            t, c = cells[(a, w)], cells[(control, w)]
            if not noise_aware:
                t, c = (NoisyBinaryCounts(max(x.events, 0.0), max(x.non_events, 0.0)) for x in (t, c))
            post, p1, p2 = risk_difference_posterior(
                (t.events, t.non_events, t.noise_sd_events, t.noise_sd_non_events),
                (c.events, c.non_events, c.noise_sd_events, c.noise_sd_non_events), level=level, draws=draws, rng=rng)
            rd = p1 - p2
            benefit = -rd if direction == "lower_is_better" else rd
            counts = dict(n_arm=max(0, int(round(t.n))), n_control=max(0, int(round(c.n))))
            rows = [dict(method=PUBLIC_BINARY_METHOD, estimate=float(post.mean), sd=float(post.sd),
                         lower=float(post.lower), upper=float(post.upper), p_benefit=float(np.mean(benefit > 0)),
                         p_above_mcid=None if mcid is None else float(np.mean(benefit > mcid)),
                         p_in_rope=None if rope is None else float(np.mean(np.abs(rd) < rope)), **counts)]
            for measure, method in RATIO_METHODS.items():
                refusal = _ratio_refusal(measure, {a: t, control: c}, tail)
                if refusal is not None:
                    rows.append(dict(method=method, reason=f"the {measure.replace('_', ' ')} is refused: {refusal}"))
                    continue
                ratio = p1 / p2 if measure == "risk_ratio" else (p1 / (1 - p1)) / (p2 / (1 - p2))
                lo, med, hi = np.quantile(ratio, [tail, 0.5, 1 - tail])
                rows.append(dict(method=method, estimate=float(med), lower=float(lo), upper=float(hi), **counts))
            effects += [Effect(**base, wave=label, **row) for label in labels for row in rows]
    seconds = time.perf_counter() - started
    # conjugate draws: no chains, so no R-hat, ESS or divergences to gate on
    diagnostics = Diagnostics(True, float("nan"), float("inf"), 0, (), seconds)
    return PublicBinaryResult(outcome, control, tuple(arms), tuple(waves), tuple(effects), diagnostics, dict(cells),
                              draws, seed, noise_aware)


def binary_width_ratio(treated: NoisyBinaryCounts, control: NoisyBinaryCounts) -> float:
    """How much wider the public risk-difference interval is than the same comparison's without DP noise, by the
    delta method: sqrt((V_s + V_n) / V_s) with V_s = sum p (1 - p) / n (sampling) and V_n = sum (f^2 s_e^2 +
    e^2 s_f^2) / n^4 (the noise through p = e / (e + f)). Plug-in rule: each released count clamped at 0 (a noisy
    count below 0 is read as 0 events or 0 non-events) and p at [1/(n+1), n/(n+1)] so a clamped cell keeps a positive
    sampling variance. Released values only (post-processing); raises InsufficientData for a cell with n < 1."""
    v_s = v_n = 0.0
    for who, cell in (("treated", treated), ("control", control)):
        e, f = max(cell.events, 0.0), max(cell.non_events, 0.0)
        n = e + f
        if not n >= 1:
            raise InsufficientData("a public interval width", 1, float(n), f"the {who} cell (its noisy n, clamped)")
        p = min(max(e / n, 1 / (n + 1)), n / (n + 1))
        v_s += p * (1 - p) / n
        v_n += (f * f * cell.noise_sd_events ** 2 + e * e * cell.noise_sd_non_events ** 2) / n ** 4
    return math.sqrt((v_s + v_n) / v_s)
