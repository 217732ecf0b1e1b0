"""The warehouse reduced, in DuckDB, to the small frames the quality rules judge.

Great Expectations validates pandas frames (its SQL data source fails on DuckDB: research/stack.md), and a
million participants hold tens of millions of scores and item answers and hundreds of millions of events:
too many rows for pandas in seconds. So every rule is judged on an exact reduction whose size does not grow
with the number of participants:

- a *histogram* of the judged values with a count ``n`` of the warehouse rows behind each (the values of a
  score, an item, an arm; rows per participant x wave x outcome); a rule on values is then exactly the rule
  on the rows, and its unexpected count is the sum of ``n`` over the unexpected values;
- for the time rules, each row's whole days outside its window or period (0 inside), computed from
  :func:`flows.quality.rules.wave_window` and :func:`flows.quality.rules.study_period`, again as a histogram;
- an aggregate for the rules that are about aggregates (the sample-ratio test, completeness per wave).

Readers use the canonical relations (``schemas.warehouse.relations``) for the house's concepts: the arm of
a participant (``study_arms``), the score of a participant at a wave (``study_scores``). The response that
counts (``latest_responses``) is judged by its time only, which a hash-screened GROUP BY gives at a sixth of
the relation's CPU (see :func:`response_cells`; a test holds the two equal). Counting rows per key (scores,
responses) is screened by a 64-bit hash of the key and made exact by recounting the rare repeated hashes. Rules about *every stored row* (an item or a score off its scale, an unknown
outcome, two rows for one key) read the tables themselves, because a bad row the canonical relation happens
not to choose is still bad data (and an injected row may be chosen next time).

No frame has a participant column: what reaches Great Expectations, the results table and the page are
counts per value or cell, never a pseudonym.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flows.quality.rules import QualitySettings, primary_waves, study_period, wave_window
from schemas.sqltext import literal
from schemas.warehouse.relations import compliance_table, study_arms, study_scores

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import pandas as pd

    from schemas.protocol import StudyProtocol

DAY_SECONDS = 86400.0


def _values(rows: Sequence[Sequence[Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A ``VALUES`` relation of bound parameters for ``rows``: ``(VALUES (?::T, ...), ...) AS v(c, ...)``; the
    values it takes are :func:`_flat` of the rows."""
    one = "(" + ", ".join(f"?::{t}" for _, t in columns) + ")"
    return f"(VALUES {', '.join([one] * len(rows))}) AS v({', '.join(c for c, _ in columns)})"


def _flat(rows: Sequence[Sequence[Any]]) -> list[Any]:
    return [x for r in rows for x in r]


def _days_outside(x: str, lo: str, hi: str) -> str:
    """Signed whole days outside ``[lo, hi]`` (negative early, positive late, 0 inside, NULL unknown); any
    part of a day outside counts as a day, so 0 means inside exactly."""
    return (f"CASE WHEN {x} IS NULL OR {lo} IS NULL THEN NULL WHEN {x} < {lo} THEN -ceil({lo} - {x}) "
            f"WHEN {x} > {hi} THEN ceil({x} - {hi}) ELSE 0 END::DOUBLE")


def item_values(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> pd.DataFrame:
    """``instrument, item_code, value, n``: every stored item answer (NULL = skipped)."""
    return con.execute(
        "SELECT instrument, item_code, value::DOUBLE AS value, count(*) AS n FROM response_items "
        "WHERE study_id = ? GROUP BY ALL ORDER BY ALL", [protocol.study_id]).df()


def score_values(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> pd.DataFrame:
    """``outcome, wave, value, n``: every stored score, whatever its source."""
    return con.execute(
        "SELECT outcome, wave, value, count(*) AS n FROM scores WHERE study_id = ? GROUP BY ALL ORDER BY ALL",
        [protocol.study_id]).df()


def score_keys(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> pd.DataFrame:
    """``outcome, wave, rows_per_key, n``: how many participant x wave x outcome keys hold 1, 2, ... rows.

    Counting rows per key is a GROUP BY over every score (27 million at a million participants), so it is
    screened by a 64-bit hash of the key: a key whose hash occurs once holds one row (the screen's one row
    with NULL outcome and wave counts them); the rows of every hash that occurs more than once (a repeated key,
    or two keys sharing a hash) are counted again by the key itself. Exact, and half the CPU of grouping by
    the key's text."""
    return con.execute(
        "WITH repeated AS MATERIALIZED (SELECT h, k FROM (SELECT hash(participant, wave, outcome) AS h, count(*) AS k "
        "FROM scores WHERE study_id = $study GROUP BY 1) WHERE k > 1), "
        "exact AS (SELECT outcome, wave, count(*) AS rows_per_key FROM scores WHERE study_id = $study "
        "AND hash(participant, wave, outcome) IN (SELECT h FROM repeated) GROUP BY participant, wave, outcome) "
        "SELECT * FROM (SELECT NULL::VARCHAR AS outcome, NULL::VARCHAR AS wave, 1::BIGINT AS rows_per_key, "
        "(SELECT count(*) FROM scores WHERE study_id = $study) - (SELECT coalesce(sum(k), 0) FROM repeated) AS n "
        "UNION ALL SELECT outcome, wave, rows_per_key, count(*) FROM exact GROUP BY ALL) WHERE n > 0 ORDER BY ALL",
        {"study": protocol.study_id}).df()


def response_cells(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> pd.DataFrame:
    """``wave, instrument, randomized, days_outside_window, submissions_per_key, latest_tied, n``: every
    participant x wave x instrument key, reduced to a histogram.

    The response that counts is ``latest_responses``' (latest ``submitted_at``, then the larger response id).
    The window rule needs only its *time*, which by that order is the key's largest ``submitted_at`` (a tie
    has one time): for a key with one submission, that submission's time; for a resubmitted key, its maximum.
    Keys are screened by a 64-bit hash as in :func:`score_keys`: rows whose key hash occurs once are keys with
    one submission and are judged row by row; the rows of repeated hashes are grouped by the key itself
    (count, latest time, and ``latest_tied``: the two latest submissions share their time, so the response id
    decides which counts). The relation's window sort plus a GROUP BY cost about six times the CPU at a million
    participants; ``tests/flows/quality/test_frames.py`` holds this reduction equal to one built on
    ``latest_responses``."""
    windows = [wave_window(w) for w in protocol.waves]
    bounds = [(w.wave, w.opens_days, w.closes_days) for w in windows]
    rel = _values(bounds, [("wave", "VARCHAR"), ("opens_days", "DOUBLE"), ("closes_days", "DOUBLE")])
    params = _flat(bounds)
    sid = protocol.study_id
    key = "hash(participant, wave, instrument)"
    offset = f"(epoch(k.latest_at) - epoch(a.assigned_at)) / {DAY_SECONDS}"
    return con.execute(
        f"WITH repeated AS MATERIALIZED (SELECT h FROM (SELECT {key} AS h, count(*) AS k FROM responses "
        f"WHERE study_id = ? GROUP BY 1) WHERE k > 1), "
        f"k AS (SELECT participant, wave, instrument, submitted_at AS latest_at, 1::BIGINT AS submissions, "
        f"false AS latest_tied FROM responses WHERE study_id = ? AND {key} NOT IN (SELECT h FROM repeated) "
        f"UNION ALL SELECT participant, wave, instrument, max(submitted_at), count(*), "
        f"coalesce(count(*) > 1 AND max(submitted_at, 2)[1] = max(submitted_at, 2)[2], false) FROM responses "
        f"WHERE study_id = ? AND {key} IN (SELECT h FROM repeated) GROUP BY participant, wave, instrument) "
        f"SELECT k.wave, k.instrument, a.participant IS NOT NULL AS randomized, "
        f"{_days_outside(offset, 'v.opens_days', 'v.closes_days')} AS days_outside_window, "
        f"k.submissions AS submissions_per_key, k.latest_tied, count(*) AS n "
        f"FROM k LEFT JOIN {study_arms(sid)} a ON a.participant = k.participant LEFT JOIN {rel} ON v.wave = k.wave "
        f"GROUP BY ALL ORDER BY ALL", [sid, sid, sid, *params]).df()


def assignment_cells(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> pd.DataFrame:
    """``arm, arms_per_participant, n``: every stored assignment, with the number of distinct arms its
    participant holds."""
    return con.execute(
        "SELECT arm, arms_per_participant, count(*) AS n FROM (SELECT arm, count(DISTINCT arm) OVER "
        "(PARTITION BY participant) AS arms_per_participant FROM assignments WHERE study_id = ?) "
        "GROUP BY ALL ORDER BY ALL", [protocol.study_id]).df()


def arm_counts(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> tuple[dict[str, int], Any, Any]:
    """Randomised participants per arm (``study_arms``), and the first and last assignment time."""
    rows = con.execute(f"SELECT arm, count(*), min(assigned_at), max(assigned_at) FROM {study_arms(protocol.study_id)} "
                       "GROUP BY arm").fetchall()
    counts = {arm: int(n) for arm, n, _, _ in rows}
    first = min((r[2] for r in rows), default=None)
    last = max((r[3] for r in rows), default=None)
    return counts, first, last


def allocation(counts: dict[str, int], protocol: StudyProtocol, settings: QualitySettings) -> pd.DataFrame:
    """One row ``participants, chi_square, p_value, counts`` of ``analysis.randomization.srm_test`` on the
    randomised participants' arms against the allocation ratios; no row before anyone is randomised.
    Participants in an arm the protocol lacks are left to ``assignment_arm_allowed``."""
    import pandas as pd

    from analysis.randomization import srm_test

    known = {a.name: int(counts.get(a.name, 0)) for a in protocol.arms}
    columns = ["participants", "chi_square", "p_value", "counts"]
    if sum(known.values()) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "counts" else float) for c in columns})
    srm = srm_test(known, {a.name: a.allocation for a in protocol.arms}, threshold=settings.srm_threshold)
    return pd.DataFrame([{"participants": sum(known.values()), "chi_square": srm.chi_square,
                          "p_value": srm.p_value, "counts": known}], columns=columns)


def completeness(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, as_of: datetime) -> pd.DataFrame:
    """``wave, due, scored, completeness`` for each wave measuring the primary outcome: of the randomised
    participants whose window for the wave has closed by ``as_of`` (``wave_window``), how many have a score of
    the primary outcome there (``study_scores``). A wave due for no one has completeness NaN (not judged):
    counting participants whose window is still open would call every running wave incomplete."""
    import pandas as pd

    waves = primary_waves(protocol)
    windows = [wave_window(w) for w in waves]
    bounds = [(w.wave, w.closes_days) for w in windows]
    rel = _values(bounds, [("wave", "VARCHAR"), ("closes_days", "DOUBLE")])
    params = _flat(bounds)
    sid, primary = protocol.study_id, protocol.primary_outcome.name
    due = f"epoch(a.assigned_at) + v.closes_days * {DAY_SECONDS} <= epoch(?::TIMESTAMPTZ)"
    scores = study_scores(sid, outcomes=[primary], waves=[w.name for w in waves])
    rows = con.execute(
        f"WITH a AS MATERIALIZED (SELECT participant, assigned_at FROM {study_arms(sid)}), "
        f"d AS (SELECT v.wave, count(*) AS due FROM a CROSS JOIN {rel} WHERE {due} GROUP BY v.wave), "
        f"s AS (SELECT v.wave, count(*) AS scored FROM {scores} s JOIN a ON a.participant = s.participant "
        f"JOIN {rel} ON v.wave = s.wave WHERE {due} GROUP BY v.wave) "
        f"SELECT d.wave, d.due, coalesce(s.scored, 0) FROM d LEFT JOIN s ON s.wave = d.wave",
        [*params, as_of, *params, as_of]).fetchall()
    got = {w: (int(d), int(s)) for w, d, s in rows}
    out = []
    for w in waves:
        due_n, scored = got.get(w.name, (0, 0))
        out.append({"wave": w.name, "due": due_n, "scored": scored,
                    "completeness": scored / due_n if due_n else float("nan")})
    return pd.DataFrame(out, columns=["wave", "due", "scored", "completeness"])


def prompt_cells(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, as_of: datetime) -> pd.DataFrame:
    """``wave, prompted, late, late_share`` for every wave: prompts of record of randomised participants and those
    answered only outside the wave's window (``relations.compliance_table``); a wave without prompts has
    late_share NaN (not judged)."""
    import pandas as pd

    now = literal(as_of.isoformat()) + "::TIMESTAMPTZ"
    got = {w: (int(p), int(late)) for w, p, late in con.execute(
        f"SELECT wave, sum(prompted), sum(late) FROM {compliance_table(protocol, now)} GROUP BY wave").fetchall()}
    rows = []
    for w in protocol.wave_names:
        prompted, late = got.get(w, (0, 0))
        rows.append({"wave": w, "prompted": prompted, "late": late,
                     "late_share": late / prompted if prompted else float("nan")})
    return pd.DataFrame(rows, columns=["wave", "prompted", "late", "late_share"])


def event_cells(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, first: datetime | None,
                last: datetime | None) -> tuple[pd.DataFrame, dict[str, str] | None]:
    """``type, days_outside_period, n`` of every stored event, and the study period judged from the first and
    last assignment (None before anyone is randomised: then no event is judged)."""
    period = study_period(protocol, first, last) if first is not None else None
    starts, ends = (period.starts, period.ends) if period else (None, None)
    frame = con.execute(
        f"WITH p AS (SELECT epoch(?::TIMESTAMPTZ) / {DAY_SECONDS} AS lo, epoch(?::TIMESTAMPTZ) / {DAY_SECONDS} AS hi) "
        f"SELECT e.type, {_days_outside(f'epoch(e.ts) / {DAY_SECONDS}', 'p.lo', 'p.hi')} AS days_outside_period, "
        "count(*) AS n FROM events e CROSS JOIN p WHERE e.study_id = ? GROUP BY ALL ORDER BY ALL",
        [starts, ends, protocol.study_id]).df()
    return frame, ({"starts": starts.isoformat(), "ends": ends.isoformat()} if period else None)


def reduce_warehouse(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, *, as_of: datetime,
                     settings: QualitySettings) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Every frame the rules name, and context the report shows (the study period judged)."""
    counts, first, last = arm_counts(con, protocol)
    events, period = event_cells(con, protocol, first, last)
    frames = {
        "item_values": item_values(con, protocol),
        "score_values": score_values(con, protocol),
        "score_keys": score_keys(con, protocol),
        "responses": response_cells(con, protocol),
        "assignments": assignment_cells(con, protocol),
        "allocation": allocation(counts, protocol, settings),
        "completeness": completeness(con, protocol, as_of),
        "prompts": prompt_cells(con, protocol, as_of),
        "events": events,
    }
    for name, frame in frames.items():
        assert "participant" not in frame.columns, f"frame {name} must not carry participants"
    # GX names unexpected rows by index label: a plain 0..n-1 index makes them row positions
    return {name: frame.reset_index(drop=True) for name, frame in frames.items()}, {"study_period": period}
