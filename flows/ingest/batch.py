"""Ingest a landing folder into the warehouse: every new file, in one transaction, reconciled.

Every non-blank input row ends in exactly one place: a clean table, or ``quarantine`` with a
machine-readable reason. The batch runs in ONE transaction (a killed run leaves the warehouse as
before the batch; re-running finishes it), and files already ingested for the study (same SHA-256, or
the same bytes less the lines an erasure scrubbed: :func:`record_rewrites`) are skipped, so ingesting a
batch twice changes nothing.

:func:`ingest_batch` is the sequence: check that the warehouse and quarantine folders can be written ->
discover the files (landing.py) -> hash them -> plan (which are new, which runs the fast path tries) -> one
transaction (each file through the fast path or the exact path, the batch's clean events flushed, its
consent withdrawals erased) -> reconcile (reconciliation.py). Anything that fails inside it is one sentence
(:class:`IngestError`) that copies nothing of a row, and the warehouse is as before the batch.

Reason codes, in the order they are checked (a row gets the first that applies):
  unreadable_file (one row for a whole file that cannot be read, or a symbolic link, which is never
  followed; a file's bytes are sealed into the quarantine folder), row_too_large (a row longer than 16 MiB),
  malformed_json, malformed_csv (also every line of a CSV file without a header row), invalid_utf8,
  unknown_record_kind, unsupported_format, schema_violation, naive_timestamp, unknown_study, unknown_arm,
  unknown_wave, unknown_instrument, unknown_outcome, scored_by_flourish (an external score for an outcome
  the protocol says Flourish scores from the responses), unknown_item, unknown_covariate (a participants
  record's characteristic the protocol does not declare), out_of_range, conflicting_assignment, withdrawn,
  no_consent, duplicate.

Names: a file is stored, reported and printed by its path in the landing folder with any part that is a
known participant's raw id replaced by the pseudonym (landing.display_name), so a partner who files data
under participants' ids puts no raw id in ``batch_files``, ``quarantine`` or a message.

Relations the ingest's SQL reads by name, each registered or created in one place: ``chunk`` (stage.CHUNK,
the Arrow chunk being read), ``pmap`` (pseudonyms.PMAP, the chunk's or run's pseudonym map), ``fp``
(fastpath/verify.FP, a run's first-pass aggregates), ``stage`` (gate.py, the gated rows of a chunk),
``acc_events`` (gate.ACC_EVENTS, the batch's clean events before one INSERT); everything else is passed in.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

import flows.ingest.exact as exact
import flows.ingest.fastpath as fastpath
import flows.ingest.gate as gate
import flows.ingest.landing as landing
import flows.ingest.stage as stage
from flows.ingest.contract import ItemBounds
from flows.ingest.errors import IngestError, printable
from flows.ingest.pseudonyms import Pseudonyms, registered
from flows.ingest.quarantine import RejectWriter, default_dir
from flows.ingest.reconciliation import ErasureSummary, FileResult, FileTally, Reconciliation
from flows.warehouse import connect
from privacy.erasure import erase_withdrawn, tombstone_token
from privacy.pseudonym import check_active_key, pseudonymize
from schemas.errors import FlourishError
from schemas.protocol import StudyProtocol
from schemas.sqltext import literal
from schemas.warehouse import transaction

ACC_FLUSH_ROWS = 500_000  # clean events gathered (from one or many files) before one INSERT into events
Progress = Callable[[str, int], None]
# DuckDB errors about files and the database itself say what is wrong with the warehouse; any other kind may quote
# the input it failed on, so only its kind is named
_FILE_ERRORS = (duckdb.IOException, duckdb.PermissionException, duckdb.FatalException)


def ingest_batch(
    landing_dir: str | Path,
    protocol: StudyProtocol,
    warehouse: str | Path,
    key: bytes,
    *,
    progress: Progress | None = None,
    memory_limit: str = "2GB",
    fast_path: bool = True,
    quarantine_dir: str | Path | None = None,
) -> Reconciliation:
    """Ingest every new file of ``landing_dir`` in one transaction; return the reconciliation.

    ``progress(file_name, rows_done)`` is called after each chunk of a file and after each file.
    ``quarantine_dir``: where the raw bytes of rows the warehouse cannot hold go (default: beside the landing
    folder, ``<landing>.quarantine``)."""
    from flows.study import check_study

    check_study(protocol)  # unknown instruments or a licence the intended use breaks: refused before reading
    started, started_at = time.perf_counter(), datetime.now(timezone.utc)
    landing_dir = Path(landing_dir)
    qdir = Path(quarantine_dir) if quarantine_dir is not None else default_dir(landing_dir)
    _check_writable(Path(warehouse), qdir)
    hashed = _hash(landing.discover(landing_dir))
    with _warehouse(warehouse, memory_limit) as con:
        done = ingested_hashes(con, protocol.study_id)
        todo = [(f, h, why) for f, h, why in hashed if h not in done]
        batch = _Batch(con, protocol, key, _batch_id(protocol.study_id, [(f.name, h) for f, h, _ in todo]), qdir,
                       fast_path, progress)
        runs = fastpath.Runs(con, protocol, batch.bounds, [f for f, _, why in todo if why is None], fast_path)
        try:
            with transaction(con):  # the whole batch, or nothing of it
                check_active_key(con, key)  # a retired or foreign key would give a participant a second pseudonym
                results = {f.name: batch.ingest_file(f, h, why, runs) for f, h, why in todo}
                erased = batch.finish()
                files = tuple(results.get(f.name) or batch.skipped(f, h) for f, h, _ in hashed)
                rec = Reconciliation(batch.batch_id, protocol.study_id, files, time.perf_counter() - started, erased)
                if todo:
                    batch.record(rec, landing_dir, started_at)
        except BaseException:
            batch.rejects.discard()
            raise
        finally:
            runs.close()
    return Reconciliation(rec.batch_id, rec.study_id, rec.files, time.perf_counter() - started, rec.erased)


def _check_writable(warehouse: Path, qdir: Path) -> None:
    """One sentence before the work, not a failed commit after it: the warehouse's folder (DuckDB writes its
    write-ahead log beside the file) and the quarantine folder (or the folder it will be made in) must take a
    file, and so must an existing warehouse file. Tried, not guessed from permission bits."""
    folder = warehouse.parent if warehouse.parent != Path("") else Path(".")
    probes = [(folder if folder.exists() else _existing_parent(folder), f"the warehouse folder {folder}")]
    probes.append((qdir if qdir.exists() else _existing_parent(qdir),
                   f"the quarantine folder {qdir} (choose another with --quarantine-dir)"))
    for where, what in probes:
        try:
            with tempfile.TemporaryFile(dir=where):
                pass
        except OSError as exc:
            raise IngestError(f"{printable(what)} cannot be written ({exc.strerror or type(exc).__name__}); "
                              "nothing was read") from None
    if warehouse.exists():
        try:
            with warehouse.open("r+b"):
                pass
        except OSError as exc:
            raise IngestError(f"the warehouse {printable(str(warehouse))} cannot be written "
                              f"({exc.strerror or type(exc).__name__}); nothing was read") from None


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _hash(files: list[landing.LandingFile]) -> list[tuple[landing.LandingFile, str, str | None]]:
    """(file, SHA-256, why it cannot be read or None), hashed on two threads (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return [(f, h, why) for f, (h, why) in zip(files, pool.map(landing.digest, files))]


@contextmanager
def _warehouse(path: str | Path, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse's connection for one batch; a DuckDB error anywhere in the batch becomes one sentence."""
    try:
        con = connect(path)
    except duckdb.Error as exc:
        raise IngestError(_duckdb_sentence(path, exc, "could not be opened")) from None
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {literal(memory_limit)}")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET enable_progress_bar = false")  # DuckDB's bar goes to stdout, where --json prints
        yield con
    except duckdb.Error as exc:
        raise IngestError(_duckdb_sentence(path, exc, "failed while ingesting") +
                          "; the batch was rolled back, nothing was stored") from None
    finally:
        con.close()


def _duckdb_sentence(path: str | Path, exc: duckdb.Error, what: str) -> str:
    detail = type(exc).__name__
    if isinstance(exc, _FILE_ERRORS):
        detail += ": " + " ".join(str(exc).split())[:160].split(". ")[0]
    return f"the warehouse {printable(str(path))} {what} ({detail})"


def ingested_hashes(con: duckdb.DuckDBPyConnection, study_id: str) -> set[str]:
    """The SHA-256 of every file ingested for the study, and of every rewrite of one (an erasure scrub's: the
    same rows less a participant's). A file counts as ingested for the study it was ingested under: the same
    file offered to another study's protocol is that study's input, and is read again."""
    return {r[0] for r in con.execute("""
        WITH RECURSIVE done(sha) AS (
            SELECT f.sha256 FROM batch_files f JOIN batches b USING (batch_id) WHERE b.study_id = ?
            UNION SELECT r.sha256_after FROM landing_rewrites r JOIN done ON r.sha256_before = done.sha
        ) SELECT sha FROM done""", [study_id]).fetchall()}


def record_rewrites(con: duckdb.DuckDBPyConnection, rewrites: list[tuple[str, str]], reason: str) -> None:
    """Record landing files Flourish rewrote, ``(sha256 before, sha256 after)``: a file ingested before its rewrite
    is not read again after it (hardening D16: re-ingesting after ``flourish erase`` quarantined every remaining
    row as a duplicate). A rewrite of a file never ingested changes nothing: it is new input either way."""
    if rewrites:
        con.executemany("INSERT INTO landing_rewrites VALUES (?, ?, now(), ?)",
                        [[before, after, reason] for before, after in rewrites])


def _batch_id(study_id: str, files: list[tuple[str, str]]) -> str:
    h = hashlib.sha256(study_id.encode())
    for name, digest in sorted(files):
        h.update(f"{name}\0{digest}\0".encode("utf-8", "surrogateescape"))
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
        self.tombs = {r[0] for r in self.con.execute("SELECT participant FROM tombstones").fetchall()}
        self.pseudonyms = Pseudonyms(self.key, self.tombs)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {gate.ACC_EVENTS} AS SELECT * FROM events LIMIT 0")
        self.gathered = 0
        self.withheld: Counter[str] = Counter()  # table -> rows of participants this batch erases, never inserted

    # -- names ------------------------------------------------------------------------------------------------

    def known_ids(self, texts: list[str]) -> dict[str, str]:
        """Of ``texts``, those that are the raw id of a participant this batch read or the warehouse knows (a
        consent, an assignment, a tombstone), with their pseudonyms: one query for all of them."""
        out = {t: self.pseudonyms.cache[t][0] for t in texts if t in self.pseudonyms.cache}
        rest = {pseudonymize(t, self.key): t for t in dict.fromkeys(texts) if t and t not in out}
        if rest:
            known = {r[0] for r in self.con.execute(
                "SELECT participant FROM consents WHERE participant IN (SELECT unnest($p)) UNION "
                "SELECT participant FROM assignments WHERE participant IN (SELECT unnest($p))",
                {"p": list(rest)}).fetchall()}
            known |= {p for p in rest if tombstone_token(p) in self.tombs}
            out.update({rest[p]: p for p in known})
        return out

    def name(self, f: landing.LandingFile | str) -> str:
        """A file's name as stored and reported: no part of it a participant's raw id (landing.display_name)."""
        relative = f if isinstance(f, str) else f.name
        known = self.known_ids(landing.name_candidates(relative))
        return landing.display_name(relative, known.get)

    def skipped(self, f: landing.LandingFile, digest: str) -> FileResult:
        return FileResult(self.name(f), f.kind or "unknown", digest, f.path.lstat().st_size, skipped=True)

    # -- files ------------------------------------------------------------------------------------------------

    def ingest_file(self, f: landing.LandingFile, digest: str, unreadable: str | None,
                    runs: fastpath.Runs) -> FileResult:
        if unreadable is None:
            self.withheld.update(runs.offer(self.con, f, self.pseudonyms, self.batch_id))
        chunks = None if unreadable is not None or f.name in runs.stored or f.kind is None or f.fmt is None \
            else _Chunks(f)
        if chunks is not None:
            self._learn_ids(chunks.peek())  # a participant's id in the file's own rows names the file too
        tally = FileTally(self.name(f), f.kind or "unknown", digest, f.path.lstat().st_size)
        if unreadable is not None:
            self._unreadable_file(f, tally, unreadable, copy=False)
        elif f.name in runs.stored:
            tally.add(runs.stored[f.name], runs.stored[f.name], {}, runs.embedded.get(f.name, 0))
            self._progress(tally.name, tally.read)
        elif f.kind is None or f.fmt is None:
            self._quarantine_lines(f, tally, "unknown_record_kind" if f.kind is None else "unsupported_format",
                                   "file name does not start with a record kind (consents, assignments, responses, "
                                   "scores, events, prompts)" if f.kind is None else "file is not .jsonl, .csv or .parquet")
        else:
            self._ingest_chunks(f, tally, chunks)
        result = tally.freeze()
        self.con.execute("INSERT INTO batch_files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [self.batch_id, result.name, digest, result.size_bytes, result.kind, result.read,
                          result.stored, sum(result.quarantined.values())])
        return result

    def _learn_ids(self, chunk: landing.Chunk | None) -> None:
        """The participant ids of a file's first chunk, pseudonymized ahead (and so known to :meth:`name`)."""
        if chunk is None or chunk.table.num_rows == 0:
            return
        with registered(self.con, stage.CHUNK, chunk.table):
            ids = [r[0] for r in self.con.execute(stage.distinct_ids_sql()).fetchall() if r[0] is not None]
        self.pseudonyms.lookup(ids)

    def _progress(self, name: str, rows: int) -> None:
        if self.progress:
            self.progress(name, rows)

    def _ingest_chunks(self, f: landing.LandingFile, tally: FileTally, chunks: _Chunks) -> None:
        assert f.kind is not None
        ctx = exact.FileContext(self.con, self.protocol, self.bounds, self.pseudonyms, self.batch_id, tally.name,
                                f.fmt, f.kind, self.rejects, self.fast_path, self.known_ids)
        for chunk in chunks:
            if isinstance(chunk, landing.NoHeader):
                self._quarantine_lines(f, tally, "malformed_csv",
                                       f"the CSV file has no header row naming the fields of {f.kind}")
                return
            if isinstance(chunk, Exception):  # the file cannot be read at all: quarantined whole, nothing stored
                self._unreadable_file(f, tally, f"{tally.name} cannot be read as {f.fmt} ({type(chunk).__name__})",
                                      copy=True)
                return
            counts = exact.ingest_chunk(ctx, chunk)
            tally.add(counts.read, counts.stored, counts.quarantined, counts.embedded)
            if f.kind == "events":
                self.gathered += counts.stored
            self._progress(tally.name, tally.read)
        if self.gathered >= ACC_FLUSH_ROWS:
            self.withheld["events"] += self.flush_events()

    def _unreadable_file(self, f: landing.LandingFile, tally: FileTally, why: str, copy: bool) -> None:
        """One ``unreadable_file`` row for the whole file; its bytes sealed into the quarantine folder when it has
        bytes to keep (never for a link, which is not followed, or a file that cannot be opened)."""
        tally.unreadable_message = why
        qfile = self.rejects.name_for(tally.name) if copy else None
        self.con.execute("INSERT INTO quarantine VALUES (?, ?, ?, 0, 'unreadable_file', ?, NULL, NULL, ?)",
                         [self.batch_id, f.kind or "unknown", tally.name, why, qfile])
        if copy:
            self.rejects.add_file(tally.name, f.path, why)
        tally.add(1, 0, {"unreadable_file": 1})

    def _quarantine_lines(self, f: landing.LandingFile, tally: FileTally, reason: str, why: str) -> None:
        """A file Flourish cannot read as records: every non-blank line is quarantined, raw bytes sealed."""
        qfile = self.rejects.name_for(tally.name)
        rows = []
        for lineno, line, too_large in landing.bounded_lines(f.path):
            if line.strip() or too_large:
                rows.append([self.batch_id, f.kind or "unknown", tally.name, lineno, reason, why, qfile])
                self.rejects.add(tally.name, lineno, line, why)
                if len(rows) >= 10_000:
                    self.con.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?)", rows)
                    tally.add(len(rows), 0, {reason: len(rows)})
                    rows = []
        if rows:
            self.con.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?)", rows)
            tally.add(len(rows), 0, {reason: len(rows)})

    # -- the batch's end --------------------------------------------------------------------------------------

    def flush_events(self) -> int:
        """Move gathered clean events into ``events``, except those of participants this batch erases.

        Those participants (consents withdrawn, not yet erased) are erased at the batch's end; their events are
        withheld rather than inserted and deleted (deleting fresh rows made the commit several times slower)
        and returned as a count, which the erasure receipt reports as deleted. Consents are ingested before
        events, so the set is complete when events are flushed."""
        acc = gate.ACC_EVENTS
        withheld = self.con.execute(
            f"SELECT count(*) FROM {acc} WHERE {gate.ERASED_BY_THIS_BATCH}").fetchall()[0][0]
        self.con.execute(f"INSERT INTO events SELECT * FROM {acc} WHERE {gate.KEPT_BY_THIS_BATCH}")
        self.con.execute(f"DELETE FROM {acc}")
        self.gathered = 0
        return int(withheld)

    def finish(self) -> ErasureSummary | None:
        """Flush the last events and erase the participants whose consent withdrawals this batch brought, in
        the batch's transaction (DESIGN.md: a withdrawal erases the participant)."""
        self.withheld["events"] += self.flush_events()
        erased = erase_withdrawn(self.con, withheld=dict(self.withheld))
        if erased is None and sum(self.withheld.values()):
            raise IngestError(f"internal error: {sum(self.withheld.values())} rows were withheld for an erasure that "
                              "did not run")
        if erased is None:
            return None
        return ErasureSummary(erased.erasure_id, erased.total_deleted, sum(erased.rows_redacted.values()))

    def record(self, rec: Reconciliation, landing_dir: Path, started_at: datetime) -> None:
        """The raw-reject files under their final names, and the batch's manifest row."""
        self.rejects.commit()
        landing_name = self.name(str(landing_dir.resolve()))
        self.con.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, now(), ?, ?, ?, ?)",
            [self.batch_id, self.protocol.study_id, landing_name, started_at, rec.read,
             sum(rec.stored.values()), sum(rec.quarantined.values()), json.dumps(rec.as_json())])


class _Chunks:
    """A file's chunks, with the first read ahead (its participant ids may name the file) and any reader failure
    turned into a value: ``NoHeader`` or another exception before the first chunk (the file is refused), or an
    IngestError after it (a file that breaks part-way fails the batch, rolled back)."""

    def __init__(self, f: landing.LandingFile):
        self.f = f
        self._it = landing.read_chunks(f)
        self._first: landing.Chunk | Exception | None = None
        self._started = False
        try:
            self._first = next(self._it)
        except StopIteration:
            self._first = None
            self._started = True
        except landing.NoHeader as exc:
            self._first = exc
        except Exception as exc:  # noqa: BLE001 - any reader failure is reported, never swallowed
            self._first = exc

    def peek(self) -> landing.Chunk | None:
        return self._first if isinstance(self._first, landing.Chunk) else None

    def __iter__(self) -> Iterator[landing.Chunk | Exception]:
        if self._started and self._first is None:
            return
        yield self._first  # type: ignore[misc]
        if isinstance(self._first, Exception):
            return
        while True:
            try:
                chunk = next(self._it)
            except StopIteration:
                return
            except FlourishError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise IngestError(f"{printable(self.f.name)} became unreadable part-way through "
                                  f"({type(exc).__name__}); the batch was rolled back, nothing was stored") from None
            yield chunk
