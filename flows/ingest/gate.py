"""The gate: consent, erasure, de-duplication and assignment conflicts, after the contract and the protocol.

Consent (DESIGN.md): events need scope ``telemetry``, responses, prompts and external scores ``surveys``, in force at
the record's time (the latest consent granted at or before it), and nothing is taken at or after a
withdrawal; an erased participant's records are refused (``withdrawn``). De-duplication: a record whose key
(:data:`RECORD_KEY`) is stored already, or repeats an earlier line of the batch, is a ``duplicate``; a row of a
participant whom this batch erases (a consent withdrawal it brought) is discarded at its end, and is no key for
another record (:func:`stored_keys`). A
participant assigned again is a ``duplicate`` (same arm) or a ``conflicting_assignment`` (another arm).

Both paths decide with these definitions: the exact path row by row (:func:`gate_sql`), the fast path per
participant from their first and last record time (fastpath/verify.py), which is the same decision when the
participant's consent versions agree in the scope (``mixed`` false in ``privacy.consent.scope_summary_sql``).
"""

from __future__ import annotations

import duckdb

from flows.ingest.contract import CONSENT_SCOPE, TIME_FIELD
from privacy.consent import scope_summary_sql
from privacy.erasure import WITHDRAWN_NOT_ERASED
from schemas.sqltext import literal

# A record's key, in staged columns. Rows reaching de-duplication passed the study check, so within a study the
# event and response ids alone are the key (stored rows are filtered to the study).
RECORD_KEY = {
    "events": ("event_id",),
    "responses": ("response_id",),
    "prompts": ("prompt_id",),
    "assignments": ("participant", "study_id"),
    "participants": ("participant", "study_id"),
    "scores": ("participant", "study_id", "wave", "outcome"),
    "consents": ("record_hash",),
}
# The most selective column of each key: stored rows a chunk may repeat are found by it.
PROBE_COLUMN = {"events": "event_id", "responses": "response_id", "scores": "participant", "consents": "record_hash",
                "participants": "participant", "prompts": "prompt_id"}
# A consent's key: the whole pseudonymized record, so the same consent delivered twice is one consent.
CONSENT_RECORD_HASH = ("sha256(concat_ws('|', participant, consent_version, array_to_string(list_sort(scopes), ','), "
                       "granted_at::VARCHAR, coalesce(withdrawn_at::VARCHAR, '')))")
ACC_EVENTS = "acc_events"
"""Clean events of the batch gathered before one INSERT into ``events`` (batch.py creates it per batch)."""


ERASED_BY_THIS_BATCH = f"participant IN ({WITHDRAWN_NOT_ERASED})"
"""SQL over a row with a ``participant``: it is one this batch erases (a consent withdrawal it brought, no tombstone
yet), so the row is withheld or erased at the batch's end."""
KEPT_BY_THIS_BATCH = f"participant NOT IN ({WITHDRAWN_NOT_ERASED})"
"""SQL over a row with a ``participant``: not one this batch erases (:data:`ERASED_BY_THIS_BATCH`)."""


def keyed_by_record_id(kind: str) -> bool:
    """The kind's key is a record id the partner gives (an event, response or prompt id), not its participant:
    a record can then repeat another participant's record."""
    return "participant" not in RECORD_KEY[kind] and kind != "consents"


def stored_keys(kind: str, study_id: str) -> str:
    """The stored records a new record of ``kind`` of the study could repeat (clean events gathered but not yet
    inserted included); external scores repeat only external scores.

    For the kinds keyed by a record id (:func:`keyed_by_record_id`), rows of participants this batch erases are
    left out. They are discarded at the batch's end (events withheld, the rest erased), so a record repeating one
    of them repeats nothing that is kept: quarantining it as a ``duplicate`` would lose it for a row that no longer
    exists, and would make the answer depend on whether that row was gathered in the batch's temporary table (the
    exact path) or withheld from every table (the fast path's runs), i.e. on which path read it (hardening of the
    fast path's property test). The key stays the record id within the study (README, :data:`RECORD_KEY`): two
    participants who keep the same event id are still a duplicate, as long as both are kept."""
    s = literal(study_id)
    keep = f" AND {KEPT_BY_THIS_BATCH}"
    return {
        "events": (f"(SELECT * FROM (SELECT * FROM events WHERE study_id = {s} UNION ALL SELECT * FROM {ACC_EVENTS}) "
                   f"WHERE {KEPT_BY_THIS_BATCH})"),
        "responses": f"(SELECT * FROM responses WHERE study_id = {s}{keep})",
        "prompts": f"(SELECT * FROM prompts WHERE study_id = {s}{keep})",
        "scores": f"(SELECT * FROM scores WHERE source = 'external' AND study_id = {s})",
        "consents": "consents",
        "participants": f"(SELECT * FROM participants WHERE study_id = {s})",
    }[kind]


def gate_sql(kind: str, source: str, study_id: str) -> str:
    """Create ``stage`` from ``source`` (staged rows) with the consent gate and de-duplication in ONE query.

    Gate: an erasure tombstone, or a record at/after a withdrawal -> withdrawn; no consent with the kind's
    scope in force at the record's time -> no_consent. When every consent record of a participant carries
    the scope that is simply "at or after the first grant", a hash join on a per-participant summary; the
    rare participant whose consent versions differ in scope is resolved by an ASOF join in
    :func:`mixed_scope_gate`. Then de-duplication on the record key among rows that passed everything else:
    already stored -> duplicate; a repeat of an earlier line -> duplicate (a GROUP BY finds repeated keys;
    no window sort over the chunk)."""
    tcol = TIME_FIELD[kind]
    scope = CONSENT_SCOPE.get(kind)
    gate = ["WHEN s.erased THEN 'withdrawn'"]
    if kind != "consents":  # a consent record may itself carry the withdrawal
        gate.append(f"WHEN cs.withdrawn_at IS NOT NULL AND s.{tcol} >= cs.withdrawn_at THEN 'withdrawn'")
    if scope:
        gate.append("WHEN cs.mixed THEN NULL")  # decided by mixed_scope_gate
        gate.append(f"WHEN cs.first_with_scope IS NULL OR s.{tcol} < cs.first_with_scope THEN 'no_consent'")
    key = RECORD_KEY[kind]
    # one text key, so "already stored" is an uncorrelated IN (a hash mark join), not a per-row subquery
    text_key = " || chr(31) || ".join(f"{k}::VARCHAR" for k in key)
    label = "/".join(key)
    # a repeat inside the chunk: of a kept row (stored_keys: a row this batch erases is no key for anyone)
    kept = f" AND {KEPT_BY_THIS_BATCH}" if keyed_by_record_id(kind) else ""
    repeats_cte = f"""rk AS (
        SELECT {text_key} AS k, min(line) AS first_line FROM g WHERE gate_reason IS NULL{kept}
        GROUP BY ALL HAVING count(*) > 1
    )"""
    if kind == "assignments":  # assignment_conflicts decides (arm-aware)
        dup_existing = dup_batch = "false"
        existing_cte = "ex AS (SELECT NULL::VARCHAR AS k WHERE false)"
    else:
        # Stored keys that this chunk repeats: a semi-join whose hash table is built on the chunk's keys and
        # probed by one column scan of the stored table, rather than hashing the whole stored table per chunk.
        probe = PROBE_COLUMN[kind]
        existing_cte = (f"ex AS (SELECT DISTINCT {text_key} AS k FROM {stored_keys(kind, study_id)} st "
                        f"WHERE {probe} IN (SELECT {probe} FROM g WHERE gate_reason IS NULL))")
        dup_existing = "ex.k IS NOT NULL"
        dup_batch = "rk.k IS NOT NULL AND g.line > rk.first_line"  # after the first kept line (a row erased is no key)
    return f"""
    CREATE OR REPLACE TEMP TABLE stage AS
    WITH cs AS ({scope_summary_sql(scope)}), g AS (
        SELECT s.* REPLACE (CASE WHEN NOT s.erased THEN s.participant END AS participant),
               coalesce(cs.mixed, false) AND s.reason IS NULL AND NOT s.erased AS scope_mixed,
               CASE WHEN s.reason IS NOT NULL THEN s.reason {' '.join(gate)} END AS gate_reason
        FROM {source} s
        LEFT JOIN cs ON cs.participant = s.participant
    ), {repeats_cte}, {existing_cte}, d AS (
        SELECT g.*,
               CASE WHEN gate_reason IS NOT NULL THEN NULL
                    WHEN {dup_existing} THEN 'existing'
                    WHEN {dup_batch} THEN 'batch' END AS dup
        FROM g LEFT JOIN rk ON rk.k = {text_key} LEFT JOIN ex ON ex.k = {text_key}
    )
    SELECT * EXCLUDE (reason, message, gate_reason, dup),
           coalesce(gate_reason, CASE WHEN dup IS NOT NULL THEN 'duplicate' END) AS reason,
           CASE WHEN reason IS NOT NULL THEN message
                WHEN erased THEN 'participant was erased; the record is refused and not kept'
                WHEN gate_reason = 'withdrawn' THEN 'participant withdrew consent before this record'
                WHEN gate_reason = 'no_consent' THEN 'no consent with scope {scope} in force at {tcol}'
                WHEN dup = 'existing' THEN 'record {label} already stored'
                WHEN dup = 'batch' THEN 'record {label} repeats an earlier line of this batch' END AS message
    FROM d
    """


def mixed_scope_gate(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    """Participants whose consent versions differ in scope: the latest consent at or before the record decides."""
    scope = CONSENT_SCOPE.get(kind)
    if not scope:
        return
    tcol = TIME_FIELD[kind]
    if not con.execute("SELECT coalesce(bool_or(scope_mixed), false) FROM stage").fetchall()[0][0]:
        return  # the common case: no participant of this chunk has consent versions that differ in scope
    con.execute(f"""
    UPDATE stage SET reason = 'no_consent', message = 'no consent with scope {scope} in force at {tcol}'
    FROM (
        SELECT s.line FROM (SELECT line, participant, {tcol} FROM stage WHERE scope_mixed AND reason IS NULL) s
        ASOF LEFT JOIN consents c ON c.participant = s.participant AND s.{tcol} >= c.granted_at
        WHERE c.participant IS NULL OR NOT list_contains(c.scopes, {literal(scope)})
    ) m
    WHERE stage.line = m.line
    """)


def assignment_conflicts(con: duckdb.DuckDBPyConnection) -> None:
    """The same participant assigned again: identical arm -> duplicate, another arm -> conflicting."""
    con.execute("""
    UPDATE stage SET reason = CASE WHEN a.arm = stage.arm THEN 'duplicate' ELSE 'conflicting_assignment' END,
                     message = CASE WHEN a.arm = stage.arm THEN 'participant already assigned to this study'
                                    ELSE 'participant already assigned to another arm of this study' END
    FROM assignments a
    WHERE stage.reason IS NULL AND a.participant = stage.participant AND a.study_id = stage.study_id
    """)
    con.execute("""
    UPDATE stage SET reason = CASE WHEN d.first_arm = stage.arm THEN 'duplicate' ELSE 'conflicting_assignment' END,
                     message = 'participant assigned more than once in this batch'
    FROM (SELECT line, first_value(arm) OVER w AS first_arm, row_number() OVER w AS rn FROM stage
          WHERE reason IS NULL WINDOW w AS (PARTITION BY participant, study_id ORDER BY line)) d
    WHERE stage.line = d.line AND d.rn > 1
    """)
