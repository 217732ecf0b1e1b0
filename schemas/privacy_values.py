"""Privacy values as contracts: the privacy unit, a privacy loss in a named measure, clipping bounds.

OpenDP makes the privacy unit and the privacy loss explicit values that are passed down
(``dp.unit_of(contributions=..., identifier=...)``, ``dp.loss_of(rho=... | epsilon=..., delta=...)``); a bare
float whose meaning depends on another field ("rho if the mechanism is Gaussian, else epsilon") is how budgets
get mis-added. Flourish follows OpenDP here:

- :class:`PrivacyUnit` is read from the protocol (``privacy.unit``): what a neighbouring data set adds or
  removes. Today one participant, all of their rows (the release SQL bounds contributions per participant).
- :class:`PrivacyLoss` carries its measure: ``PrivacyLoss(rho=r)`` is rho-zCDP (Bun & Steinke 2016),
  ``PrivacyLoss(epsilon=e)`` pure epsilon-DP, ``PrivacyLoss(epsilon=e, delta=d)`` approximate (epsilon, delta)-DP.
  Losses of one measure add (sequential composition); different measures never add silently, they convert
  with a cited rule (:meth:`PrivacyLoss.as_rho`, :meth:`PrivacyLoss.as_epsilon`).
- :class:`Bounds`: public clipping bounds of one value (public information in the DP sense).

The conversions are Bun & Steinke (2016), "Concentrated Differential Privacy: Simplifications, Extensions,
and Lower Bounds" (TCC): rho-zCDP implies (rho + 2 sqrt(rho ln(1/delta)), delta)-DP (Proposition 1.3), and
epsilon-DP implies (epsilon^2 / 2)-zCDP (Proposition 1.4).

The privacy area's error base lives here too: these contracts raise it, and ``schemas`` imports nothing of the
project, so ``privacy/errors.py`` re-exports it and adds the rest of the hierarchy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from schemas.errors import FlourishError

if TYPE_CHECKING:  # pragma: no cover
    from schemas.protocol import StudyProtocol


class PrivacyError(FlourishError, ValueError):
    """Base of every refusal the privacy area makes; nothing has been written when one is raised."""


class InvalidPrivacyParameter(PrivacyError):
    """Negative, zero or non-finite epsilon, rho, delta or fraction."""


class UnboundedColumn(PrivacyError):
    """A release was asked for a value with no declared clipping bounds."""


Measure = Literal["zCDP", "pure", "approximate"]


def positive_finite(name: str, value: object) -> float:
    """``value`` as a float when it is a positive finite number (not a bool); else InvalidPrivacyParameter."""
    # bool is an int in Python; True is not a privacy parameter
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidPrivacyParameter(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def checked_delta(value: object, *, allow_zero: bool) -> float:
    """``value`` as a float when it is a delta in [0, 1) (or (0, 1)); else InvalidPrivacyParameter."""
    low_ok = (lambda d: d >= 0) if allow_zero else (lambda d: d > 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (low_ok(value) and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise InvalidPrivacyParameter(f"delta must be in {interval}, got {value!r}")
    return float(value)


def rho_to_epsilon(rho: float, delta: float) -> float:
    """(epsilon, delta)-DP implied by rho-zCDP: rho + 2 sqrt(rho ln(1/delta)) (Bun & Steinke 2016, Prop. 1.3)."""
    if rho == 0:
        return 0.0
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def epsilon_to_rho(epsilon: float, delta: float) -> float:
    """Largest rho with rho_to_epsilon(rho, delta) <= epsilon: (sqrt(ln(1/delta) + epsilon) - sqrt(ln(1/delta)))^2."""
    positive_finite("epsilon", epsilon)
    checked_delta(delta, allow_zero=False)
    log_term = math.log(1.0 / delta)
    # sqrt(L + e) - sqrt(L) written as e / (sqrt(L + e) + sqrt(L)): no cancellation when e is small next to L
    # (the difference form lost most digits there and the guard below then stepped down ulp by ulp for seconds)
    rho = (epsilon / (math.sqrt(log_term + epsilon) + math.sqrt(log_term))) ** 2
    for _ in range(64):  # guard the last ulps of rounding
        if rho_to_epsilon(rho, delta) <= epsilon:
            return rho
        rho = math.nextafter(rho, 0.0)
    # only where the conversion itself overflows (epsilon near the float maximum): bisect for the largest fit
    low, high = 0.0, rho
    while math.nextafter(low, high) < high:
        mid = low + (high - low) / 2
        low, high = (mid, high) if rho_to_epsilon(mid, delta) <= epsilon else (low, mid)
    return low


def pure_to_rho(epsilon: float) -> float:
    """epsilon-DP implies (epsilon^2 / 2)-zCDP (Bun & Steinke 2016, Prop. 1.4)."""
    return 0.5 * epsilon * epsilon


@dataclass(frozen=True)
class PrivacyLoss:
    """A privacy loss in one named measure, exactly one of ``rho`` or ``epsilon`` (OpenDP's ``loss_of``).

    ``PrivacyLoss(rho=0.1)`` is 0.1-zCDP; ``PrivacyLoss(epsilon=1.0)`` is pure 1-DP; ``PrivacyLoss(epsilon=1.0,
    delta=1e-6)`` is approximate (1, 1e-6)-DP. zCDP has no delta of its own: a delta appears only when rho is
    converted to (epsilon, delta) for a statement, so ``PrivacyLoss(rho=..., delta=...)`` is refused.
    """

    rho: float | None = None
    epsilon: float | None = None
    delta: float = 0.0

    def __post_init__(self) -> None:
        if (self.rho is None) == (self.epsilon is None):
            raise InvalidPrivacyParameter("a privacy loss is exactly one of rho (zCDP) or epsilon (pure or approximate DP)")
        if self.rho is not None:
            object.__setattr__(self, "rho", positive_finite("rho", self.rho))
            if self.delta != 0:
                raise InvalidPrivacyParameter(
                    f"a zCDP loss has no delta (got delta={self.delta!r}); delta enters only when rho is converted to epsilon")
        else:
            object.__setattr__(self, "epsilon", positive_finite("epsilon", self.epsilon))
        object.__setattr__(self, "delta", checked_delta(self.delta, allow_zero=True))

    @property
    def measure(self) -> Measure:
        if self.rho is not None:
            return "zCDP"
        return "approximate" if self.delta > 0 else "pure"

    @property
    def unit(self) -> Literal["rho", "epsilon"]:
        """The name of the number this loss is counted in."""
        return "rho" if self.rho is not None else "epsilon"

    @property
    def value(self) -> float:
        """The loss in its own unit (rho for zCDP, epsilon otherwise)."""
        return self.rho if self.rho is not None else self.epsilon  # type: ignore[return-value]

    def __add__(self, other: PrivacyLoss) -> PrivacyLoss:
        """Sequential composition within one measure: rhos add (Bun & Steinke 2016, Lemma 2.3), pure epsilons
        add, approximate (epsilon, delta) add in both (basic composition). Different measures are refused."""
        if not isinstance(other, PrivacyLoss):
            return NotImplemented
        if other.measure != self.measure:
            raise InvalidPrivacyParameter(
                f"cannot add a {other.measure} loss to a {self.measure} loss; convert one first (as_rho / as_epsilon)")
        if self.rho is not None:
            return PrivacyLoss(rho=self.rho + other.rho)  # type: ignore[operator]
        return PrivacyLoss(epsilon=self.epsilon + other.epsilon, delta=self.delta + other.delta)  # type: ignore[operator]

    def scaled(self, share: float) -> PrivacyLoss:
        """This loss times ``share`` (0 < share <= 1): a part of a budget, in the same measure."""
        if isinstance(share, bool) or not isinstance(share, int | float) or not math.isfinite(share) or not 0 < share <= 1:
            raise InvalidPrivacyParameter(f"a share of a privacy loss must be in (0, 1], got {share!r}")
        if self.rho is not None:
            return PrivacyLoss(rho=self.rho * share)
        return PrivacyLoss(epsilon=self.epsilon * share, delta=self.delta * share)  # type: ignore[operator]

    def as_rho(self) -> float:
        """The zCDP rho this loss implies: itself, or epsilon^2 / 2 for pure DP (Prop. 1.4). Approximate DP
        implies no zCDP bound, so it is refused."""
        if self.rho is not None:
            return self.rho
        if self.delta > 0:
            raise InvalidPrivacyParameter("an approximate (epsilon, delta) loss implies no zCDP rho")
        return pure_to_rho(self.epsilon)  # type: ignore[arg-type]

    def as_epsilon(self, delta: float) -> float:
        """The epsilon of (epsilon, ``delta``)-DP this loss implies: rho converted by Prop. 1.3 at ``delta``; a pure
        epsilon as it is; an approximate loss only at a delta at least its own."""
        if self.rho is not None:
            return rho_to_epsilon(self.rho, checked_delta(delta, allow_zero=False))
        if self.delta > delta:
            raise InvalidPrivacyParameter(f"an ({self.epsilon}, {self.delta})-DP loss says nothing at delta={delta}")
        return self.epsilon  # type: ignore[return-value]

    def __str__(self) -> str:
        if self.rho is not None:
            return f"rho={self.rho:.6g} (zCDP)"
        return f"epsilon={self.epsilon:.6g}" + (f", delta={self.delta:g}" if self.delta else " (pure DP)")


@dataclass(frozen=True)
class PrivacyUnit:
    """What one neighbouring data set adds or removes (OpenDP's ``unit_of``).

    ``kind="participant"``: every row of one participant, across waves, instruments and events, is added or
    removed together; ``identifier`` is the warehouse column that holds the participant's pseudonym. The
    release code bounds each participant's contribution to every statistic (privacy/release.py); that bounding
    is written for this unit, so a release refuses any other.
    """

    kind: Literal["participant"] = "participant"
    identifier: str = "participant"

    @classmethod
    def of(cls, protocol: StudyProtocol) -> PrivacyUnit:
        """The unit the protocol declares (``privacy.unit``)."""
        return cls(kind=protocol.privacy.unit)

    def describe(self) -> str:
        return ("one participant: all of their survey responses, scores and telemetry events, across all waves; "
                "neighbouring data sets differ by adding or removing one participant")


@dataclass(frozen=True)
class Bounds:
    """Public clipping bounds of one value (outcome score or telemetry summary)."""

    lower: float
    upper: float
    name: str = "value"

    def __post_init__(self) -> None:
        for v in (self.lower, self.upper):
            if v is None or isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise UnboundedColumn(f"{self.name} has no finite clipping bounds (got [{self.lower}, {self.upper}])")
        if self.lower >= self.upper:
            raise UnboundedColumn(f"{self.name}: lower bound {self.lower} must be below upper bound {self.upper}")

    @property
    def max_abs(self) -> float:
        return max(abs(self.lower), abs(self.upper))
