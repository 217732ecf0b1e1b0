"""The protocol fields of issue 19: the design section, non-inferiority margins, guardrails and engagement metrics.

All are absent by default, so a plan locked before them keeps its hash; each refuses what would make the decision rule
or the divergence monitor meaningless."""

from __future__ import annotations

import pytest

from analysis.prereg import canonical_protocol, plan_hash
from flows.simulation.field_study import protocol
from schemas.protocol import DesignSettings, StudyProtocol

# the demo protocol's hash before these fields existed (commit 27eb7b4): a locked demo plan keeps its lock
DEMO_HASH_BEFORE_ISSUE_19 = "802242bf328687bcc8c11ab9fbda360f1c486d89bb6f27288322c85d80c98f4b"


def _with(**changes) -> dict:
    data = protocol().model_dump(mode="json")
    for path, value in changes.items():
        target = data
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        target[keys[-1]] = value
    return data


def _without_windows() -> StudyProtocol:
    """The demo protocol as it was locked: the simulator has since declared response windows on its waves (issue 17,
    survey timing), which is a change of the plan; leaving them out must give back the old hash."""
    data = protocol().model_dump(mode="json")
    for wave in data["waves"]:
        wave.pop("response_window", None)
    return StudyProtocol.model_validate(data)


def test_absent_fields_leave_the_hash_of_a_locked_plan_unchanged():
    assert plan_hash(_without_windows()) == DEMO_HASH_BEFORE_ISSUE_19
    assert plan_hash(protocol()) != DEMO_HASH_BEFORE_ISSUE_19  # declared windows are part of the plan
    assert "design" not in canonical_protocol(protocol())
    with_design = StudyProtocol.model_validate(_with(design={"nsim": 50}))
    assert plan_hash(with_design) != DEMO_HASH_BEFORE_ISSUE_19  # a design is part of what is preregistered


def test_defaults_name_the_guardrails_engagement_metrics_and_margins():
    p = protocol()
    assert [o.name for o in p.guardrails()] == ["swls.total", "flourishing_scale.total", "phq2.total"]
    assert [m.name for m in p.engagement_metrics()] == ["sessions_per_week_first_4w", "feature_exposures_first_4w"]
    assert p.primary_outcome.margin == 10.0  # the MCID when no ni_margin is given
    explicit = StudyProtocol.model_validate(_with(primary_outcome__ni_margin=2.0))
    assert explicit.primary_outcome.margin == 2.0
    off = StudyProtocol.model_validate(_with(secondary_outcomes__0__guardrail=False, surrogates__1__engagement=False))
    assert [o.name for o in off.guardrails()] == ["flourishing_scale.total", "phq2.total"]
    assert [m.name for m in off.engagement_metrics()] == ["sessions_per_week_first_4w"]


def test_the_primary_is_never_a_guardrail():
    with pytest.raises(ValueError, match="success metric"):
        StudyProtocol.model_validate(_with(primary_outcome__guardrail=True))


def test_a_guardrail_needs_a_margin():
    data = _with(secondary_outcomes__0__guardrail=True)
    data["secondary_outcomes"][0].pop("mcid")
    with pytest.raises(ValueError, match="non-inferiority margin"):
        StudyProtocol.model_validate(data)


def test_flourishing_is_never_adjusted_for_engagement():
    data = _with(baseline_covariates=[{"name": "sessions_per_week_first_4w"}])
    data["analysis"]["covariates"] = ["sessions_per_week_first_4w"]
    with pytest.raises(ValueError, match="never adjusted for engagement"):
        StudyProtocol.model_validate(data)


def test_design_section_refuses_unknown_outcomes_and_bad_values():
    with pytest.raises(ValueError, match="not outcomes"):
        StudyProtocol.model_validate(_with(design={"outcome_sd": {"who5.raw": 4.0}}))
    for bad in ({"attrition": [1.0]}, {"icc": 1.0}, {"effect_mcid_multiples": [-1]}, {"nsim": 1}, {"pilot_effect": 3}):
        with pytest.raises(ValueError):
            DesignSettings.model_validate(bad)
    d = DesignSettings()
    assert d.effect_mcid_multiples == [0.0, 1.0] and d.attrition == [0.25] and d.participants_per_arm == []
