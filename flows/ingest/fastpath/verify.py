"""The fast path's first pass: prove, by aggregates, that every line of a source would be stored.

:func:`verify_sql` reads each line whole and holds it to the contract and the protocol (``contract.fast_ok``:
one sufficient condition a field, the exact path's own protocol checks; unknown or repeated keys through
``json_keys``), then aggregates per (file, participant id): rows, rows failing, first and last record time,
and the 64-bit hashes of the rows' record keys. Nothing is stored; the participant ids come back as query
results in this process's memory only.

Then, with the ids pseudonymized and the aggregates registered as ``fp`` (:data:`FP`): :func:`gate_counts_sql`
decides the consent gate per participant (every record of a participant passes it exactly when the first and last
do, unless their consent versions differ in the scope: then the exact path decides), :func:`repeats` finds a
record key repeated in the source, and :func:`stored_keys_sql` a key stored already. A source is clean when
no row fails, none is gated and no key repeats or is stored.
"""

from __future__ import annotations

import numpy as np

import flows.ingest.contract as contract
from flows.ingest.contract import CONSENT_SCOPE, TIME_FIELD, ItemBounds
from flows.ingest.fastpath.source import Source
from flows.ingest.gate import CONSENT_RECORD_HASH, stored_keys
from flows.ingest.pseudonyms import PMAP
from privacy.consent import scope_summary_sql
from privacy.erasure import PSEUDONYM_RUN, WITHDRAWN_NOT_ERASED
from schemas.protocol import StudyProtocol
from schemas.sqltext import ident, literal

FP = "fp"
"""The name :func:`verify_sql`'s result is registered under while the gate reads it."""

# The record key as the source's fields (the study is checked equal to the protocol's, so it is left out).
KEY_FIELDS = {"events": ("event_id",), "responses": ("response_id",), "prompts": ("prompt_id",), "assignments": ("participant_id",),
              "scores": ("participant_id", "wave", "outcome"),
              "consents": ("participant_id", "consent_version", "scopes", "granted_at", "withdrawn_at")}


def _key_hash(kind: str) -> str:
    """SQL over the unpacked line: the 64-bit hash of its record key (a consent's times as instants, its scopes
    sorted, as the exact path's record hash reads them)."""
    idx = contract.index(kind)
    parts = []
    for name in KEY_FIELDS[kind]:
        if name == "scopes":
            parts.append("list_sort(scope_values)")
        elif name in ("granted_at", "withdrawn_at"):
            parts.append(f"try_cast(v_{idx[name]} AS TIMESTAMPTZ)")
        else:
            parts.append(f"v_{idx[name]}")
    return f"hash({', '.join(parts)})"


def _no_pseudonym_in_key(kind: str) -> str:
    """SQL over the unpacked line: no id-carrying field of its record key holds a run of 64 lowercase hex digits,
    the form of a pseudonym.

    The rows' key hashes are taken before the participant id inside a key is replaced by the pseudonym
    (contract.without_raw_id_sql), which the exact path de-duplicates after. Two keys that differ before can be
    equal after only if one of them already holds a pseudonym as text (``<pseudonym>-evt-1`` sent beside
    ``<raw id>-evt-1``): such a line is left to the exact path. Checked by length first: most ids are shorter."""
    idx = contract.index(kind)
    carrying = set(contract.id_carrying_fields(kind))
    conds = [f"CASE WHEN strlen(v_{idx[n]}) < 64 THEN true ELSE NOT regexp_matches(v_{idx[n]}, {literal(PSEUDONYM_RUN)}) END"
             for n in KEY_FIELDS[kind] if n in carrying]
    return " AND ".join(f"coalesce({c}, true)" for c in conds) if conds else "true"


def verify_sql(kind: str, protocol: StudyProtocol, bounds: ItemBounds, source: Source) -> str:
    """Per (``fi``, ``pid``): ``n`` rows, ``bad`` rows failing the contract or the protocol, ``t0``/``t1`` the
    first and last record time, ``hks`` the hashes of the rows' record keys, ``embedded`` the rows with their
    participant id inside another field (contract.embeds_id_sql)."""
    idx = contract.index(kind)
    ok = contract.fast_ok(kind, protocol, bounds)
    return f"""
    WITH r AS (SELECT * FROM {source.lines()}
    ), typed AS (
        SELECT fi, lax, raw, coalesce(starts_with(raw::VARCHAR, '{{') {'AND json_valid(raw)' if source.guard() else ''},
               false) AS is_object, {contract.parse_sql(kind, 'raw', source.guard(), source.canonical)}
        FROM r
    ), unpacked AS (
        SELECT fi, lax, is_object, {contract.unpack_sql(kind, 'raw', source.canonical)} FROM typed
    ), c AS (
        SELECT fi, v_{idx['participant_id']} AS pid, try_cast(v_{idx[TIME_FIELD[kind]]} AS TIMESTAMPTZ) AS t,
               {_key_hash(kind)} AS hk, is_object AND NOT lax AND {ok} AND {_no_pseudonym_in_key(kind)} AS ok, {contract.embeds_id_sql(kind)} AS embeds
        FROM unpacked
    )
    SELECT fi, pid, count(*) AS n, count_if(NOT ok) AS bad, min(t) AS t0, max(t) AS t1, list(hk) AS hks,
           count_if(embeds) AS embedded
    FROM c GROUP BY fi, pid"""


def gate_counts_sql(kind: str, study_id: str) -> str:
    """Per file of ``fp``: its rows, rows failing, rows the consent gate refuses (``gated``: participant unknown
    to the map or erased; a record at or after a withdrawal; with a scope, a record before the first consent
    with it, or consent versions that differ in it; an assignment of a participant assigned already) and the
    rows of participants this batch erases (``withheld``), and the rows with their participant id inside
    another field (``embedded``)."""
    scope = CONSENT_SCOPE.get(kind)
    fail = ["p.participant IS NULL", "p.erased"]
    if kind != "consents":
        fail.append("(cs.withdrawn_at IS NOT NULL AND p.t1 >= cs.withdrawn_at)")
    if scope:
        fail += ["coalesce(cs.mixed, false)", "cs.first_with_scope IS NULL", "p.t0 < cs.first_with_scope"]
    if kind == "assignments":
        fail.append(f"p.participant IN (SELECT participant FROM assignments WHERE study_id = {literal(study_id)})")
    return f"""
    WITH cs AS ({scope_summary_sql(scope)}), p AS (
        SELECT f.*, pm.participant, coalesce(pm.erased, false) AS erased
        FROM {FP} f LEFT JOIN {PMAP} pm ON pm.pid_raw = f.pid
    )
    SELECT p.fi, sum(p.n)::BIGINT, sum(p.bad)::BIGINT,
           coalesce(sum(p.n) FILTER (WHERE {' OR '.join(fail)}), 0)::BIGINT AS gated,
           coalesce(sum(p.n) FILTER (WHERE p.participant IN ({WITHDRAWN_NOT_ERASED})), 0)::BIGINT AS withheld,
           sum(p.embedded)::BIGINT AS embedded
    FROM p LEFT JOIN cs ON cs.participant = p.participant
    GROUP BY p.fi"""


def stored_keys_sql(kind: str, study_id: str, source: Source, ids_inside: bool = True) -> str | None:
    """Per file, its rows whose record key is stored already; None for assignments (the gate refuses a
    participant assigned already). The source's keys are the join's build side. Keys are compared as stored (the
    participant id inside them replaced by the pseudonym), unless the verify pass counted no row with an id inside
    another field (``ids_inside`` false): then the keys are stored as they are, and no pseudonym join is needed."""
    if kind == "assignments":
        return None
    f = "b"
    carrying = set(contract.id_carrying_fields(kind)) if ids_inside else set()

    def stored_as(name: str) -> str:  # a key field as the clean table stores it (contract.without_raw_id_sql)
        col = f"{f}.{ident(name)}"
        return contract.without_raw_id_sql(col, f"{f}.participant_id", "pm.participant") if name in carrying else col

    if kind == "consents":
        typed = (f"SELECT {f}.fi, pm.participant, {stored_as('consent_version')} AS consent_version, {f}.scopes, "
                 f"try_cast({f}.granted_at AS TIMESTAMPTZ) AS granted_at, "
                 f"try_cast({f}.withdrawn_at AS TIMESTAMPTZ) AS withdrawn_at "
                 f"FROM {source.fields(kind)} {f} JOIN {PMAP} pm ON pm.pid_raw = {f}.participant_id")
        return f"""SELECT k.fi, count(*) FROM (SELECT fi, {CONSENT_RECORD_HASH} AS record_hash FROM ({typed})) k
                   JOIN consents s ON s.record_hash = k.record_hash GROUP BY k.fi"""
    cols = [f"{stored_as(k)} AS {ident(k)}" for k in KEY_FIELDS[kind] if k != "participant_id"]
    join_pid = ""
    if "participant_id" in KEY_FIELDS[kind]:
        cols.append("pm.participant")
    if "participant_id" in KEY_FIELDS[kind] or carrying & set(KEY_FIELDS[kind]):
        join_pid = f" JOIN {PMAP} pm ON pm.pid_raw = {f}.participant_id"
    on = " AND ".join("s.participant = k.participant" if c == "participant_id" else f"s.{ident(c)} = k.{ident(c)}"
                      for c in KEY_FIELDS[kind])
    return f"""SELECT k.fi, count(*) FROM {stored_keys(kind, study_id)} s
               JOIN (SELECT {f}.fi, {', '.join(cols)} FROM {source.fields(kind)} {f}{join_pid}) k ON {on}
               GROUP BY k.fi"""


def repeats(file_index: np.ndarray, key_hash: np.ndarray) -> set[tuple[int, int]]:
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
