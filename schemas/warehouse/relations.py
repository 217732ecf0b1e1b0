"""The canonical relations: each warehouse concept defined once, as SQL text every reader uses.

The trusted tier's statistics (``flows``), the quality gates, the scoring stage and the DP releases
(``privacy.release``) all read participants' arms, scores and telemetry through these functions, so the
trusted and the public tier see the same value for every participant x wave x outcome and can differ only by
the DP noise (DESIGN.md, "One model, two tiers"; ``tests/schemas/test_relations.py`` holds every reader to
it whatever rows the warehouse holds).

Each function returns a parenthesised sub-query to use as a relation (``FROM {study_scores(...)} s``). Values
reach the text through :mod:`schemas.sqltext` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from schemas.sqltext import literal, number, varchar_list

if TYPE_CHECKING:  # pragma: no cover
    from schemas.protocol import SurrogateMetric

SCORE_PRECEDENCE = (
    "a score Flourish computed from the responses before one delivered from outside (the ingest refuses an "
    "external score for an outcome the protocol scores itself, so both exist only in a warehouse filled before "
    "that rule), then the latest scored_at, then the later batch, then the larger value: a total order, so every "
    "reader takes the same row"
)


def study_arms(study_id: str) -> str:
    """``(participant, arm, stratum, assigned_at)``: one row per participant randomised in the study, their first
    assignment (ties by arm name). The ingest refuses a second assignment to another arm
    (``conflicting_assignment``), so a participant has one arm; this rule says which when a warehouse holds more."""
    return (
        "(SELECT participant, arm, stratum, assigned_at FROM assignments "
        f"WHERE study_id = {literal(study_id)} "
        "QUALIFY row_number() OVER (PARTITION BY participant ORDER BY assigned_at, arm) = 1)"
    )


def study_scores(study_id: str, outcomes: Sequence[str] | None = None, waves: Sequence[str] | None = None) -> str:
    """``(participant, wave, outcome, value, source)``: one value per participant x wave x outcome (of ``outcomes``
    and ``waves`` when given), chosen by :data:`SCORE_PRECEDENCE`; NaN values are not scores."""
    where = [f"study_id = {literal(study_id)}", "NOT isnan(value)"]
    if outcomes is not None:
        where.append(f"list_contains({varchar_list(outcomes)}, outcome)")
    if waves is not None:
        where.append(f"list_contains({varchar_list(waves)}, wave)")
    return (
        "(SELECT participant, wave, outcome, value, source FROM scores "
        f"WHERE {' AND '.join(where)} "
        "QUALIFY row_number() OVER (PARTITION BY participant, wave, outcome ORDER BY (source = 'flourish') DESC, "
        "scored_at DESC NULLS LAST, batch_id DESC NULLS LAST, value DESC) = 1)"
    )


def latest_responses(study_id: str) -> str:
    """``(response_id, participant, wave, instrument, instrument_version, submitted_at)``: a participant may resubmit
    an instrument within a wave; the latest submission counts (then the larger response id)."""
    return (
        "(SELECT response_id, participant, wave, instrument, instrument_version, submitted_at FROM responses "
        f"WHERE study_id = {literal(study_id)} "
        "QUALIFY row_number() OVER (PARTITION BY participant, wave, instrument "
        "ORDER BY submitted_at DESC, response_id DESC) = 1)"
    )


_METRIC = {
    "count": "count(e.event_id) FILTER (WHERE {w})::DOUBLE",
    "count_per_week": "count(e.event_id) FILTER (WHERE {w}) * 7.0 / {days}",
    "sum_value": "coalesce(sum(e.value) FILTER (WHERE {w}), 0)",
    "mean_value": "avg(e.value) FILTER (WHERE {w})",
}


def telemetry_metric(study_id: str, metric: SurrogateMetric) -> str:
    """``(participant, arm, pre_value, value)``: one row per randomised participant; ``value`` is the metric over
    ``[assigned_at, assigned_at + window_days)`` and ``pre_value`` over the window of the same length before the
    assignment (CUPED's covariate, Deng et al. 2013). A participant without events in a window has a count of 0
    and a ``mean_value`` of NULL (not estimable, never 0). Events whose value is NaN are not counted."""
    days = int(metric.window_days)
    post = f"e.ts >= a.assigned_at AND e.ts < a.assigned_at + to_days({number(days)})"
    pre = f"e.ts >= a.assigned_at - to_days({number(days)}) AND e.ts < a.assigned_at"
    tmpl = _METRIC[metric.statistic]
    feature = f" AND e.feature = {literal(metric.feature)}" if metric.feature else ""
    return (
        f"(SELECT a.participant, a.arm, {tmpl.format(w=pre, days=number(float(days)))} AS pre_value, "
        f"{tmpl.format(w=post, days=number(float(days)))} AS value "
        f"FROM {study_arms(study_id)} a LEFT JOIN events e ON e.participant = a.participant "
        f"AND e.study_id = {literal(study_id)} AND e.type = {literal(metric.event_type)}{feature} "
        "AND (e.value IS NULL OR NOT isnan(e.value)) "
        "GROUP BY a.participant, a.arm)"
    )
