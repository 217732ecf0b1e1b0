"""The privacy budget ledger: the one place a study's spend is checked and recorded (STYLE.md, habit 5).

Accounting
----------
* ``zcdp`` (default, Gaussian noise): zero-concentrated DP composes by adding rho (Bun & Steinke 2016,
  Lemma 2.3). The study's (epsilon_total, delta) is turned into ``rho_total``, the largest rho whose conversion
  ``epsilon = rho + 2 sqrt(rho ln(1/delta))`` (Bun & Steinke 2016, Proposition 1.3) is at most epsilon_total.
  A Laplace (pure epsilon-DP) release costs ``epsilon^2 / 2`` rho (same paper, Proposition 1.4).
* ``pure`` (protocol ``mechanism: laplace``): epsilons add (basic composition); Gaussian releases are refused.

Reserve, then release
---------------------
``reserve`` checks and records the spend in ONE transaction that also bumps the study's row in
``privacy_budgets``: two transactions racing in one process conflict on that row (DuckDB's optimistic
concurrency aborts one), and two processes cannot both hold the file for writing (DuckDB takes a file lock;
``flows.warehouse.connect`` waits for it). Only after the reservation commits is noise drawn; ``finalize``
then marks the entries released with the hash of the values. A reservation whose process dies before
``finalize`` stays counted: the ledger errs on the side of having spent.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import duckdb

from privacy.errors import BudgetExceeded, InvalidPrivacyParameter, PrivacyError, ReleaseAlreadyMade

Accounting = Literal["zcdp", "pure"]
Mechanism = Literal["gaussian", "laplace"]
_SLACK = 1e-12  # relative tolerance on "spent <= total" for floating-point sums


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK if a transaction is still open (a failed COMMIT has already ended it)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass


def _check_positive(name: str, value: float) -> float:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidPrivacyParameter(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_delta(delta: float) -> float:
    if not isinstance(delta, int | float) or not (0 < delta < 1):
        raise InvalidPrivacyParameter(f"delta must be in (0, 1) for zCDP accounting, got {delta!r}")
    return float(delta)


def rho_to_epsilon(rho: float, delta: float) -> float:
    """(epsilon, delta)-DP implied by rho-zCDP: rho + 2 sqrt(rho ln(1/delta)) (Bun & Steinke 2016, Prop. 1.3)."""
    if rho == 0:
        return 0.0
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def epsilon_to_rho(epsilon: float, delta: float) -> float:
    """Largest rho with rho_to_epsilon(rho, delta) <= epsilon: (sqrt(ln(1/delta) + epsilon) - sqrt(ln(1/delta)))^2."""
    _check_positive("epsilon", epsilon)
    _check_delta(delta)
    log_term = math.log(1.0 / delta)
    rho = (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2
    while rho_to_epsilon(rho, delta) > epsilon:  # guard the last ulp
        rho = math.nextafter(rho, 0.0)
    return rho


def pure_to_rho(epsilon: float) -> float:
    """epsilon-DP implies (epsilon^2 / 2)-zCDP (Bun & Steinke 2016, Prop. 1.4)."""
    return 0.5 * epsilon * epsilon


@dataclass(frozen=True)
class Spend:
    """One query's privacy cost, known before any noise is drawn."""

    query: str
    mechanism: Mechanism
    noise_scale: float
    sensitivity: float
    rho: float | None = None      # gaussian
    epsilon: float | None = None  # laplace

    def cost(self, accounting: Accounting) -> float:
        """The spend in the ledger's unit: rho under zcdp, epsilon under pure."""
        if self.mechanism == "gaussian":
            if accounting == "pure":
                raise PrivacyError(
                    f"query {self.query!r} uses Gaussian noise but the study's budget is pure epsilon-DP "
                    "(mechanism: laplace); Gaussian noise has no pure-DP guarantee"
                )
            return _check_positive(f"rho of query {self.query!r}", self.rho)
        eps = _check_positive(f"epsilon of query {self.query!r}", self.epsilon)
        return eps if accounting == "pure" else pure_to_rho(eps)


@dataclass(frozen=True)
class BudgetStatus:
    study_id: str
    accounting: Accounting
    epsilon_total: float
    delta: float
    rho_total: float | None
    rho_spent: float
    epsilon_spent: float
    releases: int

    @property
    def epsilon_remaining(self) -> float:
        return max(0.0, self.epsilon_total - self.epsilon_spent)


def _status_from_row(row: tuple) -> BudgetStatus:
    study_id, accounting, eps_total, delta, rho_total, rho_spent, eps_pure, releases = row
    eps_spent = eps_pure if accounting == "pure" else rho_to_epsilon(rho_spent, delta)
    if eps_total < eps_spent <= eps_total * (1 + 1e-9):  # float noise of the conversion at a full budget
        eps_spent = eps_total
    return BudgetStatus(study_id, accounting, eps_total, delta, rho_total, rho_spent, eps_spent, int(releases))


_STATUS_SQL = ("SELECT study_id, accounting, epsilon_total, delta, rho_total, rho_spent, epsilon_spent_pure, releases "
               "FROM privacy_budgets")


def budget_status(con: duckdb.DuckDBPyConnection, study_id: str | None = None) -> dict[str, BudgetStatus]:
    sql, params = (_STATUS_SQL + " WHERE study_id = ?", [study_id]) if study_id else (_STATUS_SQL, [])
    return {r[0]: _status_from_row(r) for r in con.execute(sql + " ORDER BY study_id", params).fetchall()}


def budget_json(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, float | int]]:
    """Exactly ``{"<study_id>": {"epsilon_total": x, "epsilon_spent": y, "releases": n}}``."""
    return {s: {"epsilon_total": b.epsilon_total, "epsilon_spent": b.epsilon_spent, "releases": b.releases}
            for s, b in budget_status(con).items()}


def _ensure_row(con: duckdb.DuckDBPyConnection, study_id: str, epsilon_total: float, delta: float,
                accounting: Accounting) -> None:
    row = con.execute("SELECT accounting, epsilon_total, delta FROM privacy_budgets WHERE study_id = ?",
                      [study_id]).fetchone()
    if row is None:
        rho_total = epsilon_to_rho(epsilon_total, delta) if accounting == "zcdp" else None
        now = datetime.now(UTC)
        con.execute(
            "INSERT INTO privacy_budgets (study_id, accounting, epsilon_total, delta, rho_total, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?)", [study_id, accounting, epsilon_total, delta, rho_total, now, now])
        return
    if (row[0], row[1], row[2]) != (accounting, epsilon_total, delta):
        raise PrivacyError(
            f"study {study_id!r} already has a budget of epsilon={row[1]}, delta={row[2]} ({row[0]} accounting); "
            f"the protocol now asks for epsilon={epsilon_total}, delta={delta} ({accounting}); a study's budget "
            "is fixed at its first release"
        )


def reserve(
    con: duckdb.DuckDBPyConnection,
    study_id: str,
    spends: list[Spend],
    *,
    epsilon_total: float,
    delta: float,
    accounting: Accounting = "zcdp",
    release_id: str | None = None,
    retries: int = 20,
) -> tuple[str, list[str]]:
    """Check and record ``spends`` atomically; return (release_id, ledger entry ids). No noise is drawn here.

    Raises BudgetExceeded (nothing written) if the spends do not fit in what is left. Retries a transaction
    that lost a write conflict to a concurrent reservation in the same process.
    """
    if not spends:
        raise PrivacyError("a release needs at least one query")
    _check_positive("epsilon_total", epsilon_total)
    if accounting == "zcdp":
        _check_delta(delta)
    costs = [s.cost(accounting) for s in spends]  # validates every spend before the transaction
    total_cost = math.fsum(costs)
    release_id = release_id or f"rel-{uuid.uuid4().hex[:16]}"
    for attempt in range(retries + 1):
        con.execute("BEGIN TRANSACTION")
        try:
            _ensure_row(con, study_id, float(epsilon_total), float(delta), accounting)
            if con.execute("SELECT count(*) FROM privacy_ledger WHERE release_id = ?", [release_id]).fetchone()[0]:
                # a rerun of a planned release (flows/schedules.release_id): its budget was spent once already
                raise ReleaseAlreadyMade(f"release {release_id} of study {study_id!r} was already made; "
                                         "nothing was spent again")
            accounting_row, rho_total, rho_spent, eps_spent = con.execute(
                "SELECT accounting, rho_total, rho_spent, epsilon_spent_pure FROM privacy_budgets WHERE study_id = ?",
                [study_id]).fetchone()
            total, spent = (rho_total, rho_spent) if accounting_row == "zcdp" else (epsilon_total, eps_spent)
            if spent + total_cost > total * (1 + _SLACK):
                unit = "rho" if accounting_row == "zcdp" else "epsilon"
                raise BudgetExceeded(
                    f"study {study_id!r} has {max(0.0, total - spent):.6g} {unit} left of {total:.6g} and this release "
                    f"of {len(spends)} queries needs {total_cost:.6g}; refused before any noise was drawn"
                )
            now = datetime.now(UTC)
            col = "rho_spent" if accounting_row == "zcdp" else "epsilon_spent_pure"
            con.execute(
                f"UPDATE privacy_budgets SET {col} = {col} + ?, releases = releases + 1, updated_at = ? "
                "WHERE study_id = ?", [total_cost, now, study_id])
            ids = []
            for s in spends:
                entry_id = f"spend-{uuid.uuid4().hex[:16]}"
                ids.append(entry_id)
                rho = s.rho if s.mechanism == "gaussian" else (pure_to_rho(s.epsilon) if accounting == "zcdp" else None)
                eps = s.epsilon if s.mechanism == "laplace" else rho_to_epsilon(s.rho, delta)
                con.execute(
                    "INSERT INTO privacy_ledger (entry_id, study_id, release_id, query, mechanism, noise_scale, "
                    "sensitivity, rho, epsilon, delta, status, reserved_at) VALUES (?,?,?,?,?,?,?,?,?,?, 'reserved', ?)",
                    [entry_id, study_id, release_id, s.query, s.mechanism, s.noise_scale, s.sensitivity, rho, eps,
                     delta if s.mechanism == "gaussian" else 0.0, now])
            con.execute("COMMIT")
            return release_id, ids
        except (duckdb.TransactionException, duckdb.ConstraintException):
            # lost a race with a concurrent reservation (write conflict, or both creating the budget row)
            rollback_quietly(con)
            if attempt == retries:
                raise
            time.sleep(0.01 * (attempt + 1))
        except BaseException:
            rollback_quietly(con)
            raise
    raise AssertionError("unreachable")


def finalize(con: duckdb.DuckDBPyConnection, entry_ids: list[str], values_sha256: str) -> None:
    """Mark reserved entries as released with the hash of the released values. Caller holds the transaction."""
    now = datetime.now(UTC)
    for entry_id in entry_ids:
        con.execute("UPDATE privacy_ledger SET status = 'released', released_at = ?, values_sha256 = ? "
                    "WHERE entry_id = ?", [now, values_sha256, entry_id])
