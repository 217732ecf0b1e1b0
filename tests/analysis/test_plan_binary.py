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


def _released(cells, suppressed_waves=(), sd=5.64):
    from analysis.plan import ReleasedCounts
    from schemas.binary_stats import NoisyBinaryCounts

    return ReleasedCounts({(a, "w1"): NoisyBinaryCounts(float(e), float(n - e), sd, sd) for a, (n, e) in cells.items()},
                          ("w1",), {w: f"the DP release suppressed a cell at {w}" for w in suppressed_waves})


def test_the_public_plan_analyses_a_binary_outcome_from_its_released_counts():
    from analysis.plan import run_public_plan

    released = {"event": _released({"drug": (295, 27), "placebo": (307, 52)}),
                "response": _released({"drug": (295, 150), "placebo": (307, 120)}),
                "remission": _released({"drug": (295, 0), "placebo": (307, 3)})}
    result = run_public_plan(released, PROTOCOL)
    rows = {(e.outcome, e.method, e.wave): e for e in result.effects}
    assert {m for o, m, w in rows if o == "event" and w == "long_run"} == {
        "bayes_binomial_noise_aware", "risk_ratio_noise_aware", "odds_ratio_noise_aware"}
    rd = rows[("event", "bayes_binomial_noise_aware", "long_run")]
    assert rd.tier == "public" and rd.lower < 27 / 295 - 52 / 307 < rd.upper < 0 and rd.p_benefit > 0.95
    # the released counts of remission (0 and 3 events, noise SD 5.6) cannot carry a ratio: refused with why
    for m in ("risk_ratio_noise_aware", "odds_ratio_noise_aware"):
        assert not rows[("remission", m, "long_run")].estimable
    assert rows[("remission", "bayes_binomial_noise_aware", "long_run")].estimable
    assert not result.failed and any("noise-aware beta-binomial" in n for n in result.notes)


def test_a_binary_outcome_whose_release_is_unusable_fails_alone_on_the_public_tier():
    from analysis.plan import run_public_plan

    released = {"event": _released({"drug": (295, 27), "placebo": (307, 52)}),
                "response": _released({"drug": (295, 150), "placebo": (307, 120)}, suppressed_waves=("w1",)),
                "remission": Unavailable("its DP release cannot be used")}
    result = run_public_plan(released, PROTOCOL)
    assert set(result.failed) == {"response", "remission"}
    failed = [e for e in result.effects if e.outcome in ("response", "remission")]
    assert failed and all(not e.estimable and e.tier == "public" for e in failed)
    assert any("suppressed" in e.reason for e in failed if e.outcome == "response")
