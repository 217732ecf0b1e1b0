"""Analysis flows: read the warehouse, call one pure function from ``analysis``, write the result.

Everything statistical lives in ``analysis/`` (the plan itself in ``analysis.plan``); this module enforces the
preregistration lock, has ``flows.statistics`` read the statistics, hands them to the plan, and stores the
outcome summary.

- :func:`preregister` / :func:`registry_history` / :func:`plan_lock`: the append-only, hash-chained
  ``plan_registry`` table (migration 0030).
- :func:`randomize_csv`: stratified permuted blocks for a participants CSV.
- :func:`srm_check`, :func:`baseline_balance`: on the ingested assignments and baseline scores.
- :func:`run_analysis`: the locked plan (``analysis.plan.run_plan``) on the trusted tier's statistics, or with
  ``tier="public"`` the noise-aware model on the latest DP releases only (``analysis.plan.run_public_plan``),
  into one :class:`OutcomeSummary`, stored in ``analysis_summary``; the divergence monitor's rows and the decision
  rule's verdicts of the same run in ``divergence_status`` and ``decision_table`` (migration 0090).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.errors import AnalysisRefused
from flows import statistics
from flows.statistics import OutcomeHasNoData
from schemas.errors import FlourishError

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import pandas as pd

    from analysis.plan import PlanResult
    from analysis.prereg import LockStatus, RegistryEntry
    from analysis.summary import OutcomeSummary
    from schemas.protocol import StudyProtocol

__all__ = [
    "AnalysisRefused",
    "AnalysisRun",
    "OutcomeHasNoData",
    "PlanNotLocked",
    "PreregistrationRefused",
    "RandomizationRefused",
    "baseline_balance",
    "plan_lock",
    "preregister",
    "randomize_csv",
    "registry_history",
    "run_analysis",
    "srm_check",
    "store_monitor",
    "store_summary",
]


# ----------------------------------------------------------------------------------------------
# Errors the CLI prints as one sentence (AnalysisRefused comes from analysis.errors: the plan raises it)
# ----------------------------------------------------------------------------------------------
class PreregistrationRefused(FlourishError):
    """The registry refused the entry (already locked, change without --deviation, broken chain)."""


class PlanNotLocked(FlourishError):
    """A confirmatory analysis was asked of a protocol that is not the locked plan."""


class RandomizationRefused(FlourishError):
    """The participants file cannot be randomized as given."""


# ----------------------------------------------------------------------------------------------
# Preregistration
# ----------------------------------------------------------------------------------------------
def registry_history(con: duckdb.DuckDBPyConnection, study_id: str) -> list[RegistryEntry]:
    """This study's registry entries in order; the chain is verified by the callers via analysis.prereg."""
    from analysis.prereg import RegistryEntry

    rows = con.execute(
        "SELECT study_id, seq, kind, plan_hash, recorded_at, reason, prev_entry_hash, entry_hash "
        "FROM plan_registry WHERE study_id = ? ORDER BY seq", [study_id]
    ).fetchall()
    out = []
    for r in rows:
        ts = r[4] if r[4].tzinfo is not None else r[4].replace(tzinfo=timezone.utc)
        out.append(RegistryEntry(r[0], int(r[1]), r[2], r[3], ts.astimezone(timezone.utc), r[5], r[6], r[7]))
    return out


def preregister(
    con: duckdb.DuckDBPyConnection,
    protocol: StudyProtocol,
    *,
    deviation_reason: str | None = None,
    now: datetime | None = None,
) -> RegistryEntry:
    """Lock the protocol's plan, or record a deviation from the locked plan; append-only."""
    from analysis.prereg import PreregistrationError, canonical_protocol, next_entry, plan_hash
    from schemas.warehouse import transaction

    recorded_at = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    with transaction(con):
        try:
            entry = next_entry(
                registry_history(con, protocol.study_id), study_id=protocol.study_id,
                new_plan_hash=plan_hash(protocol), recorded_at=recorded_at, deviation_reason=deviation_reason,
            )
        except PreregistrationError as exc:
            raise PreregistrationRefused(str(exc)) from None
        row = entry.as_row()
        con.execute(
            "INSERT INTO plan_registry (study_id, seq, kind, plan_hash, recorded_at, reason, prev_entry_hash, "
            "entry_hash, plan_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [row["study_id"], row["seq"], row["kind"], row["plan_hash"], row["recorded_at"], row["reason"],
             row["prev_entry_hash"], row["entry_hash"], canonical_protocol(protocol)],
        )
    return entry


def plan_lock(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> LockStatus:
    from analysis.prereg import PreregistrationError, lock_status

    try:
        return lock_status(registry_history(con, protocol.study_id), protocol)
    except PreregistrationError as exc:
        raise PreregistrationRefused(str(exc)) from None


# ----------------------------------------------------------------------------------------------
# Randomization, SRM, balance
# ----------------------------------------------------------------------------------------------
def randomize_csv(
    protocol: StudyProtocol, participants_csv: str | Path, out_csv: str | Path, *, seed: int,
    participant_col: str = "participant_id", block_multiplier: int = 1,
) -> pd.DataFrame:
    """Read participants (one row each, in enrolment order, with the protocol's strata columns),
    allocate them, write ``participant_id, study_id, arm, stratum, block``."""
    import pandas as pd

    from analysis.randomization import RandomizationError, block_randomize

    src = Path(participants_csv)
    if not src.is_file():
        raise RandomizationRefused(f"participants file {src} does not exist")
    try:
        people = pd.read_csv(src, dtype=str, keep_default_na=False)
        out = block_randomize(
            people, {a.name: a.allocation for a in protocol.arms}, seed=seed, strata=protocol.strata,
            participant_col=participant_col, block_multiplier=block_multiplier,
        )
    except (RandomizationError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RandomizationRefused(f"{src}: {exc}") from None
    out.insert(1, "study_id", protocol.study_id)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(out_csv, index=False)
    return out


def srm_check(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol):
    """Sample-ratio-mismatch test of the ingested assignments against the protocol's ratios."""
    from analysis.randomization import RandomizationError, srm_test

    counts = statistics.arm_counts(con, protocol)
    try:
        return srm_test(counts, {a.name: a.allocation for a in protocol.arms})
    except RandomizationError as exc:
        raise AnalysisRefused(f"sample-ratio check of {protocol.study_id}: {exc}") from None


def baseline_balance(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol) -> pd.DataFrame:
    """Per outcome x arm mean/SD of the baseline wave and SMD vs control, from GROUP BY moments."""
    from analysis.randomization import balance_from_moments

    return balance_from_moments(statistics.baseline_moments(con, protocol), control=protocol.control_arm)


# ----------------------------------------------------------------------------------------------
# The analysis run
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnalysisRun:
    run_id: str
    summary: OutcomeSummary
    lock: LockStatus
    exploratory: bool
    tipping_points: tuple = ()
    notes: tuple[str, ...] = ()
    results: dict = field(default_factory=dict, compare=False, repr=False)
    failed: tuple[str, ...] = ()  # outcomes whose model failed (their rows say why)
    divergence: tuple = ()  # analysis.divergence.DivergenceStatus rows
    decisions: tuple = ()  # analysis.decision.ArmDecision per treated arm

    @property
    def alerts(self) -> tuple[str, ...]:
        """One sentence per divergence (the pipeline's run record lists them)."""
        return tuple(s.alert for s in self.divergence if s.alert is not None)


def run_analysis(
    con: duckdb.DuckDBPyConnection,
    protocol: StudyProtocol,
    *,
    tier: str = "trusted",
    exploratory: bool = False,
    store: bool = True,
    fit: Callable[..., Any] | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
    now: datetime | None = None,
    calibration_study: str | None = None,
    surrogate_waves: Sequence[str] | None = None,
) -> AnalysisRun:
    """Run the preregistered plan against the warehouse and return (and store) the outcome summary.

    Refuses (raising a FlourishError, storing nothing) when the plan is not locked and ``exploratory`` is
    False, when an outcome the plan names has no rows, or when every outcome's model fails (one that fails
    is reported failed in its rows and notes while the others publish: ``analysis.plan``). ``fit`` defaults
    to ``analysis.longitudinal.fit_from_crossproducts`` (``analysis.public.fit_public`` for the public tier).
    """
    from analysis.plan import run_plan, run_public_plan

    if tier not in ("trusted", "public"):
        raise AnalysisRefused(f"tier must be 'trusted' or 'public', got {tier!r}")
    lock = plan_lock(con, protocol)
    if not lock.locked and not exploratory:
        raise PlanNotLocked(f"{lock.explanation}; preregister it, or run with --exploratory (labelled so in every row)")
    if tier == "public":
        result = run_public_plan(statistics.released_statistics(con, protocol), protocol, fit=fit, progress=progress)
    else:
        stats = statistics.plan_statistics(con, protocol, calibration_study=calibration_study,
                                           surrogate_waves=surrogate_waves)
        result = run_plan(stats, protocol, fit=fit, progress=progress)
    return _finish(con, protocol, lock, not lock.locked or exploratory, result, store=store, now=now)


def _finish(con, protocol: StudyProtocol, lock: LockStatus, exploratory: bool, result: PlanResult, *, store: bool,
            now: datetime | None) -> AnalysisRun:
    from analysis.summary import OutcomeSummary

    summary = OutcomeSummary.of(result.effects, plan_hash=lock.plan_hash, exploratory=exploratory)
    created = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    run_id = hashlib.sha256(f"{protocol.study_id}|{lock.plan_hash}|{created.isoformat()}".encode()).hexdigest()[:16]
    if store:
        store_summary(con, run_id, protocol.study_id, summary, created)
        store_monitor(con, run_id, protocol.study_id, lock.plan_hash, exploratory, result.divergence, result.decisions,
                      created)
    return AnalysisRun(run_id, summary, lock, exploratory, result.tipping_points, result.notes, dict(result.results),
                       result.failed, result.divergence, result.decisions)


def store_summary(con: duckdb.DuckDBPyConnection, run_id: str, study_id: str, summary: OutcomeSummary,
                  created_at: datetime) -> None:
    """Append the run's rows to ``analysis_summary`` (one transaction)."""
    from analysis.summary import COLUMNS
    from schemas.sqltext import ident
    from schemas.warehouse import transaction

    data = [[run_id, study_id, *[r[c] for c in COLUMNS], created_at] for r in summary.to_records()]
    with transaction(con):
        con.executemany(
            f"INSERT INTO analysis_summary (run_id, study_id, {', '.join(map(ident, COLUMNS))}, created_at) "
            f"VALUES ({', '.join(['?'] * (len(COLUMNS) + 3))})", data,
        )


def store_monitor(con: duckdb.DuckDBPyConnection, run_id: str, study_id: str, plan_hash: str, exploratory: bool,
                  divergence: Sequence[Any], decisions: Sequence[Any], created_at: datetime) -> None:
    """Append the run's divergence rows and decision criteria (``divergence_status``, ``decision_table``)."""
    from analysis.divergence import FIELDS
    from schemas.sqltext import ident
    from schemas.warehouse import transaction

    head = [run_id, study_id, plan_hash, exploratory, created_at]
    decision_rows = [r for d in decisions for r in d.records()]
    decision_cols = list(decision_rows[0]) if decision_rows else []
    with transaction(con):
        if divergence:
            con.executemany(
                f"INSERT INTO divergence_status (run_id, study_id, plan_hash, exploratory, created_at, "
                f"{', '.join(map(ident, FIELDS))}) "
                f"VALUES ({', '.join(['?'] * (len(FIELDS) + 5))})",
                [head + [getattr(s, f) for f in FIELDS] for s in divergence])
        if decision_rows:
            con.executemany(
                f"INSERT INTO decision_table (run_id, study_id, plan_hash, exploratory, created_at, "
                f"{', '.join(map(ident, decision_cols))}) VALUES ({', '.join(['?'] * (len(decision_cols) + 5))})",
                [head + [r[c] for c in decision_cols] for r in decision_rows])
