"""One frozen effect type for every analysis method and both trust tiers: what reports read.

The longitudinal model, the noise-aware public model, the final-wave ANCOVA, CUPED, prespecified subgroups,
the surrogate index and the tipping point each return their own details (a posterior, a theta, a shrinkage
factor, a grid of deltas), but the effect they report is one :class:`Effect`: arm minus control in the
outcome's units, with the uncertainty and the probabilities the method gives, the method and tier it came
from, and how many participants it analysed. ``analysis.summary`` stores and prints it as it is (house review
§6.2, item 5: one stable input for ``reports``).

An effect that could not be estimated is still a row, marked so: ``reason`` says why, and it carries no
number. There is no plausible default (a zero effect, an interval [0, 0], p = 1): :class:`Effect` refuses to
be built with a NaN, or with numbers beside a reason (STYLE.md, research/aesthetics.md "what not to copy").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

LONG_RUN = "long_run"
"""The wave label of an outcome's long-run effect: the effect at its wave of interest (its final wave)."""
PLATEAU = "plateau"
"""The wave label of a saturating trajectory's plateau (the effect as months tend to infinity)."""
TIERS = ("trusted", "public")
"""Trusted: participant-level statistics inside the study; public: differentially private releases only."""

_NUMBERS = ("estimate", "sd", "lower", "upper", "p_benefit", "p_above_mcid", "p_in_rope", "p_value", "p_adjusted")
_PROBABILITIES = ("p_benefit", "p_above_mcid", "p_in_rope", "p_value", "p_adjusted")


@dataclass(frozen=True, kw_only=True)
class Effect:
    """Arm minus control for one outcome (or telemetry metric) at one wave, by one method, in one tier.

    - ``estimate``: the point estimate (posterior mean, or the frequentist estimate) in the outcome's units;
      for the tipping point, the tipping delta in outcome units.
    - ``sd``: the posterior SD (Bayesian methods) or the standard error (frequentist ones): the spread of the
      estimate, outcome units.
    - ``lower``, ``upper``: the interval at ``interval_level`` (equal-tailed credible, or confidence).
    - ``p_benefit``: P(the effect points in the outcome's good direction); ``p_above_mcid``: P(benefit larger
      than the minimum clinically important difference); ``p_in_rope``: P(|effect| < the ROPE's half-width).
      Bayesian rows only; None without an MCID or ROPE.
    - ``p_value``: two-sided frequentist p-value; ``p_adjusted``: Holm-adjusted within the plan's family.
    - ``n_arm``, ``n_control``: participants analysed in the arm and in the control arm: for a row at one wave,
      those with the outcome at that wave (the longitudinal model also uses their other waves); for a whole
      trajectory (the plateau) all participants in the model; for the public tier the released (noisy) count.
    - ``subgroup``: ``"<subgroup>=<level>"`` for a prespecified subgroup's row, None for the whole sample.
    - ``reason``: None for an estimable effect; otherwise why it could not be estimated, and then every
      number above is None (the row still says what was planned and failed).
    """

    outcome: str
    arm: str
    control: str
    wave: str
    method: str
    tier: str = "trusted"
    estimate: float | None = None
    sd: float | None = None
    lower: float | None = None
    upper: float | None = None
    interval_level: float | None = None
    p_benefit: float | None = None
    p_above_mcid: float | None = None
    p_in_rope: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    n_arm: int | None = None
    n_control: int | None = None
    subgroup: str | None = None
    direction: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}, got {self.tier!r}")
        for name in _NUMBERS:
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"{name} of {self._where()} must be a finite number or None, got {value!r}; "
                                     "an effect that cannot be computed says why in `reason`")
                object.__setattr__(self, name, float(value))
        for name in ("n_arm", "n_control"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
                raise ValueError(f"{name} of {self._where()} must be a count, got {value!r}")
            if value is not None:
                object.__setattr__(self, name, int(value))
        if self.reason is not None:
            if not str(self.reason).strip():
                raise ValueError(f"the reason {self._where()} is not estimable must say something")
            numbers = [n for n in _NUMBERS if getattr(self, n) is not None]
            if numbers:
                raise ValueError(f"{self._where()} is not estimable ({self.reason}) but carries {numbers}")
            return
        if self.estimate is None:
            raise ValueError(f"{self._where()} has no estimate and no reason why")
        if (self.lower is None) != (self.upper is None):
            raise ValueError(f"{self._where()} has half an interval")
        if self.lower is not None:
            if not (self.interval_level is not None and 0 < self.interval_level < 1):
                raise ValueError(f"the interval of {self._where()} needs its level in (0, 1), got {self.interval_level!r}")
            if not self.lower <= self.upper:
                raise ValueError(f"{self._where()} has lower {self.lower} above upper {self.upper}")
        if self.sd is not None and self.sd < 0:
            raise ValueError(f"the sd of {self._where()} is negative")
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} of {self._where()} must lie in [0, 1], got {value}")

    def _where(self) -> str:
        sub = f", {self.subgroup}" if self.subgroup else ""
        return f"the {self.method} effect of {self.arm} on {self.outcome} at {self.wave}{sub}"

    @property
    def estimable(self) -> bool:
        """False when the effect could not be estimated (``reason`` says why; there is no number)."""
        return self.reason is None

    def as_record(self) -> dict[str, object]:
        """The fields as a dict (JSON-ready: numbers, strings, None), with the ``estimable`` flag."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["estimable"] = self.estimable
        return out


FIELDS: tuple[str, ...] = (*(f.name for f in fields(Effect)), "estimable")
"""The keys of :meth:`Effect.as_record`, in order."""
