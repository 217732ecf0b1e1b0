r"""The engagement-versus-flourishing divergence monitor: is a feature raising use while flourishing falls?

This is the failure positive alignment exists to catch: a feature that wins on engagement and loses on wellbeing
(Milli et al. 2025, PNAS Nexus pgaf062: engagement ranking amplified content users say makes them feel worse; the
*surrogate paradox*, VanderWeele 2013, PMC4221255: a treatment can raise a surrogate positively related to the
outcome and still lower the outcome). Single-metric guardrails (GrowthBook, Eppo) check one direction of one metric;
this monitor tests the joint condition.

**The test** (per treated arm, engagement metric m, flourishing outcome o with non-inferiority margin M > 0, and
follow-up wave w): with E the arm's engagement effect over m's preregistered window (``analysis.cuped``) and H the
arm's *harm* on o at w (the effect against o's good direction: -effect for ``higher_is_better``), the
intersection-union test (Berger 1982, Technometrics 24:295) of

    H0: E <= 0  or  H <= M        against        H1: E > 0  and  H > M

rejects when both one-sided tests reject at the plan's alpha (1 - ``interval_level``), each unadjusted: an IUT's
size is at most alpha without any correction (Berger 1982; the argument Spotify's decision rule makes for guardrails,
Schultzberg, Ankargren & Frånberg 2024, arXiv 2402.11609). Its p-value is the larger of the two. Each one-sided test
uses the row's estimate and SD with the reference its interval used: Student t with the degrees of freedom the
interval implies (the MMRM's Kenward-Roger rows), normal otherwise.

**The posterior probability of the quadrant** P(E > 0 and H > M), from the same rows: the product of the two
marginal probabilities under normal posteriors with the rows' means and SDs (posterior SDs for Bayesian rows; for a
frequentist row the flat-prior approximation N(estimate, SE^2)). The product assumes the two posteriors independent:
engagement and flourishing are fitted by separate models (DP noise on both would only shrink an apparent
correlation, research F4). It is reported, not thresholded: the alert is the IUT.

**Statuses.** ``divergence`` (the IUT rejects), ``no_divergence`` (it does not), ``indeterminate`` when either side
is missing, failed or suppressed at that wave: a wellbeing measure that could not be read is never a pass
(GrowthBook's "indeterminate" status, growthbook/growthbook#6933). The flourishing effect is taken as the
preregistered model reports it and is **never adjusted for engagement**: engagement is post-randomisation and
confounded with the outcome (heavier use went with worse loneliness, instruments.md), so adjusting for it would
estimate nothing causal (the protocol refuses an engagement metric as a covariate).

Pure: a function of :class:`~schemas.results.Effect` rows and the protocol, returning frozen rows; ``analysis.plan``
runs it on every run's effects, ``flows`` stores the rows (table ``divergence_status``, migration 0090) and raises a
divergence as an alert of the pipeline's run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

from schemas.protocol import Outcome, StudyProtocol
from schemas.results import LONG_RUN, Effect

DIVERGENCE = "divergence"
NO_DIVERGENCE = "no_divergence"
INDETERMINATE = "indeterminate"
STATUSES = (DIVERGENCE, NO_DIVERGENCE, INDETERMINATE)
ENGAGEMENT_METHODS = ("cuped", "difference_in_means_no_pre_period")
"""The methods of a telemetry metric's effect (``analysis.cuped``): what the monitor reads as engagement."""

__all__ = ["DIVERGENCE", "ENGAGEMENT_METHODS", "INDETERMINATE", "NO_DIVERGENCE", "STATUSES", "DivergenceStatus",
           "divergence_monitor", "harm", "one_sided_p", "reference_df", "summary"]


@dataclass(frozen=True, kw_only=True)
class DivergenceStatus:
    """The monitor's verdict for one arm x engagement metric x flourishing outcome x wave, with its numbers.

    Effects are arm minus control. ``flourishing_estimate`` is in the outcome's units and direction as reported;
    ``harm_estimate`` is the same effect against the good direction (positive = worse), the scale ``margin`` is on.
    ``p_engagement`` is the one-sided p-value of "engagement did not rise", ``p_harm`` of "the harm is within the
    margin", ``p_iut`` the larger (the IUT's p-value), ``p_quadrant`` the posterior probability of the divergence
    quadrant. An ``indeterminate`` row says why in ``reason`` and carries only the numbers that exist."""

    arm: str
    control: str
    wave: str
    outcome: str
    metric: str
    tier: str
    status: str
    alpha: float
    margin: float
    direction: str
    engagement_window: str | None = None
    engagement_method: str | None = None
    engagement_estimate: float | None = None
    engagement_sd: float | None = None
    flourishing_method: str | None = None
    flourishing_estimate: float | None = None
    flourishing_sd: float | None = None
    harm_estimate: float | None = None
    p_engagement: float | None = None
    p_harm: float | None = None
    p_iut: float | None = None
    p_quadrant: float | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if (self.status == INDETERMINATE) != (self.reason is not None):
            raise ValueError("an indeterminate status says why (reason), and only an indeterminate one")
        if self.status != INDETERMINATE and self.p_iut is None:
            raise ValueError(f"a {self.status} status needs the IUT's p-value")

    @property
    def alert(self) -> str | None:
        """One sentence for the run's alerts when this row is a divergence, else None."""
        if self.status != DIVERGENCE:
            return None
        return (f"DIVERGENCE ({self.tier}): {self.arm} raised {self.metric} by {self.engagement_estimate:+.3g} "
                f"(p = {self.p_engagement:.2g}) while {self.outcome} at {self.wave} fell by {self.harm_estimate:.3g} "
                f"against its good direction, beyond the margin {self.margin:g} (p = {self.p_harm:.2g}); IUT p = "
                f"{self.p_iut:.2g} < {self.alpha:g}, P(quadrant) = {self.p_quadrant:.2f}")

    def as_record(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DivergenceStatus))


# ----------------------------------------------------------------------------------------------
# One-sided tests on an Effect row
# ----------------------------------------------------------------------------------------------
def reference_df(e: Effect) -> float:
    """Degrees of freedom of the t reference a frequentist row's interval used (its half-width over its SD is
    t_{df, 1 - a/2}); infinity for a normal interval or a Bayesian row (no p-value). One call of the inverse of the t
    distribution in its degrees of freedom (cephes' stdtridf), cheap enough for simulated trials."""
    from scipy.special import ndtri, stdtridf

    if e.p_value is None or e.lower is None or e.upper is None or not e.sd or e.interval_level is None:
        return math.inf
    q = 0.5 + e.interval_level / 2
    c = (e.upper - e.lower) / (2 * e.sd)
    if c <= float(ndtri(q)) * (1 + 1e-9):
        return math.inf
    df = float(stdtridf(q, c))
    return df if math.isfinite(df) and df > 0 else math.inf


def one_sided_p(statistic: float, df: float) -> float:
    """P(T >= statistic) under the reference (Student t with ``df``, normal when infinite)."""
    from scipy.special import ndtr, stdtr

    return float(ndtr(-statistic)) if math.isinf(df) else float(stdtr(df, -statistic))


def harm(e: Effect, direction: str) -> float:
    """The effect against the outcome's good direction (positive = worse)."""
    return -e.estimate if direction == "higher_is_better" else e.estimate


# ----------------------------------------------------------------------------------------------
# The monitor
# ----------------------------------------------------------------------------------------------
def _rows_by_key(effects: Iterable[Effect], tier: str) -> dict[tuple[str, str, str, str], Effect]:
    """(outcome, arm, wave, method) -> the whole-sample row of this tier (subgroup rows are not the effect)."""
    return {(e.outcome, e.arm, e.wave, e.method): e for e in effects if e.tier == tier and e.subgroup is None}


def _engagement_row(rows: Mapping, metric: str, arm: str) -> Effect | None:
    for (outcome, a, _wave, method), e in rows.items():
        if outcome == metric and a == arm and method in ENGAGEMENT_METHODS:
            return e
    return None


def _why_missing(effects: Sequence[Effect], outcome: str, arm: str, tier: str) -> str:
    """The reason a not-estimable row of the outcome and arm gives (a failed model or a refused release), if any."""
    for e in effects:
        if e.outcome == outcome and e.arm == arm and e.tier == tier and not e.estimable:
            return e.reason or ""
    return ""


def divergence_monitor(
    effects: Sequence[Effect],
    protocol: StudyProtocol,
    *,
    waves: Mapping[str, Sequence[str]],
    methods: Mapping[str, str],
    tier: str = "trusted",
) -> tuple[DivergenceStatus, ...]:
    """The monitor's rows for every treated arm x engagement metric x flourishing outcome x due wave.

    ``waves``: per flourishing outcome, the follow-up waves due so far (protocol order): a wave in it without an
    estimable row of ``methods[outcome]`` (the outcome's primary model) is indeterminate, never a pass. Outcomes
    monitored: every outcome with a margin (``Outcome.margin``); engagement: ``protocol.engagement_metrics()``. A
    protocol with neither gives no rows (nothing to monitor)."""
    alpha = 1.0 - protocol.analysis.interval_level
    control = protocol.control_arm
    treated = [a for a in protocol.arm_names if a != control]
    metrics = [m.name for m in protocol.engagement_metrics()]
    outcomes: list[Outcome] = [o for o in protocol.outcomes if o.margin is not None]
    rows = _rows_by_key(effects, tier)
    out: list[DivergenceStatus] = []
    for arm in treated:
        for metric in metrics:
            eng = _engagement_row(rows, metric, arm)
            for o in outcomes:
                method = methods.get(o.name)
                for wave in waves.get(o.name, ()):
                    if wave == LONG_RUN:
                        continue
                    fl = rows.get((o.name, arm, wave, method)) if method else None
                    out.append(_status(arm, control, wave, o, metric, tier, alpha, eng, fl, method,
                                       lambda o=o, arm=arm: _why_missing(effects, o.name, arm, tier)))
    return tuple(out)


def _status(arm, control, wave, o: Outcome, metric, tier, alpha, eng: Effect | None, fl: Effect | None,
            method: str | None, why) -> DivergenceStatus:
    base = dict(arm=arm, control=control, wave=wave, outcome=o.name, metric=metric, tier=tier, alpha=alpha,
                margin=float(o.margin), direction=o.direction, flourishing_method=method)
    if eng is not None:
        base |= dict(engagement_window=eng.wave, engagement_method=eng.method)
        if eng.estimable and eng.sd:
            base |= dict(engagement_estimate=eng.estimate, engagement_sd=eng.sd)
    if fl is not None and fl.estimable and fl.sd:
        base |= dict(flourishing_estimate=fl.estimate, flourishing_sd=fl.sd, harm_estimate=harm(fl, o.direction))
    problems = []
    if fl is None:
        detail = why()
        problems.append(f"{o.name} has no {method or 'model'} effect at {wave}"
                        + (f" ({detail})" if detail else " (no data, suppressed or not read at this wave)"))
    elif not fl.estimable:
        problems.append(f"{o.name} at {wave} is not estimable ({fl.reason})")
    elif not fl.sd:
        problems.append(f"{o.name} at {wave} has no spread to test against")
    if eng is None:
        problems.append(f"{metric} has no engagement effect for {arm}")
    elif not eng.estimable:
        problems.append(f"{metric} is not estimable ({eng.reason})")
    elif not eng.sd:
        problems.append(f"{metric} has no spread to test against")
    if problems:
        return DivergenceStatus(**base, status=INDETERMINATE, reason="; ".join(problems))
    from scipy.special import ndtr

    h = harm(fl, o.direction)
    p_eng = one_sided_p(eng.estimate / eng.sd, reference_df(eng))
    p_harm = one_sided_p((h - o.margin) / fl.sd, reference_df(fl))
    p_iut = max(p_eng, p_harm)
    p_quadrant = float(ndtr(eng.estimate / eng.sd) * ndtr((h - o.margin) / fl.sd))
    return DivergenceStatus(**base, status=DIVERGENCE if p_iut < alpha else NO_DIVERGENCE, p_engagement=p_eng,
                            p_harm=p_harm, p_iut=p_iut, p_quadrant=p_quadrant)


def summary(statuses: Sequence[DivergenceStatus]) -> dict[str, object]:
    """The monitor in one line a report can show: the worst status (divergence > indeterminate > no_divergence),
    the counts of each, and the alerts."""
    counts = {s: sum(r.status == s for r in statuses) for s in STATUSES}
    worst = DIVERGENCE if counts[DIVERGENCE] else INDETERMINATE if counts[INDETERMINATE] else NO_DIVERGENCE
    return {"status": worst if statuses else None, "counts": counts,
            "alerts": [r.alert for r in statuses if r.alert is not None]}
