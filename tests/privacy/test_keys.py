"""The pseudonym key: the warehouse records its active key's fingerprint, and ingest and erase refuse any other
key (D1); a key file that is not text, or is a folder, is one sentence (D23)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows.ingest import ingest_batch
from flows.privacy_flows import rekey_warehouse
from privacy.pseudonym import PseudonymKeyError, load_key, pseudonymize
from schemas.protocol import StudyProtocol
from tests.support.privacy import ingest_protocol, write_landing

KEY = b"key-test-old-0123456789"
NEW_KEY = b"key-test-new-9876543210"


def _protocol() -> StudyProtocol:
    return ingest_protocol()


def _landing(folder: Path, ids: list[str], first_event: int = 0) -> Path:
    return write_landing(folder, ids, first_event=first_event)


def _participants(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {p for (p,) in con.execute("SELECT participant FROM events UNION SELECT participant FROM consents")
                .fetchall()}


def test_ingest_refuses_a_key_retired_by_rekey_and_stores_nothing(tmp_path):
    """D1: after `rekey`, an ingest with the old key would give the same person a second pseudonym."""
    ids = ["u-1", "u-2"]
    db = tmp_path / "w" / "w.duckdb"
    ingest_batch(_landing(tmp_path / "a", ids), _protocol(), db, KEY)
    rekey_warehouse(db, KEY, NEW_KEY, ids)
    before = _participants(db)
    with pytest.raises(Exception) as refused:
        ingest_batch(_landing(tmp_path / "b", ids, first_event=10), _protocol(), db, KEY)
    from privacy.errors import KeyNotActive

    assert isinstance(refused.value, KeyNotActive), refused.value
    assert "retired" in str(refused.value) and "active key" in str(refused.value)
    assert _participants(db) == before == {pseudonymize(p, NEW_KEY) for p in ids}


def test_ingest_records_the_key_it_first_runs_with_and_refuses_another(tmp_path):
    """D1: the first ingest records the key's fingerprint; a different key is refused before anything is stored."""
    from privacy.errors import KeyNotActive
    from privacy.pseudonym import key_fingerprint

    db = tmp_path / "w" / "w.duckdb"
    ingest_batch(_landing(tmp_path / "a", ["u-1"]), _protocol(), db, KEY)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT fingerprint FROM pseudonym_keys WHERE retired_at IS NULL").fetchall() == [
            (key_fingerprint(KEY),)]
    before = _participants(db)
    with pytest.raises(KeyNotActive, match="not the warehouse's active key"):
        ingest_batch(_landing(tmp_path / "b", ["u-2"]), _protocol(), db, b"another-study-key-000000")
    assert _participants(db) == before


def test_the_first_key_is_recorded_in_the_callers_transaction(tmp_path):
    """The fingerprint is written in the caller's transaction (the ingest's batch): a batch that fails and rolls
    back leaves no key behind, so a first ingest with a wrong key cannot lock the warehouse to it."""
    from flows.warehouse import connect
    from privacy.pseudonym import check_active_key

    con = connect(tmp_path / "w.duckdb")
    con.execute("BEGIN TRANSACTION")
    check_active_key(con, KEY)
    con.execute("ROLLBACK")
    assert con.execute("SELECT count(*) FROM pseudonym_keys").fetchone()[0] == 0
    con.close()


def test_erase_with_a_key_that_is_not_the_active_one_is_refused(tmp_path):
    """D1: `erase` with the old key after `rekey` exits 2 and changes nothing."""
    from flows import cli

    ids = ["u-1", "u-2"]
    db = tmp_path / "w" / "w.duckdb"
    ingest_batch(_landing(tmp_path / "a", ids), _protocol(), db, KEY)
    rekey_warehouse(db, KEY, NEW_KEY, ids)
    old = tmp_path / "old.key"
    old.write_bytes(KEY)
    r = CliRunner().invoke(cli.app, ["erase", "u-1", "--warehouse", str(db), "--key-file", str(old), "--json"])
    assert r.exit_code == 2, r.output
    assert "active key" in r.stderr and "Traceback" not in r.output
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 2


@pytest.mark.parametrize("make", ["binary", "directory"])
def test_a_key_file_that_is_not_a_text_file_is_one_sentence(tmp_path, make):
    """D23: a binary key file or a folder given as the key file: one sentence naming the file and the problem."""
    from flows import cli

    key_file = tmp_path / "key"
    if make == "binary":
        key_file.write_bytes(bytes(range(256)))
        expected = "not UTF-8 text"
    else:
        key_file.mkdir()
        expected = "is a directory"
    with pytest.raises(PseudonymKeyError, match=expected):
        load_key(key_file)
    db = tmp_path / "w.duckdb"
    from flows.warehouse import connect

    connect(db).close()
    r = CliRunner().invoke(cli.app, ["erase", "u-1", "--warehouse", str(db), "--key-file", str(key_file)])
    assert r.exit_code == 2 and expected in r.stderr, r.output
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.output


def test_key_file_text_is_the_key(tmp_path):
    """The documented definition still holds: surrounding whitespace of the file's text is stripped."""
    key_file = tmp_path / "k"
    key_file.write_text("  " + KEY.decode() + "\n")
    assert load_key(key_file) == KEY
    assert json.loads(json.dumps(pseudonymize("u-1", load_key(key_file)))) == pseudonymize("u-1", KEY)
