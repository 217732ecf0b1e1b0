"""Consent ledger (hash chain, tamper detection, redaction) and key rotation (one transaction, complete)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support.privacy import KEY, fill
from flows.privacy_flows import erase_participant, rekey_warehouse
from flows.warehouse import connect
from schemas.warehouse import participant_tables
from privacy.consent import append_consent, consent_status, sync_from_consents, verify_chain
from privacy.erasure import Needles, scan_bytes, tombstone_token
from privacy.errors import PrivacyError, RekeyError
from privacy.pseudonym import pseudonymize
from privacy.pseudonym import check_active_key, key_fingerprint
from privacy.rekey import rekey

NEW_KEY = b"new-key-fedcba9876543210"


def test_chain_verifies_and_detects_every_kind_of_tampering(warehouse):
    _, con = warehouse
    ids = fill(con, 6)
    assert sync_from_consents(con) == 12  # 6 participants x 2 scopes
    assert sync_from_consents(con) == 0   # idempotent
    p = next(iter(ids.values()))
    append_consent(con, p, "telemetry", "v1", "withdraw", datetime(2026, 3, 1, tzinfo=UTC))
    assert verify_chain(con).verified
    status = consent_status(con)
    assert status["scopes"]["telemetry"] == {"active": 5, "withdrawn": 1, "entries": 7}
    assert status["chain_verified"]

    for sql, seq in [
        ("UPDATE consent_ledger SET action = 'grant' WHERE seq = 13", 13),            # edit content
        ("UPDATE consent_ledger SET participant = (SELECT participant FROM consent_ledger WHERE seq = 1) "
         "WHERE seq = 5", 5),                                                           # swap subject
        ("DELETE FROM consent_ledger WHERE seq = 4", 5),                               # delete an entry
    ]:
        con.execute("BEGIN TRANSACTION")
        con.execute(sql)
        report = verify_chain(con)
        con.execute("ROLLBACK")
        assert not report.verified and report.first_bad_seq == seq, sql
    assert verify_chain(con).verified


def test_unknown_scope_and_naive_time_are_refused(warehouse):
    _, con = warehouse
    with pytest.raises(PrivacyError, match="scope"):
        append_consent(con, "p" * 64, "marketing", "v1")
    with pytest.raises(PrivacyError, match="time zone"):
        append_consent(con, "p" * 64, "surveys", "v1", effective_at=datetime(2026, 1, 1))
    assert con.execute("SELECT count(*) FROM consent_ledger").fetchone()[0] == 0


def test_rekey_rewrites_every_table_and_keeps_chain_and_tombstones(tmp_path):
    db = tmp_path / "study" / "w.duckdb"
    con = connect(db)
    ids = fill(con, 12)
    check_active_key(con, KEY)
    sync_from_consents(con)
    con.close()
    erased_raw = "raw-0003"
    erase_participant(db, ids[erased_raw], "withdrawn", raw_id=erased_raw)
    report = rekey_warehouse(db, KEY, NEW_KEY, list(ids))
    assert report.participants == 11 and report.tombstones_rekeyed == 1
    assert report.old_fingerprint == key_fingerprint(KEY) and report.new_fingerprint == key_fingerprint(NEW_KEY)
    con = connect(db)
    new = {r: pseudonymize(r, NEW_KEY) for r in ids}
    for t in participant_tables(con):
        if t in ("tombstones",):
            continue
        present = {p for (p,) in con.execute(f"SELECT DISTINCT participant FROM {t} WHERE participant IS NOT NULL").fetchall()}
        assert present <= set(new.values()), t
    assert con.execute("SELECT participant FROM tombstones").fetchall() == [(tombstone_token(new[erased_raw]),)]
    assert verify_chain(con).verified
    assert con.execute("SELECT count(*) FROM pseudonym_keys WHERE retired_at IS NULL").fetchone()[0] == 1
    con.close()
    # no old pseudonym survives in any byte of the study folder (compaction after re-keying)
    for r, old in ids.items():
        assert scan_bytes(db.parent, Needles(old)) == [], r


def test_rekey_refuses_an_incomplete_id_list_and_changes_nothing(warehouse):
    _, con = warehouse
    ids = fill(con, 8)
    before = con.execute("SELECT participant FROM assignments ORDER BY 1").fetchall()
    with pytest.raises(RekeyError, match="not HMAC"):
        rekey(con, KEY, NEW_KEY, list(ids)[:-1], participant_tables=participant_tables(con))
    with pytest.raises(RekeyError, match="same as the old"):
        rekey(con, KEY, KEY, list(ids), participant_tables=participant_tables(con))
    check_active_key(con, KEY)
    with pytest.raises(RekeyError, match="not the warehouse's active key"):
        rekey(con, b"some-other-key-000000", NEW_KEY, list(ids), participant_tables=participant_tables(con))
    assert con.execute("SELECT participant FROM assignments ORDER BY 1").fetchall() == before
    assert con.execute("SELECT count(*) FROM rekey_log").fetchone()[0] == 0
