"""Erasure defined once (issue 15): ``erase_rows`` (one request) and ``erase_withdrawn`` (a batch's withdrawals)
are one set-based core, so they leave the same warehouse; and erasure is complete, whatever the warehouse holds:
no table's participant column, no text column anywhere and no ledger entry names an erased participant, every
one of them has a tombstone, and nobody else is touched."""

from __future__ import annotations

import ast
import json

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy.consent import sync_from_consents, verify_chain
from privacy.erasure import erase_rows, erase_withdrawn, tombstone_token
from privacy.pseudonym import pseudonymize
from schemas.warehouse import MIGRATIONS_DIR, table_names
from tests.support import REPO
from tests.support.privacy import KEY, T0

VOLATILE = {"erasure_log", "schema_migrations"}  # ids and times differ between two runs by design


def _warehouse() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        con.execute(path.read_text())
    return con


def _fill(con: duckdb.DuckDBPyConnection, n: int, withdrawn: set[int], mentions: list[tuple[int, int]]) -> list[str]:
    """n participants; those in ``withdrawn`` have a withdrawal; ``mentions`` (i, j) puts i's pseudonym in text
    columns of one of j's rows (inside a quarantine message and payload, and as the whole payload_file value) to
    exercise the sweep of text columns."""
    ids = [pseudonymize(f"raw-{i}", KEY) for i in range(n)]
    for i, p in enumerate(ids):
        con.execute("INSERT INTO consents VALUES (?,?,?,?,?,?,?,?,?)",
                    [p, "v1", ["surveys", "telemetry"], T0, T0 if i in withdrawn else None, f"h{i}", "b1", "c.jsonl", i])
        con.execute("INSERT INTO assignments VALUES (?, 's', 'control', ?, NULL, 'b1')", [p, T0])
        con.execute("INSERT INTO events VALUES (?, ?, 's', ?, 'sess', 'message', NULL, NULL, 'b1')", [f"e{i}", p, T0])
    for k, (i, j) in enumerate(mentions):  # the pseudonym as a whole value, and inside longer text
        con.execute("INSERT INTO quarantine VALUES ('b1', 'events', 'e.jsonl', ?, 'duplicate', ?, ?, ?, ?)",
                    [k, f"also seen as {ids[i % n]}", ids[j % n], json.dumps({"other": ids[i % n]}), ids[i % n]])
    sync_from_consents(con)
    return ids


def _state(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    out = {}
    for t in table_names(con):
        if t in VOLATILE:
            continue
        cols = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                          "AND column_name NOT IN ('subject_salt', 'subject_commit', 'prev_hash', "
                                          "'entry_hash', 'recorded_us', 'erased_at')", [t]).fetchall()]
        out[t] = sorted(map(repr, con.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall()))
    return out


def _assert_complete(con: duckdb.DuckDBPyConnection, erased: list[str], kept: list[str]) -> None:
    for t in table_names(con):
        if t == "tombstones":
            continue
        for (text,) in con.execute(f"SELECT CAST(x AS VARCHAR) FROM {t} x").fetchall():
            assert not any(p in text for p in erased), t
    for p in erased:
        assert con.execute("SELECT count(*) FROM tombstones WHERE participant = ?", [tombstone_token(p)]).fetchone()[0] == 1
    for p in kept:
        assert con.execute("SELECT count(*) FROM assignments WHERE participant = ?", [p]).fetchone()[0] == 1
    assert verify_chain(con).verified


participants = st.integers(min_value=1, max_value=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_both_ways_in_leave_the_same_warehouse_and_erase_completely(data):
    n = data.draw(participants)
    withdrawn = data.draw(st.sets(st.integers(0, n - 1), min_size=1))
    mentions = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=4))
    by_batch, by_request = _warehouse(), _warehouse()
    ids_a = _fill(by_batch, n, withdrawn, mentions)
    ids_b = _fill(by_request, n, withdrawn, mentions)
    assert ids_a == ids_b
    by_batch.execute("BEGIN TRANSACTION")
    receipt = erase_withdrawn(by_batch)
    by_batch.execute("COMMIT")
    for i in sorted(withdrawn):
        erase_rows(by_request, ids_b[i], "withdrawn")
    assert receipt.participants == len(withdrawn)
    erased = [ids_a[i] for i in sorted(withdrawn)]
    kept = [p for i, p in enumerate(ids_a) if i not in withdrawn]
    for con in (by_batch, by_request):
        _assert_complete(con, erased, kept)
    assert _state(by_batch) == _state(by_request)
    assert erase_withdrawn(by_batch) is None  # tombstoned: nobody left to erase


def test_privacy_uses_the_one_transaction_helper():
    """No hand-written BEGIN/COMMIT/ROLLBACK in privacy/: schemas.warehouse.transaction holds every block."""
    found = []
    for path in sorted((REPO / "privacy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words = node.value.upper().split()
                if words and words[0] in ("BEGIN", "COMMIT", "ROLLBACK"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, found


def test_the_ledger_entry_of_a_withdrawal_keeps_its_time():
    """The batch-end sync records withdrawals with their own effective time (epoch microseconds, exactly)."""
    con = _warehouse()
    _fill(con, 1, {0}, [])
    assert con.execute("SELECT action, effective_us FROM consent_ledger WHERE scope = 'surveys' ORDER BY seq").fetchall() \
        == [("grant", int(T0.timestamp() * 1_000_000)), ("withdraw", int(T0.timestamp() * 1_000_000))]
