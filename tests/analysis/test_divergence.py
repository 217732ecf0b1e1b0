"""The divergence monitor and the decision rule as pure functions of Effect rows (analysis.divergence,
analysis.decision), then wired into the plan (analysis.plan.run_plan / run_public_plan).

The spec: per arm and wave, the intersection-union test of {engagement up} and {flourishing down beyond its margin},
each one-sided at the plan's alpha; indeterminate, never a pass, when the flourishing measure is missing, failed or
suppressed; the flourishing effect never adjusted for engagement; the rule ships only on a primary success, every
guardrail non-inferior and no divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm, t

from analysis.decision import DO_NOT_SHIP, SHIP, decision_table, per_test_power
from analysis.divergence import DIVERGENCE, INDETERMINATE, NO_DIVERGENCE, divergence_monitor, reference_df, summary
from analysis.plan import ReleasedCells, Unavailable, run_plan, run_public_plan
from schemas.protocol import StudyProtocol
from schemas.results import LONG_RUN, Effect
from schemas.suffstats import NoisyPairedMoments, PairedMoments
from tests.support.plan import ml_fit_stand_in, plan_statistics_from_rows, simulated_scores

PROTOCOL = StudyProtocol.model_validate({
    "study_id": "monitor",
    "title": "monitor",
    "arms": [{"name": "control", "control": True}, {"name": "coach"}],
    "waves": [{"name": "w0", "day": 0, "instruments": ["who5", "phq2"]},
              {"name": "w1", "day": 30, "instruments": ["who5", "phq2"]},
              {"name": "w3", "day": 91, "instruments": ["who5", "phq2"]}],
    "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "w3", "mcid": 10, "ni_margin": 2},
    "secondary_outcomes": [{"name": "phq2.total", "instrument": "phq2", "wave": "w3", "direction": "lower_is_better",
                            "mcid": 1}],
    "surrogates": [{"name": "sessions", "event_type": "session_start", "window_days": 14}],
})
METHOD = "mmrm_reml_us"
METHODS = {"who5.percent": METHOD, "phq2.total": METHOD}
WAVES = {"who5.percent": ["w1", "w3"], "phq2.total": ["w1", "w3"]}


def _effect(outcome, estimate, se, *, wave="w3", method=METHOD, df=200.0, tier="trusted", direction=None):
    q = float(t.ppf(0.975, df)) if math.isfinite(df) else float(norm.ppf(0.975))
    return Effect(outcome=outcome, arm="coach", control="control", wave=wave, method=method, tier=tier,
                  estimate=estimate, sd=se, lower=estimate - q * se, upper=estimate + q * se, interval_level=0.95,
                  p_value=float(2 * t.sf(abs(estimate) / se, df)) if method != "bayes" else None, direction=direction)


def _engagement(estimate, se=0.1):
    return _effect("sessions", estimate, se, wave="first_14_days", method="cuped", df=math.inf)


def _rows(who5_by_wave, phq2=0.0, engagement=0.5):
    rows = [_effect("who5.percent", est, 1.0, wave=w) for w, est in who5_by_wave.items()]
    rows += [_effect("phq2.total", phq2, 0.1, wave=w) for w in ("w1", "w3")]
    rows += [_effect("who5.percent", who5_by_wave.get("w3", 0.0), 1.0, wave=LONG_RUN),
             _effect("phq2.total", phq2, 0.1, wave=LONG_RUN), _engagement(engagement)]
    return rows


def _status(rows, outcome="who5.percent", wave="w3"):
    (s,) = [s for s in divergence_monitor(rows, PROTOCOL, waves=WAVES, methods=METHODS)
            if s.outcome == outcome and s.wave == wave]
    return s


def test_engagement_up_and_flourishing_down_beyond_the_margin_is_a_divergence():
    s = _status(_rows({"w1": 0.0, "w3": -6.0}))  # harm 6 beyond a margin of 2, SE 1: z = 4
    assert s.status == DIVERGENCE and s.harm_estimate == 6.0 and s.margin == 2.0
    assert s.p_iut == max(s.p_engagement, s.p_harm) < 0.05
    assert s.p_harm == pytest.approx(float(t.sf(4.0, 200)), rel=1e-4)  # the t reference the KR interval used
    assert s.p_quadrant == pytest.approx(norm.cdf(5.0) * norm.cdf(4.0))
    assert s.alert.startswith("DIVERGENCE (trusted): coach raised sessions")
    assert _status(_rows({"w1": 0.0, "w3": -6.0}), wave="w1").status == NO_DIVERGENCE


def test_each_side_alone_is_not_a_divergence():
    assert _status(_rows({"w1": 0, "w3": -6.0}, engagement=0.1)).status == NO_DIVERGENCE  # engagement not shown up
    assert _status(_rows({"w1": 0, "w3": -3.0})).status == NO_DIVERGENCE  # harm beyond the margin not shown
    assert _status(_rows({"w1": 0, "w3": +6.0})).status == NO_DIVERGENCE  # flourishing up


def test_a_lower_is_better_outcome_diverges_when_it_rises():
    s = _status(_rows({"w1": 0, "w3": 0}, phq2=1.5), outcome="phq2.total")  # PHQ-2 up 1.5 > margin 1, SE 0.1
    assert s.status == DIVERGENCE and s.harm_estimate == 1.5


def test_a_missing_failed_or_unreadable_flourishing_measure_is_indeterminate_never_a_pass():
    rows = _rows({"w3": 0.0})  # nothing at w1: no data, suppressed or not read
    s = _status(rows, wave="w1")
    assert s.status == INDETERMINATE and "no mmrm_reml_us effect at w1" in s.reason and s.p_iut is None
    failed = [Effect(outcome="who5.percent", arm="coach", control="control", wave="w1", method=METHOD,
                     interval_level=0.95, reason="the MMRM of who5.percent could not be fitted: X'X is singular")]
    s = _status(_rows({"w3": 0.0}) + failed, wave="w1")
    assert s.status == INDETERMINATE and "X'X is singular" in s.reason
    no_engagement = [e for e in _rows({"w1": 0, "w3": -6.0}) if e.outcome != "sessions"]
    assert _status(no_engagement).status == INDETERMINATE
    assert summary(divergence_monitor(rows, PROTOCOL, waves=WAVES, methods=METHODS))["status"] == INDETERMINATE


def test_the_flourishing_effect_is_reported_as_its_model_gave_it():
    rows = _rows({"w1": 0.0, "w3": -6.0})
    s = _status(rows)
    (w3,) = [e for e in rows if e.outcome == "who5.percent" and e.wave == "w3"]
    assert (s.flourishing_estimate, s.flourishing_sd) == (w3.estimate, w3.sd)  # nothing adjusts it


def test_the_test_has_size_alpha_at_the_boundary_without_adjustment():
    """Engagement certainly up, harm exactly at the margin: the IUT rejects at most alpha of the time."""
    rng = np.random.default_rng(19)
    z = rng.standard_normal(2000)
    rejections = sum(_status(_rows({"w1": 0, "w3": -2.0 + zi})).status == DIVERGENCE for zi in z)
    assert abs(rejections / z.size - 0.05) < 3 * math.sqrt(0.05 * 0.95 / z.size)


def test_reference_df_is_read_back_from_the_interval():
    assert reference_df(_effect("who5.percent", 1.0, 1.0, df=37.0)) == pytest.approx(37.0, rel=1e-4)
    assert math.isinf(reference_df(_engagement(0.3)))


def test_the_decision_rule_ships_only_on_success_non_inferiority_and_no_divergence():
    assert per_test_power(0.8, 3) == pytest.approx(0.95)  # beta 0.2 shared by the primary and three guardrails

    def decide(rows):
        div = divergence_monitor(rows, PROTOCOL, waves=WAVES, methods=METHODS)
        (d,) = decision_table(rows, div, PROTOCOL, methods=METHODS)
        return d

    good = decide(_rows({"w1": 5.0, "w3": 12.0}, phq2=0.0))
    assert good.decision == SHIP and good.tests_needed == 2 and good.per_test_power == pytest.approx(0.9)
    (guard,) = [c for c in good.criteria if c.kind == "guardrail"]
    assert guard.passed and guard.p_value == pytest.approx(float(t.sf(10.0, 200)), rel=1e-4)  # (1 - 0) / 0.1, unadjusted
    worse = decide(_rows({"w1": 5.0, "w3": 12.0}, phq2=0.95))  # PHQ-2 up 0.95, margin 1: non-inferiority not shown
    assert worse.decision == DO_NOT_SHIP and "non-inferiority within 1" in worse.statement
    missing = decide([e for e in _rows({"w1": 5.0, "w3": 12.0}) if not (e.outcome == "phq2.total" and e.wave == LONG_RUN)])
    assert missing.decision == INDETERMINATE and "guardrail phq2.total" in missing.statement
    flat = decide(_rows({"w1": 0.0, "w3": 1.0}))
    assert flat.decision == DO_NOT_SHIP and "does not exclude no benefit" in flat.statement


# ------------------------------------------------------------------------------------------------------------
# In the plan
# ------------------------------------------------------------------------------------------------------------
def _telemetry(rng, lift=0.5, n=240):
    pre = rng.gamma(3, 1, 2 * n)
    post = pre + rng.normal(0, 1, 2 * n) + np.repeat([0.0, lift], n)
    return {"sessions": {"control": PairedMoments.from_arrays(pre[:n], post[:n]),
                         "coach": PairedMoments.from_arrays(pre[n:], post[n:])}}


def test_the_plan_reports_a_divergence_as_a_note_with_its_numbers():
    rng = np.random.default_rng(5)
    scores = simulated_scores(rng, PROTOCOL, n=480, effects={"who5.percent": -8.0, "phq2.total": 0.0})
    result = run_plan(plan_statistics_from_rows(scores, PROTOCOL, _telemetry(rng)), PROTOCOL)
    assert {(s.outcome, s.wave) for s in result.divergence} == {(o, w) for o in WAVES for w in ("w1", "w3")}
    diverged = [s for s in result.divergence if s.status == DIVERGENCE]
    assert {(s.outcome, s.wave) for s in diverged} == {("who5.percent", "w1"), ("who5.percent", "w3")}
    assert result.alerts and all(n in result.notes for n in result.alerts)
    (decision,) = result.decisions
    assert decision.decision == DO_NOT_SHIP


def test_a_wave_with_the_flourishing_outcome_suppressed_is_indeterminate():
    """Trusted tier: the primary has no scores at w1 (the other outcome has): the model covers w3 only and the
    monitor says indeterminate at w1. Public tier: a release whose cell was suppressed: indeterminate everywhere."""
    rng = np.random.default_rng(6)
    scores = simulated_scores(rng, PROTOCOL, n=480, effects={"who5.percent": 0.0})
    scores = scores[~((scores["outcome"] == "who5.percent") & (scores["wave"] == "w1"))]
    # one follow-up wave left: the plan's model is the Bayesian random intercept; its ML stand-in keeps this fast
    result = run_plan(plan_statistics_from_rows(scores, PROTOCOL, _telemetry(rng)), PROTOCOL, fit=ml_fit_stand_in)
    at_w1 = [s for s in result.divergence if s.outcome == "who5.percent" and s.wave == "w1"]
    assert at_w1 and all(s.status == INDETERMINATE for s in at_w1)
    assert all(s.status != INDETERMINATE for s in result.divergence if s.outcome == "phq2.total")
    assert any(n.startswith("DIVERGENCE MONITOR INDETERMINATE (trusted)") for n in result.notes)

    cell = NoisyPairedMoments.exact(PairedMoments.from_arrays(rng.normal(50, 10, 60), rng.normal(50, 10, 60)))
    released = {"who5.percent": Unavailable("its DP release cannot be used: the released statistic n (a suppressed cell)"),
                "phq2.total": ReleasedCells({(a, w): cell for a in ("control", "coach") for w in ("w1", "w3")},
                                            ("w1", "w3"))}

    def stand_in(cells, plan, *, control, waves, outcome, direction, mcid, rope):
        from analysis.public import PublicResult
        from analysis.results import Diagnostics

        rows = tuple(Effect(outcome=outcome, arm="coach", control=control, wave=w, method="bayes_ancova_noise_aware",
                            tier="public", estimate=0.0, sd=0.1, lower=-0.2, upper=0.2, interval_level=0.95)
                     for w in (*waves, LONG_RUN))
        return PublicResult(outcome, control, ("control", "coach"), tuple(waves), rows, Diagnostics(True, 1.0, 1e3, 0),
                            True)

    public = run_public_plan(released, PROTOCOL, fit=stand_in)
    assert public.divergence and all(s.status == INDETERMINATE for s in public.divergence)
    who5 = [s for s in public.divergence if s.outcome == "who5.percent"]
    assert who5 and all("suppressed" in s.reason for s in who5)
    assert all(d.decision == INDETERMINATE for d in public.decisions)
