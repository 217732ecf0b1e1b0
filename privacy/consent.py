"""The consent ledger: versioned consent per participant and scope, append-only and hash-chained.

Each entry stores ``entry_hash = sha256(prev_hash || canonical_json(entry))`` (genesis ``prev_hash`` is 64 zeros),
so editing, deleting or re-ordering any entry breaks every later hash and ``verify_chain`` names the first
bad one (the construction of Haber & Stornetta 1991, as in certificate-transparency logs, RFC 6962).

The chain covers ``subject_commit = sha256(subject_salt || pseudonym)`` rather than the pseudonym. Erasure
(GDPR Art. 17) sets ``participant`` and ``subject_salt`` to NULL and ``redacted`` to true: the ledger then
holds no pseudonym of the erased participant, yet the chain still verifies (the commitment without its salt
is a random-looking 256-bit value). For entries not redacted, ``verify_chain`` also checks the commitment
against the stored pseudonym, so swapping participants between entries is detected. Re-keying
(privacy/rekey.py) recomputes commitments under new pseudonyms and re-seals the chain, logging the old and
new heads in ``rekey_log``. This module is the only writer of ``consent_ledger``.

When the ledger is written: before any participant is erased (a withdrawal arriving through the ingest, an
erasure request), their consents are appended (:func:`sync_from_consents` for those participants, in the
erasure's transaction), so a withdrawal is in the ledger, redacted, rather than lost with their rows. The
consents of everyone else are appended by :func:`sync_from_consents` (``flourish consent sync``): it is not
done in every ingest batch, because hashing the chain entry by entry and indexing them costs about a second per
10,000 participants, which the ingest's throughput target cannot carry. Reading the ledger
(:func:`consent_status`, ``flourish consent status``) writes nothing, and reports how many entries are pending.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import duckdb

from privacy.errors import PrivacyError
from schemas.sqltext import literal
from schemas.warehouse import transaction

SCOPES = ("telemetry", "surveys", "linkage", "aggregate_release")
GENESIS = "0" * 64
Action = Literal["grant", "withdraw"]


def scope_summary_sql(scope: str | None) -> str:
    """Per participant of the ``consents`` table: the first withdrawal, the first grant carrying ``scope``,
    and whether their consent versions differ in it (``mixed``).

    The ingest's consent gate reads it: a record needs ``scope`` in force at its time (the latest consent
    granted at or before it) and no withdrawal at or before it. Unless ``mixed``, "in force" is simply
    "at or after ``first_with_scope``"."""
    s = "NULL" if scope is None else literal(scope)
    return f"""SELECT participant, min(withdrawn_at) AS withdrawn_at,
               min(granted_at) FILTER (WHERE list_contains(scopes, {s})) AS first_with_scope,
               bool_or(list_contains(scopes, {s})) AND NOT bool_and(list_contains(scopes, {s})) AS mixed
        FROM consents GROUP BY participant"""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(ts: datetime | None) -> int:
    """Microseconds since the epoch, exactly (integer arithmetic; DuckDB's ``epoch_us`` gives the same)."""
    ts = ts or datetime.now(UTC)
    if ts.tzinfo is None:
        raise PrivacyError(f"consent time {ts.isoformat()} has no time zone; give times in UTC")
    return (ts - _EPOCH) // timedelta(microseconds=1)


def subject_commit(salt: str, pseudonym: str) -> str:
    return hashlib.sha256((salt + pseudonym).encode("utf-8")).hexdigest()


def canonical_entry(seq: int, commit: str, scope: str, version: str, action: str, effective_us: int,
                    recorded_us: int) -> str:
    """The exact text an entry's hash covers: JSON with sorted keys and no spaces."""
    return json.dumps(
        {"seq": seq, "subject_commit": commit, "scope": scope, "consent_version": version, "action": action,
         "effective_us": effective_us, "recorded_us": recorded_us},
        sort_keys=True, separators=(",", ":"),
    )


def entry_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _head(con: duckdb.DuckDBPyConnection) -> tuple[int, str]:
    rows = con.execute("SELECT seq, entry_hash FROM consent_ledger ORDER BY seq DESC LIMIT 1").fetchall()
    return (0, GENESIS) if not rows else (int(rows[0][0]), str(rows[0][1]))


def append_consent(
    con: duckdb.DuckDBPyConnection,
    participant: str,
    scope: str,
    consent_version: str,
    action: Action = "grant",
    effective_at: datetime | None = None,
    *,
    in_transaction: bool = False,
) -> str:
    """Append one grant or withdrawal for a participant pseudonym; return its entry hash.

    Appends in its own transaction unless ``in_transaction`` (the caller holds one). Two writers racing for
    the same ``seq`` cannot both commit (primary key), so the chain never forks.
    """
    if scope not in SCOPES:
        raise PrivacyError(f"consent scope {scope!r} is not one of {list(SCOPES)}")
    if action not in ("grant", "withdraw"):
        raise PrivacyError(f"consent action {action!r} must be 'grant' or 'withdraw'")
    if not participant:
        raise PrivacyError("a consent entry needs the participant's pseudonym")
    with nullcontext() if in_transaction else transaction(con):
        seq, prev = _head(con)
        seq += 1
        salt = secrets.token_hex(16)
        commit = subject_commit(salt, participant)
        eff, rec = _us(effective_at), _us(None)
        h = entry_hash(prev, canonical_entry(seq, commit, scope, consent_version, action, eff, rec))
        con.execute(
            "INSERT INTO consent_ledger (seq, participant, subject_salt, subject_commit, scope, consent_version, "
            "action, effective_us, recorded_us, prev_hash, entry_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [seq, participant, salt, commit, scope, consent_version, action, eff, rec, prev, h],
        )
    return h


# Ledger entries the ``consents`` table implies and the ledger lacks: each consents row grants each of its
# scopes at granted_at and, when withdrawn_at is set, withdraws them. In append order: by grant time and
# participant, scopes in their listed order, a grant before its withdrawal. An entry with the same participant,
# scope, version, action and effective time is not repeated.
_PENDING = """
WITH c AS (
    SELECT participant, consent_version, granted_at, withdrawn_at,
           unnest(scopes) AS scope, generate_subscripts(scopes, 1) AS scope_pos
    FROM consents {where}),
e AS (
    SELECT participant, scope, consent_version, 'grant' AS action, epoch_us(granted_at) AS effective_us,
           granted_at AS sort_at, scope_pos, 0 AS step FROM c
    UNION ALL
    SELECT participant, scope, consent_version, 'withdraw', epoch_us(withdrawn_at), granted_at, scope_pos, 1
    FROM c WHERE withdrawn_at IS NOT NULL)
SELECT participant, scope, consent_version, action, effective_us
FROM e
WHERE list_contains(?, scope) AND NOT EXISTS (
    SELECT 1 FROM consent_ledger l WHERE NOT l.redacted AND l.participant = e.participant AND l.scope = e.scope
    AND l.consent_version = e.consent_version AND l.action = e.action AND l.effective_us = e.effective_us)
GROUP BY participant, scope, consent_version, action, effective_us
ORDER BY min(sort_at), participant, consent_version, min(scope_pos), min(step)
"""
_PENDING_ALL = _PENDING.format(where="")
_LEDGER_COLUMNS = ("seq", "participant", "subject_salt", "subject_commit", "scope", "consent_version", "action",
                   "effective_us", "recorded_us", "prev_hash", "entry_hash")
_APPEND_MANY = (f"INSERT INTO consent_ledger ({', '.join(_LEDGER_COLUMNS)}) SELECT "
                + ", ".join("unnest(?)" for _ in _LEDGER_COLUMNS))
_PENDING_SOME = _PENDING.format(where="WHERE participant IN (SELECT unnest(?::VARCHAR[]))")


def sync_from_consents(con: duckdb.DuckDBPyConnection, *, participants: Sequence[str] | None = None,
                       in_transaction: bool = False) -> int:
    """Append ledger entries for ``consents`` rows (written by ingest) not yet in the ledger; return how many.

    Only for ``participants`` when given. Set-based: one query finds the missing entries, the chain's hashes are
    computed in order, one insert appends them. Idempotent. In the caller's transaction when ``in_transaction``.
    """
    sql, params = (_PENDING_ALL, [list(SCOPES)]) if participants is None else \
        (_PENDING_SOME, [list(participants), list(SCOPES)])
    with nullcontext() if in_transaction else transaction(con):
        pending = con.execute(sql, params).fetchall()
        if not pending:
            return 0
        seq, prev = _head(con)
        recorded = _us(None)
        rows = []
        for participant, scope, version, action, effective_us in pending:
            seq += 1
            salt = secrets.token_hex(16)
            commit = subject_commit(salt, participant)
            h = entry_hash(prev, canonical_entry(seq, commit, scope, version, action, int(effective_us), recorded))
            rows.append((seq, participant, salt, commit, scope, version, action, int(effective_us), recorded, prev, h))
            prev = h
        # one statement for all entries: each column is a list parameter, unnested side by side
        con.execute(_APPEND_MANY, [[r[i] for r in rows] for i in range(len(_LEDGER_COLUMNS))])
    return len(rows)


@dataclass(frozen=True)
class ChainReport:
    verified: bool
    entries: int
    redacted_entries: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


def verify_chain(con: duckdb.DuckDBPyConnection, *, genesis: str | None = None) -> ChainReport:
    """Recompute every hash in order; report the first entry that does not verify (never raises)."""
    rows = con.execute(
        "SELECT seq, participant, subject_salt, subject_commit, scope, consent_version, action, effective_us, "
        "recorded_us, prev_hash, entry_hash, redacted FROM consent_ledger ORDER BY seq"
    ).fetchall()
    prev = genesis or _genesis(con)
    redacted_n = 0
    for i, (seq, part, salt, commit, scope, ver, action, eff, rec, prev_hash, h, redacted) in enumerate(rows, 1):
        def bad(problem: str, seq: int = seq) -> ChainReport:
            return ChainReport(False, len(rows), redacted_n, prev, seq, problem)

        if seq != i:
            return bad(f"sequence gap: expected {i}, found {seq}")
        if prev_hash != prev:
            return bad("prev_hash does not match the previous entry's hash")
        if entry_hash(prev, canonical_entry(seq, commit, scope, ver, action, eff, rec)) != h:
            return bad("entry content does not match its hash")
        if redacted:
            redacted_n += 1
            if part is not None or salt is not None:
                return bad("a redacted entry still holds a participant")
        elif part is None or salt is None or subject_commit(salt, part) != commit:
            return bad("participant does not match the entry's commitment")
        prev = h
    return ChainReport(True, len(rows), redacted_n, prev)


def _genesis(con: duckdb.DuckDBPyConnection) -> str:
    return GENESIS


def consent_status(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Per scope: participants whose latest entry is a grant (active) or a withdrawal (withdrawn), and entries;
    ``not_in_ledger``, the entries the ``consents`` table implies that the ledger does not hold yet (appended by
    :func:`sync_from_consents`, ``flourish consent sync``); and the chain check. Read-only.

    An erased participant's entries are redacted (no pseudonym), so they cannot be grouped by participant: each
    redacted withdrawal counts as one withdrawn participant of its scope (the ingest records one withdrawal per
    consent row and scope), and a redacted grant counts as no one."""
    report = verify_chain(con)
    latest = con.execute(
        "SELECT scope, action, count(*) FROM ("
        "  SELECT scope, participant, arg_max(action, seq) AS action FROM consent_ledger "
        "  WHERE NOT redacted GROUP BY scope, participant) GROUP BY scope, action"
    ).fetchall()
    erased_withdrawals = con.execute(
        "SELECT scope, 'withdraw', count(*) FROM consent_ledger WHERE redacted AND action = 'withdraw' GROUP BY scope"
    ).fetchall()
    entries = dict(con.execute("SELECT scope, count(*) FROM consent_ledger GROUP BY scope").fetchall())
    pending = con.execute(f"SELECT count(*) FROM ({_PENDING_ALL})", [list(SCOPES)]).fetchone()[0]
    scopes: dict[str, dict[str, int]] = {s: {"active": 0, "withdrawn": 0, "entries": int(entries.get(s, 0))}
                                         for s in SCOPES}
    for scope, action, n in [*latest, *erased_withdrawals]:
        scopes.setdefault(scope, {"active": 0, "withdrawn": 0, "entries": int(entries.get(scope, 0))})
        scopes[scope]["active" if action == "grant" else "withdrawn"] += int(n)
    return {
        "scopes": scopes,
        "entries": report.entries,
        "redacted_entries": report.redacted_entries,
        "not_in_ledger": int(pending),
        "chain_verified": report.verified,
        "chain_head": report.head_hash,
        "first_bad_seq": report.first_bad_seq,
        "problem": report.problem,
    }


def redact_participants(con: duckdb.DuckDBPyConnection, participants: Sequence[str]) -> int:
    """Erasure's one mutation of the ledger: drop pseudonym and salt, keep the commitment, for every entry of
    these participants; return how many entries. The caller holds the transaction."""
    n = con.execute("SELECT count(*) FROM consent_ledger WHERE participant IN (SELECT unnest(?::VARCHAR[]))",
                    [list(participants)]).fetchone()[0]
    if n:
        con.execute("UPDATE consent_ledger SET participant = NULL, subject_salt = NULL, redacted = true "
                    "WHERE participant IN (SELECT unnest(?::VARCHAR[]))", [list(participants)])
    return int(n)


def reseal_chain(con: duckdb.DuckDBPyConnection, mapping: dict[str, str]) -> tuple[str, str]:
    """Re-key: replace pseudonyms by ``mapping[old]`` and recompute commitments and hashes. Caller holds the transaction.

    Returns (head before, head after); the caller logs both so the old chain stays anchored.
    """
    before = _head(con)[1]
    rows = con.execute(
        "SELECT seq, participant, subject_salt, subject_commit, scope, consent_version, action, effective_us, "
        "recorded_us, redacted FROM consent_ledger ORDER BY seq"
    ).fetchall()
    prev = GENESIS
    updates = []
    for seq, part, salt, commit, scope, ver, action, eff, rec, redacted in rows:
        if not redacted and part is not None:
            part = mapping.get(part, part)
            commit = subject_commit(salt, part)
        h = entry_hash(prev, canonical_entry(seq, commit, scope, ver, action, eff, rec))
        updates.append((seq, part, commit, prev, h))
        prev = h
    if updates:
        con.execute("CREATE OR REPLACE TEMP TABLE _reseal (seq BIGINT, participant VARCHAR, subject_commit VARCHAR, "
                    "prev_hash VARCHAR, entry_hash VARCHAR)")
        con.executemany("INSERT INTO _reseal VALUES (?,?,?,?,?)", updates)
        # entry_hash is UNIQUE: clear it first so an intermediate state never collides
        con.execute("UPDATE consent_ledger SET entry_hash = 'reseal-' || seq::VARCHAR")
        con.execute(
            "UPDATE consent_ledger SET participant = r.participant, subject_commit = r.subject_commit, "
            "prev_hash = r.prev_hash, entry_hash = r.entry_hash FROM _reseal r WHERE consent_ledger.seq = r.seq"
        )
        con.execute("DROP TABLE _reseal")
    return before, prev
