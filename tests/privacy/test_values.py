"""Privacy values as contracts (schemas/privacy_values.py): a loss carries its measure, losses of one measure add,
different measures never add silently, conversions follow Bun & Steinke (2016) and never understate a loss."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privacy.errors import InvalidPrivacyParameter, PrivacyError, UnboundedColumn
from schemas.privacy_values import (
    Bounds,
    PrivacyLoss,
    PrivacyUnit,
    epsilon_to_rho,
    pure_to_rho,
    rho_to_epsilon,
)

positive = st.floats(min_value=1e-6, max_value=50, allow_nan=False, allow_infinity=False)
deltas = st.floats(min_value=1e-12, max_value=0.1)


def test_a_loss_is_exactly_one_measure():
    assert PrivacyLoss(rho=0.1).measure == "zCDP" and PrivacyLoss(rho=0.1).unit == "rho"
    assert PrivacyLoss(epsilon=1.0).measure == "pure" and PrivacyLoss(epsilon=1.0).value == 1.0
    assert PrivacyLoss(epsilon=1.0, delta=1e-6).measure == "approximate"
    for bad in [{}, {"rho": 0.1, "epsilon": 1.0}, {"rho": 0.1, "delta": 1e-6}, {"rho": -1.0}, {"rho": 0.0},
                {"epsilon": float("nan")}, {"epsilon": float("inf")}, {"epsilon": True}, {"epsilon": 1.0, "delta": 1.0},
                {"epsilon": 1.0, "delta": -0.1}, {"rho": "0.1"}]:
        with pytest.raises(InvalidPrivacyParameter):
            PrivacyLoss(**bad)
    assert issubclass(InvalidPrivacyParameter, PrivacyError)  # the privacy area's refusals keep one base


def test_losses_of_one_measure_add_and_different_measures_refuse():
    assert PrivacyLoss(rho=0.1) + PrivacyLoss(rho=0.2) == PrivacyLoss(rho=0.1 + 0.2)
    assert PrivacyLoss(epsilon=0.5) + PrivacyLoss(epsilon=0.25) == PrivacyLoss(epsilon=0.75)
    total = PrivacyLoss(epsilon=0.5, delta=1e-7) + PrivacyLoss(epsilon=0.5, delta=2e-7)
    assert total.epsilon == 1.0 and total.delta == pytest.approx(3e-7)
    with pytest.raises(InvalidPrivacyParameter, match="cannot add"):
        PrivacyLoss(rho=0.1) + PrivacyLoss(epsilon=0.1)
    with pytest.raises(InvalidPrivacyParameter, match="cannot add"):
        PrivacyLoss(epsilon=0.1) + PrivacyLoss(epsilon=0.1, delta=1e-6)


def test_conversions_are_the_cited_propositions():
    # Bun & Steinke 2016, Prop. 1.3 and 1.4
    assert PrivacyLoss(rho=0.5).as_epsilon(1e-6) == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e6)))
    assert PrivacyLoss(epsilon=2.0).as_rho() == 2.0
    assert PrivacyLoss(epsilon=1.0).as_epsilon(1e-6) == 1.0
    with pytest.raises(InvalidPrivacyParameter, match="no zCDP"):
        PrivacyLoss(epsilon=1.0, delta=1e-6).as_rho()
    with pytest.raises(InvalidPrivacyParameter):
        PrivacyLoss(epsilon=1.0, delta=1e-3).as_epsilon(1e-6)  # says nothing at a smaller delta


@given(positive, deltas)
def test_the_budget_conversion_never_understates_epsilon(epsilon, delta):
    """epsilon_to_rho gives the largest rho whose Prop. 1.3 epsilon fits: converting back never exceeds it."""
    rho = epsilon_to_rho(epsilon, delta)
    assert rho > 0 and PrivacyLoss(rho=rho).as_epsilon(delta) <= epsilon
    assert rho_to_epsilon(rho, delta) == pytest.approx(epsilon, rel=1e-9)


@given(positive, st.lists(st.floats(min_value=1e-3, max_value=1.0), min_size=1, max_size=8))
def test_shares_of_a_loss_stay_in_its_measure_and_within_it(value, weights):
    for total in (PrivacyLoss(rho=value), PrivacyLoss(epsilon=value)):
        norm = math.fsum(weights)
        shares = [total.scaled(w / norm) for w in weights]
        assert {s.measure for s in shares} == {total.measure}
        assert math.fsum(s.value for s in shares) <= total.value * (1 + 1e-12)
    with pytest.raises(InvalidPrivacyParameter):
        PrivacyLoss(rho=value).scaled(1.5)


@given(positive)
def test_a_pure_loss_is_charged_as_rho_by_prop_1_4(epsilon):
    assert PrivacyLoss(epsilon=epsilon).as_rho() == pure_to_rho(epsilon) == 0.5 * epsilon * epsilon


def test_the_unit_is_the_protocols():
    from tests.support.privacy import make_protocol

    unit = PrivacyUnit.of(make_protocol())
    assert unit == PrivacyUnit(kind="participant", identifier="participant")
    assert "one participant" in unit.describe()


def test_bounds_must_be_finite_and_ordered():
    assert Bounds(-2, 5).max_abs == 5
    for lower, upper in [(0, float("inf")), (float("nan"), 1), (3, 3), (True, 2)]:
        with pytest.raises(UnboundedColumn):
            Bounds(lower, upper, "x")
