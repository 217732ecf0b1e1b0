"""`flourish compact` (D10): a withdrawal that arrives in a later batch is erased in that batch's transaction,
but DuckDB keeps the deleted rows' bytes in free blocks; compaction removes them and the erasure log says which
erasures are compacted."""

from __future__ import annotations

import json

import duckdb
from typer.testing import CliRunner

from flows.ingest import ingest_batch
from privacy.pseudonym import pseudonymize
from tests.support.privacy import KEY, ingest_protocol, write_landing
from tests.support.spine import consent, write_jsonl


def test_compact_removes_the_bytes_a_later_batch_withdrawal_leaves(tmp_path):
    from flows import cli

    db = tmp_path / "w" / "w.duckdb"
    ids = [f"u-{i}" for i in range(40)]
    ingest_batch(write_landing(tmp_path / "a", ids), ingest_protocol(), db, KEY)
    later = tmp_path / "b"
    later.mkdir()
    write_jsonl(later / "consents-withdrawal.jsonl", [consent("u-7", withdrawn="2026-02-01T00:00:00Z")])
    rec = ingest_batch(later, ingest_protocol(), db, KEY)
    assert rec.erased and rec.erased.rows_deleted > 0
    pseudonym = pseudonymize("u-7", KEY).encode()
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT count(*) FROM events WHERE participant = ?", [pseudonym.decode()]).fetchone()[0] == 0
        con.execute("CHECKPOINT")
    assert pseudonym in db.read_bytes()  # erased in SQL, still in the file's free blocks

    r = CliRunner().invoke(cli.app, ["compact", "--warehouse", str(db), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["erasures_compacted"] == 1
    assert pseudonym not in db.read_bytes()
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM erasure_log WHERE compacted_at IS NULL").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 39  # nobody else lost anything


def test_compact_has_help_a_newcomer_understands():
    from flows import cli

    r = CliRunner().invoke(cli.app, ["compact", "--help"])
    assert r.exit_code == 0 and "withdrawal" in r.stdout and "bytes" in r.stdout
