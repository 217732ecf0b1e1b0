"""The plan routes a binary outcome to its counts (analysis.binary): every measure and test as rows, a zero cell
refused by name, the long-run risk difference in the Holm family of the secondary outcomes."""

from __future__ import annotations

from analysis.plan import OutcomeStatistics, PlanStatistics, Unavailable, run_plan
from schemas.binary_stats import BinaryCounts, BinaryCountTable
from schemas.protocol import StudyProtocol

PROTOCOL = StudyProtocol.model_validate({
    "study_id": "s1", "title": "t",
    "arms": [{"name": "placebo", "control": True}, {"name": "drug"}],
    "waves": [{"name": "w0", "day": 0}, {"name": "w1", "day": 30}],
    "primary_outcome": {"name": "event", "source": "external", "kind": "binary", "wave": "w1",
                        "direction": "lower_is_better"},
    "secondary_outcomes": [{"name": "response", "source": "external", "kind": "binary", "wave": "w1"},
                           {"name": "remission", "source": "external", "kind": "binary", "wave": "w1"}],
})


def _stats(cells: dict[str, tuple[tuple[int, int], tuple[int, int]]]) -> PlanStatistics:
    outcomes = []
    for name, (drug, placebo) in cells.items():
        table = BinaryCountTable(("placebo", "drug"), ("w1",), {("drug", "w1"): BinaryCounts(*drug),
                                                                 ("placebo", "w1"): BinaryCounts(*placebo)})
        outcomes.append(OutcomeStatistics(name, ("w1",), Unavailable("binary"), binary=table))
    return PlanStatistics(tuple(outcomes), {"placebo": 307, "drug": 295})


def test_a_binary_outcome_gives_every_measure_and_both_tests_and_joins_the_holm_family():
    result = run_plan(_stats({"event": ((295, 27), (307, 52)), "response": ((295, 150), (307, 120)),
                              "remission": ((295, 0), (307, 3))}), PROTOCOL)
    rows = {(e.outcome, e.method, e.wave): e for e in result.effects}
    methods = {m for o, m, w in rows if o == "event" and w == "long_run"}
    assert methods == {"risk_difference_newcombe_hybrid_score", "risk_ratio_katz_log", "odds_ratio_woolf_logit",
                       "chi_square_pearson_uncorrected", "fisher_exact", "beta_binomial_conjugate"}
    rd = rows[("event", "risk_difference_newcombe_hybrid_score", "long_run")]
    assert rd.p_adjusted is None and round(rd.p_value, 5) == 0.00468  # the primary is tested alone
    # the secondary outcomes' long-run risk differences are Holm-adjusted together
    resp = rows[("response", "risk_difference_newcombe_hybrid_score", "long_run")]
    remi = rows[("remission", "risk_difference_newcombe_hybrid_score", "long_run")]
    ps = sorted([resp.p_value, remi.p_value])
    assert sorted([resp.p_adjusted, remi.p_adjusted]) == [min(1.0, 2 * ps[0]), max(min(1.0, 2 * ps[0]), ps[1])]
    # a zero cell: the ratios say why, with no number; the risk difference and the exact test stand
    for m in ("risk_ratio_katz_log", "odds_ratio_woolf_logit"):
        e = rows[("remission", m, "long_run")]
        assert not e.estimable and e.estimate is None and "treated events = 0" in e.reason
    assert rows[("remission", "fisher_exact", "long_run")].p_value is not None
    assert any("27/295" in n and "52/307" in n for n in result.notes)


def test_a_binary_outcome_whose_counts_are_unavailable_fails_alone():
    stats = _stats({"event": ((295, 27), (307, 52)), "response": ((295, 150), (307, 120))})
    broken = OutcomeStatistics("remission", ("w1",), Unavailable("binary"), binary=Unavailable("3 values are not 0 or 1"))
    result = run_plan(PlanStatistics((*stats.outcomes, broken), stats.arm_counts), PROTOCOL)
    assert result.failed == ("remission",)
    failed = [e for e in result.effects if e.outcome == "remission"]
    assert failed and all(not e.estimable and "not 0 or 1" in e.reason for e in failed)
    assert any(n.startswith("OUTCOME FAILED") for n in result.notes)
