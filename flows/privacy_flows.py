"""Privacy flows: open the warehouse, call privacy functions, write the result (STYLE.md, habit 2).

Plain functions rather than Prefect flows: erasure, compaction, re-keying and releases are administrative
commands a privacy officer runs by hand, and a Prefect ephemeral server costs 20-30 s per process here
(research/stack.md). Wrap them in ``@flow`` where a scheduled pipeline needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from flows.ingest import quarantine_dir
from flows.ingest.landing import format_of, kind_of
from flows.warehouse import connect, open_warehouse
from privacy.budget import BudgetStatus
from privacy.erasure import ErasureReceipt
from privacy.release import ReleaseResult
from privacy.rekey import RekeyReport
from privacy.scrub import Folders
from schemas.privacy_values import Bounds
from schemas.protocol import StudyProtocol
from schemas.warehouse import transaction


def erasure_folders(con: duckdb.DuckDBPyConnection, warehouse: Path, study_folder: Path | None = None) -> Folders:
    """What an erasure covers: the study folder (default: the warehouse's folder), and every landing folder an
    ingest recorded in ``batches`` with its quarantine folder beside it (flows/ingest), wherever they are. A
    recorded landing folder that is no longer there is listed as missing, so the receipt can say it was not
    covered rather than let the byte scan claim it."""
    landings = [Path(p) for (p,) in con.execute("SELECT DISTINCT landing FROM batches ORDER BY 1").fetchall()]
    sources = [folder for landing in landings for folder in (landing, quarantine_dir(landing))]
    missing = tuple(landing for landing in landings if not landing.is_dir())
    return Folders(study=(study_folder or warehouse.parent), sources=tuple(sources), missing=missing,
                   skip=(warehouse, Path(str(warehouse) + ".wal")), is_landing_name=_is_landing_name)


def _is_landing_name(name: str) -> bool:
    """A file the ingest would read as landing data by its name alone (flows/ingest/landing.py's rule)."""
    return kind_of(name) is not None and format_of(name) is not None


def erase_participant(
    warehouse: str | Path,
    raw_id: str,
    key: bytes,
    reason: str = "erasure_request",
    *,
    study_folder: str | Path | None = None,
) -> ErasureReceipt:
    """Erase one participant from the warehouse and from every file the erasure covers; prove it with a byte scan.

    The order makes a failure harmless: checks and the file plan first (a refusal changes nothing: a key that is
    not the warehouse's active key, an id the warehouse holds nothing of, a file that cannot be rewritten), then
    the rows in one transaction, then the files, the compaction of the warehouse file and the byte scan. If a
    step after the rows fails, the error says so and running the same command again finishes the erasure (the
    participant is then known by their tombstone). ``receipt.residual_files`` lists files still holding the
    pseudonym or raw id (it should be empty), ``unchecked_files`` files the scan could not read, and
    ``folders_missing`` recorded landing folders it could not cover.
    """
    from flows.ingest import record_rewrites
    from privacy.erasure import compact_database, erase_rows, participant_state, record_compaction, record_file_scrub
    from privacy.scrub import Needles, apply_scrub, byte_scan, plan_scrub
    from privacy.errors import ErasureIncomplete, UnknownParticipant
    from privacy.pseudonym import check_active_key, pseudonymize

    db = Path(warehouse)
    pseudonym = pseudonymize(raw_id, key)
    needles = Needles(pseudonym, raw_id)
    with open_warehouse(db) as con:
        folders = erasure_folders(con, db, Path(study_folder) if study_folder else None)
        with transaction(con):
            check_active_key(con, key)
            state = participant_state(con, pseudonym)
            if state == "unknown":
                raise UnknownParticipant(
                    "the warehouse holds no row of this participant and records no erasure of them: the id is "
                    "mistyped or the key is not the one their data were ingested with; nothing was erased and no "
                    "tombstone was written")
            plan = plan_scrub(folders, needles)
            receipt = erase_rows(con, pseudonym, reason, in_transaction=True)
    step = "rewriting the files that hold the participant"
    try:
        rewrites: list[tuple[str, str]] = []
        rewritten, deleted, left = apply_scrub(plan, needles, on_rewrite=lambda a, b: rewrites.append((a, b)))
        receipt = replace(receipt, files_rewritten=tuple(rewritten), files_deleted=tuple(deleted),
                          files_left=tuple(left))
        step = "recording the file scrub"
        with open_warehouse(db) as con, transaction(con):
            record_file_scrub(con, receipt)
            record_rewrites(con, rewrites, reason)
        step = "compacting the warehouse file"
        compact_database(db)
        with open_warehouse(db) as con:
            record_compaction(con)
    except (OSError, duckdb.Error) as exc:
        # the cause, without anything that names the participant (a path or a database message might)
        cause = " ".join(str(exc).split())[:200].replace(raw_id, "[participant]").replace(pseudonym, "[participant]")
        raise ErasureIncomplete(
            f"the participant's rows are erased (receipt {receipt.erasure_id}) but {step} failed "
            f"({type(exc).__name__}: {cause}); run the same erase again to finish it") from exc
    proof = byte_scan(folders, needles, include=[db])
    return replace(receipt, compacted=True, residual_files=proof.residual, unchecked_files=proof.unchecked + tuple(
        u for u in plan.unchecked if u not in proof.unchecked), folders_scanned=proof.scanned,
        folders_missing=tuple(str(m) for m in folders.missing))


@dataclass(frozen=True)
class CompactionReport:
    """What ``flourish compact`` did: the file's size before and after, and the erasures it completed."""

    warehouse: str
    bytes_before: int
    bytes_after: int
    erasures_compacted: int


def compact_warehouse(path: str | Path) -> CompactionReport:
    """Rewrite the warehouse so deleted rows leave no bytes behind.

    An erasure at ingest (a consent withdrawal arriving in a later batch) deletes the rows in the batch's
    transaction, but DuckDB keeps their bytes in free blocks until the file is rewritten; this does it, and
    marks those erasures compacted in the erasure log."""
    from privacy.erasure import compact_database, record_compaction

    p = Path(path)
    connect(p).close()  # waits for another process's lock, applies migrations
    before = p.stat().st_size + (Path(str(p) + ".wal").stat().st_size if Path(str(p) + ".wal").exists() else 0)
    compact_database(p)
    with open_warehouse(p) as con:
        n = record_compaction(con)
    return CompactionReport(str(p), before, p.stat().st_size, n)


def rekey_warehouse(path: str | Path, old_key: bytes, new_key: bytes, raw_ids: list[str]) -> RekeyReport:
    """Re-key every participant table in one transaction, then compact so old pseudonyms leave no bytes."""
    from privacy.erasure import compact_database
    from privacy.rekey import rekey

    with open_warehouse(path) as con:
        report = rekey(con, old_key, new_key, raw_ids)
    compact_database(path)
    return report


def release_protocol(protocol: StudyProtocol, warehouse: str | Path, *,
                     outcome_bounds: Mapping[str, Bounds] | None = None, fraction: float = 1.0,
                     release_id: str | None = None, through_wave: str | None = None) -> ReleaseResult:
    """The protocol's standard DP releases, written to ``releases``/``release_values``, spend in the ledger; the
    result carries each outcome's public/trusted interval width ratio (:func:`public_width_ratios`)."""
    from privacy.release import release_standard_set

    with open_warehouse(warehouse) as con:
        result = release_standard_set(con, protocol, outcome_bounds=outcome_bounds, fraction=fraction,
                                      release_id=release_id, through_wave=through_wave)
    return replace(result, width_ratios=public_width_ratios(protocol, result))


def public_width_ratios(protocol: StudyProtocol, result: ReleaseResult) -> dict[str, float | str]:
    """Per outcome, how much wider the public tier's interval of the release's long-run effect (its last wave) is
    than the same model's without the DP noise (a binary outcome's risk difference: :func:`_binary_width_ratio`);
    for a continuous outcome, the ANCOVA's on the exact statistics: sqrt((sampling + noise variance) / sampling variance), the
    largest over the treated arms, from the released values only (post-processing of DP output: no privacy cost).
    An outcome whose release cannot carry the model gets the reason instead."""
    from analysis.errors import AnalysisInputError, InsufficientData
    from analysis.public import width_ratio
    from schemas.suffstats import NoisyPairedMoments

    out: dict[str, float | str] = {}
    for o in protocol.outcomes:
        if o.binary:
            out |= _binary_width_ratio(protocol, o, result)
            continue
        by_cell: dict[tuple[str, str], list[dict]] = {}
        for r in result.rows:
            if r.query == f"paired_moments:{o.name}" and r.statistic != "mean":
                by_cell.setdefault((r.arm, r.wave), []).append(
                    {"statistic": r.statistic, "value": r.value, "noise_sd": r.noise_sd, "suppressed": r.suppressed})
        if not by_cell:
            continue
        last = max((w for _, w in by_cell), key=protocol.wave_names.index)
        try:
            cells = {k: NoisyPairedMoments.from_release_rows(v) for k, v in by_cell.items() if k[1] == last}
            out[o.name] = max(width_ratio(cells, control=protocol.control_arm, wave=last).values())
        except (AnalysisInputError, InsufficientData, ValueError) as exc:
            out[o.name] = f"not available at {last}: {exc}"
    return out


def _binary_width_ratio(protocol: StudyProtocol, o, result: ReleaseResult) -> dict[str, float | str]:
    """A binary outcome's public risk-difference interval width over the same comparison's without DP noise at the
    release's last wave (``analysis.public_binary.binary_width_ratio``, the largest over the treated arms), or why
    not; nothing when the release holds no counts of it."""
    from analysis.errors import InsufficientData
    from analysis.public_binary import binary_width_ratio
    from schemas.binary_stats import NoisyBinaryCounts

    by_cell: dict[tuple[str, str], list[dict]] = {}
    for r in result.rows:
        if r.query == f"binary_counts:{o.name}":
            by_cell.setdefault((r.arm, r.wave), []).append(
                {"statistic": r.statistic, "value": r.value, "noise_sd": r.noise_sd, "suppressed": r.suppressed})
    if not by_cell:
        return {}
    last = max((w for _, w in by_cell), key=protocol.wave_names.index)
    try:
        cells = {a: NoisyBinaryCounts.from_release_rows(v) for (a, w), v in by_cell.items() if w == last}
        control = cells[protocol.control_arm]
        return {o.name: max(binary_width_ratio(c, control) for a, c in cells.items() if a != protocol.control_arm)}
    except (InsufficientData, ValueError, KeyError) as exc:
        return {o.name: f"not available at {last}: {exc}"}


def instrument_bounds(protocol: StudyProtocol) -> dict[str, Bounds]:
    """Public clipping bounds of every instrument-scored outcome: the score's range from the shipped instrument
    definition (``Instrument.score_range``), unless the protocol declares both bounds itself.

    These bounds are public information in the DP sense (they come from the instrument's published scale, not
    from the data), which is why they may set the sensitivity of a release."""
    import instruments

    out: dict[str, Bounds] = {}
    for o in protocol.outcomes:
        if o.binary or o.instrument is None or (o.lower_bound is not None and o.upper_bound is not None):
            continue  # a binary outcome's release counts events: no score of it is clipped
        inst = instruments.load(o.instrument)
        lower, upper = inst.score_range(o.name.split(".", 1)[1])
        out[o.name] = Bounds(lower, upper, o.name)
    return out


def budget(warehouse: str | Path) -> dict[str, BudgetStatus]:
    from privacy.budget import budget_status

    with open_warehouse(warehouse) as con:
        return budget_status(con)


def budget_json(warehouse: str | Path) -> dict[str, dict[str, float | int]]:
    """``{"<study_id>": {"epsilon_total", "epsilon_spent", "releases"}}``: what ``budget --json`` prints and the
    figures the text form prints."""
    from privacy.budget import budget_json as as_json

    with open_warehouse(warehouse) as con:
        return as_json(con)


def consent_status(warehouse: str | Path) -> dict[str, Any]:
    """Status of the consent ledger, with the count of consents not in it yet. Read-only."""
    from privacy.consent import consent_status as status

    with open_warehouse(warehouse, read_only=True) as con:
        return status(con)


def consent_sync(warehouse: str | Path) -> int:
    """Append ledger entries for the consents the warehouse holds and its ledger lacks; return how many."""
    from privacy.consent import sync_from_consents

    with open_warehouse(warehouse) as con:
        return sync_from_consents(con)


__all__ = ["erase_participant", "erasure_folders", "instrument_bounds", "compact_warehouse", "CompactionReport",
           "rekey_warehouse", "release_protocol", "public_width_ratios", "budget", "budget_json", "consent_status", "consent_sync"]
