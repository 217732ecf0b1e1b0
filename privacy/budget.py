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
``finalize`` stays counted: the ledger errs on the side of having spent. A release that fails after reserving
but before any mechanism ran gives its reservation back (``cancel_reservation``); once noise has been drawn the
spend stays, published or not.

What the ledger records
-----------------------
Each spend carries a ``schemas.privacy_values.PrivacyLoss`` in the mechanism's own measure (zCDP rho for
Gaussian noise, pure epsilon for Laplace noise); the ledger stores it as it is (``loss_measure``,
``loss_value``, and the ``privacy_unit`` it holds for; migration 0060) next to what the study's budget was
charged in the budget's measure (``rho`` under zCDP accounting, ``epsilon`` under pure accounting). Refusals speak in epsilon, the unit of the protocol
and of ``flourish budget``.
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
from schemas.privacy_values import (
    PrivacyLoss,
    PrivacyUnit,
    checked_delta,
    epsilon_to_rho,
    positive_finite,
    pure_to_rho,
    rho_to_epsilon,
)
from schemas.warehouse import transaction

__all__ = ["Accounting", "Mechanism", "Spend", "BudgetStatus", "budget_status", "budget_json", "reserve",
           "cancel_reservation", "finalize", "rho_to_epsilon", "epsilon_to_rho", "pure_to_rho", "budget_loss"]

Accounting = Literal["zcdp", "pure"]
Mechanism = Literal["gaussian", "laplace"]
_SLACK = 1e-12  # relative tolerance on "spent <= total" for floating-point sums


def budget_loss(epsilon_total: float, delta: float, accounting: Accounting) -> PrivacyLoss:
    """A study's whole budget in the ledger's measure: rho_total under zCDP (the largest rho whose Prop. 1.3
    conversion fits (epsilon_total, delta)), epsilon_total under pure accounting."""
    if accounting == "zcdp":
        return PrivacyLoss(rho=epsilon_to_rho(positive_finite("epsilon", epsilon_total), checked_delta(delta, allow_zero=False)))
    return PrivacyLoss(epsilon=positive_finite("epsilon", epsilon_total))


@dataclass(frozen=True)
class Spend:
    """One query's privacy cost, known before any noise is drawn.

    ``loss`` is what the mechanism's privacy map gave at the query's sensitivity, in the mechanism's own
    measure: zCDP rho for Gaussian noise, pure epsilon for Laplace noise. The ledger records it as it is
    (``loss_measure``, ``loss_value``) and charges the study's budget :meth:`charge`, the same loss in the
    budget's measure.
    """

    query: str
    mechanism: Mechanism
    noise_scale: float
    sensitivity: float
    loss: PrivacyLoss

    def __post_init__(self) -> None:
        if not isinstance(self.loss, PrivacyLoss):
            raise InvalidPrivacyParameter(f"the loss of query {self.query!r} must be a PrivacyLoss, got {self.loss!r}")
        expected = {"gaussian": "zCDP", "laplace": "pure"}.get(self.mechanism)
        if expected is None:
            raise PrivacyError(f"mechanism {self.mechanism!r} of query {self.query!r} must be 'gaussian' or 'laplace'")
        if self.loss.measure != expected:
            raise InvalidPrivacyParameter(
                f"query {self.query!r} uses {self.mechanism} noise, whose loss is {expected}, not {self.loss}")

    def charge(self, accounting: Accounting) -> PrivacyLoss:
        """The spend in the ledger's measure: rho under zcdp (a Laplace epsilon as epsilon^2 / 2, Prop. 1.4),
        epsilon under pure accounting (where Gaussian noise, which has no pure-DP guarantee, is refused)."""
        if accounting == "zcdp":
            return PrivacyLoss(rho=self.loss.as_rho())
        if self.mechanism == "gaussian":
            raise PrivacyError(
                f"query {self.query!r} uses Gaussian noise but the study's budget is pure epsilon-DP "
                "(mechanism: laplace); Gaussian noise has no pure-DP guarantee"
            )
        return self.loss


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
        rho_total = budget_loss(epsilon_total, delta, accounting).rho
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


def _refusal(study_id: str, accounting: Accounting, epsilon_total: float, delta: float, spent: float,
             charge: float, queries: int) -> BudgetExceeded:
    """The refusal in epsilon, the unit of the protocol and of ``flourish budget`` (the ledger's own unit, rho
    under zCDP, follows in brackets). Under zCDP epsilons do not add: the release's epsilon is the study's
    epsilon after it minus the epsilon before it."""
    if accounting == "zcdp":
        before, after = rho_to_epsilon(spent, delta), rho_to_epsilon(spent + charge, delta)
        ledger = f" (zCDP ledger: rho {spent:.6g} spent of {budget_loss(epsilon_total, delta, accounting).rho:.6g}, " \
                 f"this release {charge:.6g})"
        at = f" at delta {delta:g}"
    else:
        before, after, ledger, at = spent, spent + charge, "", ""
    left = max(0.0, epsilon_total - before)
    return BudgetExceeded(
        f"study {study_id!r} has epsilon {left:.6g} left of {epsilon_total:g}{at} and this release of {queries} "
        f"queries would spend epsilon {after - before:.6g}{ledger}; refused before any noise was drawn"
    )


def reserve(
    con: duckdb.DuckDBPyConnection,
    study_id: str,
    spends: list[Spend],
    *,
    epsilon_total: float,
    delta: float,
    accounting: Accounting = "zcdp",
    unit: PrivacyUnit = PrivacyUnit(),
    release_id: str | None = None,
    retries: int = 20,
) -> tuple[str, list[str]]:
    """Check and record ``spends`` atomically; return (release_id, ledger entry ids). No noise is drawn here.
    ``unit`` is the privacy unit the spends' losses hold for (the protocol's), recorded with each entry.

    Raises BudgetExceeded (nothing written) if the spends do not fit in what is left. Retries a transaction
    that lost a write conflict to a concurrent reservation in the same process.
    """
    if not spends:
        raise PrivacyError("a release needs at least one query")
    positive_finite("epsilon_total", epsilon_total)
    if accounting == "zcdp":
        checked_delta(delta, allow_zero=False)
    charges = [s.charge(accounting) for s in spends]  # validates every spend before the transaction
    total_charge = math.fsum(c.value for c in charges)
    release_id = release_id or f"rel-{uuid.uuid4().hex[:16]}"
    for attempt in range(retries + 1):
        try:
            with transaction(con):
                ids = _reserve_once(con, study_id, spends, charges, total_charge, float(epsilon_total), float(delta),
                                    accounting, unit, release_id)
            return release_id, ids
        except (duckdb.TransactionException, duckdb.ConstraintException):
            # lost a race with a concurrent reservation (write conflict, or both creating the budget row);
            # transaction() has rolled it back
            if attempt == retries:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def _reserve_once(con: duckdb.DuckDBPyConnection, study_id: str, spends: list[Spend], charges: list[PrivacyLoss],
                  total_charge: float, epsilon_total: float, delta: float, accounting: Accounting,
                  unit: PrivacyUnit, release_id: str) -> list[str]:
    _ensure_row(con, study_id, epsilon_total, delta, accounting)
    if con.execute("SELECT count(*) FROM privacy_ledger WHERE release_id = ?", [release_id]).fetchone()[0]:
        # a rerun of a planned release (flows/schedules.release_id): its budget was spent once already
        raise ReleaseAlreadyMade(f"release {release_id} of study {study_id!r} was already made; nothing was spent again")
    rho_total, rho_spent, eps_spent = con.execute(
        "SELECT rho_total, rho_spent, epsilon_spent_pure FROM privacy_budgets WHERE study_id = ?",
        [study_id]).fetchone()
    total, spent = (rho_total, rho_spent) if accounting == "zcdp" else (epsilon_total, eps_spent)
    if spent + total_charge > total * (1 + _SLACK):
        raise _refusal(study_id, accounting, epsilon_total, delta, spent, total_charge, len(spends))
    now = datetime.now(UTC)
    update = ("UPDATE privacy_budgets SET rho_spent = rho_spent + ?, releases = releases + 1, updated_at = ? "
              "WHERE study_id = ?") if accounting == "zcdp" else \
             ("UPDATE privacy_budgets SET epsilon_spent_pure = epsilon_spent_pure + ?, releases = releases + 1, "
              "updated_at = ? WHERE study_id = ?")
    con.execute(update, [total_charge, now, study_id])
    ids = []
    for s, charge in zip(spends, charges, strict=True):
        entry_id = f"spend-{uuid.uuid4().hex[:16]}"
        ids.append(entry_id)
        # rho: the zCDP charge (NULL under pure accounting); epsilon: the pure charge, or for a Gaussian query
        # the statement figure of its rho at the study's delta (per query; zCDP epsilons do not add)
        rho = charge.rho if accounting == "zcdp" else None
        eps = s.loss.as_epsilon(delta) if s.mechanism == "gaussian" else s.loss.epsilon
        con.execute(
            "INSERT INTO privacy_ledger (entry_id, study_id, release_id, query, mechanism, noise_scale, "
            "sensitivity, rho, epsilon, delta, status, reserved_at, loss_measure, loss_value, privacy_unit) "
            "VALUES (?,?,?,?,?,?,?,?,?,?, 'reserved', ?, ?, ?, ?)",
            [entry_id, study_id, release_id, s.query, s.mechanism, s.noise_scale, s.sensitivity, rho, eps,
             delta if s.mechanism == "gaussian" else 0.0, now, s.loss.measure, s.loss.value, unit.kind])
    return ids


def cancel_reservation(con: duckdb.DuckDBPyConnection, study_id: str, release_id: str) -> PrivacyLoss | None:
    """Give back a reservation whose release failed before any noise was drawn; return what was given back.

    Only entries still ``reserved`` are given back (a released entry's values exist). Drawing noise and not
    publishing it is not free in this ledger: the caller gives a reservation back only when no mechanism ran.
    """
    with transaction(con):
        accounting, = con.execute("SELECT accounting FROM privacy_budgets WHERE study_id = ?", [study_id]).fetchone()
        # the charge is the rho column under zCDP and the epsilon column under pure accounting (see _reserve_once)
        charged_sql = ("SELECT count(*), sum(rho) FROM privacy_ledger WHERE study_id = ? AND release_id = ? "
                       "AND status = 'reserved'") if accounting == "zcdp" else \
                      ("SELECT count(*), sum(epsilon) FROM privacy_ledger WHERE study_id = ? AND release_id = ? "
                       "AND status = 'reserved'")
        n, charged = con.execute(charged_sql, [study_id, release_id]).fetchone()
        if not n:
            return None
        update = ("UPDATE privacy_budgets SET rho_spent = greatest(0.0, rho_spent - ?), releases = releases - 1, "
                  "updated_at = ? WHERE study_id = ?") if accounting == "zcdp" else \
                 ("UPDATE privacy_budgets SET epsilon_spent_pure = greatest(0.0, epsilon_spent_pure - ?), "
                  "releases = releases - 1, updated_at = ? WHERE study_id = ?")
        con.execute(update, [charged, datetime.now(UTC), study_id])
        con.execute("DELETE FROM privacy_ledger WHERE study_id = ? AND release_id = ? AND status = 'reserved'",
                    [study_id, release_id])
    return PrivacyLoss(rho=charged) if accounting == "zcdp" else PrivacyLoss(epsilon=charged)


def finalize(con: duckdb.DuckDBPyConnection, entry_ids: list[str], values_sha256: str) -> None:
    """Mark reserved entries as released with the hash of the released values. Caller holds the transaction."""
    now = datetime.now(UTC)
    for entry_id in entry_ids:
        con.execute("UPDATE privacy_ledger SET status = 'released', released_at = ?, values_sha256 = ? "
                    "WHERE entry_id = ?", [now, values_sha256, entry_id])
