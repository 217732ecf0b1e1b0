"""The budget ledger: conversions, refusal before noise, nothing written on refusal, spent <= total always,
and real concurrent processes cannot together overspend."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.warehouse import MIGRATIONS_DIR
from privacy.budget import Spend, budget_json, epsilon_to_rho, reserve, rho_to_epsilon
from schemas.privacy_values import PrivacyLoss
from privacy.errors import BudgetExceeded, InvalidPrivacyParameter, PrivacyError

from tests.support import REPO as ROOT  # noqa: E402


def _counts(con):
    return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("privacy_budgets", "privacy_ledger", "releases", "release_values"))


def test_bun_steinke_conversion():
    # rho-zCDP => (rho + 2 sqrt(rho ln(1/delta)), delta)-DP (Bun & Steinke 2016, Prop. 1.3)
    assert rho_to_epsilon(0.5, 1e-6) == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e6)))
    for eps in (0.1, 1.0, 4.0, 10.0):
        rho = epsilon_to_rho(eps, 1e-6)
        assert rho_to_epsilon(rho, 1e-6) <= eps
        assert rho_to_epsilon(rho, 1e-6) == pytest.approx(eps, rel=1e-12)


def test_overrun_is_refused_and_nothing_written(warehouse):
    _, con = warehouse
    reserve(con, "s", [Spend("q1", "gaussian", 1.0, 1.0, PrivacyLoss(rho=0.01))], epsilon_total=1.0, delta=1e-6)
    before = _counts(con)
    rho_total = epsilon_to_rho(1.0, 1e-6)
    with pytest.raises(BudgetExceeded, match="refused before any noise"):
        reserve(con, "s", [Spend("q2", "gaussian", 1.0, 1.0, PrivacyLoss(rho=rho_total))], epsilon_total=1.0, delta=1e-6)
    assert _counts(con) == before


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf")])
def test_bad_loss_is_refused_and_nothing_written(warehouse, bad):
    _, con = warehouse
    with pytest.raises(InvalidPrivacyParameter):
        reserve(con, "s", [Spend("q", "gaussian", 1.0, 1.0, PrivacyLoss(rho=bad))], epsilon_total=1.0, delta=1e-6)
    with pytest.raises(InvalidPrivacyParameter):
        reserve(con, "s", [Spend("q", "laplace", 1.0, 1.0, PrivacyLoss(epsilon=bad))], epsilon_total=1.0, delta=1e-6,
                accounting="pure")
    with pytest.raises(InvalidPrivacyParameter):
        reserve(con, "s", [Spend("q", "laplace", 1.0, 1.0, PrivacyLoss(epsilon=0.1))], epsilon_total=bad, delta=1e-6)
    assert _counts(con) == (0, 0, 0, 0)


def test_gaussian_refused_under_pure_budget(warehouse):
    _, con = warehouse
    with pytest.raises(PrivacyError, match="no pure-DP guarantee"):
        reserve(con, "s", [Spend("q", "gaussian", 1.0, 1.0, PrivacyLoss(rho=0.01))], epsilon_total=1.0, delta=0, accounting="pure")
    assert _counts(con) == (0, 0, 0, 0)


def test_budget_json_shape(warehouse):
    _, con = warehouse
    reserve(con, "s", [Spend("q", "laplace", 1.0, 1.0, PrivacyLoss(epsilon=0.25))], epsilon_total=1.0, delta=0.0, accounting="pure")
    assert budget_json(con) == {"s": {"epsilon_total": 1.0, "epsilon_spent": 0.25, "releases": 1}}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(min_value=1e-4, max_value=0.6), min_size=1, max_size=12),
       st.sampled_from(["zcdp", "pure"]))
def test_ledger_invariant_spent_never_exceeds_total(tmp_path_factory, costs, accounting):
    """Under any sequence of requests: spent <= total, and spent is exactly the sum of the accepted requests."""
    import duckdb

    con = duckdb.connect()
    for migration in ("0020_privacy.sql", "0060_privacy_values.sql"):
        con.execute((MIGRATIONS_DIR / migration).read_text())
    eps_total, delta = 1.0, 1e-6
    accepted = []
    for c in costs:
        spend = Spend("q", "laplace", 1.0, 1.0, PrivacyLoss(epsilon=c)) if accounting == "pure" else \
            Spend("q", "gaussian", 1.0, 1.0, PrivacyLoss(rho=c / 10))
        try:
            reserve(con, "s", [spend], epsilon_total=eps_total, delta=delta if accounting == "zcdp" else 0.0,
                    accounting=accounting)
            accepted.append(spend.charge(accounting).value)
        except BudgetExceeded:
            pass
        row = con.execute("SELECT rho_total, rho_spent, epsilon_spent_pure, releases FROM privacy_budgets").fetchone()
        if row is None:  # every request so far refused: a refusal writes nothing, not even the budget row
            assert not accepted
            continue
        total, spent = (row[0], row[1]) if accounting == "zcdp" else (eps_total, row[2])
        assert spent <= total * (1 + 1e-12)
        assert spent == pytest.approx(math.fsum(accepted))
        assert row[3] == len(accepted)
        status = budget_json(con)["s"]
        assert status["epsilon_spent"] <= status["epsilon_total"] * (1 + 1e-12)
    con.close()


WORKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from flows.warehouse import connect
    from privacy.budget import Spend, reserve
    from privacy.errors import BudgetExceeded
    from schemas.privacy_values import PrivacyLoss
    path, rho, start = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    con = connect(path, wait_seconds=120)
    try:
        reserve(con, "race", [Spend("q", "gaussian", 1.0, 1.0, PrivacyLoss(rho=rho))], epsilon_total=1.0, delta=1e-6)
        print("ok")
    except BudgetExceeded:
        print("refused")
    finally:
        con.close()
""")


def test_concurrent_processes_cannot_overspend(tmp_path):
    """N processes each ask for more than budget/N at the same instant: total spend stays <= budget."""
    import time

    from flows.warehouse import connect

    path = tmp_path / "race.duckdb"
    connect(path).close()
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    n = 4
    rho_total = epsilon_to_rho(1.0, 1e-6)
    ask = rho_total / n * 1.6  # more than a fair share: at most 2 can fit
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, str(script), str(path), repr(ask), repr(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = [p.communicate(timeout=180) for p in procs]
    results = [o[0].strip() for o in outs]
    assert all(r in ("ok", "refused") for r in results), outs
    con = connect(path)
    spent, total, releases = con.execute("SELECT rho_spent, rho_total, releases FROM privacy_budgets").fetchone()
    entries = con.execute("SELECT count(*), sum(rho) FROM privacy_ledger").fetchone()
    con.close()
    assert results.count("ok") == 2 and results.count("refused") == 2
    assert spent <= total
    assert releases == entries[0] == 2 and entries[1] == pytest.approx(spent)


def test_two_connections_in_one_process_conflict_safely(tmp_path):
    """Same process, two connections racing on one file: optimistic concurrency cannot overspend either."""
    import threading

    import duckdb

    from flows.warehouse import connect

    path = tmp_path / "threads.duckdb"
    connect(path).close()
    db = duckdb.connect(str(path))
    rho_total = epsilon_to_rho(1.0, 1e-6)
    results: list[str] = []

    def worker():
        con = db.cursor()
        try:
            reserve(con, "t", [Spend("q", "gaussian", 1.0, 1.0, PrivacyLoss(rho=rho_total * 0.3))], epsilon_total=1.0, delta=1e-6)
            results.append("ok")
        except BudgetExceeded:
            results.append("refused")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent, total = db.execute("SELECT rho_spent, rho_total FROM privacy_budgets").fetchone()
    db.close()
    assert len(results) == 6 and results.count("ok") == 3 and spent <= total
