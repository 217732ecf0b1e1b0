"""Consent ledger (hash chain, tamper detection, redaction) and key rotation (one transaction, complete)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support.privacy import KEY, fill
from flows.privacy_flows import erase_participant, rekey_warehouse
from flows.warehouse import connect
from schemas.warehouse import participant_tables
from privacy.consent import append_consent, consent_status, sync_from_consents, verify_chain
from privacy.erasure import tombstone_token
from privacy.scrub import Needles, scan_bytes
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
    erase_participant(db, erased_raw, KEY, "withdrawn")
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


# ---- D14: the ledger hears of withdrawals that arrive through ingest; reading it writes nothing --------------

def test_withdrawals_arriving_through_ingest_reach_the_consent_ledger(tmp_path):
    """D14: the batch's erasure deleted the consents before the ledger was synced, so the demo's 58 withdrawals
    showed as 'withdrawn 0'. Now the erasure appends the withdrawn participant's consents first: the withdrawal is
    in the ledger (redacted) and counts; the others' grants wait for `consent sync`, and status says how many."""
    from flows.ingest import ingest_batch
    from flows.privacy_flows import consent_status as status_of
    from flows.privacy_flows import consent_sync
    from tests.support.privacy import ingest_protocol, write_landing

    db = tmp_path / "w.duckdb"
    ingest_batch(write_landing(tmp_path / "a", ["u-1", "u-2", "u-3"], withdrawn=("u-2",)), ingest_protocol(), db, KEY)
    status = status_of(db)
    assert status["chain_verified"] and status["redacted_entries"] == 4  # u-2's grant and withdrawal, per scope
    for scope in ("telemetry", "surveys"):
        assert status["scopes"][scope] == {"active": 0, "withdrawn": 1, "entries": 2}
    assert status["not_in_ledger"] == 4  # u-1's and u-3's grants, per scope
    assert consent_sync(db) == 4
    status = status_of(db)
    assert status["not_in_ledger"] == 0 and status["chain_verified"]
    assert status["scopes"]["surveys"] == {"active": 2, "withdrawn": 1, "entries": 4}
    # a withdrawal in a later batch reaches it too
    ingest_batch(write_landing(tmp_path / "b", ["u-3"], withdrawn=("u-3",), first_event=10), ingest_protocol(), db, KEY)
    assert status_of(db)["scopes"]["surveys"] == {"active": 1, "withdrawn": 2, "entries": 5}  # + its withdrawal


def test_consent_status_is_read_only(warehouse):
    """D14: `consent status` appended to the ledger; a status must be a read."""
    from flows.privacy_flows import consent_status as status_of

    path, con = warehouse
    fill(con, 5)
    con.close()
    before = path.read_bytes()
    status = status_of(path)
    assert status["entries"] == 0 and status["not_in_ledger"] == 10  # 5 participants x 2 scopes, pending
    assert path.read_bytes() == before


# ---- D11: a refused re-key says where the pseudonyms it cannot map are ------------------------------------

def test_rekey_refusal_names_the_table_and_row_kind_of_a_stray_pseudonym(warehouse):
    """D11: the quarantined assignment of an id that was never enrolled blocked rekey with no hint where."""
    _, con = warehouse
    ids = fill(con, 4)
    stray = pseudonymize("u-not-enrolled", KEY)
    con.execute("INSERT INTO quarantine VALUES ('b1', 'assignments', 'assignments.jsonl', 9, 'unknown_arm', 'x', ?, "
                "NULL, NULL)", [stray])
    with pytest.raises(RekeyError) as refused:
        rekey(con, KEY, NEW_KEY, list(ids))
    text = str(refused.value)
    assert "1 pseudonyms" in text and "1 in quarantine (assignments rows quarantined as unknown_arm)" in text
    assert "u-not-enrolled" not in text and stray not in text and "nothing was changed" in text


def test_rekey_refusal_describes_the_tombstones_it_cannot_rekey(warehouse):
    """D11: a tombstone whose raw id is not in the list blocked rekey; the refusal says when and why it was written."""
    _, con = warehouse
    ids = fill(con, 4)
    con.execute("INSERT INTO tombstones VALUES (?, TIMESTAMPTZ '2026-03-01 10:00:00+00', 'erasure_request')",
                [tombstone_token(pseudonymize("no-such-participant", KEY))])
    with pytest.raises(RekeyError, match=r"1 tombstones .* erased 2026-03-01 10:00 UTC \(erasure_request\)"):
        rekey(con, KEY, NEW_KEY, list(ids))
