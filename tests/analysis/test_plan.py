"""The analysis plan as a pure function of statistics (analysis.plan), without a warehouse: which rows it
publishes, the Holm family, the running-study rule, failures of one outcome, and the public tier's plan.

The statistics are computed from simulated rows in numpy (tests/support/plan.py); the Bayesian fit is replaced by
the ML fit on the same cross-products (the sampler has its own tests)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from analysis.errors import AnalysisRefused, DiagnosticsFailed
from analysis.multiplicity import holm
from analysis.plan import ReleasedCells, Unavailable, run_plan, run_public_plan
from analysis.results import Diagnostics
from schemas.protocol import StudyProtocol
from schemas.results import LONG_RUN, Effect
from schemas.suffstats import NoisyPairedMoments, PairedMoments
from tests.support.plan import ml_fit_stand_in, plan_statistics_from_rows, simulated_scores

PROTOCOL = StudyProtocol.model_validate({
    "study_id": "plan",
    "title": "plan",
    "arms": [{"name": "control", "control": True}, {"name": "coach"}],
    "waves": [{"name": "w0", "day": 0, "instruments": ["who5"]}, {"name": "w1", "day": 30, "instruments": ["who5"]},
              {"name": "w3", "day": 91, "instruments": ["who5"]}],
    "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "w3", "mcid": 5},
    "secondary_outcomes": [{"name": "a.total", "source": "external", "wave": "w3"},
                           {"name": "b.total", "source": "external", "wave": "w3"}],
    "surrogates": [{"name": "sessions", "event_type": "session_start", "window_days": 14}],
    "privacy": {"epsilon": 1.0},
    # the random-intercept model, so the stand-in fit exercises the plan's handling of a model's failures; the MMRM
    # (the default with two follow-up waves) has tests of its own below
    "analysis": {"subgroups": ["baseline_tercile"], "model": "random_intercept"},
})
EFFECTS = {"who5.percent": 6.0, "a.total": 3.0, "b.total": 0.0}


def _telemetry(rng, n=120) -> dict[str, dict[str, PairedMoments]]:
    pre = rng.gamma(3, 1, 2 * n)
    post = pre + rng.normal(0, 1, 2 * n) + np.repeat([0.0, 0.5], n)
    return {"sessions": {"control": PairedMoments.from_arrays(pre[:n], post[:n]),
                         "coach": PairedMoments.from_arrays(pre[n:], post[n:])}}


@pytest.fixture(scope="module")
def statistics():
    rng = np.random.default_rng(4)
    return plan_statistics_from_rows(simulated_scores(rng, PROTOCOL, effects=EFFECTS), PROTOCOL, _telemetry(rng))


def _rows(result, **where):
    return [e for e in result.effects if all(getattr(e, k) == v for k, v in where.items())]


def test_a_closed_study_publishes_every_planned_row(statistics):
    result = run_plan(statistics, PROTOCOL, fit=ml_fit_stand_in)
    assert result.failed == () and not any("FAILED" in n for n in result.notes)
    for o in PROTOCOL.outcomes:  # the model at each follow-up wave and the long run, and the final-wave ANCOVA
        assert {e.wave for e in _rows(result, outcome=o.name, method="ml_stand_in")} == {"w1", "w3", LONG_RUN}
        (ancova,) = _rows(result, outcome=o.name, method="ancova_final_wave")
        assert ancova.estimable and ancova.wave == "w3" and ancova.sd > 0 and ancova.interval_level == 0.95
        assert ancova.n_arm + ancova.n_control == statistics.outcome(o.name).final_wave.completers["coach"].n + \
            statistics.outcome(o.name).final_wave.completers["control"].n
    lr = _rows(result, outcome="who5.percent", method="ml_stand_in", wave=LONG_RUN)[0]
    assert lr.lower < EFFECTS["who5.percent"] < lr.upper and lr.p_above_mcid is not None
    assert lr.n_arm == statistics.outcome("who5.percent").longitudinal.n_at("coach", "w3")
    (tip,) = _rows(result, method="tipping_point_delta")
    assert tip.estimable and tip.estimate > 0 and result.tipping_points[0].effect == tip
    sub = _rows(result, method="ancova_subgroup_partial_pooling")
    assert sorted(e.subgroup for e in sub) == ["baseline_tercile=T1", "baseline_tercile=T2", "baseline_tercile=T3"]
    (cuped,) = _rows(result, outcome="sessions")
    assert cuped.method == "cuped" and cuped.wave == "first_14_days" and cuped.lower < 0.5 < cuped.upper
    assert all(e.estimable for e in result.effects)


def test_holm_adjusts_the_secondary_outcomes_only(statistics):
    result = run_plan(statistics, PROTOCOL, fit=ml_fit_stand_in)
    ancova = {e.outcome: e for e in _rows(result, method="ancova_final_wave")}
    assert ancova["who5.percent"].p_adjusted is None  # the primary is tested alone
    want = {r.name: r.p_adjusted for r in holm({"a": ancova["a.total"].p_value, "b": ancova["b.total"].p_value})}
    assert ancova["a.total"].p_adjusted == pytest.approx(want["a"]) and ancova["b.total"].p_adjusted == pytest.approx(want["b"])


def test_a_secondary_without_a_p_value_stays_in_the_holm_family(statistics):
    """b.total's final-wave ANCOVA cannot be computed (no completer in the control arm): its row says why and
    a.total is adjusted as one of two hypotheses (p = 1 for b), never as a family of one."""
    b = statistics.outcome("b.total")
    broken = replace(b, final_wave=replace(b.final_wave, completers={"coach": b.final_wave.completers["coach"]}))
    stats = replace(statistics, outcomes=tuple(broken if o.outcome == "b.total" else o for o in statistics.outcomes))
    result = run_plan(stats, PROTOCOL, fit=ml_fit_stand_in)
    ancova = {e.outcome: e for e in _rows(result, method="ancova_final_wave")}
    assert not ancova["b.total"].estimable and "final-wave ANCOVA of b.total is not available" in ancova["b.total"].reason
    assert ancova["b.total"].estimate is None and ancova["b.total"].p_value is None
    assert ancova["a.total"].p_adjusted == pytest.approx(min(1.0, 2 * ancova["a.total"].p_value))


def test_a_running_study_has_no_long_run_or_final_wave_rows(statistics):
    rng = np.random.default_rng(5)
    rows = simulated_scores(rng, PROTOCOL, effects=EFFECTS)
    stats = plan_statistics_from_rows(rows[rows["wave"] != "w3"], PROTOCOL, _telemetry(rng))
    result = run_plan(stats, PROTOCOL, fit=ml_fit_stand_in)
    assert {e.wave for e in _rows(result, method="ml_stand_in")} == {"w1"}
    assert not _rows(result, wave=LONG_RUN) and not _rows(result, wave="w3")
    assert any(n.startswith("STUDY RUNNING: who5.percent") and "--calibration-study" in n for n in result.notes)
    assert _rows(result, outcome="sessions")  # telemetry does not wait for the final wave


def _failing_for(*names):
    def fit(stats, plan, *, outcome, **kw):
        result = ml_fit_stand_in(stats, plan, outcome=outcome, **kw)
        if outcome in names:
            return replace(result, diagnostics=Diagnostics(False, 1.08, 50.0, 2, ("R-hat 1.080 > 1.01", "2 divergent transitions")))
        return result
    return fit


def test_one_failing_outcome_is_reported_failed_and_the_others_publish(statistics):
    result = run_plan(statistics, PROTOCOL, fit=_failing_for("a.total"))
    assert result.failed == ("a.total",)
    failed = _rows(result, outcome="a.total", method="bayes_random_intercept_marginal")
    assert {e.wave for e in failed} == {"w1", "w3", LONG_RUN}
    assert all(not e.estimable and e.estimate is None and "failed its diagnostics: R-hat 1.080" in e.reason for e in failed)
    assert any(n.startswith("OUTCOME FAILED: the model of a.total failed its diagnostics") for n in result.notes)
    assert all(e.estimable for e in _rows(result, outcome="who5.percent", method="ml_stand_in"))
    assert _rows(result, outcome="a.total", method="ancova_final_wave")[0].estimable  # its own statistics


def test_a_failing_primary_is_visible_as_failed(statistics):
    result = run_plan(statistics, PROTOCOL, fit=_failing_for("who5.percent"))
    assert result.notes[0].startswith("PRIMARY OUTCOME FAILED: the model of who5.percent failed its diagnostics")
    assert not any(e.estimable for e in _rows(result, outcome="who5.percent", wave=LONG_RUN, method="bayes_random_intercept_marginal"))
    assert _rows(result, outcome="a.total", method="ml_stand_in")


def test_input_and_sampler_failures_are_reported_too(statistics):
    s = statistics.outcome("b.total")
    stats = replace(statistics, outcomes=tuple(
        replace(o, longitudinal=Unavailable("arms ['coach'] have no follow-up rows")) if o is s else o
        for o in statistics.outcomes))

    def fit(stats_, plan, *, outcome, **kw):
        if outcome == "a.total":
            raise RuntimeError("All initialization points failed\n\nCaused by: ...")
        return ml_fit_stand_in(stats_, plan, outcome=outcome, **kw)

    result = run_plan(stats, PROTOCOL, fit=fit)
    reasons = {e.outcome: e.reason for e in result.effects if e.wave == LONG_RUN and not e.estimable}
    assert reasons["b.total"] == "the model of b.total could not be fitted: arms ['coach'] have no follow-up rows"
    assert reasons["a.total"] == "the model of a.total could not be fitted (All initialization points failed)"
    assert set(result.failed) == {"a.total", "b.total"}


def test_when_every_outcome_fails_nothing_is_published(statistics):
    with pytest.raises(AnalysisRefused, match=r"who5\.percent failed its diagnostics.*b\.total.*nothing was published"):
        run_plan(statistics, PROTOCOL, fit=_failing_for("who5.percent", "a.total", "b.total"))
    assert issubclass(DiagnosticsFailed, RuntimeError)  # caught as diagnostics, not as a sampler crash


def test_sample_ratio_mismatch_is_a_note(statistics):
    result = run_plan(replace(statistics, arm_counts={"control": 200, "coach": 120}), PROTOCOL, fit=ml_fit_stand_in)
    assert any(n.startswith("SAMPLE RATIO MISMATCH") and "p = 7.7e-06" in n for n in result.notes)


def _release():
    pm = PairedMoments.from_arrays(np.arange(10.0), np.arange(10.0) + 1)
    cell = NoisyPairedMoments.exact(pm)
    return ReleasedCells({(a, w): cell for a in ("control", "coach") for w in ("w1", "w3")}, ("w1", "w3"))


def test_the_public_plan_reports_a_failed_outcome_and_publishes_the_others():
    def stub(cells, plan, *, control, waves, outcome, direction, mcid, rope):
        effect = Effect(outcome=outcome, arm="coach", control=control, wave=LONG_RUN, method="bayes_ancova_noise_aware",
                        tier="public", estimate=1.0, sd=0.5, lower=0.0, upper=2.0, interval_level=0.95)
        passed = outcome != "a.total"
        return type("R", (), {"effects": (effect,), "diagnostics": Diagnostics(passed, 1.0 if passed else 1.02, 900.0, 0,
                                                                               () if passed else ("R-hat 1.020 > 1.01",))})()

    released = {"who5.percent": _release(), "a.total": _release(), "b.total": Unavailable("a suppressed cell")}
    result = run_public_plan(released, PROTOCOL, fit=stub)
    assert set(result.failed) == {"a.total", "b.total"}
    a_rows = _rows(result, outcome="a.total")
    assert {e.wave for e in a_rows} == {"w1", "w3", LONG_RUN} and all(e.tier == "public" and not e.estimable for e in a_rows)
    assert "failed its diagnostics: R-hat 1.020" in a_rows[0].reason
    assert _rows(result, outcome="b.total")[0].reason == "the public-tier model of b.total could not be fitted: a suppressed cell"
    assert _rows(result, outcome="who5.percent")[0].estimable
    with pytest.raises(AnalysisRefused, match="nothing was published"):
        run_public_plan({k: Unavailable("no usable cell") for k in released}, PROTOCOL, fit=stub)


def test_every_quantity_that_cannot_be_estimated_says_why_and_has_no_number(statistics):
    """The paths that used to give a plausible default or nothing: the primary's final wave without control
    completers (ANCOVA and tipping point), a telemetry metric without a control arm, a metric the warehouse
    could not read, subgroup levels that cannot be pooled (a note: the levels are unknown, so no row)."""
    prim = statistics.outcome("who5.percent")
    fw = replace(prim.final_wave, completers={"coach": prim.final_wave.completers["coach"]})
    one_level = {"T1": prim.subgroups["baseline_tercile"]["T1"]}
    stats = replace(statistics, outcomes=tuple(
        replace(o, final_wave=fw, subgroups={"baseline_tercile": one_level}) if o is prim else o
        for o in statistics.outcomes), telemetry={"sessions": {"coach": statistics.telemetry["sessions"]["coach"]}})
    result = run_plan(stats, PROTOCOL, fit=ml_fit_stand_in)
    for method in ("ancova_final_wave", "tipping_point_delta"):
        (row,) = _rows(result, outcome="who5.percent", method=method)
        assert not row.estimable and row.estimate is None and "final-wave ANCOVA of who5.percent" in row.reason
    (cuped,) = _rows(result, outcome="sessions")
    assert not cuped.estimable and "control arm 'control' has no statistics" in cuped.reason
    assert not _rows(result, method="ancova_subgroup_partial_pooling")
    assert any(n.startswith("subgroup baseline_tercile of who5.percent not available: partial pooling needs")
               for n in result.notes)
    unread = run_plan(replace(statistics, telemetry={"sessions": Unavailable("events table unreadable")}), PROTOCOL,
                      fit=ml_fit_stand_in)
    assert _rows(unread, outcome="sessions")[0].reason == "telemetry metric sessions: events table unreadable"
    for e in (*result.effects, *unread.effects):  # the invariant, on every row the plan gave
        assert e.estimable == (e.estimate is not None) and (e.reason is None) == e.estimable



def test_the_mmrm_is_the_primary_model_with_two_or_more_follow_up_waves():
    """Without `model:` a per-wave plan with two follow-up waves fits the REML MMRM (Kenward-Roger and sandwich rows,
    n analysed per arm) and reports the ML random-intercept fit beside it as a cross-check."""
    from analysis.mmrm import fit_mmrm
    from analysis.plan import mmrm_design

    data = {**PROTOCOL.model_dump(mode="json"), "analysis": {"subgroups": ["baseline_tercile"]}}
    protocol = StudyProtocol.model_validate(data)
    rng = np.random.default_rng(11)
    stats = plan_statistics_from_rows(simulated_scores(rng, protocol, effects=EFFECTS), protocol)
    result = run_plan(stats, protocol, fit=ml_fit_stand_in)
    rows = [e for e in result.effects if e.outcome == "who5.percent" and e.method.startswith("mmrm_reml_us")]
    assert {(e.method, e.wave) for e in rows} == {(m, w) for m in ("mmrm_reml_us", "mmrm_reml_us_sandwich")
                                                  for w in ("w1", "w3", "long_run")}
    fit = fit_mmrm(stats.outcome("who5.percent").mmrm, mmrm_design(protocol, ("w1", "w3")))
    long_run = next(e for e in rows if e.method == "mmrm_reml_us" and e.wave == "long_run")
    assert long_run.estimate == fit.effect("coach").estimate
    assert long_run.sd == fit.effect("coach").kenward_roger.se and long_run.p_value is not None
    assert long_run.n_arm > 0 and long_run.n_control > 0
    sandwich = next(e for e in rows if e.method == "mmrm_reml_us_sandwich" and e.wave == "long_run")
    assert sandwich.sd == fit.effect("coach").sandwich.se
    assert any(e.method == "ml_random_intercept" and e.wave == "long_run" for e in result.effects)
    assert not any(e.method.startswith("bayes_random_intercept") for e in result.effects)


def test_an_mmrm_that_cannot_be_fitted_is_reported_failed():
    from dataclasses import replace as dc_replace

    protocol = StudyProtocol.model_validate({**PROTOCOL.model_dump(mode="json"), "analysis": {"subgroups": []}})
    rng = np.random.default_rng(12)
    stats = plan_statistics_from_rows(simulated_scores(rng, protocol, effects=EFFECTS), protocol)
    broken = dc_replace(stats, outcomes=tuple(dc_replace(o, mmrm=Unavailable("duplicate waves (3 rows)"))
                                              if o.outcome == "a.total" else o for o in stats.outcomes))
    result = run_plan(broken, protocol, fit=ml_fit_stand_in)
    assert result.failed == ("a.total",)
    failed = [e for e in result.effects if e.outcome == "a.total" and e.method == "mmrm_reml_us"]
    assert failed and all(not e.estimable and "duplicate waves" in e.reason for e in failed)


def test_an_interim_release_gives_no_public_long_run_row():
    """A release that stops before the outcome's long-run wave (a planned interim release) is the trusted tier's
    running study: per-wave rows for the waves it covers, a STUDY RUNNING note, no long-run row (the real model)."""
    rng = np.random.default_rng(4)
    x = rng.normal(50, 15, 400)
    cells = {(a, "w1"): NoisyPairedMoments.exact(PairedMoments.from_arrays(x, 0.6 * x + rng.normal(0, 10, 400) + k))
             for k, a in enumerate(("control", "coach"))}
    released = {o.name: ReleasedCells(cells, ("w1",)) for o in PROTOCOL.outcomes}
    result = run_public_plan(released, PROTOCOL)
    assert result.failed == ()
    assert {e.wave for e in result.effects} == {"w1"} and all(e.estimable for e in result.effects)
    assert any(n.startswith("STUDY RUNNING: the latest DP release of who5.percent covers w1") for n in result.notes)
