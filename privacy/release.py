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
2. **Aggregate** to a vector of cell statistics over public keys (arms and waves come from the protocol, so
   no private partition selection is needed; an empty cell is a 0, not a missing key).
3. **Normalize**: each coordinate i has a public per-participant bound ``b_i`` (1 for a count, ``max|x|`` for a
   sum of x, ``max x^2`` for a sum of squares); dividing by ``b_i`` makes every participant's contribution to
   every coordinate at most 1 in absolute value. A participant is in one arm, so they change at most ``k``
   coordinates (``Query.touches``, derived from the plan: e.g. 2 per wave for n and sum). The L2 sensitivity
   of the normalized vector is therefore ``sqrt(k)`` and the L1 sensitivity ``k``.
4. **Noise**: OpenDP ``make_gaussian`` over ``vector_domain(atom_domain(float, nan=False))`` with
   ``l2_distance`` (zCDP, ``map(sqrt(k))`` gives rho) or ``make_laplace`` with ``l1_distance`` (pure DP,
   ``map(k)`` gives epsilon). The scale is calibrated and the privacy map is checked against the query's share
   of the budget BEFORE the ledger reservation; noise is drawn only after the reservation commits. OpenDP's
   samplers are exact (no floating-point attack of Mironov 2012); noise is never drawn with numpy.
5. **Post-processing** (free): values are multiplied back by ``b_i``; ``noise_sd_i = scale * b_i`` (times
   sqrt(2) for Laplace); a cell whose noisy count is below the protocol's ``min_cell_size`` is suppressed
   (policy, not protection: the DP guarantee already holds); means are noisy sum / noisy count with a
   delta-method noise_sd.

Steps 1-3 (the sensitivity argument) are ours, not OpenDP's proofs; they are tested by
``tests/privacy/test_release.py`` (adding any participant, including one with duplicate and
out-of-range rows, moves the normalized vector by at most sqrt(k) in L2 and k in L1) and by an empirical
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
           "standard_plan", "split_budget", "exact_values", "calibrate", "draw", "to_rows", "release_queries",
           "release_standard_set", "opendp", "installed_opendp_version", "OPENDP_FEATURES"]

OPENDP_FEATURES = ("contrib",)
DEFAULT_BANDS = 5
# releases.min_cell_size is an INTEGER column; a protocol value past it would fail only when the release is
# written, after the budget was reserved and the noise drawn, so it is refused before reserving
_MAX_MIN_CELL_SIZE = 2**31 - 1
# query kinds whose cells are statistics of scores (a release of them on a warehouse without scores is noise)
_SCORE_KINDS = ("score_moments", "score_bands", "paired_moments")

# The documented plan: the share of a release's budget each kind of query gets (normalized over the kinds
# the protocol has; within a kind split evenly over outcomes/surrogates). The paired moments carry the
# primary analysis (noise-aware ANCOVA on DP sufficient statistics) and get the largest share.
DEFAULT_WEIGHTS: dict[str, float] = {
    "consort_counts": 1.0,
    "score_moments": 2.0,
    "score_bands": 1.0,
    "telemetry_means": 1.0,
    "paired_moments": 3.0,
}


def resolve_outcome_bounds(protocol: StudyProtocol, known: Mapping[str, Bounds | tuple[float, float]] | None = None,
                           outcomes: Sequence[str] | None = None) -> dict[str, Bounds]:
    """Clipping bounds per outcome: from ``known`` (e.g. instruments' scale range) else the protocol's
    ``lower_bound``/``upper_bound``; an outcome with neither is refused (UnboundedColumn), never guessed."""
    known = dict(known or {})
    out: dict[str, Bounds] = {}
    names = list(outcomes) if outcomes is not None else [o.name for o in protocol.outcomes]
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

    def __post_init__(self) -> None:
        if not (len(self.keys) == len(self.bounds) == len(self.count_index)) or not self.keys:
            raise PrivacyError(f"query {self.name!r} is malformed")
        if any(not math.isfinite(b) or b <= 0 for b in self.bounds):
            raise UnboundedColumn(f"query {self.name!r} has a coordinate without a finite positive bound")


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


def plan_paired(protocol: StudyProtocol, outcome: str, b: Bounds) -> Query | None:
    """Per (arm, wave after baseline): the paired moments over participants with baseline x and wave y."""
    waves = _outcome_waves(protocol, outcome)
    base = protocol.baseline_wave
    if base not in waves:
        return None
    later = [w for w in waves if w != base]
    if not later:
        return None
    m, m2 = b.max_abs, b.max_abs ** 2
    per = {"n": 1.0, "sum_x": m, "sum_y": m, "sum_xx": m2, "sum_yy": m2, "sum_xy": m2}
    spec = []
    for arm in protocol.arm_names:
        for wave in later:
            for stat in PAIRED_STATISTICS:
                spec.append((CellKey(outcome, arm, wave, stat), per[stat], stat == "n"))
    keys, bounds, idx = _cells(spec)
    return Query(f"paired_moments:{outcome}", "paired_moments", outcome, keys, bounds,
                 len(PAIRED_STATISTICS) * len(later), idx, b)


def standard_plan(protocol: StudyProtocol, outcome_bounds: Mapping[str, Bounds],
                  band_edges_by_outcome: Mapping[str, Sequence[float]] | None = None) -> list[Query]:
    """The protocol's standard set of queries (every outcome needs bounds in ``outcome_bounds``)."""
    band_edges_by_outcome = band_edges_by_outcome or {}
    queries = [plan_consort(protocol)]
    for o in protocol.outcomes:
        if o.name not in outcome_bounds:
            raise UnboundedColumn(f"outcome {o.name!r} has no clipping bounds; resolve them before planning")
        b = outcome_bounds[o.name]
        queries.append(plan_score_moments(protocol, o.name, b))
        queries.append(plan_score_bands(protocol, o.name, b, band_edges_by_outcome.get(o.name)))
        paired = plan_paired(protocol, o.name, b)
        if paired is not None:
            queries.append(paired)
    for s in protocol.surrogates:
        queries.append(plan_telemetry(protocol, s))
    return queries


def split_budget(queries: Sequence[Query], total: PrivacyLoss,
                 weights: Mapping[str, float] | None = None) -> list[PrivacyLoss]:
    """Each query's share of ``total``, in ``total``'s measure: kind weight / number of queries of that kind."""
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
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
    """One clipped score per participant x wave for the outcome (the canonical ``relations.study_scores``, the
    value the trusted tier reads too), with the arm."""
    return (
        f"SELECT s.participant, a.arm, s.wave, {_clip('s.value', b)} AS v "
        f"FROM {relations.study_scores(protocol.study_id, [outcome])} s JOIN _dp_arm a USING (participant)"
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
            f"WITH s AS ({sql}) SELECT y.arm, y.wave, count(*), sum(x.v), sum(y.v), sum(x.v*x.v), sum(y.v*y.v), "
            f"sum(x.v*y.v) FROM s y JOIN s x ON x.participant = y.participant AND x.wave = {literal(protocol.baseline_wave)} "
            f"WHERE y.wave <> {literal(protocol.baseline_wave)} GROUP BY y.arm, y.wave"
        ).fetchall():
            arm, wave, *stats = row
            for stat, val in zip(PAIRED_STATISTICS, stats, strict=True):
                got[(query.outcome, arm, wave, stat)] = val
    elif query.kind == "telemetry_means":
        s = next(x for x in protocol.surrogates if x.name == query.outcome)
        per = _telemetry_sql(protocol, s, query.value_bounds)
        for arm, n, total in con.execute(f"SELECT arm, count(*), sum(v) FROM ({per}) GROUP BY arm").fetchall():
            got[(query.outcome, arm, None, "n")] = n
            got[(query.outcome, arm, None, "sum")] = total
    else:
        raise PrivacyError(f"unknown query kind {query.kind!r}")
    return [float(got.get((k.outcome, k.arm, k.wave, k.statistic)) or 0.0) for k in query.keys]


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
            f"SELECT count(*) FROM {relations.study_scores(study, outcomes)} s "
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
        return [unit * b for b in self.query.bounds]


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
        metric, d_in = dp.unit_of(l2=math.sqrt(query.touches) * _SENSITIVITY_SLACK)
        measure, budget = dp.loss_of(rho=loss.rho)
        scale = d_in / math.sqrt(2.0 * budget)
        make = dp.m.make_gaussian
    else:
        metric, d_in = dp.unit_of(l1=float(query.touches) * _SENSITIVITY_SLACK)
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
    normalized = [float(x) / b for x, b in zip(exact, cal.query.bounds, strict=True)]
    if not all(math.isfinite(v) for v in normalized):
        raise PrivacyError(f"query {cal.query.name!r} has a statistic that is not a finite number")
    return normalized


def _denormalized(cal: Calibrated, noisy: Sequence[float]) -> list[float]:
    return [v * b for v, b in zip(noisy, cal.query.bounds, strict=True)]


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
    """Post-processing: suppression of small noisy cells and derived means."""
    q, sds = cal.query, cal.noise_sd()
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
) -> ReleaseResult:
    """The protocol's standard releases (CONSORT counts, score moments and bands, paired moments, telemetry)."""
    bounds = resolve_outcome_bounds(protocol, outcome_bounds)
    return release_queries(con, protocol, standard_plan(protocol, bounds), fraction=fraction, weights=weights,
                           release_id=release_id)
