"""DP releases: contribution bounding, the sensitivity argument, refusals that write nothing, release rows."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.privacy import KEY, OUTCOME_BOUNDS, T0, add_extreme_participant, fill, make_protocol
from privacy.budget import budget_json, epsilon_to_rho
from privacy.errors import BudgetExceeded, InvalidPrivacyParameter, PrivacyError, UnboundedColumn
from privacy.pseudonym import pseudonymize
from privacy.release import (
    Bounds,
    exact_values,
    release_standard_set,
    resolve_outcome_bounds,
    standard_plan,
)

TABLES = ("privacy_budgets", "privacy_ledger", "releases", "release_values")


def _counts(con):
    return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES)


def test_adding_any_participant_moves_the_normalized_vector_by_at_most_the_sensitivity(warehouse, protocol):
    """The sensitivity argument of privacy/release.py, checked on adversarial participants: with u the query's
    normalisers (its bounds, or the paired moments' weighted ones), ||delta / u||_2 <= the query's L2 sensitivity
    (sqrt(k) unweighted) and ||delta / u||_1 <= its L1 sensitivity, each coordinate by at most its reach b / u."""
    _, con = warehouse
    fill(con, 20)
    bounds = resolve_outcome_bounds(protocol, OUTCOME_BOUNDS)
    queries = standard_plan(protocol, bounds)
    assert {q.kind for q in queries} == {"consort_counts", "score_moments", "score_bands", "paired_moments",
                                         "telemetry_means"}
    rng = random.Random(7)
    for trial in range(6):
        before = [exact_values(con, protocol, q) for q in queries]
        con.execute("BEGIN TRANSACTION")
        add_extreme_participant(con, f"extreme-{trial}", rng.choice(["control", "coach"]), rng)
        after = [exact_values(con, protocol, q) for q in queries]
        con.execute("ROLLBACK")
        for q, b, a in zip(queries, before, after, strict=True):
            diff = [(y - x) / u for x, y, u in zip(b, a, q.normalizers, strict=True)]
            assert all(abs(d) <= r + 1e-9 for d, r in zip(diff, q.reach, strict=True)), q.name
            assert max(q.reach) <= 1 + 1e-12 and q.l2_sensitivity <= math.sqrt(q.touches) + 1e-12, q.name
            assert math.sqrt(sum(d * d for d in diff)) <= q.l2_sensitivity + 1e-9, q.name
            assert sum(abs(d) for d in diff) <= q.l1_sensitivity + 1e-9, q.name
            # untouched cells may move by float rounding of DuckDB's parallel sums (~1e-15 relative), which the
            # 1e-9 slack in calibrate() covers; count only real moves
            assert sum(1 for d in diff if abs(d) > 1e-9) <= q.touches, q.name


def test_paired_moments_equal_sums_over_clipped_raw_rows(warehouse, protocol):
    _, con = warehouse
    fill(con, 25)
    q = next(q for q in standard_plan(protocol, resolve_outcome_bounds(protocol, OUTCOME_BOUNDS))
             if q.name == "paired_moments:who5.percent")
    got = dict(zip([(k.arm, k.wave, k.statistic) for k in q.keys], exact_values(con, protocol, q), strict=True))
    rows = con.execute("SELECT a.arm, s.participant, s.wave, s.value FROM scores s JOIN assignments a USING (participant) "
                       "WHERE s.outcome = 'who5.percent'").fetchall()
    assert q.center == 50.0  # the sums are of values centred at the bounds' midpoint (module docstring)
    by = {}
    for arm, p, w, v in rows:
        by.setdefault((arm, p), {})[w] = min(100.0, max(0.0, v)) - 50.0
    for arm in ("control", "coach"):
        for wave in ("m1", "m3"):
            pairs = [(d["baseline"], d[wave]) for (a, _), d in by.items() if a == arm and "baseline" in d and wave in d]
            assert got[(arm, wave, "n")] == len(pairs)
            assert got[(arm, wave, "sum_x")] == pytest.approx(sum(x for x, _ in pairs))
            assert got[(arm, wave, "sum_yy")] == pytest.approx(sum(y * y for _, y in pairs))
            assert got[(arm, wave, "sum_xy")] == pytest.approx(sum(x * y for x, y in pairs))


def test_unbounded_outcome_is_refused_and_nothing_written(warehouse):
    _, con = warehouse
    fill(con, 10)
    proto = make_protocol()
    with pytest.raises(UnboundedColumn, match="who5.percent.*no declared clipping bounds"):
        release_standard_set(con, proto)  # who5.percent has no bounds unless the instrument range is passed
    with pytest.raises(UnboundedColumn):
        release_standard_set(con, proto, outcome_bounds={"who5.percent": (0, float("inf"))})
    with pytest.raises(UnboundedColumn):
        Bounds(5.0, 5.0, "x")
    assert _counts(con) == (0, 0, 0, 0)


@pytest.mark.parametrize("fraction", [-0.5, 0.0, 1.5, float("nan")])
def test_bad_fraction_is_refused_and_nothing_written(warehouse, fraction):
    _, con = warehouse
    with pytest.raises(InvalidPrivacyParameter):
        release_standard_set(con, make_protocol(), outcome_bounds=OUTCOME_BOUNDS, fraction=fraction)
    assert _counts(con) == (0, 0, 0, 0)


def test_negative_epsilon_is_refused_by_the_protocol_contract():
    with pytest.raises(ValueError, match="epsilon"):
        make_protocol(epsilon=-1.0)


def test_release_rows_ledger_and_overrun(warehouse, protocol):
    _, con = warehouse
    fill(con, 60)
    r = release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS, fraction=0.6)
    n_rows = con.execute("SELECT count(*) FROM release_values WHERE release_id = ?", [r.release_id]).fetchone()[0]
    assert n_rows == len(r.rows) > 100
    assert con.execute("SELECT count(*) FROM release_values WHERE suppressed AND value IS NOT NULL").fetchone()[0] == 0
    # every released statistic carries noise; only the centre and half-range, constants of the plan, do not
    assert con.execute("SELECT min(noise_sd) FROM release_values WHERE statistic NOT IN ('center', 'half_range')"
                       ).fetchone()[0] > 0
    paired = con.execute("SELECT DISTINCT statistic FROM release_values WHERE query LIKE 'paired_moments:%'").fetchall()
    assert {s for (s,) in paired} == {"n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy", "center", "half_range"}
    assert con.execute("SELECT DISTINCT statistic, value, noise_sd FROM release_values WHERE statistic IN "
                       "('center', 'half_range') AND query = 'paired_moments:who5.percent' AND NOT suppressed "
                       "ORDER BY 1").fetchall() == [("center", 50.0, 0.0), ("half_range", 50.0, 0.0)]
    ledger = con.execute("SELECT status, sum(rho) FROM privacy_ledger GROUP BY status").fetchall()
    assert ledger == [("released", pytest.approx(0.6 * epsilon_to_rho(2.0, 1e-6)))]
    assert budget_json(con)["study-a"]["releases"] == 1
    before = _counts(con)
    with pytest.raises(BudgetExceeded):
        release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS, fraction=0.6)
    assert _counts(con) == before
    # what is left can still be spent, exactly
    release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS, fraction=0.4)
    status = budget_json(con)["study-a"]
    assert status["epsilon_spent"] == pytest.approx(2.0) and status["epsilon_spent"] <= 2.0


def test_laplace_protocol_uses_pure_accounting(warehouse):
    _, con = warehouse
    fill(con, 30)
    proto = make_protocol(mechanism="laplace", epsilon=1.0)
    r = release_standard_set(con, proto, outcome_bounds=OUTCOME_BOUNDS, fraction=0.5)
    assert r.accounting == "pure" and r.delta == 0.0
    assert r.epsilon == pytest.approx(0.5)
    assert budget_json(con) == {"study-a": {"epsilon_total": 1.0, "epsilon_spent": pytest.approx(0.5), "releases": 1}}
    assert con.execute("SELECT DISTINCT mechanism FROM privacy_ledger").fetchall() == [("laplace",)]


def test_instrument_bounds_come_from_the_instrument_scale():
    """The DP clipping bounds of an instrument-scored outcome are the score's range (public information)."""
    from flows.privacy_flows import instrument_bounds

    bounds = instrument_bounds(make_protocol())
    assert bounds == {"who5.percent": Bounds(0, 100, "who5.percent")}   # WHO-5 percent = 4 x (5 items x 0..5)


# ---- D4: no budget spent for nothing ------------------------------------------------------------------------

def test_release_on_a_warehouse_without_assignments_is_refused_before_reserving(warehouse, protocol):
    """D4: on an empty warehouse every released value would be noise; the whole budget went on it."""
    _, con = warehouse
    with pytest.raises(PrivacyError, match="no assignments"):
        release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS)
    assert _counts(con) == (0, 0, 0, 0)


def test_release_without_scores_is_refused_before_reserving(warehouse, protocol):
    """D4: ingested but never scored (the walk-through's trap): the score statistics would be noise alone."""
    _, con = warehouse
    fill(con, 20)
    con.execute("DELETE FROM scores")
    with pytest.raises(PrivacyError, match="no scores"):
        release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS)
    assert _counts(con) == (0, 0, 0, 0)


def test_a_min_cell_size_the_release_table_cannot_hold_is_refused_before_reserving(warehouse):
    """D4: min_cell_size 1e30 passed the protocol, reserved the whole budget, then crashed writing the release."""
    from pydantic import ValidationError

    _, con = warehouse
    fill(con, 20)
    with pytest.raises(ValidationError, match="min_cell_size"):  # the protocol refuses it when read (D18) ...
        make_protocol(min_cell_size=10**30)
    protocol = make_protocol()  # ... and a protocol object built past validation is refused by the release itself
    unchecked = protocol.model_copy(update={"privacy": protocol.privacy.model_copy(update={"min_cell_size": 10**30})})
    with pytest.raises(PrivacyError, match="min_cell_size"):
        release_standard_set(con, unchecked, outcome_bounds=OUTCOME_BOUNDS)
    assert _counts(con) == (0, 0, 0, 0)


def test_a_release_that_fails_before_any_noise_gives_its_reservation_back(warehouse, protocol, monkeypatch):
    """D4: a failure after the reservation commits and before the first mechanism runs costs nothing."""
    import privacy.release as release

    _, con = warehouse
    fill(con, 20)

    def interrupted(drawing, cals, normalized):
        raise RuntimeError("interrupted before drawing")

    monkeypatch.setattr(release, "_draw_all", interrupted)
    with pytest.raises(RuntimeError, match="before drawing"):
        release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS)
    assert con.execute("SELECT count(*) FROM privacy_ledger").fetchone()[0] == 0
    assert con.execute("SELECT rho_spent, releases FROM privacy_budgets").fetchone() == (0.0, 0)
    assert budget_json(con)["study-a"]["epsilon_spent"] == 0.0


def test_a_release_that_fails_after_drawing_keeps_its_spend(warehouse, protocol, monkeypatch):
    """The other side of D4's rule: once a mechanism ran, noise may have been seen; the spend stays counted."""
    import privacy.release as release

    _, con = warehouse
    fill(con, 20)

    def fails_after_one(drawing, cals, normalized):
        drawing(cals[0], normalized[0])
        raise RuntimeError("failed after drawing")

    monkeypatch.setattr(release, "_draw_all", fails_after_one)
    with pytest.raises(RuntimeError, match="after drawing"):
        release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS, fraction=0.5)
    rho_spent, releases = con.execute("SELECT rho_spent, releases FROM privacy_budgets").fetchone()
    assert rho_spent == pytest.approx(0.5 * epsilon_to_rho(2.0, 1e-6)) and releases == 1
    assert con.execute("SELECT DISTINCT status FROM privacy_ledger").fetchall() == [("reserved",)]


# ---- the budget speaks in epsilon --------------------------------------------------------------------------

def test_the_budget_refusal_speaks_in_epsilon(warehouse, protocol):
    """README finding: the refusal was stated in rho while the protocol and `budget` speak in epsilon."""
    _, con = warehouse
    fill(con, 20)
    release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS, fraction=0.6)
    with pytest.raises(BudgetExceeded) as refused:
        release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS, fraction=0.6)
    text = str(refused.value)
    left = 2.0 - budget_json(con)["study-a"]["epsilon_spent"]
    assert text.startswith(f"study 'study-a' has epsilon {left:.6g} left of 2")
    assert "would spend epsilon" in text and "refused before any noise" in text


# ---- issue 15: the unit and the loss as values --------------------------------------------------------------

def test_the_ledger_records_each_spend_in_its_mechanisms_own_measure(warehouse):
    _, con = warehouse
    fill(con, 20)
    fill(con, 20, study_id="study-b", raw_prefix="b-")
    release_standard_set(con, make_protocol(), outcome_bounds=OUTCOME_BOUNDS, fraction=0.5)
    release_standard_set(con, make_protocol(mechanism="laplace", epsilon=1.0, study_id="study-b"),
                         outcome_bounds=OUTCOME_BOUNDS, fraction=0.5)
    rows = con.execute("SELECT study_id, mechanism, loss_measure, loss_value, rho, epsilon FROM privacy_ledger").fetchall()
    gaussian = [r for r in rows if r[0] == "study-a"]
    laplace = [r for r in rows if r[0] == "study-b"]
    assert gaussian and all(m == "gaussian" and lm == "zCDP" and lv == rho for _, m, lm, lv, rho, _ in gaussian)
    assert laplace and all(m == "laplace" and lm == "pure" and lv == eps and rho is None
                           for _, m, lm, lv, rho, eps in laplace)
    assert math.fsum(r[3] for r in gaussian) == pytest.approx(0.5 * epsilon_to_rho(2.0, 1e-6))
    assert math.fsum(r[3] for r in laplace) == pytest.approx(0.5)


def test_the_privacy_unit_is_read_from_the_protocol_and_recorded(warehouse, protocol):
    from schemas.privacy_values import PrivacyUnit

    _, con = warehouse
    fill(con, 20)
    r = release_standard_set(con, protocol, outcome_bounds=OUTCOME_BOUNDS, fraction=0.5)
    assert r.unit == PrivacyUnit.of(protocol) == PrivacyUnit("participant")
    assert con.execute("SELECT DISTINCT privacy_unit FROM privacy_ledger").fetchall() == [("participant",)]
    assert r.loss.measure == "zCDP" and r.rho == r.loss.rho and r.epsilon == r.loss.as_epsilon(1e-6)


def test_split_budget_shares_add_up_to_the_total_in_its_measure(protocol):
    from privacy.release import split_budget
    from schemas.privacy_values import PrivacyLoss

    queries = standard_plan(protocol, resolve_outcome_bounds(protocol, OUTCOME_BOUNDS))
    for total in (PrivacyLoss(rho=0.3), PrivacyLoss(epsilon=1.5)):
        shares = split_budget(queries, total)
        assert {s.measure for s in shares} == {total.measure}
        assert math.fsum(s.value for s in shares) == pytest.approx(total.value)


def test_the_budget_goes_where_the_plan_needs_it(protocol):
    """privacy/release.py, "Where the budget goes": the descriptive queries share 10%; on the model's statistics
    every coordinate's rho is proportional to sqrt(weight of its effect) x its planning cost, so the primary's
    long-run arm sum gets 20x the rho of the same sum at an earlier wave (sqrt(400)) and 10x a secondary outcome's
    (sqrt(100))."""
    from privacy.release import DESCRIPTIVE_SHARE, PLANNING_COST, split_budget
    from schemas.privacy_values import PrivacyLoss

    queries = standard_plan(protocol, resolve_outcome_bounds(protocol, OUTCOME_BOUNDS))
    total = PrivacyLoss(rho=0.05)
    shares = split_budget(queries, total)
    descriptive = math.fsum(s.rho for q, s in zip(queries, shares, strict=True) if q.kind != "paired_moments")
    assert descriptive == pytest.approx(DESCRIPTIVE_SHARE * total.rho)
    rho = {}  # (outcome, wave, statistic) -> rho of that coordinate (one arm: what one participant touches)
    for q, s in zip(queries, shares, strict=True):
        if q.kind == "paired_moments":
            for k, r in zip(q.keys, q.reach, strict=True):
                if k.arm == "control":
                    rho[(k.outcome, k.wave, k.statistic)] = s.rho * r * r / q.l2_sensitivity ** 2
    assert math.fsum(rho.values()) == pytest.approx((1 - DESCRIPTIVE_SHARE) * total.rho)
    top = rho[("who5.percent", "m3", "sum_y")]
    assert max(rho.values()) == top
    assert top / rho[("who5.percent", "m1", "sum_y")] == pytest.approx(20.0)
    assert top / rho[("ext.score", "m3", "sum_y")] == pytest.approx(10.0)
    for stat, cost in PLANNING_COST.items():
        assert rho[("who5.percent", "m3", stat)] / top == pytest.approx(cost)


@settings(max_examples=200, deadline=None)
@given(costs=st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=8),
       other=st.lists(st.floats(1e-3, 1.0), min_size=8, max_size=8))
def test_the_square_root_rule_minimises_the_noise_variance(costs, other):
    """The derivation behind the rule: with noise variance A_j / rho_j per coordinate (Gaussian mechanism, zCDP) and
    sum rho_j fixed, rho_j proportional to sqrt(A_j) gives the least total variance (Lagrange; here checked against
    any other split of the same total)."""
    a = [c * c for c in costs]
    best = [math.sqrt(x) for x in a]
    other = other[: len(a)]
    scale_b, scale_o = 1 / math.fsum(best), 1 / math.fsum(other)
    var_best = math.fsum(x / (r * scale_b) for x, r in zip(a, best, strict=True))
    var_other = math.fsum(x / (r * scale_o) for x, r in zip(a, other, strict=True))
    assert var_best <= var_other * (1 + 1e-9)


def test_a_planned_interim_release_stops_its_paired_moments_at_its_wave(protocol):
    """Waves not yet closed would be noise alone: an interim release's paired moments end at its ``after_wave``, which
    becomes their long-run target (the largest share); an unknown wave is refused."""
    from privacy.release import plan_paired

    bounds = resolve_outcome_bounds(protocol, OUTCOME_BOUNDS)["who5.percent"]
    full = plan_paired(protocol, "who5.percent", bounds)
    interim = plan_paired(protocol, "who5.percent", bounds, through_wave="m1")
    assert {k.wave for k in full.keys} == {"m1", "m3"} and {k.wave for k in interim.keys} == {"m1"}
    for q, wave in ((full, "m3"), (interim, "m1")):
        top = max(zip(q.reach, q.keys), key=lambda rk: rk[0])[1]
        assert (top.wave, top.statistic) == (wave, "sum_y")
    with pytest.raises(PrivacyError, match="not a wave"):
        plan_paired(protocol, "who5.percent", bounds, through_wave="m9")
