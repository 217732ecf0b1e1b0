"""Analysis flows: read the warehouse, call one pure function from ``analysis``, write the result.

Everything statistical lives in ``analysis/``; this module only reduces warehouse tables to
sufficient statistics with DuckDB GROUP BYs (no participant rows pulled into Python loops),
enforces the preregistration lock, and stores the outcome summary.

- :func:`preregister` / :func:`registry_history` / :func:`plan_lock`: the append-only, hash-chained
  ``plan_registry`` table (migration 0030).
- :func:`randomize_csv`: stratified permuted blocks for a participants CSV.
- :func:`srm_check`, :func:`baseline_balance`: on the ingested assignments and baseline scores.
- :func:`run_analysis`: the locked plan — primary and secondary outcomes with the longitudinal
  model (cross-products from ``flows.statistics``), the final-wave ANCOVA with Holm across secondary
  outcomes x arms, the tipping point, prespecified subgroups with partial pooling, CUPED telemetry
  metrics, and (with a calibration study) the surrogate-index forecast — into one
  :class:`OutcomeSummary`. ``tier="public"`` fits the noise-aware model to the latest DP release of
  paired moments only (``release_values``), never to participant-level tables.
- :func:`analyze_flow`: the same as a Prefect flow, for schedules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import FlourishError
from flows import statistics
from flows.statistics import OutcomeHasNoData

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import pandas as pd

    from analysis.missing import AncovaStatistics
    from analysis.prereg import LockStatus, RegistryEntry
    from analysis.summary import OutcomeSummary
    from schemas.protocol import Outcome, StudyProtocol, SurrogateMetric


# ----------------------------------------------------------------------------------------------
# Errors the CLI prints as one sentence
# ----------------------------------------------------------------------------------------------
class PreregistrationRefused(FlourishError):
    """The registry refused the entry (already locked, change without --deviation, broken chain)."""


class PlanNotLocked(FlourishError):
    """A confirmatory analysis was asked of a protocol that is not the locked plan."""


class AnalysisRefused(FlourishError):
    """A model failed its diagnostics or its inputs; nothing was published."""


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


def surrogate_forecast(
    con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, calibration_study: str,
    surrogate_waves: Sequence[str] | None = None, interval_level: float = 0.95,
) -> list:
    """Surrogate-index forecast of the primary outcome's long-run effect (Athey et al. 2019).

    First stage on ``calibration_study`` (participants whose long-run outcome is observed), second stage
    on this study's participants with all surrogates observed. Surrogates: the primary outcome at
    ``surrogate_waves`` (default: the first follow-up wave) and the protocol's telemetry metrics;
    covariate: the baseline score."""
    from analysis.surrogate import SurrogateError, fit_surrogate_index, surrogate_index_effects

    o = protocol.primary_outcome
    waves = list(surrogate_waves) if surrogate_waves else statistics.followup_waves(protocol, o)[:1]
    unknown = [w for w in waves if w not in protocol.wave_names]
    if unknown:
        raise AnalysisRefused(f"surrogate wave(s) {unknown} are not waves of the protocol {protocol.wave_names}")
    n_cal = con.execute("SELECT count(*) FROM scores WHERE study_id = ? AND outcome = ?",
                        [calibration_study, o.name]).fetchone()[0]
    if not n_cal:
        raise OutcomeHasNoData(f"calibration study {calibration_study!r} has no {o.name} scores in the warehouse")
    surrogates = [f"{o.name}@{w}" for w in waves] + [m.name for m in protocol.surrogates]
    calib = statistics.surrogate_frame(con, protocol, calibration_study, waves)
    study = statistics.surrogate_frame(con, protocol, protocol.study_id, waves).dropna(subset=[*surrogates, "baseline"])
    try:
        model = fit_surrogate_index(calib, long_run="long_run", surrogates=surrogates, covariates=["baseline"])
        return surrogate_index_effects(model, study, control=protocol.control_arm, interval_level=interval_level)
    except SurrogateError as exc:
        raise AnalysisRefused(f"surrogate index: {exc}") from None


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

    Refuses (raising a FlourishError, storing nothing) when the plan is not locked and
    ``exploratory`` is False, when an outcome the plan names has no rows, or when any model fails
    its diagnostics. ``fit`` defaults to ``analysis.longitudinal.fit_from_crossproducts``.
    """
    from analysis.errors import AnalysisInputError, DiagnosticsFailed, InsufficientData
    from analysis.missing import ancova_effects, statistics_from_moments, tipping_point
    from analysis.multiplicity import holm, partial_pool, subgroup_effects_from_moments
    from analysis.results import LONG_RUN, PLATEAU

    if tier not in ("trusted", "public"):
        raise AnalysisRefused(f"tier must be 'trusted' or 'public', got {tier!r}")
    lock = plan_lock(con, protocol)
    if not lock.locked and not exploratory:
        raise PlanNotLocked(f"{lock.explanation}; preregister it, or run with --exploratory (labelled so in every row)")
    is_expl = not lock.locked or exploratory
    plan = protocol.analysis
    if tier == "public":
        return _run_public(con, protocol, lock, is_expl, store=store, fit=fit, progress=progress, now=now)
    if fit is None:
        from analysis.longitudinal import fit_from_crossproducts as fit

    for o in protocol.outcomes:  # refuse before any sampling if an outcome has no data
        statistics.require_rows(con, protocol, o)

    rows, notes, tips, results = [], [], [], {}
    ancova_by_outcome = {}
    srm = srm_check(con, protocol)
    if srm.mismatch:
        notes.append(f"SAMPLE RATIO MISMATCH: assignments {srm.observed} vs planned ratios (chi-square {srm.chi_square:.2f}, "
                     f"p = {srm.p_value:.2g}); randomization or ingest may be broken, interpret every effect with care")
    for o in protocol.outcomes:
        progress(f"fitting the longitudinal model of {o.name}")
        # A running study: the model covers the follow-up waves with data so far; a long-run wave
        # without data has no estimate (only its prior), so no long-run row comes from the model.
        observed = statistics.observed_followup_waves(con, protocol, o)
        if not observed:
            raise AnalysisRefused(f"outcome {o.name} has no follow-up scores yet (only the baseline); nothing to analyse")
        final = statistics.final_wave(protocol, o)
        running = final not in observed
        if running:
            notes.append(
                f"STUDY RUNNING: {o.name} has no scores at its long-run wave {final} yet; per-wave "
                f"effects cover {', '.join(observed)} only; no long-run estimate until that wave closes"
                + ("" if calibration_study else " (a surrogate-index forecast needs --calibration-study)"))
        try:
            stats = statistics.longitudinal_stats(con, protocol, outcome=o.name, waves=observed)
            res = fit(stats, plan, outcome=o.name, direction=o.direction, mcid=o.mcid,
                                        rope=o.rope)
            res.require_passed()
        except DiagnosticsFailed as exc:
            raise AnalysisRefused(f"{exc}; nothing was published") from None
        except (AnalysisInputError, InsufficientData) as exc:
            raise AnalysisRefused(f"outcome {o.name}: {exc}") from None
        except RuntimeError as exc:  # the sampler could not start or run (e.g. no valid initial point)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AnalysisRefused(f"the model of {o.name} could not be fitted ({first}); nothing was published") from None
        results[o.name] = res
        effects = [e for e in res.effects if not (running and e.wave in (LONG_RUN, PLATEAU))]
        rows += effects
        if running:
            continue  # the final-wave ANCOVA and the tipping point need the final wave
        try:
            obs, miss = statistics.final_wave_cells(con, protocol, o)
            if protocol.control_arm not in obs:
                raise OutcomeHasNoData(f"outcome {o.name!r} has no baseline scores in the control arm")
            fw = statistics_from_moments(obs, miss, control=protocol.control_arm)
            ancova_by_outcome[o.name] = (fw, ancova_effects(fw, outcome=o.name, wave=statistics.final_wave(protocol, o),
                                                            direction=o.direction, interval_level=plan.interval_level))
        except (InsufficientData, ValueError) as exc:
            notes.append(f"final-wave ANCOVA of {o.name} not available: {exc}")

    # Holm across the secondary outcomes (x arms); the primary is tested alone.
    secondary = {o.name for o in protocol.secondary_outcomes}
    family = {(name, e.arm): e.p_value for name, (_, effs) in ancova_by_outcome.items() if name in secondary for e in effs
              if e.estimable}
    adjusted = {(r.name[0], r.name[1]): r.p_adjusted for r in holm({k: v for k, v in family.items()})} if family else {}
    for o in protocol.outcomes:
        if o.name not in ancova_by_outcome:
            continue
        fw, effs = ancova_by_outcome[o.name]
        rows += [replace(e, p_adjusted=adjusted[(o.name, e.arm)]) if (o.name, e.arm) in adjusted else e for e in effs]

    # Tipping point of the primary outcome.
    primary = protocol.primary_outcome
    if primary.name in ancova_by_outcome:
        tp = tipping_point(ancova_by_outcome[primary.name][0], direction=primary.direction, outcome=primary.name,
                           interval_level=plan.interval_level, wave=statistics.final_wave(protocol, primary))
        tips.extend(tp)
        rows += [t.effect for t in tp]

    # Prespecified subgroups of the primary outcome, partially pooled per arm.
    for sg in plan.subgroups:
        try:
            cells = statistics.subgroup_cells(con, protocol, primary, sg)
            raw = subgroup_effects_from_moments(cells, subgroup=sg, control=protocol.control_arm, outcome=primary.name,
                                                wave=statistics.final_wave(protocol, primary), direction=primary.direction,
                                                interval_level=plan.interval_level)
            for arm in sorted({e.arm for e in raw}):
                pooled = partial_pool([e for e in raw if e.arm == arm], interval_level=plan.interval_level)
                rows += [g.effect for g in pooled]
        except (InsufficientData, ValueError) as exc:
            notes.append(f"subgroup {sg} of {primary.name} not available: {exc}")

    # CUPED telemetry metrics.
    from analysis.cuped import cuped_effects

    for m in protocol.surrogates:
        try:
            cells = statistics.telemetry_cells(con, protocol, m)
            est = cuped_effects(cells, control=protocol.control_arm, metric=m.name, wave=f"first_{m.window_days}_days",
                                interval_level=plan.interval_level)
            rows += [c.effect for c in est]
        except (InsufficientData, ValueError) as exc:
            notes.append(f"telemetry metric {m.name} not analysable with CUPED: {exc}")

    # Surrogate-index forecast of the primary's long-run effect, when a calibration cohort is named.
    if calibration_study:
        progress(f"surrogate index calibrated on {calibration_study}")
        forecast = surrogate_forecast(con, protocol, calibration_study, surrogate_waves, plan.interval_level)
        rows += [f.effect for f in forecast]
        results["surrogate_index"] = forecast
        if forecast:
            notes.append("surrogate index assumes " + "; and ".join(forecast[0].assumptions))

    return _finish(con, protocol, lock, is_expl, rows, tips, notes, results, store=store, now=now)


def _finish(con, protocol, lock, is_expl, rows, tips, notes, results, *, store, now) -> AnalysisRun:
    from analysis.summary import OutcomeSummary

    summary = OutcomeSummary.of(rows, plan_hash=lock.plan_hash, exploratory=is_expl)
    created = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    run_id = hashlib.sha256(f"{protocol.study_id}|{lock.plan_hash}|{created.isoformat()}".encode()).hexdigest()[:16]
    if store:
        store_summary(con, run_id, protocol.study_id, summary, created)
    return AnalysisRun(run_id, summary, lock, is_expl, tuple(tips), tuple(notes), results)


def _run_public(con, protocol, lock, is_expl, *, store, fit, progress, now) -> AnalysisRun:
    """Public tier: the noise-aware model (analysis.public.fit_public) on DP releases only.

    The ANCOVA/Holm, tipping point, subgroups and CUPED need participant-level statistics, so they
    run in the trusted tier only; the run says so in its notes."""
    from analysis.errors import AnalysisInputError, InsufficientData

    if fit is None:
        from analysis.public import fit_public as fit
    plan, rows, results = protocol.analysis, [], {}
    for o in protocol.outcomes:
        progress(f"fitting the noise-aware model of {o.name} to its DP release")
        try:
            cells, waves = statistics.released_cells(con, protocol, o)
            res = fit(cells, plan, control=protocol.control_arm, waves=waves, outcome=o.name,
                      direction=o.direction, mcid=o.mcid, rope=o.rope)
        except (AnalysisInputError, InsufficientData) as exc:
            raise AnalysisRefused(f"outcome {o.name} (public tier): {exc}") from None
        except RuntimeError as exc:  # the sampler could not start or run (e.g. no valid initial point)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AnalysisRefused(
                f"the public-tier model of {o.name} could not be fitted to its DP release ({first}); nothing was published"
            ) from None
        if not res.diagnostics.passed:
            raise AnalysisRefused(
                f"the public-tier model of {o.name} failed its diagnostics: {'; '.join(res.diagnostics.reasons)}; "
                "nothing was published")
        results[o.name] = res
        rows += res.effects
    notes = ["public tier: Holm-adjusted ANCOVA, tipping point, subgroups and CUPED need participant-level "
             "statistics and are reported by the trusted tier only"]
    return _finish(con, protocol, lock, is_expl, rows, [], notes, results, store=store, now=now)


def store_summary(con: duckdb.DuckDBPyConnection, run_id: str, study_id: str, summary: OutcomeSummary,
                  created_at: datetime) -> None:
    """Append the run's rows to ``analysis_summary`` (one transaction)."""
    from analysis.summary import COLUMNS
    from schemas.warehouse import transaction

    data = [[run_id, study_id, *[r[c] for c in COLUMNS], created_at] for r in summary.to_records()]
    with transaction(con):
        con.executemany(
            f"INSERT INTO analysis_summary (run_id, study_id, {', '.join(COLUMNS)}, created_at) "
            f"VALUES ({', '.join(['?'] * (len(COLUMNS) + 3))})", data,
        )


def outcomes_in(protocol: StudyProtocol) -> Sequence[str]:
    return [o.name for o in protocol.outcomes]


# ----------------------------------------------------------------------------------------------
# Prefect
# ----------------------------------------------------------------------------------------------
def analyze_flow():
    """The Prefect flow ``flourish-analyze`` (for a wave-close or study-end schedule).

    Built on first use so importing this module (and the CLI) does not import Prefect. Parameters are
    paths and flags, never participant data; the result is the outcome summary (aggregates only).
    The task is thin: it opens the warehouse and calls :func:`run_analysis`.
    """
    from prefect import flow, task

    @task(name="run-preregistered-analysis", persist_result=False, cache_policy=None)
    def run_task(warehouse_path: str, study_path: str, tier: str, exploratory: bool) -> list[dict]:
        from flows.warehouse import open_warehouse
        from flows.study import load_study as load_protocol

        protocol = load_protocol(study_path)
        with open_warehouse(warehouse_path) as con:
            return run_analysis(con, protocol, tier=tier, exploratory=exploratory).summary.to_records()

    @flow(name="flourish-analyze", persist_result=False)
    def flourish_analyze(warehouse_path: str, study_path: str, tier: str = "trusted",
                         exploratory: bool = False) -> list[dict]:
        return run_task(warehouse_path, study_path, tier, exploratory)

    return flourish_analyze
