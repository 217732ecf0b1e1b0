r"""The preregistered decision rule per arm, evaluated with its evidence.

**The rule** (Spotify's, extended by the divergence monitor; Schultzberg, Ankargren & Frånberg 2024, arXiv
2402.11609; confidence.spotify.com "multi-metric decisions"): an arm *ships* if and only if

1. the primary outcome's long-run effect is a significant benefit: the preregistered model's interval at the plan's
   ``interval_level`` lies wholly on the good side of zero (the two-sided test at alpha = 1 - level, in the good
   direction);
2. every guardrail outcome (``StudyProtocol.guardrails``) is significantly non-inferior: the one-sided test of
   H0: harm >= margin rejects at alpha, *without* any alpha adjustment (the guardrails enter as an
   intersection-union: all must pass, so the false-ship rate stays at most alpha, Berger 1982);
3. the divergence monitor (``analysis.divergence``) finds no divergence at any wave for the arm.

A criterion that fails makes the arm ``do_not_ship``; otherwise a criterion that could not be evaluated (a failed,
missing or suppressed measure, a study still running) makes it ``indeterminate``, never a pass (GrowthBook's "a
failed guardrail cannot satisfy a ship rule", growthbook/growthbook#6933); only when all three hold is it ``ship``.

**Power, corrected for the guardrails** (the other half of Spotify's result): the rule needs 1 + G tests to reject
(the primary and G guardrails), so for the rule to have power 1 - beta each is powered at 1 - beta / (1 + G)
(Bonferroni on the false-negative rate: P(some needed test fails) <= the sum of their betas).
:func:`per_test_power` gives the target; ``analysis.design`` simulates the rule's actual power.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from analysis.divergence import DIVERGENCE, INDETERMINATE, DivergenceStatus, reference_df, harm, one_sided_p
from schemas.protocol import StudyProtocol
from schemas.results import LONG_RUN, Effect

SHIP = "ship"
DO_NOT_SHIP = "do_not_ship"
DECISIONS = (SHIP, DO_NOT_SHIP, INDETERMINATE)

__all__ = ["DECISIONS", "DO_NOT_SHIP", "SHIP", "ArmDecision", "Criterion", "decision_table", "per_test_power"]


def per_test_power(target_power: float, guardrails: int) -> float:
    """The power each needed test must have so the rule (the primary and ``guardrails`` non-inferiority tests, all
    needed) has at least ``target_power``: 1 - (1 - target) / (1 + G) (Schultzberg et al. 2024)."""
    if not 0 < target_power < 1 or guardrails < 0:
        raise ValueError("target_power must be in (0, 1) and guardrails >= 0")
    return 1.0 - (1.0 - target_power) / (1 + guardrails)


@dataclass(frozen=True, kw_only=True)
class Criterion:
    """One criterion of the rule for one arm, with its evidence. ``kind``: ``primary_success``, ``guardrail``,
    ``no_divergence``. ``passed`` is None when it could not be evaluated (``reason`` says why). ``p_value`` is the
    test's: two-sided for the primary, one-sided (H0: harm >= margin) for a guardrail, the smallest IUT p-value of
    the arm for the monitor."""

    kind: str
    outcome: str | None
    passed: bool | None
    wave: str | None = None
    method: str | None = None
    estimate: float | None = None
    sd: float | None = None
    lower: float | None = None
    upper: float | None = None
    margin: float | None = None
    p_value: float | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class ArmDecision:
    """The rule's verdict for one arm (``decision``), its criteria, and the design's power bookkeeping: the number of
    tests the rule needs and the per-test power that gives the rule ``target_power``."""

    arm: str
    control: str
    tier: str
    decision: str
    criteria: tuple[Criterion, ...]
    alpha: float
    tests_needed: int
    target_power: float
    per_test_power: float

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")

    @property
    def statement(self) -> str:
        """One sentence: the verdict and the criteria that decided it."""
        failed = [c for c in self.criteria if c.passed is False]
        unknown = [c for c in self.criteria if c.passed is None]
        if self.decision == DO_NOT_SHIP:
            why = "; ".join(_says(c) for c in failed)
        elif self.decision == INDETERMINATE:
            why = "; ".join(_says(c) for c in unknown)
        else:
            why = "primary benefit significant, every guardrail non-inferior, no divergence"
        return f"{self.arm}: {self.decision.upper().replace('_', ' ')} ({why})"

    def records(self) -> list[dict[str, object]]:
        """One flat dict per criterion, with the arm's verdict on each (the table's rows)."""
        head = {"arm": self.arm, "control": self.control, "tier": self.tier, "decision": self.decision,
                "alpha": self.alpha, "tests_needed": self.tests_needed, "target_power": self.target_power,
                "per_test_power": self.per_test_power}
        return [head | {f"criterion_{f.name}" if f.name in ("kind", "passed", "reason") else f.name: getattr(c, f.name)
                        for f in fields(c)} for c in self.criteria]


def _says(c: Criterion) -> str:
    if c.reason:
        return f"{c.kind} {c.outcome or ''}: {c.reason}".replace("  ", " ")
    return f"{c.kind} {c.outcome or ''} not met".replace("  ", " ")


def _row(effects: Sequence[Effect], outcome: str, arm: str, method: str | None, tier: str) -> Effect | None:
    for e in effects:
        if (e.outcome, e.arm, e.wave, e.method, e.tier) == (outcome, arm, LONG_RUN, method, tier) and e.subgroup is None:
            return e
    return None


def _primary(effects, protocol: StudyProtocol, arm: str, method: str | None, tier: str) -> Criterion:
    o = protocol.primary_outcome
    e = _row(effects, o.name, arm, method, tier)
    base = dict(kind="primary_success", outcome=o.name, wave=LONG_RUN, method=method)
    if e is None:
        return Criterion(**base, passed=None, reason="no long-run estimate (the model failed, or the study is running)")
    if not e.estimable or e.lower is None:
        return Criterion(**base, passed=None, reason=f"not estimable ({e.reason or 'no interval'})")
    good = e.lower > 0 if o.direction == "higher_is_better" else e.upper < 0
    return Criterion(**base, passed=bool(good), estimate=e.estimate, sd=e.sd, lower=e.lower, upper=e.upper,
                     p_value=e.p_value, reason=None if good else "the interval does not exclude no benefit")


def _guardrail(effects, protocol: StudyProtocol, name: str, arm: str, method: str | None, tier: str,
               alpha: float) -> Criterion:
    o = protocol.outcome(name)
    e = _row(effects, name, arm, method, tier)
    base = dict(kind="guardrail", outcome=name, wave=LONG_RUN, method=method, margin=o.margin)
    if e is None:
        return Criterion(**base, passed=None, reason="no long-run estimate (the model failed, or the study is running)")
    if not e.estimable or not e.sd:
        return Criterion(**base, passed=None, reason=f"not estimable ({e.reason or 'no spread'})")
    p = one_sided_p((o.margin - harm(e, o.direction)) / e.sd, reference_df(e))
    ok = p < alpha
    return Criterion(**base, passed=ok, estimate=e.estimate, sd=e.sd, lower=e.lower, upper=e.upper, p_value=p,
                     reason=None if ok else f"non-inferiority within {o.margin:g} not shown (p = {p:.2g} >= {alpha:g})")


def _monitor(statuses: Sequence[DivergenceStatus], arm: str) -> Criterion:
    mine = [s for s in statuses if s.arm == arm]
    diverged = [s for s in mine if s.status == DIVERGENCE]
    p = min((s.p_iut for s in mine if s.p_iut is not None), default=None)
    if diverged:
        where = ", ".join(sorted({f"{s.outcome}@{s.wave} vs {s.metric}" for s in diverged}))
        return Criterion(kind="no_divergence", outcome=None, passed=False, p_value=p, reason=f"divergence at {where}")
    unknown = [s for s in mine if s.status == INDETERMINATE]
    if unknown:
        return Criterion(kind="no_divergence", outcome=None, passed=None, p_value=p,
                         reason=f"{len(unknown)} of {len(mine)} monitor checks indeterminate: {unknown[0].reason}")
    return Criterion(kind="no_divergence", outcome=None, passed=True, p_value=p)


def decision_table(
    effects: Sequence[Effect],
    divergence: Sequence[DivergenceStatus],
    protocol: StudyProtocol,
    *,
    methods: dict[str, str],
    tier: str = "trusted",
) -> tuple[ArmDecision, ...]:
    """The rule (module docstring) for every treated arm, from the run's effects (``methods``: each outcome's primary
    model) and the monitor's rows. The power bookkeeping uses ``protocol.design.target_power`` (default 0.8)."""
    alpha = 1.0 - protocol.analysis.interval_level
    guardrails = [o.name for o in protocol.guardrails()]
    target = protocol.design.target_power if protocol.design is not None else 0.8
    out = []
    for arm in [a for a in protocol.arm_names if a != protocol.control_arm]:
        criteria = (_primary(effects, protocol, arm, methods.get(protocol.primary_outcome.name), tier),
                    *(_guardrail(effects, protocol, g, arm, methods.get(g), tier, alpha) for g in guardrails),
                    _monitor(divergence, arm))
        if any(c.passed is False for c in criteria):
            decision = DO_NOT_SHIP
        elif any(c.passed is None for c in criteria):
            decision = INDETERMINATE
        else:
            decision = SHIP
        out.append(ArmDecision(arm=arm, control=protocol.control_arm, tier=tier, decision=decision,
                               criteria=criteria, alpha=alpha, tests_needed=1 + len(guardrails), target_power=target,
                               per_test_power=per_test_power(target, len(guardrails))))
    return tuple(out)
