"""Key rotation: re-key every pseudonym in the warehouse in one transaction.

Design (chosen, with the alternatives considered)
-------------------------------------------------
The pseudonym is defined as ``HMAC-SHA256(key, raw_id)`` (privacy/pseudonym.py) so that a partner holding
the key can link records. HMAC cannot be inverted, so re-keying needs, for every participant, either the raw
id or a second secret. Three designs:

1. **Chained** ``new = HMAC(new_key, old_pseudonym)``: needs no raw ids, but the stored value is no longer
   ``HMAC(key, raw_id)`` for any key: partners can no longer link, and a leaked old key still links
   everything (old pseudonym -> new is public computation given the new key). Rejected.
2. **Two-level** (a hidden inner key, ``outer(inner(raw))``, rotating only the outer): same linkage
   problem for partners, plus a second secret to guard. Rejected for this study size.
3. **Raw-id list (chosen)**: the recruiting system (which holds the raw ids anyway, and the withdrawal list)
   supplies the list of raw ids; ``old = HMAC(old_key, raw)`` and ``new = HMAC(new_key, raw)`` give an exact
   mapping. The definition of a pseudonym stays true under the new key, partners re-link with the new key,
   and a leaked old key becomes useless once the warehouse is re-keyed and compacted (the old pseudonyms'
   bytes are removed by ``privacy.erasure.compact_database``, run by the flow).

Rules: every pseudonym present in any participant table must be in the mapping, and every tombstone must be
re-derivable (the list must include withdrawn/erased participants' raw ids, so their late data are still
refused under the new key); otherwise nothing changes (RekeyError). The consent ledger is re-sealed
(privacy/consent.reseal_chain) and both chain heads are logged in ``rekey_log``. If the warehouse records an
active key fingerprint, the old key must match it.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from privacy.consent import reseal_chain
from privacy.erasure import SPECIAL_TABLES, text_columns, tombstone_token
from privacy.errors import RekeyError
from privacy.pseudonym import key_fingerprint, pseudonymize_many
from schemas.sqltext import ident
from schemas.warehouse import participant_tables as warehouse_participant_tables
from schemas.warehouse import transaction

# How many stray pseudonyms or tombstones a refusal describes one by one (the count is always complete).
_SHOWN = 5


@dataclass(frozen=True)
class RekeyReport:
    rekey_id: str
    old_fingerprint: str
    new_fingerprint: str
    participants: int
    rows_updated: dict[str, int]
    tombstones_rekeyed: int
    ledger_head_before: str
    ledger_head_after: str


def _where_strays_are(con: duckdb.DuckDBPyConnection, tables: Sequence[str], strays: set[str]) -> list[str]:
    """Where the pseudonyms no raw id maps to sit, as "<n> in <table> (<row kind>)": the quarantine says which
    record kind and reason (e.g. an assignment quarantined as unknown_arm for an id that was never enrolled)."""
    con.execute("CREATE OR REPLACE TEMP TABLE _rekey_strays (participant VARCHAR)")
    con.executemany("INSERT INTO _rekey_strays VALUES (?)", [[p] for p in sorted(strays)])
    places: list[str] = []
    for t in [*tables, "consent_ledger"]:
        if t == "quarantine":
            for kind, reason, n in con.execute(
                    "SELECT record_kind, reason, count(DISTINCT participant) FROM quarantine "
                    "WHERE participant IN (SELECT participant FROM _rekey_strays) GROUP BY ALL ORDER BY ALL").fetchall():
                places.append(f"{n} in quarantine ({kind} rows quarantined as {reason})")
            continue
        n = con.execute(f"SELECT count(DISTINCT participant) FROM {ident(t)} "
                        "WHERE participant IN (SELECT participant FROM _rekey_strays)").fetchone()[0]
        if n:
            places.append(f"{n} in {t} rows")
    con.execute("DROP TABLE _rekey_strays")
    return places


def rekey(
    con: duckdb.DuckDBPyConnection,
    old_key: bytes,
    new_key: bytes,
    raw_ids: Iterable[str],
    *,
    participant_tables: Sequence[str] | None = None,
) -> RekeyReport:
    """Re-key every participant table, the tombstones and the consent ledger in ONE transaction.

    ``participant_tables`` defaults to every table with a ``participant`` column
    (``schemas.warehouse.participant_tables``)."""
    if hmac.compare_digest(old_key, new_key):
        raise RekeyError("the new key is the same as the old key")
    old_fp, new_fp = key_fingerprint(old_key), key_fingerprint(new_key)
    active = con.execute("SELECT fingerprint FROM pseudonym_keys WHERE retired_at IS NULL").fetchone()
    if active is not None and active[0] != old_fp:
        raise RekeyError(f"the old key's fingerprint {old_fp} is not the warehouse's active key ({active[0]})")
    ids = list(dict.fromkeys(r.strip() for r in raw_ids if r and r.strip()))
    old_map, new_map = pseudonymize_many(ids, old_key), pseudonymize_many(ids, new_key)
    mapping = {old_map[r]: new_map[r] for r in ids}
    tables = [t for t in (participant_tables if participant_tables is not None
                          else warehouse_participant_tables(con)) if t not in SPECIAL_TABLES]

    present: set[str] = set()
    for t in [*tables, "consent_ledger"]:
        present.update(r[0] for r in con.execute(
            f"SELECT DISTINCT participant FROM {ident(t)} WHERE participant IS NOT NULL").fetchall())
    missing = present - mapping.keys()
    if missing:
        raise RekeyError(
            f"{len(missing)} pseudonyms in the warehouse are not HMAC(old key, id) of any of the {len(ids)} raw ids "
            f"given: {'; '.join(_where_strays_are(con, tables, missing))}; add those participants' raw ids to the "
            "list (the recruiting system's complete list, withdrawn and never-enrolled ids included) or check the "
            "old key; nothing was changed"
        )
    tomb_map = {tombstone_token(o): tombstone_token(n) for o, n in mapping.items()}
    tombs = {r[0] for r in con.execute("SELECT participant FROM tombstones").fetchall()}
    unknown_tombs = tombs - tomb_map.keys()
    if unknown_tombs:
        con.execute("CREATE OR REPLACE TEMP TABLE _rekey_strays (participant VARCHAR)")
        con.executemany("INSERT INTO _rekey_strays VALUES (?)", [[t] for t in sorted(unknown_tombs)])
        shown = con.execute(
            "SELECT erased_at, reason FROM tombstones WHERE participant IN (SELECT participant FROM _rekey_strays) "
            "ORDER BY erased_at LIMIT ?", [_SHOWN]).fetchall()
        con.execute("DROP TABLE _rekey_strays")
        which = ", ".join(f"erased {t.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({reason})" for t, reason in shown)
        more = f" and {len(unknown_tombs) - len(shown)} more" if len(unknown_tombs) > len(shown) else ""
        raise RekeyError(
            f"{len(unknown_tombs)} tombstones cannot be re-keyed because their raw ids are not in the list: "
            f"{which}{more}; include erased participants' raw ids so their late data stay refused under the new "
            "key (the erasure log has each erasure's time and reason); nothing was changed"
        )

    updated: dict[str, int] = {}
    with transaction(con):
        con.execute("CREATE OR REPLACE TEMP TABLE _rekey_map (old VARCHAR PRIMARY KEY, new VARCHAR NOT NULL)")
        con.executemany("INSERT INTO _rekey_map VALUES (?, ?)", [[o, n] for o, n in mapping.items() if o in present])
        for t in tables:
            n = con.execute(f"SELECT count(*) FROM {ident(t)} x JOIN _rekey_map m ON x.participant = m.old").fetchone()[0]
            if not n:
                continue
            sets = ", ".join(["participant = m.new"] + [f"{ident(c)} = replace({ident(c)}, m.old, m.new)"
                                                         for c in text_columns(con, t)])
            con.execute(f"UPDATE {ident(t)} SET {sets} FROM _rekey_map m WHERE {ident(t)}.participant = m.old")
            updated[t] = int(n)
        if tombs:
            con.execute("CREATE OR REPLACE TEMP TABLE _rekey_tomb (old VARCHAR, new VARCHAR)")
            con.executemany("INSERT INTO _rekey_tomb VALUES (?, ?)", [[o, tomb_map[o]] for o in tombs])
            rows = con.execute("SELECT t.new, b.erased_at, b.reason FROM tombstones b JOIN _rekey_tomb t "
                               "ON b.participant = t.old").fetchall()
            con.execute("DELETE FROM tombstones WHERE participant IN (SELECT old FROM _rekey_tomb)")
            con.executemany("INSERT INTO tombstones VALUES (?, ?, ?)", [list(r) for r in rows])
            con.execute("DROP TABLE _rekey_tomb")
        before, after = reseal_chain(con, mapping)
        con.execute("DROP TABLE _rekey_map")
        now = datetime.now(UTC)
        con.execute("UPDATE pseudonym_keys SET retired_at = ? WHERE retired_at IS NULL", [now])
        con.execute("INSERT INTO pseudonym_keys VALUES (?, ?, NULL) ON CONFLICT (fingerprint) DO UPDATE "
                    "SET activated_at = excluded.activated_at, retired_at = NULL", [new_fp, now])
        rekey_id = f"rekey-{uuid.uuid4().hex[:16]}"
        con.execute("INSERT INTO rekey_log VALUES (?,?,?,?,?,?,?,?,?)",
                    [rekey_id, now, old_fp, new_fp, len(present), sum(updated.values()), before, after,
                     json.dumps({"rows_updated": updated, "tombstones": len(tombs)}, sort_keys=True)])
    return RekeyReport(rekey_id, old_fp, new_fp, len(present), updated, len(tombs), before, after)
