"""Ingest a landing folder into the warehouse: validate, pseudonymize, gate on consent, de-duplicate.

Every non-blank input row ends in exactly one place: a clean table, or ``quarantine`` with a
machine-readable reason. The batch runs in ONE transaction (a killed run leaves the warehouse as
before the batch; re-running finishes it), and files already ingested (same SHA-256) are skipped,
so ingesting a batch twice changes nothing.

The hot path is vectorized: each chunk of rows (flows/landing.py) is validated by one DuckDB
query over JSON text; participant ids are HMAC'd once per *distinct* id in Python and joined
back. Raw participant ids exist only in the Arrow chunk in this process's memory; no DuckDB
table, temporary or not, ever holds them.

Reason codes, in the order they are checked (a row gets the first that applies):
  unreadable_file (one row for a whole file that cannot be read; the file is copied to quarantine),
  malformed_json, malformed_csv, invalid_utf8, unknown_record_kind, unsupported_format,
  schema_violation, naive_timestamp, unknown_study, unknown_arm, unknown_wave,
  unknown_instrument, unknown_item, out_of_range, unknown_outcome, conflicting_assignment,
  withdrawn, no_consent, duplicate.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from concurrent.futures import Future, ThreadPoolExecutor

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flows.ingest import fastpath, landing
from schemas.errors import FlourishError
from schemas.sqltext import literal, varchar_list
from flows.warehouse import connect
from schemas.warehouse import transaction
from privacy.consent import scope_summary_sql
from privacy.erasure import WITHDRAWN_NOT_ERASED, erase_withdrawn, tombstone_token
from privacy.pseudonym import check_active_key, pseudonymize_many
from schemas.protocol import StudyProtocol
from schemas.records import EVENT_TYPES, ISO_WITH_OFFSET, SCOPES

NAIVE_TS = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$"
NUMBER = r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$"
INTEGER = r"^-?\d+(\.0*)?$"
MAX_ID = 256
TS_MIN, TS_MAX = "TIMESTAMPTZ '0001-01-01 00:00:00+00'", "TIMESTAMPTZ '9999-12-31 23:59:59.999999+00'"

# field kinds: str (required string), str? (optional string), ts, ts?, num, num?, enum:<name>, scopes, items
FIELDS: dict[str, dict[str, str]] = {
    "consents": {
        "participant_id": "id", "consent_version": "str", "scopes": "scopes",
        "granted_at": "ts", "withdrawn_at": "ts?",
    },
    "assignments": {
        "participant_id": "id", "study_id": "str", "arm": "str", "assigned_at": "ts", "stratum": "str?",
    },
    "responses": {
        "response_id": "id", "participant_id": "id", "study_id": "str", "instrument": "str",
        "instrument_version": "str", "wave": "str", "submitted_at": "ts", "items": "items",
    },
    "scores": {
        "participant_id": "id", "study_id": "str", "wave": "str", "outcome": "str", "value": "num",
        "scored_at": "ts",
    },
    "events": {
        "event_id": "id", "participant_id": "id", "study_id": "str", "ts": "ts", "session_id": "str",
        "type": "enum", "feature": "str?", "value": "num?",
    },
}
TIME_FIELD = {"consents": "granted_at", "assignments": "assigned_at", "responses": "submitted_at",
              "scores": "scored_at", "events": "ts"}
CONSENT_SCOPE = {"events": "telemetry", "responses": "surveys", "scores": "surveys"}


class IngestError(FlourishError):
    """The batch cannot be ingested at all (bad folder, a file that breaks part-way, a file changed while read)."""


@dataclass
class FileResult:
    name: str
    kind: str
    sha256: str
    size_bytes: int
    read: int = 0
    stored: int = 0
    quarantined: Counter = field(default_factory=Counter)
    skipped: bool = False
    unreadable: str = ""


@dataclass
class Reconciliation:
    batch_id: str
    study_id: str
    files: list[FileResult]
    seconds: float = 0.0
    erased: dict | None = None  # erasure triggered by consent withdrawals in this batch

    @property
    def read(self) -> int:
        return sum(f.read for f in self.files)

    @property
    def stored(self) -> dict[str, int]:
        out = {k: 0 for k in ("consents", "assignments", "responses", "events")}
        for f in self.files:
            if f.kind in out or f.kind == "scores":
                out[f.kind] = out.get(f.kind, 0) + f.stored
        return out

    @property
    def quarantined(self) -> dict[str, int]:
        total: Counter = Counter()
        for f in self.files:
            total.update(f.quarantined)
        return dict(sorted(total.items()))

    @property
    def balanced(self) -> bool:
        return self.read == sum(self.stored.values()) + sum(self.quarantined.values())

    def as_json(self) -> dict:
        return {
            "read": self.read,
            "stored": self.stored,
            "quarantined": self.quarantined,
            "batch_id": self.batch_id,
            "files_skipped": [f.name for f in self.files if f.skipped],
            "erased_on_withdrawal": self.erased,
        }


# ----------------------------------------------------------------------------------------
# SQL building blocks


def _field_checks(kind: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(paths, [(condition, reason, message SQL)]) for the contract of ``kind``; t/v are the type/text lists."""
    fields = FIELDS[kind]
    names = list(fields)
    checks: list[tuple[str, str, str]] = []
    allowed = varchar_list(names)
    # more keys than known fields present means an unknown (or repeated) field: one cheap comparison
    checks.append((
        "len(keys) > list_count(t)",
        "schema_violation",
        f"'unknown or repeated field(s) ' || coalesce(nullif(array_to_string(list_filter(keys, lambda k: NOT list_contains({allowed}, k)), ', '), ''), '(repeated key)')",
    ))
    for i, (name, spec) in enumerate(fields.items(), start=1):
        t, v = f"t[{i}]", f"v[{i}]"
        optional = spec.endswith("?")
        base = spec.rstrip("?")
        missing = f"({t} IS NULL OR {t} = 'NULL')"
        if not optional:
            checks.append((missing, "schema_violation", f"'missing required field {name}'"))
        present = f"NOT {missing}"
        if base in ("id", "str"):
            limit = MAX_ID if base == "id" else 1024
            checks.append((f"{present} AND {t} <> 'VARCHAR'", "schema_violation", f"'field {name} must be a string'"))
            # bytes bound characters from above: counting characters only when the byte length is out of range
            checks.append((f"{present} AND CASE WHEN strlen({v}) BETWEEN 1 AND {limit} THEN false "
                           f"ELSE length({v}) = 0 OR length({v}) > {limit} END", "schema_violation",
                           f"'field {name} must be 1..{limit} characters'"))
        elif base == "num":
            checks.append((
                f"{present} AND NOT ({t} IN ('BIGINT', 'UBIGINT', 'DOUBLE') OR ({t} = 'VARCHAR' AND regexp_full_match(trim({v}), '{NUMBER}')))",
                "schema_violation", f"'field {name} must be a number'"))
            checks.append((f"{present} AND NOT isfinite(try_cast(trim({v}) AS DOUBLE))", "schema_violation",
                           f"'field {name} must be a finite number, not ' || {v}"))
        elif base == "ts":
            checks.append((f"{present} AND {t} <> 'VARCHAR'", "schema_violation",
                           f"'field {name} must be an ISO 8601 timestamp string'"))
            # one regex for every row; telling naive from garbage only for the rows that fail it
            bad_ts = f"{present} AND NOT coalesce({_ts_ok(v)}, false)"
            checks.append((
                bad_ts,
                f"CASE WHEN regexp_full_match({v}, '{NAIVE_TS}') THEN 'naive_timestamp' ELSE 'schema_violation' END",
                f"CASE WHEN regexp_full_match({v}, '{NAIVE_TS}') THEN 'field {name} has no UTC offset: ' || {v} "
                f"ELSE 'field {name} is not an ISO 8601 timestamp: ' || left({v}, 40) END"))
        elif base == "enum":
            checks.append((f"{present} AND ({t} <> 'VARCHAR' OR NOT list_contains({varchar_list(EVENT_TYPES)}, {v}))",
                           "schema_violation", f"'field {name} must be one of {', '.join(EVENT_TYPES)}'"))
        elif base == "scopes":
            checks.append((f"{present} AND scope_list IS NULL", "schema_violation",
                           "'field scopes must be a list of scope names'"))
            checks.append((
                f"{present} AND scope_list IS NOT NULL AND len(list_filter(scope_list, lambda s: NOT list_contains({varchar_list(SCOPES)}, s))) > 0",
                "schema_violation",
                f"'unknown scope(s) ' || array_to_string(list_filter(scope_list, lambda s: NOT list_contains({varchar_list(SCOPES)}, s)), ', ')"))
        elif base == "items":
            checks.append((f"{present} AND items_json IS NULL", "schema_violation",
                           "'field items must be an object of item_code -> integer or null'"))
    return names, checks


def _ts_ok(v: str) -> str:
    """SQL: the text ``v`` is a timestamp of the contract (ISO 8601 with an offset) at an instant in years
    1..9999 in UTC (year 0, or a year-9999 time behind UTC, is not); NULL when it does not cast."""
    return f"regexp_full_match({v}, '{ISO_WITH_OFFSET}') AND try_cast({v} AS TIMESTAMPTZ) BETWEEN {TS_MIN} AND {TS_MAX}"


def _unpack_sql(names: list[str]) -> tuple[str, str]:
    """(JSON paths of the fields, the select list unpacking ``t``/``v`` into ``t_i``/``v_i`` and ``n_known``),
    as both staging queries read a line."""
    paths = "[" + ", ".join(literal("$." + n) for n in names) + "]"
    unpack = ", ".join(f"t[{i}] AS t_{i}, v[{i}] AS v_{i}" for i in range(1, len(names) + 1)) + ", list_count(t) AS n_known"
    return paths, unpack


def _all_checks(kind: str, protocol: StudyProtocol) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(field names, [(condition, reason, message SQL)]): the contract's checks, then the protocol's, over
    ``t[i]``/``v[i]`` (the JSON type and text of field i), ``keys`` and ``n_known``."""
    names, checks = _field_checks(kind)
    return names, checks + _protocol_checks(kind, protocol, names)


def _protocol_checks(kind: str, protocol: StudyProtocol, names: list[str]) -> list[tuple[str, str, str]]:
    """The protocol's checks of a record (its study, arm, wave, instrument, outcome), as in ``_all_checks``."""
    idx = {n: i for i, n in enumerate(names, start=1)}
    col = lambda n: f"v[{idx[n]}]"  # noqa: E731

    protocol_checks: list[tuple[str, str, str]] = []
    if "study_id" in idx:
        protocol_checks.append((f"{col('study_id')} <> {literal(protocol.study_id)}", "unknown_study",
                                f"'study ' || {col('study_id')} || ' is not {protocol.study_id}'"))
    if kind == "assignments":
        protocol_checks.append((f"NOT list_contains({varchar_list(protocol.arm_names)}, {col('arm')})", "unknown_arm",
                                f"'arm ' || {col('arm')} || ' is not one of {', '.join(protocol.arm_names)}'"))
    if "wave" in idx:
        protocol_checks.append((f"NOT list_contains({varchar_list(protocol.wave_names)}, {col('wave')})", "unknown_wave",
                                f"'wave ' || {col('wave')} || ' is not one of {', '.join(protocol.wave_names)}'"))
    if kind == "responses":
        protocol_checks.append((
            f"NOT list_contains({varchar_list(protocol.instruments())}, {col('instrument')})", "unknown_instrument",
            f"'instrument ' || {col('instrument')} || ' is not administered by study {protocol.study_id}'"))
        protocol_checks.append((
            f"NOT EXISTS (SELECT 1 FROM item_bounds b WHERE b.instrument = {col('instrument')} "
            f"AND b.version = {col('instrument_version')})", "unknown_instrument",
            f"'instrument ' || {col('instrument')} || ' version ' || {col('instrument_version')} || ' is unknown'"))
    if kind == "scores":
        outcomes = [o.name for o in protocol.outcomes]
        protocol_checks.append((f"NOT list_contains({varchar_list(outcomes)}, {col('outcome')})", "unknown_outcome",
                                f"'outcome ' || {col('outcome')} || ' is not named in the protocol'"))
    return protocol_checks


def _unpacked(sql: str) -> str:
    """The checks' list accesses as the scalar columns the staging queries unpack them into."""
    return re.sub(r"\b([tv])\[(\d+)\]", r"\1_\2", sql).replace("len(keys) > list_count(t)", "len(keys) > n_known")


def _fast_field_ok(kind: str) -> list[str]:
    """Per field of a fast-path kind, a condition under which none of its ``_field_checks`` fires: sufficient,
    not necessary (a string over its limit in bytes but not in characters, or a number written as a string,
    is left to the exact path). One condition a field, instead of two or three, costs about a sixth of the
    verify pass less; the equivalence tests of tests/spine/test_spine_fastpath.py hold it to the exact path."""
    ok = []
    for i, (name, spec) in enumerate(FIELDS[kind].items(), start=1):
        base = spec.rstrip("?")
        t, v = f"t_{i}", f"v_{i}"
        if base in ("id", "str"):
            cond = f"{t} = 'VARCHAR' AND strlen({v}) BETWEEN 1 AND {MAX_ID if base == 'id' else 1024}"
        elif base == "ts":
            cond = f"{t} = 'VARCHAR' AND {_ts_ok(v)}"
        elif base == "enum":
            cond = f"{t} = 'VARCHAR' AND list_contains({varchar_list(EVENT_TYPES)}, {v})"
        elif base == "num":
            cond = f"{t} IN ('BIGINT', 'UBIGINT', 'DOUBLE') AND isfinite(try_cast({v} AS DOUBLE))"
        else:
            raise AssertionError(f"field {name} of {kind} is not a fast-path field kind")
        ok.append(f"({t} IS NULL OR {t} = 'NULL' OR ({cond}))" if spec.endswith("?") else f"({cond})")
    return ok + ["len(keys) = n_known"]


def _fast_verify_sql(kind: str, protocol: StudyProtocol, paths: list[Path]) -> str:
    """The fast path's first pass (flows/fastpath.py): each line read whole and held to the contract (each
    field by ``_fast_field_ok``, then the protocol's checks of the exact path); per (file, participant id):
    rows, rows failing, first and last record time, and the 64-bit hashes of the rows' record keys."""
    names = list(FIELDS[kind])
    idx = {n: i for i, n in enumerate(names, start=1)}
    jpaths, unpack = _unpack_sql(names)
    ok = " AND ".join(_fast_field_ok(kind) + [f"NOT coalesce({_unpacked(c)}, false)"
                                               for c, _, _ in _protocol_checks(kind, protocol, names)])
    key = ", ".join(f"v_{idx[k]}" for k in FAST_KEY[kind])
    return f"""
    WITH r AS (SELECT file_index AS fi, json AS raw FROM {fastpath.lines_sql(paths)}
    ), typed AS (
        SELECT fi, coalesce(starts_with(raw::VARCHAR, '{{'), false) AS is_object, json_type(raw, {jpaths}) AS t,
               json_extract_string(raw, {jpaths}) AS v, json_keys(raw) AS keys
        FROM r
    ), unpacked AS (
        SELECT fi, is_object, keys, {unpack} FROM typed
    ), c AS (
        SELECT fi, v_{idx['participant_id']} AS pid, try_cast(v_{idx[TIME_FIELD[kind]]} AS TIMESTAMPTZ) AS t,
               hash({key}) AS hk, is_object AND coalesce({ok}, false) AS ok
        FROM unpacked
    )
    SELECT fi, pid, count(*) AS n, count_if(NOT ok) AS bad, min(t) AS t0, max(t) AS t1, list(hk) AS hks
    FROM c GROUP BY fi, pid"""


def _stage_sql(kind: str, protocol: StudyProtocol) -> str:
    """One query: parse each JSON line once per access path, check the contract, pseudonymize."""
    names, all_checks = _all_checks(kind, protocol)
    paths, unpack = _unpack_sql(names)  # the t/v lists unpacked once into scalar columns the checks read
    idx = {n: i for i, n in enumerate(names, start=1)}
    col = lambda n: f"v[{idx[n]}]"  # noqa: E731

    # Each condition is evaluated once per row, to find the number of the first failing check;
    # reason and message are then looked up only for the failing rows.
    check_no = "CASE WHEN NOT is_json THEN -1 WHEN NOT is_object THEN 0 " + " ".join(
        f"WHEN {c} THEN {k}" for k, (c, _, _) in enumerate(all_checks, start=1)) + " END"
    reason = ("CASE check_no WHEN -1 THEN 'malformed_json' WHEN 0 THEN 'schema_violation' " + " ".join(
        f"WHEN {k} THEN {r if r.startswith('CASE') else repr(r)}" for k, (_, r, _) in enumerate(all_checks, start=1))
        + " END")
    message = ("CASE check_no WHEN -1 THEN 'line is not valid JSON' WHEN 0 THEN 'record must be a JSON object' "
               + " ".join(f"WHEN {k} THEN {m}" for k, (_, _, m) in enumerate(all_checks, start=1)) + " END")

    extra_cols = ""
    if kind == "consents":
        extra_cols = (
            ", CASE WHEN t[3] = 'ARRAY' AND json_type(raw, '$.scopes[*]') IS NOT NULL THEN "
            "  CASE WHEN list_bool_and(list_transform(json_type(raw, '$.scopes[*]'), lambda x: x = 'VARCHAR')) OR len(json_type(raw, '$.scopes[*]')) = 0 "
            "  THEN json_extract_string(raw, '$.scopes[*]') END "
            " WHEN t[3] = 'VARCHAR' AND json_valid(v[3]) AND json_type(v[3]::JSON) = 'ARRAY' THEN json_extract_string(v[3]::JSON, '$[*]') "
            " WHEN t[3] = 'VARCHAR' THEN list_filter(list_transform(regexp_split_to_array(v[3], '[;|, ]+'), lambda s: trim(s)), lambda s: s <> '') "
            " WHEN t[3] = 'ARRAY' THEN []::VARCHAR[] END AS scope_list"
        )
    if kind == "responses":
        i = idx["items"]
        extra_cols = (
            f", CASE WHEN t[{i}] = 'OBJECT' THEN json_extract(raw, '$.items') "
            f" WHEN t[{i}] = 'VARCHAR' AND json_valid(v[{i}]) AND json_type(v[{i}]::JSON) = 'OBJECT' THEN v[{i}]::JSON END AS items_json"
        )

    typed: list[str] = []
    for n, spec in FIELDS[kind].items():
        base = spec.rstrip("?")
        if n == "participant_id":
            continue
        if base == "ts":
            typed.append(f"try_cast({col(n)} AS TIMESTAMPTZ) AS {n}")
        elif base == "num":
            typed.append(f"try_cast(trim({col(n)}) AS DOUBLE) AS {n}")
        elif base in ("scopes", "items"):
            continue
        else:
            typed.append(f"{col(n)} AS {n}")
    if kind == "consents":
        typed.append("scope_list AS scopes")
    if kind == "responses":
        typed.append("items_json AS items")

    pid = col("participant_id")
    extra_out = ", NULL::VARCHAR AS record_hash" if kind == "consents" else ""  # a consent's key: set after staging
    sql = f"""
    WITH parsed AS (
        SELECT line, raw, json_valid(raw) AND line NOT IN (SELECT line FROM lax_json) AS is_json,
               CASE WHEN json_valid(raw) THEN
                    CASE WHEN starts_with(raw, '{{') THEN 'OBJECT' ELSE json_type(raw) END END AS top_type
        FROM chunk
    ), typed AS (
        SELECT line, raw, is_json,
               coalesce(top_type = 'OBJECT', false) AS is_object,
               CASE WHEN top_type = 'OBJECT' THEN json_type(raw, {paths}) END AS t,
               CASE WHEN top_type = 'OBJECT' THEN json_extract_string(raw, {paths}) END AS v,
               CASE WHEN top_type = 'OBJECT' THEN json_keys(raw) END AS keys
        FROM parsed
    ), unpacked AS (
        SELECT * EXCLUDE (t, v), {unpack} FROM typed
    ), extra AS (
        SELECT * {extra_cols} FROM unpacked
    ), numbered AS (
        SELECT *, {check_no} AS check_no FROM extra
    ), checked AS (
        SELECT *, {reason} AS reason, {message} AS message,
               CASE WHEN is_object AND t[{idx['participant_id']}] = 'VARCHAR'
                         AND length({pid}) BETWEEN 1 AND {MAX_ID} THEN {pid} END AS pid_raw
        FROM numbered
    )
    SELECT c.line,
           -- the pseudonym map (``pmap``) was built from this chunk's distinct ids; a miss is a bug, never a silent NULL
           coalesce(pm.participant, CASE WHEN c.pid_raw IS NOT NULL
                    THEN error('internal error: a participant id is missing from the pseudonym map') END) AS participant,
           coalesce(pm.erased, false) AS erased,
           {', '.join(typed)}, c.reason, c.message, NULL::VARCHAR AS payload{extra_out}
    FROM checked c LEFT JOIN pmap pm ON pm.pid_raw = c.pid_raw
    """
    head, sep, tail = sql.partition("), extra AS (")
    return head + sep + _unpacked(tail)


def _lax_json_lines(con) -> pa.Table:
    """Lines of ``chunk`` that DuckDB's JSON parser takes but JSON does not (a trailing comma, as in
    ``{"a": 1,}``): the lines with a comma before a closing bracket are few, and Python's strict parser
    decides each (inside a string the same characters are valid)."""
    bad = []
    for line, raw in con.execute(
            f"SELECT line, raw FROM chunk WHERE regexp_matches(raw, '{fastpath.TRAILING_COMMA}') AND json_valid(raw)").fetchall():
        try:
            json.loads(raw)
        except ValueError:
            bad.append(line)
    return pa.table({"line": pa.array(bad, pa.int64())})


def _response_item_checks(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Item codes and values of responses that passed the contract: unknown codes, non-integers, range."""
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE stage_items AS
    SELECT s.line, s.response_id, s.participant, s.study_id, s.instrument, s.instrument_version, s.wave,
           k.item_code,
           json_type(s.items, '$."' || replace(k.item_code, '"', '\\"') || '"') AS jt,
           json_extract_string(s.items, '$."' || replace(k.item_code, '"', '\\"') || '"') AS jv
    FROM {table} s, unnest(json_keys(s.items)) AS k(item_code)
    WHERE s.reason IS NULL
    """)
    con.execute(f"""
    UPDATE {table} SET reason = bad.reason, message = bad.message
    FROM (
        SELECT line,
               CASE WHEN count(*) > count(DISTINCT i.item_code) THEN 'schema_violation'
                    WHEN bool_or(b.item_code IS NULL) THEN 'unknown_item'
                    WHEN bool_or(i.jt IS NOT NULL AND i.jt <> 'NULL' AND NOT (i.jt IN ('BIGINT', 'UBIGINT') OR
                         ((i.jt = 'DOUBLE' OR i.jt = 'VARCHAR') AND regexp_full_match(trim(i.jv), '{INTEGER}'))))
                         THEN 'schema_violation'
                    ELSE 'out_of_range' END AS reason,
               CASE WHEN count(*) > count(DISTINCT i.item_code) THEN 'an item code is repeated in items'
                    WHEN bool_or(b.item_code IS NULL)
                    THEN 'unknown item code(s) ' || string_agg(CASE WHEN b.item_code IS NULL THEN i.item_code END, ', ')
                         || ' for ' || first(i.instrument)
                    WHEN bool_or(i.jt IS NOT NULL AND i.jt <> 'NULL' AND NOT (i.jt IN ('BIGINT', 'UBIGINT') OR
                         ((i.jt = 'DOUBLE' OR i.jt = 'VARCHAR') AND regexp_full_match(trim(i.jv), '{INTEGER}'))))
                    THEN 'item value(s) not integer: ' || string_agg(CASE WHEN NOT (i.jt IN ('BIGINT', 'UBIGINT', 'NULL') OR
                         ((i.jt = 'DOUBLE' OR i.jt = 'VARCHAR') AND regexp_full_match(trim(i.jv), '{INTEGER}')))
                         THEN i.item_code || '=' || coalesce(left(i.jv, 20), '?') END, ', ')
                    ELSE 'item value(s) out of range: ' || string_agg(CASE WHEN coalesce(try_cast(try_cast(trim(i.jv) AS DOUBLE) AS BIGINT) NOT BETWEEN b.min_value AND b.max_value, true)
                         THEN i.item_code || '=' || i.jv || ' (allowed ' || b.min_value || '..' || b.max_value || ')' END, ', ')
               END AS message
        FROM stage_items i
        LEFT JOIN item_bounds b
          ON b.instrument = i.instrument AND b.version = i.instrument_version AND b.item_code = i.item_code
        GROUP BY line
        HAVING count(*) > count(DISTINCT i.item_code)
            OR bool_or(b.item_code IS NULL)
            OR bool_or(i.jt IS NOT NULL AND i.jt <> 'NULL' AND NOT (i.jt IN ('BIGINT', 'UBIGINT') OR
                       ((i.jt = 'DOUBLE' OR i.jt = 'VARCHAR') AND regexp_full_match(trim(i.jv), '{INTEGER}'))))
            OR bool_or(i.jt IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'VARCHAR')
                       AND coalesce(try_cast(try_cast(trim(i.jv) AS DOUBLE) AS BIGINT) NOT BETWEEN b.min_value AND b.max_value, true))
    ) bad
    WHERE {table}.line = bad.line
    """)


# Record keys. Rows reaching de-duplication have passed the study check, so within a study the
# event and response ids alone are the key (stored rows are filtered to the study).
DEDUP_KEY = {
    "events": ("event_id",),
    "responses": ("response_id",),
    "assignments": ("participant", "study_id"),
    "scores": ("participant", "study_id", "wave", "outcome"),
    "consents": ("record_hash",),
}


# The most selective column of each record key, used to find stored rows a chunk may repeat.
PROBE_COLUMN = {"events": "event_id", "responses": "response_id", "scores": "participant", "consents": "record_hash"}


def _gate_and_dedup_sql(kind: str, source: str, study_id: str) -> str:
    """Materialize ``stage`` from ``source`` with the consent gate and de-duplication in ONE query.

    Gate: an erasure tombstone, or a record at/after a withdrawal -> withdrawn; no consent with the
    kind's scope in force at the record's time -> no_consent. "In force" is the latest consent
    granted at or before the record. When every consent record of a participant carries the scope
    that is simply "at or after the first grant", a hash join on a per-participant summary; the
    rare participant whose consent versions differ in scope is resolved by an ASOF join in
    ``_mixed_scope_gate``. Then de-duplication on the record key among rows that passed
    everything else: already stored -> duplicate; a repeat of an earlier line -> duplicate
    (a GROUP BY finds repeated keys; no window sort over the chunk).
    """
    tcol = TIME_FIELD[kind]
    scope = CONSENT_SCOPE.get(kind)
    gate = ["WHEN s.erased THEN 'withdrawn'"]
    if kind != "consents":  # a consent record may itself carry the withdrawal
        gate.append(f"WHEN cs.withdrawn_at IS NOT NULL AND s.{tcol} >= cs.withdrawn_at THEN 'withdrawn'")
    if scope:
        gate.append("WHEN cs.mixed THEN NULL")  # decided by _mixed_scope_gate
        gate.append(f"WHEN cs.first_with_scope IS NULL OR s.{tcol} < cs.first_with_scope THEN 'no_consent'")
    key = DEDUP_KEY[kind]
    # one text key, so "already stored" is an uncorrelated IN (a hash mark join), not a per-row subquery
    text_key = " || chr(31) || ".join(f"{k}::VARCHAR" for k in key)
    existing_filter = {"scores": f"WHERE source = 'external' AND study_id = {literal(study_id)}",
                       "events": f"WHERE study_id = {literal(study_id)}",
                       "responses": f"WHERE study_id = {literal(study_id)}"}.get(kind, "")
    label = "/".join(key)
    probe = PROBE_COLUMN.get(kind)
    repeats_cte = f"""rk AS (
        SELECT {text_key} AS k, min(line) AS first_line FROM g WHERE gate_reason IS NULL
        GROUP BY ALL HAVING count(*) > 1
    )"""
    if kind == "assignments":  # handled by _assignment_conflicts (arm-aware)
        dup_existing = dup_batch = "false"
        existing_cte = "ex AS (SELECT NULL::VARCHAR AS k WHERE false)"
    else:
        # Stored keys that this chunk repeats: a semi-join whose hash table is built on the chunk's keys and
        # probed by one column scan of the stored table, rather than hashing the whole stored table per chunk.
        where = f"WHERE {probe} IN (SELECT {probe} FROM g WHERE gate_reason IS NULL)"
        if existing_filter:
            where += " AND " + existing_filter.removeprefix("WHERE ")
        stored = "(SELECT * FROM events UNION ALL SELECT * FROM acc_events)" if kind == "events" else kind
        existing_cte = f"ex AS (SELECT DISTINCT {text_key} AS k FROM {stored} {where})"
        dup_existing = "ex.k IS NOT NULL"
        dup_batch = "rk.k IS NOT NULL AND g.line <> rk.first_line"
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


def _mixed_scope_gate(con: duckdb.DuckDBPyConnection, kind: str) -> None:
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
        WHERE c.participant IS NULL OR NOT list_contains(c.scopes, '{scope}')
    ) m
    WHERE stage.line = m.line
    """)


def _assignment_conflicts(con: duckdb.DuckDBPyConnection) -> None:
    """The same participant assigned again: identical arm -> duplicate, another arm -> conflicting."""
    con.execute("""
    UPDATE stage SET reason = CASE WHEN a.arm = stage.arm THEN 'duplicate' ELSE 'conflicting_assignment' END,
                     message = CASE WHEN a.arm = stage.arm THEN 'participant already assigned to this study'
                                    ELSE 'participant already assigned to arm ' || a.arm || ' of this study' END
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


INSERT_SQL = {
    "consents": """INSERT INTO consents SELECT participant, consent_version, scopes, granted_at, withdrawn_at,
                   record_hash, $batch, $file, line FROM stage WHERE reason IS NULL""",
    "assignments": """INSERT INTO assignments SELECT participant, study_id, arm, assigned_at, stratum, $batch
                      FROM stage WHERE reason IS NULL""",
    "events": """INSERT INTO acc_events SELECT event_id, participant, study_id, ts, session_id, type, feature, value, $batch
                 FROM stage WHERE reason IS NULL""",
    "scores": """INSERT INTO scores (study_id, participant, wave, outcome, value, items_answered, prorated, source,
                 scored_at, batch_id)
                 SELECT study_id, participant, wave, outcome, value, NULL, false, 'external', scored_at, $batch
                 FROM stage WHERE reason IS NULL""",
    "responses": """INSERT INTO responses SELECT response_id, participant, study_id, instrument, instrument_version,
                    wave, submitted_at,
                    (SELECT count(*) FROM unnest(json_keys(items)) k(c)
                     WHERE json_type(items, '$."' || replace(c, '"', '\\"') || '"') <> 'NULL')::INTEGER,
                    $batch FROM stage WHERE reason IS NULL""",
}


def _item_bounds_table() -> pa.Table:
    import instruments

    rows = instruments.item_bounds()
    cols = list(zip(*rows)) if rows else [[], [], [], [], []]
    return pa.table({
        "instrument": pa.array(cols[0], pa.string()),
        "version": pa.array(cols[1], pa.string()),
        "item_code": pa.array(cols[2], pa.string()),
        "min_value": pa.array(cols[3], pa.int64()),
        "max_value": pa.array(cols[4], pa.int64()),
    })


# ----------------------------------------------------------------------------------------
# The batch


def _batch_id(study_id: str, files: list[tuple[str, str]]) -> str:
    h = hashlib.sha256(study_id.encode())
    for name, digest in sorted(files):
        h.update(f"{name}\0{digest}\0".encode())
    return h.hexdigest()[:16]


def quarantine_dir(landing_dir: Path) -> Path:
    """Raw bytes of rows whose participant id could not be read: beside the landing folder."""
    landing_dir = landing_dir.resolve()  # "." has no name of its own
    return landing_dir.parent / f"{landing_dir.name}.quarantine"


def ingest_batch(
    landing_dir: str | Path,
    protocol: StudyProtocol,
    warehouse: str | Path,
    key: bytes,
    *,
    progress: Callable[[str, int], None] | None = None,
    memory_limit: str = "2GB",
    fast_path: bool = True,
    _crash_after_rows: int | None = None,
) -> Reconciliation:
    """Ingest every new file of ``landing_dir`` in one transaction; return the reconciliation.

    ``progress(file_name, rows_done)`` is called after each chunk. ``_crash_after_rows`` is a
    test hook: the process exits hard (``os._exit``) mid-batch after that many rows.
    """
    from flows.study import check_study

    check_study(protocol)  # unknown instruments or a licence the intended use breaks: refused before reading
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc)
    landing_dir = Path(landing_dir)
    files = landing.discover(landing_dir)
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL: files hash in parallel
        hashed = list(zip(files, pool.map(lambda f: landing.sha256_file(f.path), files)))

    con = connect(warehouse)
    facts_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flourish-facts")
    # the fast path's first pass reads only the landing files, so it runs on its own connection while this one
    # ingests the files before it (consents, say): the cores the small files leave idle do that work
    verify_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flourish-verify")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {literal(memory_limit)}")
        con.execute("SET preserve_insertion_order = false")
        # a file counts as ingested for the study it was ingested under (the same file offered to another
        # study's protocol is that study's input, and is read again)
        done = {r[0] for r in con.execute(
            "SELECT DISTINCT f.sha256 FROM batch_files f JOIN batches b USING (batch_id) WHERE b.study_id = ?",
            [protocol.study_id]).fetchall()}
        todo = [(f, h) for f, h in hashed if h not in done]
        batch_id = _batch_id(protocol.study_id, [(f.name, h) for f, h in todo])
        results = [
            FileResult(f.name, f.kind or "unknown", h, f.path.stat().st_size, skipped=h in done) for f, h in hashed
        ]
        by_name = {r.name: r for r in results}
        con.register("item_bounds", _item_bounds_table())
        qdir = quarantine_dir(landing_dir)
        raw_rejects: dict[str, list[tuple[int, bytes, str]]] = {}
        rows_seen = 0
        # tombstones change only at the batch's end (erase_withdrawn), so one read serves every chunk
        pseudonyms = _Pseudonyms(key, {r[0] for r in con.execute("SELECT participant FROM tombstones").fetchall()})

        with transaction(con):  # the whole batch, or nothing of it
            check_active_key(con, key)  # a retired or foreign key would give a participant a second pseudonym
            # clean events gather here and reach `events` in one INSERT per ACC_FLUSH_ROWS: many small
            # appends to a persistent table cost far more (and make the commit slow) than a few large ones
            con.execute("CREATE OR REPLACE TEMP TABLE acc_events AS SELECT * FROM events LIMIT 0")
            withheld_events = acc_rows = 0
            # byte facts of the files the fast path may read, counted on a thread while the database works
            facts = {f.name: facts_pool.submit(_file_facts, f) for f, _ in todo if fast_path and _fast_eligible(f)}
            groups = _fast_groups([f for f, _ in todo], facts)
            reader = con.cursor()
            reader.execute("SET TimeZone = 'UTC'")
            verified = {first: verify_pool.submit(_fast_verify, reader, protocol, group[0].kind, [g.path for g in group])
                        for first, group in groups.items()}
            stored_fast: set[str] = set()
            retry_alone: set[str] = set()
            for f, digest in todo:
                res = by_name[f.name]
                rejects_here: list[tuple[int, bytes, str]] = []
                if f.name in groups:  # the first file of a run the fast path tries as one
                    group = [(g, facts[g.name]) for g in groups[f.name]]
                    ok, out = _ingest_clean_files(con, group, protocol, pseudonyms, batch_id, by_name, verified[f.name])
                    if ok:
                        stored_fast.update(g.name for g, _ in group)
                        withheld_events += out
                    else:
                        retry_alone |= out
                if f.name in retry_alone:
                    ok, out = _ingest_clean_files(con, [(f, facts[f.name])], protocol, pseudonyms, batch_id, by_name)
                    if ok:
                        stored_fast.add(f.name)
                        withheld_events += out
                if f.kind is None or f.fmt is None:
                    reason = "unknown_record_kind" if f.kind is None else "unsupported_format"
                    n = _quarantine_whole_file(con, f, reason, batch_id, rejects_here)
                    res.read += n
                    res.quarantined[reason] += n
                elif f.name in stored_fast:  # stored whole by the fast path
                    rows_seen += res.read
                    if progress:
                        progress(f.name, res.read)
                    if _crash_after_rows is not None and rows_seen >= _crash_after_rows:
                        os._exit(99)  # simulated kill: no rollback, no cleanup
                else:
                    for chunk in _chunks_or_unreadable(f, res):
                        if chunk is None:  # the file cannot be read at all: quarantined whole, nothing stored
                            con.execute("INSERT INTO quarantine VALUES (?, ?, ?, 0, 'unreadable_file', ?, NULL, NULL, ?)",
                                        [batch_id, f.kind, f.name, res.unreadable, _qfile_name(batch_id, f.name)])
                            rejects_here.append((0, f.path.read_bytes(), res.unreadable))
                            res.read += 1
                            res.quarantined["unreadable_file"] += 1
                            break
                        n_read, n_stored, q = _ingest_chunk(con, chunk, f, protocol, pseudonyms, batch_id, rejects_here)
                        res.read += n_read
                        res.stored += n_stored
                        res.quarantined.update(q)
                        rows_seen += n_read
                        if progress:
                            progress(f.name, res.read)
                        if _crash_after_rows is not None and rows_seen >= _crash_after_rows:
                            os._exit(99)  # simulated kill: no rollback, no cleanup
                if f.kind == "events" and f.name not in stored_fast:
                    acc_rows += res.stored
                    if acc_rows >= ACC_FLUSH_ROWS:
                        withheld_events += _flush_events(con)
                        acc_rows = 0
                if rejects_here:
                    raw_rejects[f.name] = rejects_here
                if res.read != res.stored + sum(res.quarantined.values()):
                    raise IngestError(
                        f"internal reconciliation failed for {f.name}: read {res.read}, stored {res.stored}, "
                        f"quarantined {sum(res.quarantined.values())}")
                con.execute(
                    "INSERT INTO batch_files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [batch_id, f.name, digest, res.size_bytes, res.kind, res.read, res.stored,
                     sum(res.quarantined.values())])
            withheld_events += _flush_events(con)
            # consent withdrawals of this batch erase those participants, atomically with the batch
            erased = erase_withdrawn(con, withheld={"events": withheld_events})
            if erased is None and withheld_events:
                raise IngestError(f"internal error: {withheld_events} events were withheld for an erasure that did not run")
            rec = Reconciliation(batch_id, protocol.study_id, results, time.perf_counter() - started)
            if erased is not None:
                rec.erased = {"erasure_id": erased.erasure_id, "rows_deleted": erased.total_deleted,
                              "rows_redacted": sum(erased.rows_redacted.values())}
            if todo:
                _write_quarantine_files(qdir, batch_id, raw_rejects)
                con.execute(
                    "INSERT INTO batches VALUES (?, ?, ?, ?, now(), ?, ?, ?, ?)",
                    [batch_id, protocol.study_id, str(landing_dir.resolve()), started_at, rec.read,
                     sum(rec.stored.values()), sum(rec.quarantined.values()), json.dumps(rec.as_json())])
        rec.seconds = time.perf_counter() - started
        return rec
    finally:
        facts_pool.shutdown(wait=True, cancel_futures=True)
        verify_pool.shutdown(wait=True, cancel_futures=True)
        con.close()


SCAN_BATCH_ROWS = 16_384


class _Pseudonyms:
    """Raw id -> (pseudonym, erased?) for the ids of a batch: one HMAC per distinct id, cached across chunks.

    ``erased`` compares the pseudonym's one-way tombstone token (privacy/erasure.py) with the stored tokens."""

    MAX_CACHED = 2_000_000  # bound memory on very wide batches

    def __init__(self, key: bytes, tomb_tokens: set[str]):
        self.key = key
        self.tombs = tomb_tokens
        self.cache: dict[str, tuple[str, bool]] = {}

    def table(self, raw_ids: list[str]) -> pa.Table:
        if len(self.cache) > self.MAX_CACHED:
            self.cache.clear()
        new = [i for i in raw_ids if i not in self.cache]
        for rid, p in pseudonymize_many(new, self.key).items():
            self.cache[rid] = (p, tombstone_token(p) in self.tombs)
        hits = [self.cache[i] for i in raw_ids]
        return pa.table({"pid_raw": pa.array(raw_ids, pa.string()),
                         "participant": pa.array([h[0] for h in hits], pa.string()),
                         "erased": pa.array([h[1] for h in hits], pa.bool_())})


ACC_FLUSH_ROWS = 500_000  # clean events gathered (from one or many files) before one INSERT into events


def _flush_events(con) -> int:
    """Move gathered clean events into ``events``, except those of participants this batch erases.

    Those participants (consents withdrawn, not yet erased) are erased at the batch's end; their events
    are withheld rather than inserted and deleted (deleting fresh rows made the commit several times
    slower) and returned as a count, which the erasure receipt reports as deleted. Consents are
    ingested before events, so the set is complete when events are flushed."""
    withheld = _store_events(con, "SELECT * FROM acc_events")
    con.execute("DELETE FROM acc_events")
    return withheld


def _store_events(con, rows: str, params: dict | None = None) -> int:
    """INSERT the events of ``rows`` (a query in the columns of ``events``) into ``events``, withholding those
    of participants this batch erases; returns how many were withheld (see ``_flush_events``)."""
    withheld = con.execute(
        f"SELECT count(*) FROM ({rows}) WHERE participant IN ({WITHDRAWN_NOT_ERASED})", params).fetchall()[0][0]
    con.execute(f"INSERT INTO events SELECT * FROM ({rows}) WHERE participant NOT IN ({WITHDRAWN_NOT_ERASED})", params)
    return int(withheld)


FAST_KINDS = frozenset(k for k, spec in FIELDS.items()
                       if all(s.rstrip("?") in ("id", "str", "ts", "num", "enum") for s in spec.values()))


FAST_GROUP_BYTES = 512 << 20  # clean files read by one query (DuckDB parallelizes across and within them)


def _fast_eligible(f: landing.LandingFile) -> bool:
    """JSONL files of a scalar record kind (``ingest_batch(fast_path=False)``, i.e. FLOURISH_FAST_PATH=0, sends
    every row through the exact path).

    read_json takes a path as a glob pattern, so a path with a glob character is left to the exact path."""
    return f.kind in FAST_KINDS and f.fmt == "jsonl" and not any(c in str(f.path) for c in "*?[]{}")


def _fast_groups(files: list[landing.LandingFile], eligible) -> dict[str, list[landing.LandingFile]]:
    """Runs of consecutive fast-path files of one kind, at most FAST_GROUP_BYTES each, by their first file."""
    groups: dict[str, list[landing.LandingFile]] = {}
    current: list[landing.LandingFile] = []
    size = 0
    for f in files:
        fits = current and f.kind == current[0].kind and size + f.path.stat().st_size <= FAST_GROUP_BYTES
        if current and not (f.name in eligible and fits):
            groups[current[0].name] = current
            current, size = [], 0
        if f.name in eligible:
            current.append(f)
            size += f.path.stat().st_size
    if current:
        groups[current[0].name] = current
    return groups


def _file_facts(f: landing.LandingFile) -> fastpath.FileFacts | None:
    """The byte facts of a file the fast path may read, or None when its bytes rule the path out."""
    facts = fastpath.file_facts(f.path)
    return None if facts.bom or facts.trailing_comma or facts.vt_or_ff or facts.lines == 0 else facts


def _ingest_clean_files(con, files: list[tuple[landing.LandingFile, "Future[fastpath.FileFacts | None]"]],
                        protocol: StudyProtocol,
                        pseudonyms: "_Pseudonyms", batch_id: str, results: dict[str, FileResult],
                        verified: "Future[tuple[list[tuple[int, int]], pa.Table]] | None" = None,
                        ) -> tuple[bool, set[str] | int]:
    """Store whole files of one kind through the clean-file fast path (flows/fastpath.py) if every one is clean.

    Returns (True, withheld) having stored them all (``withheld``: events of participants this batch erases,
    not inserted, as in ``_flush_events``), or (False, hints) having stored nothing; ``hints`` names the
    files that looked clean on their own (worth a single-file attempt). The caller runs the exact path for
    the rest, which finds every row's reason."""
    kind = files[0][0].kind
    assert kind is not None and all(f.kind == kind for f, _ in files)
    fields = FIELDS[kind]
    paths = [f.path for f, _ in files]
    before, fp = verified.result() if verified is not None else _fast_verify(con, protocol, kind, paths)
    hks = fp.column("hks").combine_chunks()
    key_hash = hks.flatten().to_numpy(zero_copy_only=False)
    key_file = fp.column("fi").combine_chunks().to_numpy(zero_copy_only=False)[pc.list_parent_indices(hks).to_numpy()]
    fp = fp.drop_columns(["hks"])
    ids = [i for i in pc.unique(fp.column("pid")).to_pylist() if i is not None]
    con.register("fp", fp)
    con.register("pmap", pseudonyms.table(ids))
    # the small side of each join (pseudonym map, the files' keys) is written as its build side; read_json's
    # estimate of a few dozen rows would otherwise make the optimizer hash the files' millions of rows
    con.execute("SET disabled_optimizers = 'build_side_probe_side'")
    try:
        stored_assignments = (f"SELECT participant FROM assignments WHERE study_id = {literal(protocol.study_id)}"
                              if kind == "assignments" else None)
        per_file = {row[0]: row[1:] for row in con.execute(fastpath.gate_sql(
            CONSENT_SCOPE.get(kind), WITHDRAWN_NOT_ERASED, stored_assignments)).fetchall()}
        repeated_in = _repeats(key_file, key_hash)
        stored_keys: dict[int, int] = {}
        if kind in FAST_STORED and _has_stored(con, kind, protocol.study_id):
            stored_keys = dict(con.execute(fastpath.stored_keys_sql(
                paths, FAST_STORED[kind].format(study=literal(protocol.study_id)), FAST_KEY[kind])).fetchall())
        clean: set[str] = set()
        rows_of: dict[str, int] = {}
        withheld = 0
        for i, (f, pending) in enumerate(files):
            facts = pending.result()
            rows, bad, gated, held = per_file.get(i, (0, 1, 0, 0))
            rows_of[f.name] = rows
            withheld += held
            if facts is not None and rows == facts.lines and not bad and not gated and not stored_keys.get(i):
                clean.add(f.name)
        if kind != "events":  # assignments and scores of those participants are stored, then erased with them
            withheld = 0
        if len(clean) < len(files) or repeated_in:
            # a key repeated inside one file rules that file out; across files, each file alone (in order)
            # decides, since the repeat is a duplicate only for the later one
            clean -= {files[first][0].name for first, last in repeated_in if first == last}
            return False, (clean if len(files) > 1 else set())
        target, columns = FAST_INSERT[kind]
        inserted = con.execute(
            f"INSERT INTO {target} {fastpath.rows_sql(paths, fields, protocol, columns, WITHDRAWN_NOT_ERASED if kind == 'events' else None)}",
            {"batch": batch_id}).fetchall()[0][0]
    finally:
        con.execute("RESET disabled_optimizers")
        con.unregister("fp")
        con.unregister("pmap")
    expected = sum(rows_of.values()) - withheld
    if inserted != expected or [_file_state(p) for p in paths] != before:
        raise IngestError(f"a landing file of {', '.join(f.name for f, _ in files)} changed while it was being ingested "
                          f"({inserted} rows loaded, {expected} verified); the batch was rolled back, nothing was stored")
    for f, _ in files:
        results[f.name].read += rows_of[f.name]
        results[f.name].stored += rows_of[f.name]
    return True, withheld


def _repeats(file_index: np.ndarray, key_hash: np.ndarray) -> set[tuple[int, int]]:
    """(first file, last file) of each record-key hash that occurs more than once. Sorting the hashes in
    numpy costs about half a GROUP BY over them; the files are looked up only when there are repeats."""
    order = np.sort(key_hash)
    if order.size < 2 or not bool((order[1:] == order[:-1]).any()):
        return set()
    by_hash = np.argsort(key_hash)
    h, fi = key_hash[by_hash], file_index[by_hash]
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    repeated = np.diff(np.r_[starts, h.size]) > 1
    first, last = np.minimum.reduceat(fi, starts)[repeated], np.maximum.reduceat(fi, starts)[repeated]
    return {(int(a), int(b)) for a, b in zip(first, last)}


def _fast_verify(con, protocol: StudyProtocol, kind: str, paths: list[Path]) -> tuple[list[tuple[int, int]], pa.Table]:
    """The fast path's first pass over files of one kind (``_fast_verify_sql``), as an Arrow table, with the
    files' sizes and times before it read them (compared again after the load: a file changed in between
    fails the batch)."""
    before = [_file_state(p) for p in paths]
    return before, con.sql(_fast_verify_sql(kind, protocol, paths)).to_arrow_table()


def _file_state(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


# The fast path's record key (as JSON fields of the file; the study is checked equal to the protocol's),
# the stored keys a new record could repeat, and where clean rows go in which columns.
FAST_KEY = {"events": ["event_id"], "assignments": ["participant_id"], "scores": ["participant_id", "wave", "outcome"]}
FAST_STORED = {
    "events": "SELECT event_id FROM events WHERE study_id = {study} UNION ALL SELECT event_id FROM acc_events",
    "scores": "SELECT participant, wave, outcome FROM scores WHERE source = 'external' AND study_id = {study}",
}
FAST_INSERT = {
    "events": ("events", "event_id, participant, study_id, ts, session_id, type, feature, value, $batch"),
    "assignments": ("assignments", "participant, study_id, arm, assigned_at, stratum, $batch"),
    "scores": ("scores (study_id, participant, wave, outcome, value, items_answered, prorated, source, scored_at, batch_id)",
               "study_id, participant, wave, outcome, value, NULL, false, 'external', scored_at, $batch"),
}


def _has_stored(con, kind: str, study_id: str) -> bool:
    """Whether any record a new one of ``kind`` could repeat is stored (or gathered) already."""
    if kind == "events":
        sql = "SELECT EXISTS (SELECT 1 FROM events WHERE study_id = $s) OR EXISTS (SELECT 1 FROM acc_events)"
    elif kind == "scores":
        sql = "SELECT EXISTS (SELECT 1 FROM scores WHERE source = 'external' AND study_id = $s)"
    elif kind == "assignments":
        return False  # repeats of stored assignments are found by _assignment_conflicts
    else:
        return True
    return bool(con.execute(sql, {"s": study_id}).fetchall()[0][0])


def _chunks_or_unreadable(f: landing.LandingFile, res: FileResult):
    """The file's chunks; ``None`` once if it cannot be read from its start (corrupt Parquet, a CSV with
    no header). A file that breaks after some rows were read fails the batch (rolled back) with a clear error."""
    produced = False
    it = landing.read_chunks(f)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - any reader failure is reported, never swallowed
            if produced:
                raise IngestError(f"{f.name} became unreadable part-way through ({type(exc).__name__}: {exc}); "
                                  "the batch was rolled back, nothing was stored") from exc
            res.unreadable = f"{f.name} cannot be read as {f.fmt}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            yield None
            return
        produced = True
        yield chunk


def _quarantine_whole_file(con, f: landing.LandingFile, reason: str, batch_id: str,
                           rejects: list[tuple[int, bytes, str]]) -> int:
    """A file Flourish cannot read as records: every non-blank line is quarantined, raw bytes to file."""
    why = (f"file name {f.name} does not start with a record kind (consents, assignments, responses, scores, events)"
           if reason == "unknown_record_kind" else f"file {f.name} is not .jsonl, .csv or .parquet")
    n = 0
    with f.path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            n += 1
            rejects.append((lineno, line.rstrip(b"\r\n"), why))
    if n:
        con.executemany(
            "INSERT INTO quarantine VALUES (?, 'unknown', ?, ?, ?, ?, NULL, NULL, ?)",
            [[batch_id, f.name, ln, reason, why, _qfile_name(batch_id, f.name)] for ln, _, _ in rejects],
        )
    return n


def _ingest_chunk(con, chunk: landing.Chunk, f: landing.LandingFile, protocol: StudyProtocol,
                  pseudonyms: "_Pseudonyms", batch_id: str, rejects_out: list[tuple[int, bytes, str]]):
    kind = f.kind
    assert kind is not None
    q: Counter = Counter()
    n_read = 0
    qfile = _qfile_name(batch_id, f.name)
    # rows the reader itself could not turn into records (CSV field count, invalid UTF-8)
    if chunk.rejects:
        reasons = [landing.reject_reason(f.fmt, why) for _, _, why in chunk.rejects]
        con.executemany(
            "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
            [[batch_id, kind, f.name, ln, reason, why, qfile] for (ln, _, why), reason in zip(chunk.rejects, reasons)])
        rejects_out.extend(chunk.rejects)
        q.update(reasons)
        n_read += len(chunk.rejects)
    if chunk.table.num_rows == 0:
        return n_read, 0, q

    # several record batches, so DuckDB scans the chunk on every core (one batch is one thread)
    table = chunk.table
    if table.num_rows > SCAN_BATCH_ROWS:
        table = pa.Table.from_batches(table.to_batches(max_chunksize=SCAN_BATCH_ROWS))
    con.register("chunk", table)
    # pseudonymize at the door: one HMAC per distinct id, joined back inside the staging query, so raw ids
    # stay in this process's Arrow memory (the chunk and the map) and never reach a DuckDB table
    distinct = con.execute("""SELECT DISTINCT CASE WHEN json_valid(raw) THEN json_extract_string(raw, '$.participant_id') END
                              FROM chunk""").fetchall()
    con.register("pmap", pseudonyms.table([r[0] for r in distinct if r[0] is not None]))
    con.register("lax_json", _lax_json_lines(con))
    stage_sql = _stage_sql(kind, protocol)
    source = f"({stage_sql})"
    if kind in ("responses", "consents"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE pre_stage AS {stage_sql}")
        source = "pre_stage"
        if kind == "responses":
            _response_item_checks(con, "pre_stage")
        else:
            # de-duplication key of a consent: the whole pseudonymized record
            con.execute("""UPDATE pre_stage SET record_hash = sha256(concat_ws('|', participant, consent_version,
                           array_to_string(list_sort(scopes), ','), granted_at::VARCHAR, coalesce(withdrawn_at::VARCHAR, '')))
                           WHERE reason IS NULL""")
    con.execute(_gate_and_dedup_sql(kind, source, protocol.study_id))
    con.unregister("pmap")
    _mixed_scope_gate(con, kind)
    if kind == "assignments":
        _assignment_conflicts(con)
    # raw bytes of rejected rows whose participant id could not be read: quarantine file only
    unreadable = con.execute(
        "SELECT line FROM stage WHERE reason IS NOT NULL AND participant IS NULL AND NOT erased ORDER BY line").fetchall()
    if unreadable:
        lines = chunk.table.column("line").to_numpy()
        raws = chunk.table.column("raw")
        for pos in np.flatnonzero(np.isin(lines, np.array([r[0] for r in unreadable], dtype=np.int64))):
            rejects_out.append((int(lines[pos]), raws[pos].as_py().encode("utf-8").rstrip(b"\r\n"), "participant id unreadable"))

    # the quarantine payload: the record with its participant id pseudonymized. Values of unknown fields are not
    # copied (they are untrusted, and may hold another participant's raw id); their names are, under
    # "unknown_fields", and the landing file keeps the values
    known = varchar_list(FIELDS[kind])
    unknown = f"list_filter(json_keys(c.raw), lambda k: NOT list_contains({known}, k))"
    known_only = "json_object(" + ", ".join(f"{literal(n)}, json_extract(c.raw, {literal('$.' + n)})" for n in FIELDS[kind]) + ")"
    con.execute(f"""UPDATE stage SET payload = CASE WHEN len({unknown}) = 0
                       THEN json_merge_patch(c.raw, json_object('participant_id', stage.participant))
                       ELSE json_merge_patch(json_merge_patch('{{}}', {known_only}),
                                             json_object('participant_id', stage.participant, 'unknown_fields', {unknown}))
                   END::VARCHAR
                   FROM chunk c WHERE c.line = stage.line AND stage.reason IS NOT NULL AND stage.payload IS NULL
                   AND stage.participant IS NOT NULL""")
    con.unregister("chunk")
    con.unregister("lax_json")
    con.execute(INSERT_SQL[kind], {"batch": batch_id, "file": f.name} if kind == "consents" else {"batch": batch_id})
    if kind == "responses":
        con.execute("""
        INSERT INTO response_items
        SELECT s.response_id, s.participant, s.study_id, s.instrument, s.instrument_version, s.wave, k.c,
               try_cast(try_cast(trim(json_extract_string(s.items, '$."' || replace(k.c, '"', '\\"') || '"')) AS DOUBLE) AS INTEGER)
        FROM stage s, unnest(json_keys(s.items)) AS k(c)
        WHERE s.reason IS NULL
        """)
    con.execute(
        """INSERT INTO quarantine SELECT $batch, $kind, $file, line, reason, message, participant, payload,
           CASE WHEN participant IS NULL AND NOT erased THEN $qfile END FROM stage WHERE reason IS NOT NULL""",
        {"batch": batch_id, "kind": kind, "file": f.name, "qfile": qfile})
    counts = con.execute(
        "SELECT coalesce(reason, ''), count(*) FROM stage GROUP BY ALL").fetchall()
    stored = 0
    for reason, n in counts:
        n_read += n
        if reason == "":
            stored += n
        else:
            q[reason] += n
    return n_read, stored, q


def _qfile_name(batch_id: str, source_name: str) -> str:
    """Unique per source file (a hash of its path in the landing folder) and short whatever the path's length."""
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", source_name.rsplit("/", 1)[-1])[:80]
    return f"{batch_id}-{hashlib.sha256(source_name.encode('utf-8')).hexdigest()[:16]}-{tail}.rejected.jsonl"


def _write_quarantine_files(qdir: Path, batch_id: str, raw_rejects: dict[str, list[tuple[int, bytes, str]]]) -> None:
    """Write raw rejected bytes atomically (tmp + rename); names are deterministic, so a re-run overwrites."""
    if not raw_rejects:
        return
    qdir.mkdir(parents=True, exist_ok=True)
    for name, rows in raw_rejects.items():
        target = qdir / _qfile_name(batch_id, name)
        tmp = target.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for line, raw, why in sorted(rows, key=lambda r: r[0]):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
                fh.write(json.dumps({"source_file": name, "line": line, "why": why, "raw": text,
                                     "raw_base64": base64.b64encode(raw).decode("ascii")}) + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(target)
