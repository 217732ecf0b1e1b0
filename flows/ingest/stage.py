"""Staging on the exact path: one chunk of lines checked against the contract, typed and pseudonymized.

``stage_sql`` is ONE query over the registered chunk (``chunk``: ``line``, ``raw``, ``lax``): each line is
parsed once per access path (contract.py), the number of its first failing check is computed once, and its
reason and message are looked up only for the failing rows; the participant id is joined to the registered
pseudonym map (``pmap``, pseudonyms.py), so the rows that come out hold pseudonyms only.

Responses then have their items checked row by row (``check_items``): repeated codes, codes the instrument
does not have, answers that are not integers, answers out of range. Items are read with ``json_each``, never
through a JSON path built from a key, so a key such as ``*``, ``\\`` or ``""`` is just an unknown code.
"""

from __future__ import annotations

import duckdb

import flows.ingest.contract as contract
from flows.ingest.contract import ItemBounds
from flows.ingest.pseudonyms import PMAP
from schemas.protocol import StudyProtocol
from schemas.records import ID_CHARS
from schemas.sqltext import literal, varchar_list

CHUNK = "chunk"
"""The name the exact path registers a chunk under: ``(line BIGINT, raw VARCHAR, lax BOOLEAN)``; ``lax``
marks a line DuckDB's JSON parser takes and JSON does not (a trailing comma: landing.lax_lines)."""


def stage_sql(kind: str, protocol: StudyProtocol, bounds: ItemBounds) -> str:
    """The chunk's lines as staged rows: ``line, participant, erased``, the typed fields, ``reason`` and
    ``message`` (NULL for a row that passed the contract and the protocol), ``payload`` (NULL: filled for
    refused rows later) and, for consents, ``record_hash`` (NULL: set once staged)."""
    checks = contract.all_checks(kind, protocol, bounds)
    parse = contract.parse_sql(kind, "raw", guard="top_type = 'OBJECT'")
    unpack = contract.unpack_sql(kind, "raw")
    idx = contract.index(kind)
    check_no = ("CASE WHEN NOT is_json THEN -1 WHEN NOT is_object THEN 0 "
                + " ".join(f"WHEN {condition} THEN {k}" for k, (condition, _, _) in enumerate(checks, start=1))
                + " END")
    reason = ("CASE check_no WHEN -1 THEN 'malformed_json' WHEN 0 THEN 'schema_violation' "
              + " ".join(f"WHEN {k} THEN {code}" for k, (_, code, _) in enumerate(checks, start=1)) + " END")
    message = ("CASE check_no WHEN -1 THEN 'line is not valid JSON' WHEN 0 THEN 'record must be a JSON object' "
               + " ".join(f"WHEN {k} THEN {text}" for k, (_, _, text) in enumerate(checks, start=1)) + " END")
    i = idx["participant_id"]
    extra = ", NULL::VARCHAR AS record_hash" if kind == "consents" else ""
    return f"""
    WITH parsed AS (
        SELECT line, raw, json_valid(raw) AND NOT lax AS is_json,
               CASE WHEN json_valid(raw) THEN
                    CASE WHEN starts_with(raw, '{{') THEN 'OBJECT' ELSE json_type(raw) END END AS top_type
        FROM {CHUNK}
    ), typed AS (
        SELECT line, raw, is_json, coalesce(top_type = 'OBJECT', false) AS is_object, {parse}
        FROM parsed
    ), unpacked AS (
        SELECT line, is_json, is_object, {unpack} FROM typed
    ), numbered AS (
        SELECT *, {check_no} AS check_no FROM unpacked
    ), checked AS (
        SELECT *, {reason} AS reason, {message} AS message,
               CASE WHEN is_object AND t_{i} = 'VARCHAR' AND length(v_{i}) BETWEEN 1 AND {ID_CHARS} THEN v_{i} END AS pid_raw,
               {contract.embeds_id_sql(kind)} AS embedded
        FROM numbered
    )
    SELECT c.line,
           -- the pseudonym map was built from this chunk's distinct ids; a miss is a bug, never a silent NULL
           coalesce(pm.participant, CASE WHEN c.pid_raw IS NOT NULL
                    THEN error('internal error: a participant id is missing from the pseudonym map') END) AS participant,
           coalesce(pm.erased, false) AS erased,
           {', '.join(contract.typed_sql(kind, 'c.pid_raw', 'pm.participant'))}, c.reason, c.message, NULL::VARCHAR AS payload, c.embedded{extra}
    FROM checked c LEFT JOIN {PMAP} pm ON pm.pid_raw = c.pid_raw
    """


def distinct_ids_sql() -> str:
    """The chunk's distinct readable participant ids (what the pseudonym map must cover)."""
    return f"""SELECT DISTINCT CASE WHEN json_valid(raw) THEN json_extract_string(raw, '$.participant_id') END
               FROM {CHUNK}"""


def check_items(con: duckdb.DuckDBPyConnection, table: str, bounds: ItemBounds) -> None:
    """Items of the responses in ``table`` that passed everything else: a repeated code (schema_violation), a
    code the instrument does not have (unknown_item), an answer that is not an integer (schema_violation),
    an answer out of range (out_of_range), in that order. Messages name known codes only."""
    not_integer = f"i.jt <> 'NULL' AND NOT ({contract.integer_ok('i.jt', 'i.jv')})"  # null: a skipped item
    out_of_range = (f"coalesce({contract.item_value_sql('i.jv')} NOT BETWEEN b.min_value AND b.max_value, true) "
                    "AND i.jt <> 'NULL'")
    con.execute(f"""
    UPDATE {table} SET reason = bad.reason, message = bad.message
    FROM (
        WITH i AS (
            SELECT s.line, s.instrument, s.instrument_version, e.key AS item_code, e.type AS jt,
                   json_extract_string(e.value, '$') AS jv
            FROM {table} s, json_each(s.items) AS e
            WHERE s.reason IS NULL
        )
        SELECT line,
               CASE WHEN count(*) > count(DISTINCT i.item_code) THEN 'schema_violation'
                    WHEN bool_or(b.item_code IS NULL) THEN 'unknown_item'
                    WHEN bool_or({not_integer}) THEN 'schema_violation'
                    ELSE 'out_of_range' END AS reason,
               CASE WHEN count(*) > count(DISTINCT i.item_code) THEN 'an item code is repeated in items'
                    WHEN bool_or(b.item_code IS NULL)
                    THEN count(*) FILTER (WHERE b.item_code IS NULL) || ' item code(s) are not codes of '
                         || first(i.instrument) || ' version ' || first(i.instrument_version)
                    WHEN bool_or({not_integer})
                    THEN 'the answer(s) to ' || string_agg(CASE WHEN {not_integer} THEN i.item_code END, ', ')
                         || ' are not integers'
                    ELSE 'the answer(s) to ' || string_agg(CASE WHEN {out_of_range} THEN i.item_code || ' (allowed '
                         || b.min_value || '..' || b.max_value || ')' END, ', ') || ' are out of range' END AS message
        FROM i LEFT JOIN {bounds.values_sql()} AS b(instrument, version, item_code, min_value, max_value)
          ON b.instrument = i.instrument AND b.version = i.instrument_version AND b.item_code = i.item_code
        GROUP BY line
        HAVING count(*) > count(DISTINCT i.item_code) OR bool_or(b.item_code IS NULL) OR bool_or({not_integer})
            OR bool_or({out_of_range})
    ) bad
    WHERE {table}.line = bad.line
    """)


def declared_covariates_sql(protocol: StudyProtocol) -> str:
    """The protocol's baseline covariates as a relation ``(name, kind, levels)`` (levels NULL for a numeric one)."""
    rows = [f"({literal(c.name)}, {literal(c.kind)}, {varchar_list(c.levels) if c.levels else 'NULL::VARCHAR[]'})"
            for c in protocol.baseline_covariates]
    if not rows:
        return "(SELECT NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR[] WHERE false)"
    return f"(VALUES {', '.join(rows)})"


def check_characteristics(con: duckdb.DuckDBPyConnection, table: str, protocol: StudyProtocol) -> None:
    """Characteristics of the participants records in ``table`` that passed everything else, held to the protocol's
    ``baseline_covariates``: a repeated key (schema_violation), a key that is not a declared covariate
    (unknown_covariate), a numeric covariate whose value is not a number (schema_violation), a categorical one whose
    value is not one of its levels (out_of_range), in that order; null (not recorded) passes. Messages name the
    declared covariates and their levels, never a key or value of the row (a key may be anything a partner typed).
    Keys and values are read with ``json_each``, never through a path built from a key."""
    declared = [c.name for c in protocol.baseline_covariates]
    known = ", ".join(declared) if declared else "none declared"
    not_number = f"kind = 'numeric' AND jt <> 'NULL' AND NOT ({contract.number_ok('jt', 'jv')})"
    off_level = "kind = 'categorical' AND jt <> 'NULL' AND (jt <> 'VARCHAR' OR NOT coalesce(list_contains(levels, jv), false))"
    con.execute(f"""
    UPDATE {table} SET reason = bad.reason, message = bad.message
    FROM (
        WITH i AS (
            SELECT s.line, e.key AS k, e.type AS jt, json_extract_string(e.value, '$') AS jv
            FROM {table} s, json_each(s.characteristics) AS e
            WHERE s.reason IS NULL
        ), j AS (
            SELECT i.*, d.name, d.kind, d.levels
            FROM i LEFT JOIN {declared_covariates_sql(protocol)} AS d(name, kind, levels) ON d.name = i.k
        )
        SELECT line,
               CASE WHEN count(*) > count(DISTINCT k) THEN 'schema_violation'
                    WHEN bool_or(name IS NULL) THEN 'unknown_covariate'
                    WHEN bool_or({not_number}) THEN 'schema_violation'
                    ELSE 'out_of_range' END AS reason,
               CASE WHEN count(*) > count(DISTINCT k) THEN 'a covariate is repeated in characteristics'
                    WHEN bool_or(name IS NULL)
                    THEN count(*) FILTER (WHERE name IS NULL)
                         || {literal(f" characteristic(s) are not baseline covariates the protocol declares ({known})")}
                    WHEN bool_or({not_number})
                    THEN 'characteristic(s) ' || string_agg(CASE WHEN {not_number} THEN name END, ', ')
                         || ' must be numbers'
                    ELSE 'characteristic(s) ' || string_agg(CASE WHEN {off_level} THEN name || ' (levels '
                         || array_to_string(levels, ', ') || ')' END, '; ') || ' are not one of their levels' END
                    AS message
        FROM j
        GROUP BY line
        HAVING count(*) > count(DISTINCT k) OR bool_or(name IS NULL) OR bool_or({not_number}) OR bool_or({off_level})
    ) bad
    WHERE {table}.line = bad.line
    """)


def set_consent_hashes(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """The de-duplication key of a consent: the whole pseudonymized record (gate.CONSENT_RECORD_HASH)."""
    from flows.ingest.gate import CONSENT_RECORD_HASH

    con.execute(f"UPDATE {table} SET record_hash = {CONSENT_RECORD_HASH} WHERE reason IS NULL")


def payload_sql(kind: str, table: str) -> str:
    """Fill the quarantine payload of ``table``'s refused rows whose participant could be read: the record with
    its participant id replaced by the pseudonym, in that field and inside every other text field that is a
    string (contract.without_raw_id_sql: a refused row's study, wave or instrument may be anything, so no text
    field is spared here). Values of unknown fields are not copied (they are untrusted, and may hold another
    participant's raw id); their names are, under ``unknown_fields``, and the landing file keeps the values."""
    names = [s.name for s in contract.specs(kind)]
    known = "[" + ", ".join(literal(n) for n in names) + "]::VARCHAR[]"
    unknown = f"list_filter(json_keys(c.raw), lambda k: NOT list_contains({known}, k))"
    known_only = "json_object(" + ", ".join(f"{literal(n)}, json_extract(c.raw, {literal('$.' + n)})" for n in names) + ")"
    pid = "json_extract_string(c.raw, '$.participant_id')"
    patches = []  # one object per text field holding the raw id, '{}' for the others: merged in one call
    for s in contract.specs(kind):
        if s.form != "text" or s.name == "participant_id":
            continue
        text = f"json_extract_string(c.raw, {literal('$.' + s.name)})"
        replaced = contract.without_raw_id_sql(text, pid, f"{table}.participant")
        patches.append(f"CASE WHEN json_type(c.raw, {literal('$.' + s.name)}) = 'VARCHAR' AND {replaced} <> {text} "
                       f"THEN json_object({literal(s.name)}, {replaced}) ELSE '{{}}'::JSON END")
    ids = ", ".join(patches + [""])
    return f"""UPDATE {table} SET payload = CASE WHEN len({unknown}) = 0
                   THEN json_merge_patch(c.raw, {ids}json_object('participant_id', {table}.participant))
                   ELSE json_merge_patch(json_merge_patch('{{}}', {known_only}), {ids}
                                         json_object('participant_id', {table}.participant, 'unknown_fields', {unknown}))
               END::VARCHAR
               FROM {CHUNK} c WHERE c.line = {table}.line AND {table}.reason IS NOT NULL AND {table}.payload IS NULL
               AND {table}.participant IS NOT NULL"""
