"""The one effect type: an estimable effect carries finite numbers only; one that is not carries a reason and no
number; its record has every field and is valid JSON (no plausible default can slip through)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.results import FIELDS, Effect

NUMBERS = ("estimate", "sd", "lower", "upper", "p_benefit", "p_above_mcid", "p_in_rope", "p_value", "p_adjusted")
WHERE = dict(outcome="who5.percent", arm="coach", control="control", wave="m3", method="m")

anything = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


@given(st.dictionaries(st.sampled_from(NUMBERS), anything), st.one_of(st.none(), st.text(max_size=5)))
def test_an_effect_is_either_finite_numbers_or_a_reason(numbers, reason):
    """Whatever a producer passes, a built Effect has finite numbers when estimable and none when not."""
    try:
        e = Effect(**WHERE, interval_level=0.95, reason=reason, **numbers)
    except ValueError:
        return
    record = e.as_record()
    json.dumps(record, allow_nan=False)  # never NaN or infinity
    assert list(record) == list(FIELDS)
    if e.estimable:
        assert e.reason is None and isinstance(e.estimate, float) and math.isfinite(e.estimate)
        assert all(v is None or math.isfinite(v) for v in (getattr(e, n) for n in NUMBERS))
        if e.lower is not None:
            assert e.lower <= e.upper
    else:
        assert e.reason.strip() and all(getattr(e, n) is None for n in NUMBERS)


def test_refusals_name_the_effect():
    with pytest.raises(ValueError, match="estimate of the m effect of coach on who5.percent at m3 must be a finite"):
        Effect(**WHERE, estimate=float("nan"))
    with pytest.raises(ValueError, match="no estimate and no reason"):
        Effect(**WHERE)
    with pytest.raises(ValueError, match=r"not estimable \(no telemetry\) but carries \['estimate', 'lower', 'upper'\]"):
        Effect(**WHERE, estimate=0.0, lower=0.0, upper=0.0, interval_level=0.95, reason="no telemetry")
    with pytest.raises(ValueError, match="needs its level"):
        Effect(**WHERE, estimate=1.0, lower=0.0, upper=2.0)
    with pytest.raises(ValueError, match="tier"):
        Effect(**WHERE, estimate=1.0, tier="secret")
    e = Effect(**WHERE, reason="no telemetry events in the window", n_arm=10, n_control=12)
    assert not e.estimable and e.as_record()["estimable"] is False and e.n_arm == 10
