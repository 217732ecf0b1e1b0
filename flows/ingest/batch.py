"""Ingest a landing folder into the warehouse: every new file, in one transaction, reconciled.

Every non-blank input row ends in exactly one place: a clean table, or ``quarantine`` with a
machine-readable reason. The batch runs in ONE transaction (a killed run leaves the warehouse as
before the batch; re-running finishes it), and files already ingested for the study (same SHA-256)
are skipped, so ingesting a batch twice changes nothing.

:func:`ingest_batch` is the sequence: discover the files (landing.py) -> hash them -> plan (which are new,
which runs the fast path tries) -> one transaction (each file through the fast path or the exact path, the
batch's clean events flushed, its consent withdrawals erased) -> reconcile (reconciliation.py).

Reason codes, in the order they are checked (a row gets the first that applies):
  unreadable_file (one row for a whole file that cannot be read; the file is copied to quarantine),
  malformed_json, malformed_csv, invalid_utf8, unknown_record_kind, unsupported_format,
  schema_violation, naive_timestamp, unknown_study, unknown_arm, unknown_wave,
  unknown_instrument, unknown_outcome, scored_by_flourish (an external score for an outcome the protocol
  says Flourish scores from the responses), unknown_item, out_of_range, conflicting_assignment,
  withdrawn, no_consent, duplicate.

Relations the ingest's SQL reads by name, each registered or created in one place: ``chunk`` (stage.CHUNK,
the Arrow chunk being read), ``pmap`` (pseudonyms.PMAP, the chunk's or run's pseudonym map), ``fp``
(fastpath/verify.FP, a run's first-pass aggregates), ``stage`` (gate.py, the gated rows of a chunk),
``acc_events`` (gate.ACC_EVENTS, the batch's clean events before one INSERT); everything else is passed in.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from flows.ingest import exact, fastpath, gate, landing
from flows.ingest.contract import ItemBounds
from flows.ingest.errors import IngestError, printable
from flows.ingest.pseudonyms import Pseudonyms
from flows.ingest.quarantine import RejectWriter, default_dir
from flows.ingest.reconciliation import ErasureSummary, FileResult, FileTally, Reconciliation
from flows.warehouse import connect
from privacy.erasure import WITHDRAWN_NOT_ERASED, erase_withdrawn
from privacy.pseudonym import check_active_key
from schemas.protocol import StudyProtocol
from schemas.sqltext import literal
from schemas.warehouse import transaction

ACC_FLUSH_ROWS = 500_000  # clean events gathered (from one or many files) before one INSERT into events
Progress = Callable[[str, int], None]


def ingest_batch(
    landing_dir: str | Path,
    protocol: StudyProtocol,
    warehouse: str | Path,
    key: bytes,
    *,
    progress: Progress | None = None,
    memory_limit: str = "2GB",
    fast_path: bool = True,
) -> Reconciliation:
    """Ingest every new file of ``landing_dir`` in one transaction; return the reconciliation.

    ``progress(file_name, rows_done)`` is called after each chunk of a file and after each file."""
    from flows.study import check_study

    check_study(protocol)  # unknown instruments or a licence the intended use breaks: refused before reading
    started, started_at = time.perf_counter(), datetime.now(timezone.utc)
    landing_dir = Path(landing_dir)
    hashed = _hash(landing.discover(landing_dir))
    with _warehouse(warehouse, memory_limit) as con:
        done = _ingested_hashes(con, protocol.study_id)
        todo = [(f, h) for f, h in hashed if h not in done]
        batch = _Batch(con, protocol, key, _batch_id(protocol.study_id, [(f.name, h) for f, h in todo]),
                       default_dir(landing_dir), fast_path, progress)
        runs = fastpath.Runs(con, protocol, batch.bounds, [f for f, _ in todo], fast_path)
        try:
            with transaction(con):  # the whole batch, or nothing of it
                check_active_key(con, key)  # a retired or foreign key would give a participant a second pseudonym
                results = {f.name: batch.ingest_file(f, h, runs) for f, h in todo}
                erased = batch.finish()
                rec = Reconciliation(batch.batch_id, protocol.study_id, tuple(
                    results.get(f.name) or _skipped(f, h) for f, h in hashed), time.perf_counter() - started,
                    erased)
                if todo:
                    batch.record(rec, landing_dir, started_at)
        except BaseException:
            batch.rejects.discard()
            raise
        finally:
            runs.close()
    return Reconciliation(rec.batch_id, rec.study_id, rec.files, time.perf_counter() - started, rec.erased)


def _hash(files: list[landing.LandingFile]) -> list[tuple[landing.LandingFile, str]]:
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL: files hash in parallel
        return list(zip(files, pool.map(lambda f: landing.sha256_file(f.path), files)))


def _skipped(f: landing.LandingFile, digest: str) -> FileResult:
    return FileResult(f.name, f.kind or "unknown", digest, f.path.stat().st_size, skipped=True)


@contextmanager
def _warehouse(path: str | Path, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path)
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {literal(memory_limit)}")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET enable_progress_bar = false")  # DuckDB's bar goes to stdout, where --json prints
        yield con
    finally:
        con.close()


def _ingested_hashes(con: duckdb.DuckDBPyConnection, study_id: str) -> set[str]:
    """A file counts as ingested for the study it was ingested under (the same file offered to another study's
    protocol is that study's input, and is read again)."""
    return {r[0] for r in con.execute(
        "SELECT DISTINCT f.sha256 FROM batch_files f JOIN batches b USING (batch_id) WHERE b.study_id = ?",
        [study_id]).fetchall()}


def _batch_id(study_id: str, files: list[tuple[str, str]]) -> str:
    h = hashlib.sha256(study_id.encode())
    for name, digest in sorted(files):
        h.update(f"{name}\0{digest}\0".encode())
    return h.hexdigest()[:16]


@dataclass
class _Batch:
    """One batch's state inside its transaction: the connection, the pseudonym cache, the raw-reject files and
    the clean events gathered before one INSERT. Held together because they must stay consistent."""

    con: duckdb.DuckDBPyConnection
    protocol: StudyProtocol
    key: bytes
    batch_id: str
    quarantine_dir: Path
    fast_path: bool
    progress: Progress | None

    def __post_init__(self) -> None:
        self.bounds = ItemBounds.from_registry()
        self.rejects = RejectWriter(self.quarantine_dir, self.batch_id, self.key)
        # tombstones change only at the batch's end (erase_withdrawn), so one read serves every chunk
        tombs = {r[0] for r in self.con.execute("SELECT participant FROM tombstones").fetchall()}
        self.pseudonyms = Pseudonyms(self.key, tombs)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {gate.ACC_EVENTS} AS SELECT * FROM events LIMIT 0")
        self.gathered = self.withheld_events = 0

    def ingest_file(self, f: landing.LandingFile, digest: str, runs: fastpath.Runs) -> FileResult:
        tally = FileTally(f.name, f.kind or "unknown", digest, f.path.stat().st_size)
        self.withheld_events += runs.offer(self.con, f, self.pseudonyms, self.batch_id)
        if f.name in runs.stored:
            tally.add(runs.stored[f.name], runs.stored[f.name], {})
            self._progress(f.name, tally.read)
        elif f.kind is None or f.fmt is None:
            self._quarantine_whole_file(f, tally)
        else:
            self._ingest_chunks(f, tally)
        result = tally.freeze()
        self.con.execute("INSERT INTO batch_files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [self.batch_id, f.name, digest, result.size_bytes, result.kind, result.read, result.stored,
                          sum(result.quarantined.values())])
        return result

    def _progress(self, name: str, rows: int) -> None:
        if self.progress:
            self.progress(name, rows)

    def _ingest_chunks(self, f: landing.LandingFile, tally: FileTally) -> None:
        assert f.kind is not None
        ctx = exact.FileContext(self.con, self.protocol, self.bounds, self.pseudonyms, self.batch_id, f.name,
                                f.fmt, f.kind, self.rejects, self.fast_path)
        for chunk in _chunks_or_unreadable(f, tally):
            if chunk is None:  # the file cannot be read at all: quarantined whole, nothing stored
                self.con.execute("INSERT INTO quarantine VALUES (?, ?, ?, 0, 'unreadable_file', ?, NULL, NULL, ?)",
                                 [self.batch_id, f.kind, f.name, tally.unreadable_message,
                                  self.rejects.name_for(f.name)])
                self.rejects.add_file(f.name, f.path, tally.unreadable_message)
                tally.add(1, 0, {"unreadable_file": 1})
                break
            counts = exact.ingest_chunk(ctx, chunk)
            tally.add(counts.read, counts.stored, counts.quarantined)
            if f.kind == "events":
                self.gathered += counts.stored
            self._progress(f.name, tally.read)
        if self.gathered >= ACC_FLUSH_ROWS:
            self.withheld_events += self.flush_events()

    def _quarantine_whole_file(self, f: landing.LandingFile, tally: FileTally) -> None:
        """A file Flourish cannot read as records: every non-blank line is quarantined, raw bytes to file."""
        reason = "unknown_record_kind" if f.kind is None else "unsupported_format"
        why = ("file name does not start with a record kind (consents, assignments, responses, scores, events)"
               if f.kind is None else "file is not .jsonl, .csv or .parquet")
        rows = []
        with f.path.open("rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    rows.append([self.batch_id, f.name, lineno, reason, why, self.rejects.name_for(f.name)])
                    self.rejects.add(f.name, lineno, line.rstrip(b"\r\n"), why)
        if rows:
            self.con.executemany("INSERT INTO quarantine VALUES (?, 'unknown', ?, ?, ?, ?, NULL, NULL, ?)", rows)
        tally.add(len(rows), 0, {reason: len(rows)} if rows else {})

    def flush_events(self) -> int:
        """Move gathered clean events into ``events``, except those of participants this batch erases.

        Those participants (consents withdrawn, not yet erased) are erased at the batch's end; their events are
        withheld rather than inserted and deleted (deleting fresh rows made the commit several times slower)
        and returned as a count, which the erasure receipt reports as deleted. Consents are ingested before
        events, so the set is complete when events are flushed."""
        acc = gate.ACC_EVENTS
        withheld = self.con.execute(
            f"SELECT count(*) FROM {acc} WHERE participant IN ({WITHDRAWN_NOT_ERASED})").fetchall()[0][0]
        self.con.execute(f"INSERT INTO events SELECT * FROM {acc} WHERE participant NOT IN ({WITHDRAWN_NOT_ERASED})")
        self.con.execute(f"DELETE FROM {acc}")
        self.gathered = 0
        return int(withheld)

    def finish(self) -> ErasureSummary | None:
        """Flush the last events and erase the participants whose consent withdrawals this batch brought, in
        the batch's transaction (DESIGN.md: a withdrawal erases the participant)."""
        self.withheld_events += self.flush_events()
        erased = erase_withdrawn(self.con, withheld={"events": self.withheld_events})
        if erased is None and self.withheld_events:
            raise IngestError(f"internal error: {self.withheld_events} events were withheld for an erasure that "
                              "did not run")
        if erased is None:
            return None
        return ErasureSummary(erased.erasure_id, erased.total_deleted, sum(erased.rows_redacted.values()))

    def record(self, rec: Reconciliation, landing_dir: Path, started_at: datetime) -> None:
        """The raw-reject files under their final names, and the batch's manifest row."""
        self.rejects.commit()
        self.con.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, now(), ?, ?, ?, ?)",
            [self.batch_id, self.protocol.study_id, str(landing_dir.resolve()), started_at, rec.read,
             sum(rec.stored.values()), sum(rec.quarantined.values()), json.dumps(rec.as_json())])


def _chunks_or_unreadable(f: landing.LandingFile, tally: FileTally) -> Iterator[landing.Chunk | None]:
    """The file's chunks; ``None`` once if it cannot be read from its start (corrupt Parquet, a CSV with no
    header). A file that breaks after some rows were read fails the batch (rolled back) with a clear error."""
    produced = False
    it = landing.read_chunks(f)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - any reader failure is reported, never swallowed
            if produced:
                raise IngestError(f"{printable(f.name)} became unreadable part-way through ({type(exc).__name__}); "
                                  "the batch was rolled back, nothing was stored") from exc
            tally.unreadable_message = (f"{printable(f.name)} cannot be read as {f.fmt}: {type(exc).__name__}: "
                                        f"{' '.join(str(exc).split())[:300]}")
            yield None
            return
        produced = True
        yield chunk
