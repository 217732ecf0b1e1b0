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
    from schemas.protocol import StudyProtocol, SurrogateMetric

SCORE_PRECEDENCE = (
    "a score Flourish computed from the responses before one delivered from outside (the ingest refuses an "
    "external score for an outcome the protocol scores itself, so both exist only in a warehouse filled before "
    "that rule), then the latest scored_at, then the later batch, then the larger value: a total order, so every "
    "reader takes the same row"
)

# SCORE_PRECEDENCE as SQL, in one place: the ORDER BY terms, first the row that wins. The long relation orders a window
# by them; the wide one takes the arg_min of DuckDB's sort key of the same terms and modifiers (``create_sort_key``:
# a blob that compares as ORDER BY sorts), so the two cannot disagree about which row wins.
_PRECEDENCE_TERMS = (("source = 'flourish'", "DESC NULLS LAST"), ("scored_at", "DESC NULLS LAST"),
                     ("batch_id", "DESC NULLS LAST"), ("value", "DESC NULLS LAST"))
_PRECEDENCE_ORDER = ", ".join(f"({term}) {how}" for term, how in _PRECEDENCE_TERMS)
_PRECEDENCE_SORT_KEY = "create_sort_key(" + ", ".join(f"({term}), {literal(how)}" for term, how in _PRECEDENCE_TERMS) + ")"


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
        f"QUALIFY row_number() OVER (PARTITION BY participant, wave, outcome ORDER BY {_PRECEDENCE_ORDER}) = 1)"
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


# -- survey timing: response windows and prompt compliance (issue 17 item 4) --------------------------------------

def _window_values(protocol: StudyProtocol) -> str:
    """``(wave, opens_day, opens_seconds, expiry_us, from_sent, grace_us)`` of the waves that declare a
    ``response_window``; an empty relation of those columns when none does."""
    rows = []
    for w in protocol.waves:
        rw = w.response_window
        if rw is None:
            continue
        secs = rw.opens_at.hour * 3600 + rw.opens_at.minute * 60 + rw.opens_at.second
        rows.append(f"({literal(w.name)}, {number(w.opens_day())}, {number(secs)}, "
                    f"{number(round(rw.expires_after_hours * 3_600_000_000))}, "
                    f"{'true' if rw.expires_from == 'sent' else 'false'}, "
                    f"{number(round(rw.grace_hours * 3_600_000_000))})")
    cols = "wave, opens_day, opens_seconds, expiry_us, from_sent, grace_us"
    if not rows:
        return (f"(SELECT NULL::VARCHAR AS wave, NULL::INTEGER AS opens_day, NULL::INTEGER AS opens_seconds, "
                f"NULL::BIGINT AS expiry_us, NULL::BOOLEAN AS from_sent, NULL::BIGINT AS grace_us WHERE false)")
    return f"(SELECT * FROM (VALUES {', '.join(rows)}) t({cols}))"


def _default_zone(protocol: StudyProtocol) -> str:
    return literal(protocol.schedule.timezone if protocol.schedule is not None else "UTC")


def _window_ctes(src: str) -> str:
    """CTEs ending in ``o``: the rows of CTE ``src`` (with ``participant, timezone, assigned_at, scheduled_at,
    sent_at`` and the wave's window values) with ``opens_at`` (local date of the assignment + opens_day, at
    opens_seconds local time, in the time zone), ``expires_at`` (anchor + expiry, real elapsed time) and
    ``closes_at`` (expires_at + grace); all NULL at a wave without a window or for a participant without an
    assignment.

    The time-zone arithmetic (ICU, about a microsecond a call) runs once per participant x zone (the local date of
    the assignment) and once per zone x opening day x time, not once per row: a million participants' answers need
    about a million calls, not fifty."""
    return (
        f"ld AS (SELECT participant, timezone, assigned_at, timezone(timezone, assigned_at)::DATE AS local_day FROM "
        f"(SELECT DISTINCT participant, timezone, assigned_at FROM {src} WHERE opens_day IS NOT NULL "
        "AND assigned_at IS NOT NULL)), "
        f"y AS (SELECT s.*, ld.local_day + s.opens_day AS open_day FROM {src} s LEFT JOIN ld "
        "ON ld.participant = s.participant AND ld.timezone = s.timezone AND ld.assigned_at = s.assigned_at), "
        "od AS (SELECT timezone AS od_zone, open_day AS od_day, opens_seconds AS od_seconds, "
        "timezone(timezone, open_day::TIMESTAMP + to_seconds(opens_seconds)) AS opens_at FROM "
        "(SELECT DISTINCT timezone, open_day, opens_seconds FROM y WHERE open_day IS NOT NULL)), "
        "y2 AS (SELECT y.* EXCLUDE (open_day), od.opens_at FROM y LEFT JOIN od ON od.od_zone = y.timezone "
        "AND od.od_day = y.open_day AND od.od_seconds = y.opens_seconds), "
        "y3 AS (SELECT y2.*, coalesce(CASE WHEN from_sent THEN sent_at ELSE scheduled_at END, opens_at) "
        "+ to_microseconds(expiry_us) AS expires_at FROM y2), "
        "o AS (SELECT y3.*, expires_at + to_microseconds(grace_us) AS closes_at FROM y3)"
    )


def prompts_of_record(study_id: str) -> str:
    """``(participant, wave, instrument, prompt_id, timezone, scheduled_at, sent_at, expired_at)``: one prompt per
    participant x wave x instrument (``instrument`` NULL: the whole wave), the latest scheduled (then the larger
    prompt id). A scheduler that re-issues a prompt (a new schedule version) leaves one that counts."""
    return (
        "(SELECT participant, wave, instrument, prompt_id, timezone, scheduled_at, sent_at, expired_at FROM prompts "
        f"WHERE study_id = {literal(study_id)} "
        "QUALIFY row_number() OVER (PARTITION BY participant, wave, coalesce(instrument, chr(0)) "
        "ORDER BY scheduled_at DESC, prompt_id DESC) = 1)"
    )


def _instrument_prompt_first(col: str) -> str:
    """SQL: column ``col`` of the instrument's prompt (``pi``) when there is one, else of the wave's (``pw``)."""
    return f"CASE WHEN pi.prompt_id IS NOT NULL THEN pi.{col} ELSE pw.{col} END"


def _judged(protocol: StudyProtocol, rows: str) -> str:
    """``rows`` (a relation with ``participant, wave, instrument, submitted_at``; other columns carried) with its
    prompt (``prompt_id``, ``timezone``), its window (``opens_at, expires_at, closes_at``) and ``late``.

    The prompt of an answer is the participant's prompt of record for the wave and the answer's instrument, else the
    one for the whole wave (:func:`prompts_of_record`); its time zone is the prompt's, else the study's. Two hash
    joins on the prompts of record, no window over the answers."""
    sid, zone = protocol.study_id, _default_zone(protocol)
    return (
        f"(WITH por AS {prompts_of_record(sid)}, "
        f"x AS (SELECT r.*, {_instrument_prompt_first('prompt_id')} AS prompt_id, "
        f"coalesce({_instrument_prompt_first('timezone')}, {zone}) AS timezone, "
        f"{_instrument_prompt_first('scheduled_at')} AS scheduled_at, "
        f"{_instrument_prompt_first('sent_at')} AS sent_at, a.assigned_at, w.opens_day, "
        "w.opens_seconds, w.expiry_us, w.from_sent, w.grace_us "
        f"FROM {rows} r "
        "LEFT JOIN por pi ON pi.participant = r.participant AND pi.wave = r.wave AND pi.instrument = r.instrument "
        "LEFT JOIN por pw ON pw.participant = r.participant AND pw.wave = r.wave AND pw.instrument IS NULL "
        f"LEFT JOIN {study_arms(sid)} a ON a.participant = r.participant "
        f"LEFT JOIN {_window_values(protocol)} w ON w.wave = r.wave), "
        f"{_window_ctes('x')} "
        "SELECT o.* EXCLUDE (scheduled_at, sent_at, assigned_at, opens_day, opens_seconds, expiry_us, from_sent, "
        "grace_us), CASE WHEN opens_at IS NULL THEN NULL ELSE submitted_at < opens_at OR submitted_at > closes_at "
        "END AS late FROM o)"
    )


def _windowed_waves(protocol: StudyProtocol) -> list[str]:
    return [w.name for w in protocol.waves if w.response_window is not None]


def response_windows(protocol: StudyProtocol) -> str:
    """``(response_id, participant, wave, instrument, instrument_version, submitted_at, prompt_id, timezone, opens_at,
    expires_at, closes_at, late)``: every response that counts (:func:`latest_responses`) with its wave's window and
    whether it lies outside it (``late``: before ``opens_at`` or after ``closes_at``; NULL, not judged, at a wave
    without a ``response_window`` or for a participant not randomised). Kept in the warehouse either way.

    The window is computed in the time zone of the response's prompt (see :func:`_judged`): a participant who moves
    between waves has each window on the clock they lived by then."""
    return _judged(protocol, latest_responses(protocol.study_id))


def late_answers(protocol: StudyProtocol, waves: Sequence[str] | None = None,
                 instruments: Sequence[str] | None = None) -> str:
    """``(participant, wave, instrument)``: the answers that count (the latest submission of a participant x wave x
    instrument, as :func:`latest_responses` chooses it) that lie outside their wave's declared window, at the waves
    (of ``waves``) that declare one, of the ``instruments`` when given. The latest submission's time is the key's
    largest ``submitted_at`` whatever breaks a tie, so a GROUP BY finds it without a window over the responses."""
    judged = [w for w in _windowed_waves(protocol) if waves is None or w in waves]
    latest = (f"(SELECT participant, wave, instrument, max(submitted_at) AS submitted_at FROM responses "
              f"WHERE study_id = {literal(protocol.study_id)} AND list_contains({varchar_list(judged)}, wave) "
              + (f"AND list_contains({varchar_list(instruments)}, instrument) " if instruments is not None else "")
              + "GROUP BY participant, wave, instrument)")
    return f"(SELECT participant, wave, instrument FROM {_judged(protocol, latest)} WHERE late)"


def late_excluded(protocol: StudyProtocol) -> bool:
    """Whether the primary analysis leaves out late answers: the plan says so (absent: yes) and a wave declares a
    window to judge them by."""
    return protocol.analysis.excludes_late() and bool(_windowed_waves(protocol))


def primary_scores(protocol: StudyProtocol, outcomes: Sequence[str] | None = None,
                   waves: Sequence[str] | None = None) -> str:
    """``(participant, wave, outcome, value, source)``: :func:`study_scores` as the primary analysis reads them,
    less the Flourish scores of late answers (:func:`late_answers`; an instrument's scores are named
    ``<instrument>.<score>``) when :func:`late_excluded`. An external score has no answer to judge and is always
    kept. The trusted statistics and the DP releases both read this, so the two tiers leave out the same rows."""
    scores = study_scores(protocol.study_id, outcomes, waves)
    if not late_excluded(protocol):
        return scores
    # the instruments whose scores these outcomes can be: every prefix of a name that ends before one of its dots
    instruments = None if outcomes is None else sorted(
        {o[:i] for o in outcomes for i, c in enumerate(o) if c == "." and i > 0})
    return (f"(SELECT s.* FROM {scores} s WHERE NOT (s.source = 'flourish' AND EXISTS (SELECT 1 FROM "
            f"{late_answers(protocol, waves, instruments)} l WHERE l.participant = s.participant AND l.wave = s.wave "
            "AND starts_with(s.outcome, l.instrument || '.'))))")


def primary_scores_wide(protocol: StudyProtocol, outcome: str, waves: Sequence[str]) -> str:
    """``(participant, score_0, ..., score_<k-1>)``: :func:`primary_scores` of one ``outcome`` at ``waves`` pivoted to
    one row per participant, ``score_i`` the score at ``waves[i]`` (NULL where there is none); a participant without
    a score at any of them has no row. The same values as pivoting the long relation (the tests hold the two equal)
    in one GROUP BY participant instead of a window over participant x wave x outcome and a second GROUP BY: the
    participant x wave's score is the arg_min of the sort key of the window's own ORDER BY (:data:`SCORE_PRECEDENCE`);
    at a million participants x 6 waves the pivot took a third of the window's time alone. A tie on the whole key is a
    tie on the value too, so the value never depends on the row DuckDB meets first.

    A late answer's Flourish score is left out after the precedence, as :func:`primary_scores` does: the winner is a
    Flourish score exactly when the participant x wave has one (the key's first term), and then it is dropped when
    :func:`late_answers` holds that participant x wave x the outcome's instrument; an external score is kept."""
    if not waves:
        raise ValueError("primary_scores_wide needs at least one wave")
    # the key once per row, in a projection: as an argument of each wave's aggregate it was computed once per wave
    rows = (f"(SELECT participant, wave, value, source, {_PRECEDENCE_SORT_KEY} AS precedence FROM scores "
            f"WHERE study_id = {literal(protocol.study_id)} AND outcome = {literal(outcome)} AND NOT isnan(value) AND "
            f"list_contains({varchar_list(waves)}, wave))")
    best = [f"arg_min(value, precedence) FILTER (WHERE wave = {literal(w)})" for w in waves]
    names = [f"score_{number(i)}" for i in range(len(waves))]
    if not late_excluded(protocol):
        cols = ", ".join(f"{b} AS {n}" for b, n in zip(best, names, strict=True))
        return f"(SELECT participant, {cols} FROM {rows} GROUP BY participant)"
    instruments = sorted({outcome[:i] for i, c in enumerate(outcome) if c == "." and i > 0})
    own = ", ".join(f"{b} AS best_{number(i)}, bool_or(source = 'flourish') FILTER (WHERE wave = {literal(w)}) "
                    f"AS flourish_{number(i)}" for i, (b, w) in enumerate(zip(best, waves, strict=True)))
    late = ", ".join(f"bool_or(wave = {literal(w)}) AS late_{number(i)}" for i, w in enumerate(waves))
    cols = ", ".join(f"CASE WHEN s.flourish_{number(i)} AND coalesce(l.late_{number(i)}, FALSE) THEN NULL "
                     f"ELSE s.best_{number(i)} END AS {n}" for i, n in enumerate(names))
    return (f"(SELECT * FROM (SELECT s.participant, {cols} FROM (SELECT participant, {own} FROM {rows} "
            f"GROUP BY participant) s LEFT JOIN (SELECT participant, {late} FROM "
            f"{late_answers(protocol, waves, instruments)} WHERE starts_with({literal(outcome)}, instrument || '.') "
            f"GROUP BY participant) l USING (participant)) WHERE coalesce({', '.join(names)}) IS NOT NULL)")


COMPLIANCE_STATUSES = ("answered_in_window", "late", "expired", "unanswered")


def prompt_compliance(protocol: StudyProtocol, as_of: str) -> str:
    """``(participant, arm, wave, prompt_id, instrument, timezone, opens_at, expires_at, closes_at, status)``: one row
    per prompt of record of a randomised participant, with exactly one status of :data:`COMPLIANCE_STATUSES`.

    ``as_of`` is SQL text of a TIMESTAMPTZ (the caller's ``literal(...)``). A prompt of record is the latest
    scheduled prompt of a participant x wave x instrument (or x the whole wave; then the larger prompt id). Its
    status, in this order: *answered_in_window*, a response that counts to it (its instrument, or any of the wave's
    for a wave-level prompt) lies in its window (at a wave without a window, any response); *late*, it has
    responses and none lies in the window; *expired*, no response and the scheduler reported it expired or its window
    (with the grace) closed before ``as_of``; *unanswered*, no response and still open (or no expiry known). So
    prompted = answered in window + late + expired + unanswered, per arm x wave, by construction."""
    sid = protocol.study_id
    return (
        f"(WITH p AS {prompts_of_record(sid)}, "
        f"x AS (SELECT p.*, a.arm, a.assigned_at, w.opens_day, w.opens_seconds, w.expiry_us, w.from_sent, w.grace_us "
        f"FROM p JOIN {study_arms(sid)} a USING (participant) LEFT JOIN {_window_values(protocol)} w USING (wave)), "
        f"{_window_ctes('x')}, "
        # the answer that counts per instrument is the latest submission: its time is the largest submitted_at
        f"r AS (SELECT participant, wave, instrument, max(submitted_at) AS submitted_at FROM responses "
        f"WHERE study_id = {literal(sid)} GROUP BY participant, wave, instrument), "
        "m AS (SELECT o.prompt_id, bool_or(r.submitted_at IS NOT NULL) AS answered, "
        "bool_or(r.submitted_at IS NOT NULL AND (o.opens_at IS NULL "
        "OR r.submitted_at BETWEEN o.opens_at AND o.closes_at)) AS in_window FROM o LEFT JOIN r ON r.participant = o.participant AND r.wave = o.wave "
        "AND (o.instrument IS NULL OR r.instrument = o.instrument) GROUP BY o.prompt_id) "
        "SELECT o.participant, o.arm, o.wave, o.prompt_id, o.instrument, o.timezone, o.opens_at, o.expires_at, "
        "o.closes_at, CASE WHEN m.in_window THEN 'answered_in_window' WHEN m.answered THEN 'late' "
        f"WHEN o.expired_at IS NOT NULL OR o.closes_at < {as_of} THEN 'expired' ELSE 'unanswered' END AS status "
        "FROM o JOIN m USING (prompt_id))"
    )


def compliance_table(protocol: StudyProtocol, as_of: str) -> str:
    """``(arm, wave, prompted, answered_in_window, late, expired, unanswered)``: :func:`prompt_compliance` counted per
    arm x wave (exact counts: the trusted tier's)."""
    return (
        "(SELECT arm, wave, count(*) AS prompted, "
        + ", ".join(f"count(*) FILTER (WHERE status = {literal(s)}) AS {s}" for s in COMPLIANCE_STATUSES)
        + f" FROM {prompt_compliance(protocol, as_of)} GROUP BY arm, wave)"
    )
