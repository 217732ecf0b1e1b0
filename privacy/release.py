"""Differentially private releases at the participant level, with OpenDP's noise and privacy maps.

Privacy unit: read from the protocol (``privacy.unit``, a ``schemas.privacy_values.PrivacyUnit``); today one
participant (all their rows, across waves, instruments and events). Neighbouring data sets differ by adding or
removing one participant (OpenDP's symmetric distance on the participant table). The loss each query may spend
and the loss OpenDP's privacy map reports are ``PrivacyLoss`` values that carry their measure (zCDP rho for
Gaussian noise, pure epsilon for Laplace noise), never a bare float.

How a query is made private
---------------------------
1. **Bound contributions per participant before aggregating** (in DuckDB, ``exact_values`` below): each
   participant gets one arm (their first assignment), at most one score per outcome per wave (the latest
   scored), one clipped telemetry summary per surrogate, and every value is clamped to the declared bounds.
   A binary outcome's value is an event indicator (0/1, or the score against its cut-off): no bounds are needed,
   and per wave a participant is in exactly one of two cells, events or non-events (``plan_binary_counts``).
2. **Aggregate** to a vector of cell statistics over public keys (arms and waves come from the protocol, so
   no private partition selection is needed; an empty cell is a 0, not a missing key).
3. **Normalize**: each coordinate i has a public per-participant bound ``b_i`` (1 for a count, ``max|x|`` for a
   sum of x, ``max x^2`` for a sum of squares; for the centred paired moments h and h^2); dividing by ``b_i``
   makes every participant's contribution to every coordinate at most 1 in absolute value (the paired moments
   divide by a larger ``u_i``, see "Where the budget goes"). A participant is in one arm, so they change at most ``k``
   coordinates (``Query.touches``, derived from the plan: e.g. 2 per wave for n and sum, 1 per wave for a binary
   outcome's events/non-events histogram). The L2 sensitivity of the normalized vector is therefore ``sqrt(k)``
   and the L1 sensitivity ``k``.
4. **Noise**: OpenDP ``make_gaussian`` over ``vector_domain(atom_domain(float, nan=False))`` with
   ``l2_distance`` (zCDP, ``map(sqrt(k))`` gives rho) or ``make_laplace`` with ``l1_distance`` (pure DP,
   ``map(k)`` gives epsilon). The scale is calibrated and the privacy map is checked against the query's share
   of the budget BEFORE the ledger reservation; noise is drawn only after the reservation commits. OpenDP's
   samplers are exact (no floating-point attack of Mironov 2012); noise is never drawn with numpy.
5. **Post-processing** (free): values are multiplied back by ``b_i``; ``noise_sd_i = scale * b_i`` (times
   sqrt(2) for Laplace); a cell whose noisy count is below the protocol's ``min_cell_size`` is suppressed
   (policy, not protection: the DP guarantee already holds); means are noisy sum / noisy count with a
   delta-method noise_sd.

Where the budget goes (``split_budget``, ``plan_paired``)
--------------------------------------------------------
A release spends its budget on the statistics the plan's models use, in proportion to what each does to the
variance of the effects the plan reports, rather than evenly over every query. The derivation (zCDP, Gaussian
noise): coordinate j with per-participant bound b_j and normaliser u_j (reach r_j = b_j / u_j <= 1) gets noise
SD sigma u_j and spends rho_j = r_j^2 / (2 sigma^2); rhos add (Bun & Steinke 2016, Lemma 2.3), and a query's
isotropic noise on T / u is exactly this per-coordinate split (its L2 sensitivity is sqrt(sum of one arm's r_j^2),
as a participant touches only their arm's keys). An effect's noise variance is sum_j c_j^2 b_j^2 / (2 rho_j), with
c_j = d effect / d T_j. Minimising sum_t w_t Var_t (w_t the plan's weight of effect t) subject to sum rho_j = rho
(Lagrange) gives

    rho_j proportional to sqrt(w_t) * b_j |c_j|          (Gaussian / zCDP: noise variance ~ 1 / rho)

(under pure DP with Laplace noise the variance goes as 1 / epsilon^2 and the optimum is epsilon_j proportional to
(w_t c_j^2 b_j^2)^(1/3); Laplace releases use the Gaussian split, which is not their optimum). The derivatives are
taken at public planning values (``PLANNING_COST``), never from the data: a cell's ANCOVA effect
(ybar_a - ybar_c) - beta (xbar_a - xbar_c) has |c| b = h / n for sum_y, beta h / n for sum_x (beta = 0.5) and
|adjusted centred mean| / n for n (0.25 h); the second moments only enter through the slope and the residual
variance and get 0.2 h / n each. The common 1 / n cancels. Weights: the primary's long-run effect 1, an earlier
wave 1/400 of its outcome's, a secondary outcome 1/100 of the primary's (so sqrt: 5% and 10% of the rho per unit
cost). The queries no model reads (CONSORT counts, score moments and bands, telemetry) share ``DESCRIPTIVE_SHARE``
(10%) by their old kind weights. The paired moments are of values centred at the bounds' midpoint c, which halves
the bound of a sum (h, not max|x|) and quarters that of a square. On the realistic simulator (WHO-5 primary, three
secondary outcomes, five follow-up waves) this gives the primary's paired moments 69% of a release's rho, and at
epsilon 1 and 10,000 participants a public interval of the long-run effect 1.24x as wide as the trusted MMRM's
(``benchmarks/calibration.py``; issue 20 measured 5.1x with the earlier sampled model on an even split of uncentred
statistics).

Steps 1-3 (the sensitivity argument) are ours, not OpenDP's proofs; they are tested by
``tests/privacy/test_release.py`` (adding any participant, including one with duplicate and
out-of-range rows, moves the normalized vector by at most the query's L2 and L1 sensitivities: sqrt(k) and k
unweighted, sqrt(sum r_j^2) and sum r_j over one arm for the paired moments) and by an empirical
audit (``tests/privacy/test_audit.py``). OpenDP features enabled: ``contrib``, in :func:`opendp` (see there why).

Floating point: DuckDB sums doubles in parallel, so an untouched cell can move by rounding (~1e-15 relative)
when a participant is added elsewhere; the privacy map is given ``sqrt(k) * (1 + 1e-9)`` to cover rounding
of that size at study scale (up to millions of participants). Adversarially crafted values can make float
sums more sensitive than the real-number analysis says (Casacuberta et al. 2022); bounds are small
instrument ranges here, but that residual risk is stated rather than proven away.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import duckdb

from privacy.budget import Accounting, Mechanism, Spend, budget_loss, cancel_reservation, finalize, reserve
from privacy.errors import InvalidPrivacyParameter, PrivacyError, ReleaseRefused, UnboundedColumn
from schemas.privacy_values import Bounds, PrivacyLoss, PrivacyUnit
from schemas.protocol import StudyProtocol, SurrogateMetric
from schemas.sqltext import ident, literal, number
from schemas.warehouse import relations, transaction

__all__ = ["Bounds", "CellKey", "Query", "Calibrated", "ReleaseRow", "ReleaseResult", "resolve_outcome_bounds",
           "MODEL_KINDS", "plan_binary_counts", "standard_plan", "split_budget", "exact_values", "calibrate", "draw", "to_rows", "release_queries",
           "release_standard_set", "opendp", "installed_opendp_version", "OPENDP_FEATURES"]

OPENDP_FEATURES = ("contrib",)
DEFAULT_BANDS = 5
# releases.min_cell_size is an INTEGER column; a protocol value past it would fail only when the release is
# written, after the budget was reserved and the noise drawn, so it is refused before reserving
_MAX_MIN_CELL_SIZE = 2**31 - 1
# query kinds whose cells are statistics of scores (a release of them on a warehouse without scores is noise)
_SCORE_KINDS = ("score_moments", "score_bands", "paired_moments", "binary_counts")
# the queries the plan's models read (the public tier's ANCOVA and binomial model): the budget split's model share
MODEL_KINDS = ("paired_moments", "binary_counts")
# kinds whose coordinates carry the allocation rule's per-coordinate normalisers
_WEIGHTED_KINDS = MODEL_KINDS

# The documented plan: the share of a release's budget each kind of query gets (normalized over the kinds
# the protocol has; within a kind split evenly over outcomes/surrogates). The paired moments carry the
# primary analysis (noise-aware ANCOVA on DP sufficient statistics) and get the largest share.
DEFAULT_WEIGHTS: dict[str, float] = {
    "consort_counts": 1.0,
    "score_moments": 2.0,
    "score_bands": 1.0,
    "telemetry_means": 1.0,
    "paired_moments": 3.0,
    "binary_counts": 3.0,
}


def resolve_outcome_bounds(protocol: StudyProtocol, known: Mapping[str, Bounds | tuple[float, float]] | None = None,
                           outcomes: Sequence[str] | None = None) -> dict[str, Bounds]:
    """Clipping bounds per outcome: from ``known`` (e.g. instruments' scale range) else the protocol's
    ``lower_bound``/``upper_bound``; an outcome with neither is refused (UnboundedColumn), never guessed.

    By default every continuous outcome; a binary outcome needs none: its release counts events (0/1 by
    construction, :func:`plan_binary_counts`), so no score of it is summed."""
    known = dict(known or {})
    out: dict[str, Bounds] = {}
    names = list(outcomes) if outcomes is not None else [o.name for o in protocol.outcomes if not o.binary]
    for name in names:
        if name in known:
            b = known[name]
            out[name] = b if isinstance(b, Bounds) else Bounds(float(b[0]), float(b[1]), name)
            continue
        try:
            o = protocol.outcome(name)
        except KeyError:
            raise UnboundedColumn(f"outcome {name!r} is not in the protocol and has no declared bounds") from None
        if o.lower_bound is None or o.upper_bound is None:
            raise UnboundedColumn(
                f"outcome {name!r} has no declared clipping bounds: give lower_bound and upper_bound in the "
                "protocol or pass its score range (e.g. from the instrument) before releasing it"
            )
        out[name] = Bounds(o.lower_bound, o.upper_bound, name)
    return out


@dataclass(frozen=True)
class CellKey:
    outcome: str | None
    arm: str | None
    wave: str | None
    statistic: str


@dataclass(frozen=True)
class Query:
    """The public plan of one DP query: its cells, per-coordinate bounds and the participant's reach."""

    name: str
    kind: str
    outcome: str | None
    keys: tuple[CellKey, ...]
    bounds: tuple[float, ...]          # per-participant max |contribution| to each coordinate
    touches: int                       # max coordinates one participant changes
    count_index: tuple[int, ...]       # for each coordinate, the coordinate holding its cell's count
    value_bounds: Bounds | None = None
    bands: tuple[float, ...] = ()      # band edges for score_bands
    # Per-coordinate normalisers u_j (default: the bounds). The mechanism perturbs T_j / u_j with one noise scale,
    # so coordinate j's noise SD is scale * u_j and its share of the query's loss is (b_j / u_j)^2 / sum (module
    # docstring, "Where the budget goes"). Only the paired moments use them (a participant touches one arm's keys).
    scales: tuple[float, ...] = ()
    center: float = 0.0                # paired moments: the public centre subtracted from every value
    weight: float = 1.0                # the plan's weight of the effects this query serves (budget split)
    # True when the coordinates of one (arm, wave) are a histogram: a participant is in at most one of them (the
    # binary counts' events and non-events), so a wave costs the largest reach of its cells, not their sum
    exclusive: bool = False

    def __post_init__(self) -> None:
        if not (len(self.keys) == len(self.bounds) == len(self.count_index)) or not self.keys:
            raise PrivacyError(f"query {self.name!r} is malformed")
        if any(not math.isfinite(b) or b <= 0 for b in self.bounds):
            raise UnboundedColumn(f"query {self.name!r} has a coordinate without a finite positive bound")
        if self.scales:
            if len(self.scales) != len(self.bounds) or any(not math.isfinite(u) or u < b * (1 - 1e-12)
                                                             for u, b in zip(self.scales, self.bounds, strict=True)):
                raise PrivacyError(f"query {self.name!r} needs one normaliser per coordinate, each >= its bound")
            if self.kind not in _WEIGHTED_KINDS:
                raise PrivacyError(f"query {self.name!r}: per-coordinate normalisers are defined for "
                                   f"{' and '.join(_WEIGHTED_KINDS)} only")

    @property
    def normalizers(self) -> tuple[float, ...]:
        """u_j: what each coordinate is divided by before the noise (the bound, unless the plan weights it)."""
        return self.scales or self.bounds

    @property
    def reach(self) -> tuple[float, ...]:
        """r_j = b_j / u_j <= 1: the most one participant moves normalised coordinate j."""
        return tuple(b / u for b, u in zip(self.bounds, self.normalizers, strict=True))

    def _per_arm(self, power: int) -> float:
        """max over arms of sum over the coordinates one participant of the arm can move of r_j^power; an exclusive
        query's participant moves one cell per (arm, wave), so each wave adds its largest r_j^power."""
        slots: dict[tuple, float] = {}
        for i, (key, r) in enumerate(zip(self.keys, self.reach, strict=True)):
            slot = (key.arm, key.wave) if self.exclusive else (key.arm, i)
            slots[slot] = max(slots.get(slot, 0.0), r ** power)
        per: dict[str | None, float] = {}
        for (arm, _), v in slots.items():
            per[arm] = per.get(arm, 0.0) + v
        return max(per.values())

    @property
    def l2_sensitivity(self) -> float:
        """sqrt(k) for an unweighted query (module docstring, step 3). A weighted query (the paired moments, the
        binary counts) is touched by a participant only in the keys of their one arm, each by at most r_j:
        sqrt(max_arm sum r_j^2), the sum over one cell per wave for an exclusive query."""
        return math.sqrt(self.touches) if not self.scales else math.sqrt(self._per_arm(2))

    @property
    def l1_sensitivity(self) -> float:
        return float(self.touches) if not self.scales else self._per_arm(1)


def _outcome_waves(protocol: StudyProtocol, outcome: str) -> list[str]:
    o = protocol.outcome(outcome)
    if o.instrument is None:
        return list(protocol.wave_names)
    return [w.name for w in protocol.waves if o.instrument in w.instruments]


def _cells(spec: list[tuple[CellKey, float, bool]]) -> tuple[tuple[CellKey, ...], tuple[float, ...], tuple[int, ...]]:
    """(key, bound, is_count) in cell order, count first within a cell; returns keys, bounds, count_index."""
    keys, bounds, count_idx = [], [], []
    last_count = -1
    for key, bound, is_count in spec:
        if is_count:
            last_count = len(keys)
        keys.append(key)
        bounds.append(bound)
        count_idx.append(last_count)
    return tuple(keys), tuple(bounds), tuple(count_idx)


def plan_consort(protocol: StudyProtocol) -> Query:
    spec = []
    for arm in protocol.arm_names:
        spec.append((CellKey(None, arm, None, "assigned"), 1.0, True))
        for wave in protocol.wave_names:
            spec.append((CellKey(None, arm, wave, "responded"), 1.0, True))
    keys, bounds, idx = _cells(spec)
    return Query("consort_counts", "consort_counts", None, keys, bounds, 1 + len(protocol.wave_names), idx)


def plan_score_moments(protocol: StudyProtocol, outcome: str, b: Bounds) -> Query:
    waves = _outcome_waves(protocol, outcome)
    spec = []
    for arm in protocol.arm_names:
        for wave in waves:
            spec.append((CellKey(outcome, arm, wave, "n"), 1.0, True))
            spec.append((CellKey(outcome, arm, wave, "sum"), b.max_abs, False))
    keys, bounds, idx = _cells(spec)
    return Query(f"score_moments:{outcome}", "score_moments", outcome, keys, bounds, 2 * len(waves), idx, b)


def band_edges(b: Bounds, bands: int = DEFAULT_BANDS) -> tuple[float, ...]:
    return tuple(b.lower + (b.upper - b.lower) * i / bands for i in range(bands + 1))


def plan_score_bands(protocol: StudyProtocol, outcome: str, b: Bounds, edges: Sequence[float] | None = None) -> Query:
    edges = tuple(edges) if edges is not None else band_edges(b)
    if len(edges) < 2 or list(edges) != sorted(edges) or not all(math.isfinite(e) for e in edges):
        raise PrivacyError(f"band edges for {outcome!r} must be finite and increasing, got {edges}")
    waves = _outcome_waves(protocol, outcome)
    spec = []
    for arm in protocol.arm_names:
        for wave in waves:
            for i in range(len(edges) - 1):
                spec.append((CellKey(outcome, arm, wave, f"band[{edges[i]:g},{edges[i + 1]:g})"), 1.0, True))
    keys, bounds, idx = _cells(spec)
    return Query(f"score_bands:{outcome}", "score_bands", outcome, keys, bounds, len(waves), idx, b, edges)


def plan_telemetry(protocol: StudyProtocol, surrogate: SurrogateMetric) -> Query:
    b = Bounds(surrogate.lower_bound, surrogate.upper_bound, f"surrogate {surrogate.name}")
    spec = []
    for arm in protocol.arm_names:
        spec.append((CellKey(surrogate.name, arm, None, "n"), 1.0, True))
        spec.append((CellKey(surrogate.name, arm, None, "sum"), b.max_abs, False))
    keys, bounds, idx = _cells(spec)
    return Query(f"telemetry_means:{surrogate.name}", "telemetry_means", surrogate.name, keys, bounds, 2, idx, b)


PAIRED_STATISTICS = ("n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy")

# Planning values of the allocation rule (module docstring, "Where the budget goes"); public constants, never
# read from the data. |d effect / d statistic| per cell, times the statistic's bound, in units of the half-range h:
# sum_y 1 (the arm mean), sum_x the planning ANCOVA slope 0.5, n the planning distance 0.25 h of the adjusted centred
# mean from the centre; the second moments enter only through the slope and the residual variance and get 0.2 each.
PLANNING_COST = {"n": 0.25, "sum_x": 0.5, "sum_y": 1.0, "sum_xx": 0.2, "sum_yy": 0.2, "sum_xy": 0.2}
# The plan's weight of an effect's (relative) variance: the primary's long-run effect 1; an earlier wave 1/400 and a
# secondary outcome 1/100 of its outcome's (so each gets sqrt of that, 5% and 10%, of the rho per unit cost).
EARLIER_WAVE_WEIGHT = 1 / 400
SECONDARY_OUTCOME_WEIGHT = 1 / 100


def plan_paired(protocol: StudyProtocol, outcome: str, b: Bounds, through_wave: str | None = None) -> Query | None:
    """Per (arm, wave after baseline): the paired moments over participants with baseline x and wave y, of the values
    centred at the public midpoint c of the bounds (so one participant moves a sum by at most the half-range h and a
    square by h^2, not max|x| and max|x|^2), with per-coordinate normalisers from the allocation rule.

    ``through_wave`` (a planned interim release: its ``after_wave``) keeps the waves up to it, the last of which is
    then the release's long-run target: waves not yet closed would be noise alone."""
    waves = _outcome_waves(protocol, outcome)
    base = protocol.baseline_wave
    if base not in waves:
        return None
    if through_wave is not None:
        if through_wave not in protocol.wave_names:
            raise PrivacyError(f"wave {through_wave!r} is not a wave of the protocol {protocol.wave_names}")
        upto = protocol.wave_names.index(through_wave)
        waves = [w for w in waves if protocol.wave_names.index(w) <= upto]
    later = [w for w in waves if w != base]
    if not later:
        return None
    o = protocol.outcome(outcome)
    long_run = o.wave if o.wave in later else later[-1]
    center = (b.lower + b.upper) / 2
    h = (b.upper - b.lower) / 2
    per = {"n": 1.0, "sum_x": h, "sum_y": h, "sum_xx": h * h, "sum_yy": h * h, "sum_xy": h * h}
    # rho_j proportional to p_j = sqrt(wave weight) * planning cost; the normaliser gives reach r_j = sqrt(p_j / max p)
    p = {(w, stat): math.sqrt(1.0 if w == long_run else EARLIER_WAVE_WEIGHT) * PLANNING_COST[stat]
         for w in later for stat in PAIRED_STATISTICS}
    top = max(p.values())
    spec, scales = [], []
    for arm in protocol.arm_names:
        for wave in later:
            for stat in PAIRED_STATISTICS:
                spec.append((CellKey(outcome, arm, wave, stat), per[stat], stat == "n"))
                scales.append(per[stat] / math.sqrt(p[(wave, stat)] / top))
    keys, bounds, idx = _cells(spec)
    weight = 1.0 if outcome == protocol.primary_outcome.name else SECONDARY_OUTCOME_WEIGHT
    return Query(f"paired_moments:{outcome}", "paired_moments", outcome, keys, bounds,
                 len(PAIRED_STATISTICS) * len(later), idx, b, scales=tuple(scales), center=center, weight=weight)


def _followup_waves(protocol: StudyProtocol, outcome: str, through_wave: str | None) -> list[str]:
    """The outcome's follow-up waves (not the baseline, up to its wave of interest), as the trusted tier analyses
    them (``analysis.plan.followup_waves``), and with ``through_wave`` those up to it."""
    o = protocol.outcome(outcome)
    names = protocol.wave_names
    last = names.index(o.wave) if o.wave else len(names) - 1
    if through_wave is not None:
        if through_wave not in names:
            raise PrivacyError(f"wave {through_wave!r} is not a wave of the protocol {names}")
        last = min(last, names.index(through_wave))
    have = set(_outcome_waves(protocol, outcome))
    return [w for w in names[: last + 1] if w != protocol.baseline_wave and w in have]


BINARY_COUNT_STATISTICS = ("events", "non_events")


def plan_binary_counts(protocol: StudyProtocol, outcome: str, through_wave: str | None = None) -> Query | None:
    """A binary outcome's counts per (arm, follow-up wave): the participants with the event and those without.

    Contribution bounds: a participant has one arm and at most one value per wave (the canonical score relation
    keeps one per participant x wave x outcome), so per wave they are in exactly one of the two cells of their arm,
    adding 1 to it. The two counts are a histogram (``exclusive``), not (n, events): releasing n and events would
    let one participant move two coordinates per wave (L2 sensitivity sqrt(2W) over W waves); the histogram's is
    sqrt(W) (L1 W), so the same budget gives noise 1/sqrt(2) as large; n = events + non-events is post-processing.
    The allocation rule weights the waves as the paired moments do: the long-run wave reach 1, an earlier wave
    reach (1/400)^(1/4) (rho_j proportional to sqrt(weight), module docstring); the two cells of a wave share it.

    Waves: the follow-up waves up to the outcome's wave (the trusted tier's), with ``through_wave`` up to it; None
    when there is none (an interim release before the first follow-up wave)."""
    waves = _followup_waves(protocol, outcome, through_wave)
    if not waves:
        return None
    o = protocol.outcome(outcome)
    long_run = o.wave if o.wave in waves else waves[-1]
    spec, scales = [], []
    for arm in protocol.arm_names:
        for wave in waves:
            reach = math.sqrt(math.sqrt(1.0 if wave == long_run else EARLIER_WAVE_WEIGHT))
            for stat in BINARY_COUNT_STATISTICS:
                spec.append((CellKey(outcome, arm, wave, stat), 1.0, stat == "events"))
                scales.append(1.0 / reach)
    keys, bounds, idx = _cells(spec)
    weight = 1.0 if outcome == protocol.primary_outcome.name else SECONDARY_OUTCOME_WEIGHT
    return Query(f"binary_counts:{outcome}", "binary_counts", outcome, keys, bounds, len(waves), idx,
                 scales=tuple(scales), weight=weight, exclusive=True)


def standard_plan(protocol: StudyProtocol, outcome_bounds: Mapping[str, Bounds],
                  band_edges_by_outcome: Mapping[str, Sequence[float]] | None = None,
                  through_wave: str | None = None) -> list[Query]:
    """The protocol's standard set of queries (every continuous outcome needs bounds in ``outcome_bounds``);
    ``through_wave`` limits the paired moments and binary counts to the waves up to it (:func:`plan_paired`).

    A binary outcome gets its counts per arm x follow-up wave (:func:`plan_binary_counts`) and nothing else: moments,
    bands and paired moments of a 0/1 value would spend budget on statistics no model of a binary outcome reads."""
    band_edges_by_outcome = band_edges_by_outcome or {}
    queries = [plan_consort(protocol)]
    for o in protocol.outcomes:
        if o.binary:
            counts = plan_binary_counts(protocol, o.name, through_wave)
            if counts is not None:
                queries.append(counts)
            continue
        if o.name not in outcome_bounds:
            raise UnboundedColumn(f"outcome {o.name!r} has no clipping bounds; resolve them before planning")
        b = outcome_bounds[o.name]
        queries.append(plan_score_moments(protocol, o.name, b))
        queries.append(plan_score_bands(protocol, o.name, b, band_edges_by_outcome.get(o.name)))
        paired = plan_paired(protocol, o.name, b, through_wave)
        if paired is not None:
            queries.append(paired)
    for s in protocol.surrogates:
        queries.append(plan_telemetry(protocol, s))
    return queries


DESCRIPTIVE_SHARE = 0.1  # of a release's budget, for the queries no model reads (CONSORT counts, moments, bands,
# telemetry); the model queries (MODEL_KINDS: paired moments, binary counts) share the rest


def split_budget(queries: Sequence[Query], total: PrivacyLoss,
                 weights: Mapping[str, float] | None = None) -> list[PrivacyLoss]:
    """Each query's share of ``total``, in ``total``'s measure (module docstring, "Where the budget goes").

    Default: the descriptive queries share ``DESCRIPTIVE_SHARE`` by their kind weights (``DEFAULT_WEIGHTS``, even
    within a kind); the model queries (paired moments) share the rest by the optimal rule, rho_q proportional to
    sqrt(weight_q) * cost_q, where cost_q = sum over one arm's coordinates of r_j^2 (its normalisers were set by the
    same rule, so this gives every coordinate rho_j proportional to sqrt(weight) * planning cost). A Laplace (pure
    DP) release uses the same split, which is not its optimum (that is epsilon_j proportional to (w_j A_j)^(1/3)).
    ``weights`` (kind -> weight) restores the plain split by kind for a caller that asks for it.

    A binary outcome's counts are a model query too, costed the same way: cost_q = its per-arm sum of r_j^2 (one
    cell per wave, the histogram's), so a binary primary with one follow-up wave costs 1 where a continuous one
    costs the six paired statistics' 2.35 (the planning costs add to that at its long-run wave). Effects in risk units
    and in score units have no common scale; the rule gives each the share its weight and reach say."""
    if weights is not None:
        return _split_by_kind(queries, total, weights)
    model = [q for q in queries if q.kind in MODEL_KINDS]
    descriptive = [q for q in queries if q.kind not in MODEL_KINDS]
    if not model:
        return _split_by_kind(queries, total, DEFAULT_WEIGHTS)
    d_share = DESCRIPTIVE_SHARE if descriptive else 0.0
    d_shares = iter(_split_by_kind(descriptive, total.scaled(d_share), DEFAULT_WEIGHTS) if descriptive else [])
    score = {q.name: math.sqrt(q.weight) * q.l2_sensitivity ** 2 for q in model}
    norm = math.fsum(score.values())
    return [total.scaled((1 - d_share) * score[q.name] / norm) if q.kind in MODEL_KINDS else next(d_shares)
            for q in queries]


def _split_by_kind(queries: Sequence[Query], total: PrivacyLoss, weights: Mapping[str, float]) -> list[PrivacyLoss]:
    """kind weight / number of queries of that kind, normalised over the kinds present."""
    weights = dict(weights)
    kinds: dict[str, int] = {}
    for q in queries:
        kinds[q.kind] = kinds.get(q.kind, 0) + 1
    missing = [k for k in kinds if k not in weights or not weights[k] > 0]
    if missing:
        raise InvalidPrivacyParameter(f"budget plan has no positive weight for {missing}")
    norm = math.fsum(weights[k] for k in kinds)
    return [total.scaled(weights[q.kind] / norm / kinds[q.kind]) for q in queries]


# ---------------------------------------------------------------------------------------------------------
# Exact, contribution-bounded aggregates (DuckDB). Read-only.

def _arm_view(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> None:
    """The arm of each participant (the canonical ``relations.study_arms``) as a temporary view."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW _dp_arm AS SELECT participant, arm, assigned_at "
                f"FROM {relations.study_arms(protocol.study_id)}")


def _clip(expr: str, b: Bounds) -> str:
    return f"greatest({number(float(b.lower))}::DOUBLE, least({number(float(b.upper))}::DOUBLE, {expr}))"


def _scores_sql(protocol: StudyProtocol, outcome: str, b: Bounds) -> str:
    """One clipped score per participant x wave for the outcome (the canonical ``relations.primary_scores``, the
    value the trusted tier reads too), with the arm."""
    return (
        f"SELECT s.participant, a.arm, s.wave, {_clip('s.value', b)} AS v "
        f"FROM {relations.primary_scores(protocol, [outcome])} s JOIN _dp_arm a USING (participant)"
    )


def exact_values(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, query: Query) -> list[float]:
    """The query's true statistics, in ``query.keys`` order, after bounding each unit's contribution."""
    unit = _supported_unit(protocol)
    _arm_view(con, protocol)
    got: dict[tuple, float] = {}
    if query.kind == "consort_counts":
        for arm, n in con.execute("SELECT arm, count(*) FROM _dp_arm GROUP BY arm").fetchall():
            got[(None, arm, None, "assigned")] = n
        for arm, wave, n in con.execute(
            f"SELECT a.arm, r.wave, count(DISTINCT r.{ident(unit.identifier)}) "
            f"FROM {relations.latest_responses(protocol.study_id)} r JOIN _dp_arm a USING (participant) "
            "GROUP BY a.arm, r.wave"
        ).fetchall():
            got[(None, arm, wave, "responded")] = n
    elif query.kind == "score_moments":
        b = query.value_bounds
        for arm, wave, n, s in con.execute(
            f"SELECT arm, wave, count(*), sum(v) FROM ({_scores_sql(protocol, query.outcome, b)}) GROUP BY arm, wave"
        ).fetchall():
            got[(query.outcome, arm, wave, "n")] = n
            got[(query.outcome, arm, wave, "sum")] = s
    elif query.kind == "score_bands":
        edges = query.bands
        k = len(edges) - 1
        case = " ".join(f"WHEN v < {number(float(edges[i + 1]))} THEN {number(i)}" for i in range(k - 1))
        band = f"CASE {case} ELSE {number(k - 1)} END" if case else "0"
        for arm, wave, i, n in con.execute(
            f"SELECT arm, wave, {band} AS band, count(*) FROM ({_scores_sql(protocol, query.outcome, query.value_bounds)}) "
            "GROUP BY ALL"
        ).fetchall():
            got[(query.outcome, arm, wave, f"band[{edges[i]:g},{edges[i + 1]:g})")] = n
    elif query.kind == "paired_moments":
        sql = _scores_sql(protocol, query.outcome, query.value_bounds)
        for row in con.execute(
            f"WITH s AS (SELECT participant, arm, wave, v - ({number(float(query.center))})::DOUBLE AS v FROM ({sql})) "
            "SELECT y.arm, y.wave, count(*), sum(x.v), sum(y.v), sum(x.v*x.v), sum(y.v*y.v), "
            f"sum(x.v*y.v) FROM s y JOIN s x ON x.participant = y.participant AND x.wave = {literal(protocol.baseline_wave)} "
            f"WHERE y.wave <> {literal(protocol.baseline_wave)} GROUP BY y.arm, y.wave"
        ).fetchall():
            arm, wave, *stats = row
            for stat, val in zip(PAIRED_STATISTICS, stats, strict=True):
                got[(query.outcome, arm, wave, stat)] = val
    elif query.kind == "binary_counts":
        valid, event = _binary_event_sql(protocol, query.outcome)
        waves = sorted({k.wave for k in query.keys})
        for arm, wave, events, non_events in con.execute(
            f"SELECT a.arm, s.wave, count(*) FILTER (WHERE {event}), count(*) FILTER (WHERE NOT ({event})) "
            f"FROM {relations.primary_scores(protocol, [query.outcome], waves)} s JOIN _dp_arm a USING (participant) "
            f"WHERE {valid} GROUP BY a.arm, s.wave"
        ).fetchall():
            got[(query.outcome, arm, wave, "events")] = events
            got[(query.outcome, arm, wave, "non_events")] = non_events
    elif query.kind == "telemetry_means":
        s = next(x for x in protocol.surrogates if x.name == query.outcome)
        per = _telemetry_sql(protocol, s, query.value_bounds)
        for arm, n, total in con.execute(f"SELECT arm, count(*), sum(v) FROM ({per}) GROUP BY arm").fetchall():
            got[(query.outcome, arm, None, "n")] = n
            got[(query.outcome, arm, None, "sum")] = total
    else:
        raise PrivacyError(f"unknown query kind {query.kind!r}")
    return [float(got.get((k.outcome, k.arm, k.wave, k.statistic)) or 0.0) for k in query.keys]


def _binary_event_sql(protocol: StudyProtocol, outcome: str) -> tuple[str, str]:
    """(valid, event) SQL conditions on ``s.value`` of a binary outcome: a 0/1 score is valid when 0 or 1 and an
    event when 1; a score with a cut-off is valid when finite and an event at or above (or at or below) it. The same
    rule as the trusted tier's counts (``analysis.binary.binary_counts_sql``)."""
    cut = protocol.outcome(outcome).cutoff
    if cut is None:
        return "s.value IN (0, 1)", "s.value = 1"
    c = number(float(cut[0]))
    return "isfinite(s.value)", f"s.value {'>=' if cut[1] else '<='} {c}"


def _refuse_invalid_binary_values(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol,
                                  queries: Sequence[Query]) -> None:
    """A binary outcome's score that is not 0 or 1 (or not finite, with a cut-off) breaks the counts' contract: the
    trusted tier refuses to count it, so the release refuses too, before anything is reserved (the ingest quarantines
    such values; this catches any that reached the warehouse another way)."""
    _arm_view(con, protocol)
    for q in queries:
        if q.kind != "binary_counts":
            continue
        valid, _ = _binary_event_sql(protocol, q.outcome)
        waves = sorted({k.wave for k in q.keys})
        bad = con.execute(
            f"SELECT count(*) FROM {relations.primary_scores(protocol, [q.outcome], waves)} s "
            f"JOIN _dp_arm a USING (participant) WHERE NOT ({valid})").fetchone()[0]
        if bad:
            what = "not 0 or 1" if protocol.outcome(q.outcome).cutoff is None else "not finite"
            raise ReleaseRefused(
                f"the binary outcome {q.outcome!r} has {bad} score(s) of randomised participants that are {what}, so "
                "its counts are not defined (the trusted tier refuses them too); correct or quarantine them first "
                "(no budget was reserved)")


def _telemetry_sql(protocol: StudyProtocol, s: SurrogateMetric, b: Bounds) -> str:
    """One clipped summary per randomised participant over [assigned_at, assigned_at + window) (the canonical
    ``relations.telemetry_metric``; a ``mean_value`` without events is not a value and is left out)."""
    return (f"SELECT participant, arm, {_clip('value', b)} AS v "
            f"FROM {relations.telemetry_metric(protocol.study_id, s)} WHERE value IS NOT NULL")


def _supported_unit(protocol: StudyProtocol) -> PrivacyUnit:
    """The protocol's privacy unit, refused unless the bounding SQL above is written for it (one participant:
    ``relations`` gives one arm, one score per wave and one telemetry summary per participant)."""
    unit = PrivacyUnit.of(protocol)
    if unit.kind != "participant" or unit.identifier != "participant":
        raise PrivacyError(f"privacy unit {unit.kind!r} is not supported: contributions are bounded per participant")
    return unit


def _refuse_a_release_of_noise(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol,
                               queries: Sequence[Query]) -> None:
    """A release on a warehouse without assignments (every cell empty) or without scores (every score cell
    empty) would spend the budget on noise alone: refused before anything is reserved."""
    study = protocol.study_id
    if not con.execute(f"SELECT count(*) FROM {relations.study_arms(study)}").fetchone()[0]:
        raise ReleaseRefused(
            f"study {study!r} has no assignments in this warehouse, so every released value would be noise alone; "
            "ingest the study's data first (no budget was reserved)")
    outcomes = sorted({q.outcome for q in queries if q.kind in _SCORE_KINDS and q.outcome})
    if outcomes and not con.execute(
            f"SELECT count(*) FROM {relations.primary_scores(protocol, outcomes)} s "
            f"JOIN {relations.study_arms(study)} a USING (participant)").fetchone()[0]:
        raise ReleaseRefused(
            f"study {study!r} has no scores of its randomised participants for {', '.join(outcomes)}, so every score "
            "statistic would be noise alone; score the responses first (no budget was reserved)")


# ---------------------------------------------------------------------------------------------------------
# OpenDP calibration (no noise) and drawing (noise).

def opendp():
    """``opendp.prelude`` with the features Flourish uses enabled.

    Where and why ``contrib`` is enabled: here, and only here (``calibrate`` calls this before building a
    measurement). OpenDP keeps feature flags in one process-wide set, so the flag stays on for every later
    OpenDP call in the process; nothing else in Flourish calls OpenDP. It is needed because OpenDP 0.16 marks
    ``make_gaussian`` and ``make_laplace`` as "Required features: contrib" (their proofs are written but not yet
    vetted by OpenDP's committee). ``OPENDP_FEATURES`` is recorded with every release and printed in the privacy
    statement, so a reader knows the guarantee rests on contrib code.
    """
    import opendp.prelude as dp

    dp.enable_features(*OPENDP_FEATURES)
    return dp


@dataclass(frozen=True)
class Calibrated:
    """One query's OpenDP measurement, calibrated before any noise is drawn."""

    query: Query
    mechanism: Mechanism
    scale: float             # OpenDP noise scale on the normalized vector
    sensitivity: float       # d_in given to the privacy map: sqrt(k) (L2) or k (L1)
    loss: PrivacyLoss        # the map's output at d_in: rho (gaussian, zCDP) or epsilon (laplace, pure DP)
    measurement: Any = field(repr=False, compare=False)

    @property
    def spend(self) -> Spend:
        return Spend(self.query.name, self.mechanism, self.scale, self.sensitivity, self.loss)

    def noise_sd(self) -> list[float]:
        unit = self.scale if self.mechanism == "gaussian" else self.scale * math.sqrt(2.0)
        return [unit * u for u in self.query.normalizers]


# Normalization divides by b_i in floating point; give the map a hair more than the exact sensitivity.
_SENSITIVITY_SLACK = 1.0 + 1e-9
_MEASURE_OF = {"gaussian": "zCDP", "laplace": "pure"}


def calibrate(query: Query, mechanism: Mechanism, loss: PrivacyLoss) -> Calibrated:
    """The OpenDP measurement for ``query`` spending at most ``loss``: Gaussian noise for a zCDP loss (rho),
    Laplace noise for a pure-DP loss (epsilon). The vector-level unit is ``dp.unit_of(l2=sqrt(k))`` or
    ``dp.unit_of(l1=k)``: what one participant can change after contribution bounding (module docstring)."""
    if mechanism not in _MEASURE_OF:
        raise PrivacyError(f"mechanism {mechanism!r} must be 'gaussian' or 'laplace'")
    if not isinstance(loss, PrivacyLoss) or loss.measure != _MEASURE_OF[mechanism]:
        raise InvalidPrivacyParameter(
            f"{mechanism} noise is calibrated to a {_MEASURE_OF[mechanism]} loss, got {loss!r}")
    dp = opendp()
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    if mechanism == "gaussian":
        metric, d_in = dp.unit_of(l2=query.l2_sensitivity * _SENSITIVITY_SLACK)
        measure, budget = dp.loss_of(rho=loss.rho)
        scale = d_in / math.sqrt(2.0 * budget)
        make = dp.m.make_gaussian
    else:
        metric, d_in = dp.unit_of(l1=query.l1_sensitivity * _SENSITIVITY_SLACK)
        measure, budget = dp.loss_of(epsilon=loss.epsilon)
        scale = d_in / budget
        make = dp.m.make_laplace
    m = make(domain, metric, scale=scale)
    if m.output_measure != measure:  # pragma: no cover - OpenDP's contract, checked rather than assumed
        raise PrivacyError(f"OpenDP's {mechanism} measurement reports {m.output_measure}, not {measure}")
    while m.map(d_in) > budget:  # OpenDP rounds its map conservatively: widen until it fits
        scale *= 1.0 + 1e-9
        m = make(domain, metric, scale=scale)
    spent = float(m.map(d_in))
    return Calibrated(query, mechanism, scale, d_in,
                      PrivacyLoss(rho=spent) if mechanism == "gaussian" else PrivacyLoss(epsilon=spent), m)


def _normalized(cal: Calibrated, exact: Sequence[float]) -> list[float]:
    """The exact statistics divided by their per-coordinate bounds: the vector the mechanism perturbs."""
    if len(exact) != len(cal.query.bounds):
        raise PrivacyError(f"query {cal.query.name!r} expects {len(cal.query.bounds)} values, got {len(exact)}")
    normalized = [float(x) / u for x, u in zip(exact, cal.query.normalizers, strict=True)]
    if not all(math.isfinite(v) for v in normalized):
        raise PrivacyError(f"query {cal.query.name!r} has a statistic that is not a finite number")
    return normalized


def _denormalized(cal: Calibrated, noisy: Sequence[float]) -> list[float]:
    return [v * u for v, u in zip(noisy, cal.query.normalizers, strict=True)]


class _Drawing:
    """Draws one query's noise and counts the mechanisms started, so a failure after the reservation can tell
    whether any noise was drawn (a mechanism that raised may have drawn: it counts as started)."""

    def __init__(self) -> None:
        self.started = 0

    def __call__(self, cal: Calibrated, normalized: Sequence[float]) -> list[float]:
        self.started += 1
        return _denormalized(cal, cal.measurement(normalized))


def _draw_all(drawing: _Drawing, cals: Sequence[Calibrated], normalized: Sequence[Sequence[float]]) -> list[list[float]]:
    return [drawing(c, v) for c, v in zip(cals, normalized, strict=True)]


def draw(cal: Calibrated, exact: Sequence[float]) -> list[float]:
    """Noisy statistics in the query's units (noise from OpenDP on the normalized vector)."""
    return _denormalized(cal, cal.measurement(_normalized(cal, exact)))


@dataclass(frozen=True)
class ReleaseRow:
    query: str
    outcome: str | None
    arm: str | None
    wave: str | None
    statistic: str
    value: float | None
    noise_sd: float | None
    suppressed: bool


def to_rows(cal: Calibrated, noisy: Sequence[float], min_cell_size: int) -> list[ReleaseRow]:
    """Post-processing: suppression of small noisy cells and derived means (and a binary cell's n)."""
    q, sds = cal.query, cal.noise_sd()
    if q.kind == "binary_counts":
        return _binary_rows(q, noisy, sds, min_cell_size)
    rows: list[ReleaseRow] = []
    for i, key in enumerate(q.keys):
        count = noisy[q.count_index[i]]
        suppressed = count < min_cell_size
        rows.append(ReleaseRow(q.name, key.outcome, key.arm, key.wave, key.statistic,
                               None if suppressed else float(noisy[i]), sds[i], suppressed))
        if key.statistic == "sum" and q.kind in ("score_moments", "telemetry_means"):
            n, sd_n, sd_s = count, sds[q.count_index[i]], sds[i]
            mean = None if suppressed else float(noisy[i]) / n
            sd = None if suppressed else math.sqrt(sd_s ** 2 + (mean ** 2) * sd_n ** 2) / n
            rows.append(ReleaseRow(q.name, key.outcome, key.arm, key.wave, "mean", mean, sd, suppressed))
        if key.statistic == "n" and q.kind == "paired_moments":
            # the public centre the cell's sums are taken about and the bounds' half-range (constants of the plan,
            # not statistics: no noise; the public model's priors on the variances use the half-range)
            rows.append(ReleaseRow(q.name, key.outcome, key.arm, key.wave, "center", None if suppressed else q.center,
                                   0.0, suppressed))
            half = (q.value_bounds.upper - q.value_bounds.lower) / 2
            rows.append(ReleaseRow(q.name, key.outcome, key.arm, key.wave, "half_range", None if suppressed else half,
                                   0.0, suppressed))
    return rows


def _binary_rows(q: Query, noisy: Sequence[float], sds: Sequence[float], min_cell_size: int) -> list[ReleaseRow]:
    """A binary cell's rows: the derived n = events + non-events first (noise SD the two SDs in quadrature), then
    the two released counts. The protocol's min_cell_size applies to the noisy n, as it does to a continuous cell's
    count; the event count is a statistic of the cell, like a sum, and is not suppressed on its own size: a rule on
    the events would hide cells by their outcome, which biases whatever reads the release (and DP protects a small
    count already; the threshold is policy, privacy.md)."""
    cells: dict[tuple, dict[str, tuple[float, float]]] = {}
    order: list[tuple] = []
    for key, value, sd in zip(q.keys, noisy, sds, strict=True):
        cell = (key.outcome, key.arm, key.wave)
        if cell not in cells:
            order.append(cell)
        cells.setdefault(cell, {})[key.statistic] = (float(value), float(sd))
    rows: list[ReleaseRow] = []
    for outcome, arm, wave in order:
        got = cells[(outcome, arm, wave)]
        (e, sd_e), (ne, sd_ne) = got["events"], got["non_events"]
        n = e + ne
        suppressed = n < min_cell_size
        rows.append(ReleaseRow(q.name, outcome, arm, wave, "n", None if suppressed else n, math.hypot(sd_e, sd_ne),
                               suppressed))
        rows.append(ReleaseRow(q.name, outcome, arm, wave, "events", None if suppressed else e, sd_e, suppressed))
        rows.append(ReleaseRow(q.name, outcome, arm, wave, "non_events", None if suppressed else ne, sd_ne, suppressed))
    return rows


def rows_sha256(rows: Sequence[ReleaseRow]) -> str:
    text = json.dumps([r.__dict__ for r in rows], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ReleaseResult:
    release_id: str
    study_id: str
    mechanism: Mechanism
    accounting: Accounting
    unit: PrivacyUnit
    loss: PrivacyLoss        # what the release charged the budget, in the budget's measure
    rho: float | None        # loss.rho under zCDP accounting
    epsilon: float           # the release's own epsilon (rho converted at delta under zCDP)
    delta: float
    queries: tuple[str, ...]
    rows: tuple[ReleaseRow, ...]
    values_sha256: str
    # outcome -> how much wider the public tier's long-run interval is than the same model's on exact statistics
    # (a float), or why it cannot be said (a sentence); filled by flows.privacy_flows from the released values
    # (analysis.public.width_ratio: post-processing, no privacy cost)
    width_ratios: Mapping[str, float | str] = field(default_factory=dict, compare=False)


def _checked_settings(protocol: StudyProtocol, fraction: float) -> tuple[Mechanism, Accounting]:
    """Every protocol value the release uses, checked before anything is reserved (a value that fails only when
    the release is written would otherwise cost the reserved budget)."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not math.isfinite(fraction) \
            or not (0 < fraction <= 1):
        raise InvalidPrivacyParameter(f"fraction of the budget must be in (0, 1], got {fraction!r}")
    p = protocol.privacy
    if p is None:
        raise PrivacyError(f"study {protocol.study_id} declares no privacy settings (no budget), so it releases "
                           "nothing; add a `privacy:` section with its epsilon to release")
    mechanism: Mechanism = p.mechanism
    accounting: Accounting = "zcdp" if mechanism == "gaussian" else "pure"
    if accounting == "zcdp" and not (0 < p.delta < 1):
        raise InvalidPrivacyParameter(f"Gaussian noise needs delta in (0, 1), the protocol has {p.delta}")
    if not 1 <= p.min_cell_size <= _MAX_MIN_CELL_SIZE:
        raise InvalidPrivacyParameter(
            f"the protocol's privacy.min_cell_size {p.min_cell_size:g} is outside 1..{_MAX_MIN_CELL_SIZE}; "
            "no budget was reserved")
    _supported_unit(protocol)
    return mechanism, accounting


def release_queries(
    con: duckdb.DuckDBPyConnection,
    protocol: StudyProtocol,
    queries: Sequence[Query],
    *,
    fraction: float = 1.0,
    weights: Mapping[str, float] | None = None,
    release_id: str | None = None,
) -> ReleaseResult:
    """Release ``queries`` spending ``fraction`` of the study's total budget, split by ``weights``.

    ``release_id`` names the release (a planned release's unique key, flows/schedules.release_id): the ledger
    refuses an id it holds already (ReleaseAlreadyMade) before any spend, so a rerun never spends twice.

    ``fraction`` is a share of the budget in the ledger's measure: of rho_total under zCDP (Gaussian noise),
    where rho adds, so a quarter of rho is more than a quarter of epsilon; of epsilon_total under pure DP.

    Order (each step can refuse, and nothing is written before step 4): validate parameters, protocol values
    and bounds; refuse a release that would be noise alone (no assignments, no scores); compute bounded exact
    aggregates; calibrate OpenDP measurements (no noise); reserve the whole spend in one ledger transaction
    (BudgetExceeded if it does not fit); only then draw noise and write the header, values and ledger
    completion in one transaction. A failure after the reservation and before the first draw gives the
    reservation back.
    """
    mechanism, accounting = _checked_settings(protocol, fraction)
    if not queries:
        raise PrivacyError("no queries to release")
    p = protocol.privacy
    unit = _supported_unit(protocol)
    shares = split_budget(queries, budget_loss(p.epsilon, p.delta, accounting).scaled(fraction), weights)
    _refuse_a_release_of_noise(con, protocol, queries)
    _refuse_invalid_binary_values(con, protocol, queries)
    exact = [exact_values(con, protocol, q) for q in queries]
    cals = [calibrate(q, mechanism, s) for q, s in zip(queries, shares, strict=True)]
    normalized = [_normalized(c, x) for c, x in zip(cals, exact, strict=True)]
    release_id, entry_ids = reserve(con, protocol.study_id, [c.spend for c in cals],
                                    epsilon_total=p.epsilon, delta=p.delta, accounting=accounting, unit=unit,
                                    release_id=release_id)
    # ---- the budget is committed; from here on noise may be drawn ----
    drawing = _Drawing()
    try:
        noisy = _draw_all(drawing, cals, normalized)
    except BaseException:
        if not drawing.started:  # nothing was drawn: the reservation bought nothing, give it back
            cancel_reservation(con, protocol.study_id, release_id)
        raise
    per_query = [to_rows(c, x, p.min_cell_size) for c, x in zip(cals, noisy, strict=True)]
    rows = [r for rs in per_query for r in rs]
    digest = rows_sha256(rows)
    charged = [c.spend.charge(accounting) for c in cals]
    loss = sum(charged[1:], charged[0])
    rho = loss.rho if accounting == "zcdp" else None
    eps = loss.as_epsilon(p.delta) if accounting == "zcdp" else loss.epsilon
    delta = p.delta if accounting == "zcdp" else 0.0
    try:
        with transaction(con):
            con.execute(
                "INSERT INTO releases (release_id, study_id, created_at, mechanism, accounting, rho, epsilon, delta, "
                "min_cell_size, queries, values_sha256, opendp_version, opendp_features) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [release_id, protocol.study_id, datetime.now(UTC), mechanism, accounting, rho, eps, delta,
                 p.min_cell_size, json.dumps([q.name for q in queries]), digest, installed_opendp_version(),
                 ",".join(OPENDP_FEATURES)])
            con.executemany(
                "INSERT INTO release_values VALUES (?,?,?,?,?,?,?,?,?,?)",
                [[release_id, protocol.study_id, r.query, r.outcome, r.arm, r.wave, r.statistic, r.value,
                  r.noise_sd, r.suppressed] for r in rows])
            for entry_id, rs in zip(entry_ids, per_query, strict=True):
                finalize(con, [entry_id], rows_sha256(rs))
    except duckdb.Error as exc:
        raise PrivacyError(
            f"release {release_id} drew its noise but could not be stored ({type(exc).__name__}); nothing was "
            "published and its reservation stays counted in the ledger, as noise was drawn") from exc
    return ReleaseResult(release_id, protocol.study_id, mechanism, accounting, unit, loss, rho, eps, delta,
                         tuple(q.name for q in queries), tuple(rows), digest)


def installed_opendp_version() -> str:
    """The OpenDP version a release records (and the statement prints)."""
    try:
        return version("opendp")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "unknown"


def release_standard_set(
    con: duckdb.DuckDBPyConnection,
    protocol: StudyProtocol,
    *,
    outcome_bounds: Mapping[str, Bounds | tuple[float, float]] | None = None,
    fraction: float = 1.0,
    weights: Mapping[str, float] | None = None,
    release_id: str | None = None,
    through_wave: str | None = None,
) -> ReleaseResult:
    """The protocol's standard releases (CONSORT counts, score moments and bands, paired moments, a binary outcome's
    counts, telemetry); ``through_wave``: a planned interim release's paired moments and counts stop at that wave."""
    bounds = resolve_outcome_bounds(protocol, outcome_bounds)
    return release_queries(con, protocol, standard_plan(protocol, bounds, through_wave=through_wave),
                           fraction=fraction, weights=weights, release_id=release_id)
