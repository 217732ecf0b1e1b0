"""DP releases of a binary outcome's counts (issue 20 item 4): the histogram's sensitivity, the counts against the raw
rows and the trusted tier's, refusals before any reservation, the release rows and the budget split."""

from __future__ import annotations

import math
import random

import pytest

from privacy.budget import budget_loss
from privacy.errors import ReleaseRefused
from privacy.release import (
    calibrate,
    exact_values,
    plan_binary_counts,
    release_standard_set,
    resolve_outcome_bounds,
    split_budget,
    standard_plan,
)
from tests.support.privacy import add_extreme_binary_participant, fill_binary, make_binary_protocol

TABLES = ("privacy_budgets", "privacy_ledger", "releases", "release_values")


def _counts(con):
    return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES)


@pytest.fixture
def binary_protocol():
    return make_binary_protocol()


def test_a_binary_outcome_is_released_as_counts_only_and_needs_no_bounds(binary_protocol):
    bounds = resolve_outcome_bounds(binary_protocol)  # only the continuous ext.score needs (and has) bounds
    assert set(bounds) == {"ext.score"}
    kinds = {q.name: q.kind for q in standard_plan(binary_protocol, bounds)}
    assert kinds == {"consort_counts": "consort_counts", "binary_counts:relapse": "binary_counts",
                     "binary_counts:who5.percent": "binary_counts", "score_moments:ext.score": "score_moments",
                     "score_bands:ext.score": "score_bands", "paired_moments:ext.score": "paired_moments"}
    q = plan_binary_counts(binary_protocol, "relapse")
    # follow-up waves only (the trusted tier's), two disjoint cells per arm x wave
    assert [(k.arm, k.wave, k.statistic) for k in q.keys][:4] == [
        ("control", "m1", "events"), ("control", "m1", "non_events"), ("control", "m3", "events"),
        ("control", "m3", "non_events")]
    # the sensitivity: one cell per wave, the long-run wave reach 1, the earlier (1/400)^(1/4)
    assert q.touches == 2 and q.exclusive
    assert q.l2_sensitivity == pytest.approx(math.sqrt(1 + math.sqrt(1 / 400)))
    assert q.l1_sensitivity == pytest.approx(1 + (1 / 400) ** 0.25)
    interim = plan_binary_counts(binary_protocol, "relapse", through_wave="m1")
    assert {k.wave for k in interim.keys} == {"m1"} and interim.l2_sensitivity == pytest.approx(1.0)
    assert plan_binary_counts(binary_protocol, "relapse", through_wave="baseline") is None


def test_adding_any_participant_moves_the_binary_counts_by_at_most_the_sensitivity(warehouse, binary_protocol):
    """The histogram argument of plan_binary_counts, on adversarial participants (two conflicting assignments,
    duplicate scores at every wave, values out of the instrument's range): per wave at most one cell moves, by 1."""
    _, con = warehouse
    fill_binary(con, 20)
    queries = [q for q in standard_plan(binary_protocol, resolve_outcome_bounds(binary_protocol))
               if q.kind == "binary_counts"]
    rng = random.Random(11)
    for trial in range(6):
        before = [exact_values(con, binary_protocol, q) for q in queries]
        con.execute("BEGIN TRANSACTION")
        add_extreme_binary_participant(con, f"extreme-{trial}", rng.choice(["control", "coach"]), rng)
        after = [exact_values(con, binary_protocol, q) for q in queries]
        con.execute("ROLLBACK")
        for q, b, a in zip(queries, before, after, strict=True):
            diff = [(y - x) / u for x, y, u in zip(b, a, q.normalizers, strict=True)]
            assert all(abs(d) <= r + 1e-12 for d, r in zip(diff, q.reach, strict=True)), q.name
            assert math.sqrt(sum(d * d for d in diff)) <= q.l2_sensitivity + 1e-12, q.name
            assert sum(abs(d) for d in diff) <= q.l1_sensitivity + 1e-12, q.name
            assert sum(1 for d in diff if d) == q.touches, q.name  # observed at both waves: one cell each


def test_the_released_counts_are_the_trusted_tiers_counts(warehouse, binary_protocol):
    from flows.statistics import binary_table

    _, con = warehouse
    fill_binary(con, 30)
    for name in ("relapse", "who5.percent"):
        q = plan_binary_counts(binary_protocol, name)
        got = dict(zip([(k.arm, k.wave, k.statistic) for k in q.keys], exact_values(con, binary_protocol, q),
                       strict=True))
        table = binary_table(con, binary_protocol, binary_protocol.outcome(name), ["m1", "m3"])
        for arm in ("control", "coach"):
            for wave in ("m1", "m3"):
                cell = table.cell(arm, wave)
                assert (got[(arm, wave, "events")], got[(arm, wave, "non_events")]) == (cell.events, cell.non_events)
        # and against the raw rows (the cut-off: WHO-5 percent <= 50 is the event)
        rows = con.execute("SELECT a.arm, s.wave, s.value FROM scores s JOIN assignments a USING (participant) "
                           "WHERE s.outcome = ? AND s.wave <> 'baseline'", [name]).fetchall()
        event = (lambda v: v == 1) if name == "relapse" else (lambda v: v <= 50)
        for arm in ("control", "coach"):
            assert got[(arm, "m3", "events")] == sum(1 for a, w, v in rows if a == arm and w == "m3" and event(v))
            assert got[(arm, "m3", "non_events")] == sum(1 for a, w, v in rows if a == arm and w == "m3" and not event(v))


def test_release_rows_n_is_the_sum_and_small_cells_are_suppressed_on_n(warehouse):
    _, con = warehouse
    fill_binary(con, 60)
    protocol = make_binary_protocol(min_cell_size=5)
    r = release_standard_set(con, protocol)
    assert "binary_counts:relapse" in r.queries and "score_moments:relapse" not in r.queries
    cells: dict = {}
    for row in r.rows:
        if row.query == "binary_counts:relapse":
            cells.setdefault((row.arm, row.wave), {})[row.statistic] = row
    assert set(cells) == {(a, w) for a in ("control", "coach") for w in ("m1", "m3")}
    for c in cells.values():
        n, e, ne = c["n"], c["events"], c["non_events"]
        assert n.suppressed == e.suppressed == ne.suppressed == (n.value is None)
        if not n.suppressed:
            assert n.value == pytest.approx(e.value + ne.value) and n.value >= 5
            assert n.noise_sd == pytest.approx(math.hypot(e.noise_sd, ne.noise_sd))
        assert e.noise_sd == ne.noise_sd > 0
    # the earlier wave's noise is larger by the allocation rule's reach (1/400)^(-1/4)
    assert cells[("control", "m1")]["events"].noise_sd / cells[("control", "m3")]["events"].noise_sd == \
        pytest.approx((1 / 400) ** -0.25)
    stored = con.execute("SELECT count(*) FROM release_values WHERE query = 'binary_counts:relapse'").fetchone()[0]
    assert stored == 12


def test_a_huge_min_cell_size_suppresses_every_binary_cell(warehouse):
    _, con = warehouse
    fill_binary(con, 20)
    r = release_standard_set(con, make_binary_protocol(min_cell_size=10_000))
    assert all(row.suppressed and row.value is None for row in r.rows if row.query.startswith("binary_counts"))


def test_a_binary_score_that_is_not_0_or_1_refuses_the_release_before_reserving(warehouse, binary_protocol):
    _, con = warehouse
    ids = fill_binary(con, 20)
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, source) VALUES (?,?,?,?,?,?)",
                ["study-a", next(iter(ids.values())), "m2", "relapse", 2.0, "external"])  # a wave not planned: ignored
    release_standard_set(con, make_binary_protocol(study_id="study-a"), fraction=0.1)
    before = _counts(con)
    con.execute("UPDATE scores SET value = 2 WHERE outcome = 'relapse' AND wave = 'm3' AND participant = ?",
                [next(iter(ids.values()))])
    with pytest.raises(ReleaseRefused, match="'relapse' has 1 score.*not 0 or 1.*no budget was reserved"):
        release_standard_set(con, binary_protocol, fraction=0.1)
    assert _counts(con) == before


def test_a_release_without_binary_scores_is_refused_before_reserving(warehouse, binary_protocol):
    from tests.support.privacy import fill

    _, con = warehouse
    fill(con, 10)  # WHO-5 and ext.score, but no relapse scores: the primary's counts would be noise alone...
    con.execute("DELETE FROM scores")  # ...and with no scores at all the release is refused outright
    with pytest.raises(ReleaseRefused, match="no scores"):
        release_standard_set(con, binary_protocol)
    assert _counts(con) == (0, 0, 0, 0)


def test_the_binary_primary_gets_the_model_share_of_the_budget(binary_protocol):
    queries = standard_plan(binary_protocol, resolve_outcome_bounds(binary_protocol))
    total = budget_loss(1.0, 1e-6, "zcdp")
    shares = {q.name: s.rho / total.rho for q, s in zip(queries, split_budget(queries, total), strict=True)}
    assert sum(shares.values()) == pytest.approx(1.0)
    model = {k: v for k, v in shares.items() if k.split(":")[0] in ("binary_counts", "paired_moments")}
    assert sum(model.values()) == pytest.approx(0.9)
    # rho_q proportional to sqrt(weight) * cost: the primary (weight 1, cost 1 + 1/20) over a secondary (weight 1/100)
    assert shares["binary_counts:relapse"] / shares["binary_counts:who5.percent"] == pytest.approx(10.0)
    assert shares["binary_counts:relapse"] > 0.6
    # the calibrated noise: rho = l2^2 / (2 sigma^2) for the long-run cells (reach 1)
    q = next(q for q in queries if q.name == "binary_counts:relapse")
    cal = calibrate(q, "gaussian", split_budget(queries, total)[queries.index(q)])
    sd_long_run = cal.noise_sd()[[k.wave for k in q.keys].index("m3")]
    assert sd_long_run == pytest.approx(q.l2_sensitivity / math.sqrt(2 * cal.loss.rho), rel=1e-6)
