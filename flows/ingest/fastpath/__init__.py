"""The fast path: sources proved clean by aggregates, then loaded in one statement a table.

Most landing files are clean: every row passes the contract, the protocol, the consent gate and
de-duplication. The fast path never decides a rejection; it only vouches for sources in which *every* row
is stored, and leaves everything else to the exact path (exact.py), which gives each bad row its reason. It
stores exactly the rows the exact path would store (``tests/flows/ingest/test_fastpath.py`` compares the
two, row by row, for every record kind).

Two sources (source.py):

- **Runs of whole files** (:func:`try_run`): consecutive JSON-lines files of one kind (events, responses,
  assignments, external scores, prompts) read with DuckDB's parallel ``read_json``. Their first pass
  (:func:`verify_run`) reads only the files, so it starts on its own connection as soon as the files are
  known, while the batch ingests the files before them. A file whose bytes rule ``read_json`` out (facts.py)
  is not in a run.
- **One chunk** (:func:`try_chunk`): any other file (consents, which store their line numbers; CSV; Parquet;
  a file a run left out) is read in chunks by the exact path, and each chunk is first offered here.

Each in two passes: verify (verify.py: per file and participant, the rows failing, the first and last record
time and the record keys' hashes; then the consent gate, repeats and stored keys) and, only if the whole
source is clean, load (load.py). A run whose files changed between the passes fails the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

import flows.ingest.landing as landing
from flows.ingest.contract import ItemBounds
from flows.ingest.errors import IngestError, printable
from flows.ingest.fastpath import facts as facts_mod
from flows.ingest.fastpath.facts import FileFacts
from flows.ingest.fastpath.load import load, withholds
from flows.ingest.fastpath.source import Source
from flows.ingest.fastpath.verify import FP, gate_counts_sql, repeats, stored_keys_sql, verify_sql
from flows.ingest.pseudonyms import PMAP, Pseudonyms, registered
from schemas.protocol import StudyProtocol

RUN_KINDS = frozenset({"events", "responses", "assignments", "scores", "prompts"})
CHUNK_KINDS = frozenset({"events", "responses", "assignments", "scores", "consents", "prompts"})
"""The kinds whose chunks the fast path may vouch for; a participants record's characteristics are checked key by key
against the protocol, which only the exact path does (stage.check_characteristics)."""
RUN_BYTES = 512 << 20  # clean files read by one query (DuckDB parallelizes across and within them)


def run_candidate(f: landing.LandingFile) -> bool:
    """A JSON-lines file of a kind runs serve. ``read_json`` takes a path as a glob pattern, so a path with a
    glob character is left to the chunks."""
    return f.kind in RUN_KINDS and f.fmt == "jsonl" and not any(c in str(f.path) for c in "*?[]{}")


def file_facts(f: landing.LandingFile) -> FileFacts | None:
    """The byte facts of a run candidate, or None when its bytes rule ``read_json`` out."""
    facts = facts_mod.file_facts(f.path)
    return facts if facts.readable_by_read_json else None


def plan_runs(files: list[landing.LandingFile], candidates: set[str]) -> dict[str, list[landing.LandingFile]]:
    """Runs of consecutive candidate files of one kind, at most RUN_BYTES each, by their first file's name."""
    runs: dict[str, list[landing.LandingFile]] = {}
    current: list[landing.LandingFile] = []
    size = 0
    for f in files:
        fits = current and f.kind == current[0].kind and size + f.path.stat().st_size <= RUN_BYTES
        if current and not (f.name in candidates and fits):
            runs[current[0].name] = current
            current, size = [], 0
        if f.name in candidates:
            current.append(f)
            size += f.path.stat().st_size
    if current:
        runs[current[0].name] = current
    return runs


@dataclass(frozen=True)
class Verified:
    """A run's first pass: the files' sizes and times before it read them, and its aggregates."""

    before: tuple[tuple[int, int], ...]
    aggregates: pa.Table


def _file_state(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def verify_run(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, bounds: ItemBounds, kind: str,
               paths: list[Path]) -> Verified:
    """The first pass over a run (reads the files only: safe on a second cursor while the batch works)."""
    before = tuple(_file_state(p) for p in paths)
    return Verified(before, con.sql(verify_sql(kind, protocol, bounds, Source(tuple(paths)))).to_arrow_table())


@dataclass(frozen=True)
class RunOutcome:
    stored: bool
    rows: Mapping[str, int]  # file name -> rows stored (when stored)
    embedded: Mapping[str, int] = field(default_factory=dict)  # file name -> rows with their participant id replaced elsewhere
    withheld: Mapping[str, int] = field(default_factory=dict)  # table -> rows of participants this batch erases,
    # not inserted (they count as erased: load.withholds)
    retry_alone: frozenset[str] = frozenset()  # files that looked clean on their own: worth a run of one


@dataclass(frozen=True)
class _Decision:
    rows: Mapping[int, int]
    embedded: Mapping[int, int]
    clean: frozenset[int]
    withheld: int
    repeats_within: frozenset[int]
    any_repeat: bool


def _decide(con, kind: str, study_id: str, source: Source, aggregates: pa.Table, pseudonyms: Pseudonyms,
            lines: Mapping[int, int | None]) -> _Decision:
    """With the aggregates of a source: the rows of each file, the files proved clean, the withheld rows."""
    hks = aggregates.column("hks").combine_chunks()
    key_hash = hks.flatten().to_numpy(zero_copy_only=False)
    key_file = aggregates.column("fi").combine_chunks().to_numpy(zero_copy_only=False)[
        pc.list_parent_indices(hks).to_numpy()]
    fp = aggregates.drop_columns(["hks"])
    ids = [i for i in pc.unique(fp.column("pid")).to_pylist() if i is not None]
    found = repeats(key_file, key_hash)
    with registered(con, FP, fp), registered(con, PMAP, pseudonyms.table(ids)), _small_side_first(con):
        per_file = {r[0]: r[1:] for r in con.execute(gate_counts_sql(kind, study_id)).fetchall()}
        rows = {fi: per_file.get(fi, (0,))[0] for fi in lines}
        embedded = {fi: per_file.get(fi, (0, 0, 0, 0, 0))[4] for fi in lines}
        withheld = sum(per_file.get(fi, (0, 0, 0, 0))[3] for fi in lines)
        candidates = {fi for fi, expected in lines.items() if fi in per_file and per_file[fi][1:3] == (0, 0)
                      and (expected is None or per_file[fi][0] == expected)}
        stored_sql = stored_keys_sql(kind, study_id, source, ids_inside=any(embedded.values()))
        stored = {}  # read only for sources that may be clean (a chunk with a line that is not JSON has no fields)
        if candidates and stored_sql and _has_stored(con, kind, study_id):
            stored = dict(con.execute(stored_sql).fetchall())
    clean = {fi for fi in candidates if not stored.get(fi)}
    if not withholds(kind, source):  # those participants' consents (or a chunk's records) are stored, then erased
        withheld = 0
    return _Decision(rows, embedded, frozenset(clean), withheld, frozenset(a for a, b in found if a == b),
                     bool(found))


@contextmanager
def _small_side_first(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """The small side of each join (the pseudonym map, the source's keys) as its build side: ``read_json``'s
    estimate of a few dozen rows would otherwise make the optimizer hash the files' millions of rows."""
    con.execute("SET disabled_optimizers = 'build_side_probe_side'")
    try:
        yield
    except BaseException:
        try:
            con.execute("RESET disabled_optimizers")
        except duckdb.Error:  # the error propagating aborted the transaction; it is the one that matters
            pass
        raise
    con.execute("RESET disabled_optimizers")


def _has_stored(con, kind: str, study_id: str) -> bool:
    """Whether any record a new one of ``kind`` could repeat is stored (or gathered) already."""
    from flows.ingest.gate import stored_keys

    return bool(con.execute(f"SELECT EXISTS (SELECT 1 FROM {stored_keys(kind, study_id)})").fetchall()[0][0])


def try_run(con: duckdb.DuckDBPyConnection, run: list[tuple[landing.LandingFile, FileFacts | None]],
            protocol: StudyProtocol, bounds: ItemBounds, pseudonyms: Pseudonyms, batch_id: str,
            verified: Future[Verified] | Verified | None = None) -> RunOutcome:
    """Store a run's files if every one is clean; else store nothing and say which looked clean alone."""
    kind = run[0][0].kind
    assert kind is not None and all(f.kind == kind for f, _ in run)
    paths = [f.path for f, _ in run]
    try:
        if verified is None:
            verified = verify_run(con, protocol, bounds, kind, paths)
        elif isinstance(verified, Future):
            verified = verified.result()
    except duckdb.InvalidInputException:
        # DuckDB's reader refused the files as a whole (a row past read_json's maximum_object_size: the first pass
        # starts before the byte facts are known): not a clean run. Each file of a longer run is tried alone; the
        # file the reader refuses goes to the exact path, which quarantines the one row (hardening D7).
        return RunOutcome(False, {}, retry_alone=frozenset(f.name for f, _ in run) if len(run) > 1 else frozenset())
    lines = {i: (facts.lines if facts is not None else -1) for i, (_, facts) in enumerate(run)}
    source = Source(tuple(paths))
    d = _decide(con, kind, protocol.study_id, source, verified.aggregates, pseudonyms, lines)
    if len(d.clean) < len(run) or d.any_repeat:
        # a key repeated inside one file rules that file out; across files, each file alone (in order)
        # decides, since the repeat is a duplicate only for the later one
        hints = {run[i][0].name for i in d.clean - d.repeats_within} if len(run) > 1 else set()
        return RunOutcome(False, {}, retry_alone=frozenset(hints))
    ids = [i for i in pc.unique(verified.aggregates.column("pid")).to_pylist() if i is not None]
    with registered(con, PMAP, pseudonyms.table(ids)), _small_side_first(con):
        loaded = load(con, kind, protocol, source, batch_id, ids_inside=any(d.embedded.values()))
    inserted = loaded.records
    expected = sum(d.rows.values()) - d.withheld
    if inserted != expected or tuple(_file_state(p) for p in paths) != verified.before:
        names = ", ".join(printable(f.name) for f, _ in run)
        raise IngestError(f"a landing file of {names} changed while it was being ingested ({inserted} rows loaded, "
                          f"{expected} verified); the batch was rolled back, nothing was stored")
    return RunOutcome(True, {run[i][0].name: n for i, n in d.rows.items()},
                      {run[i][0].name: n for i, n in d.embedded.items()},
                      {kind: d.withheld, **loaded.withheld} if d.withheld else {})


def try_chunk(con: duckdb.DuckDBPyConnection, chunk: str, kind: str, protocol: StudyProtocol,
              bounds: ItemBounds, pseudonyms: Pseudonyms, batch_id: str, file_name: str) -> tuple[int, int] | None:
    """Store a registered chunk (every row of it, none a reader reject) if it is clean: the rows stored and those
    of them with their participant id in another field, or None having stored nothing."""
    source = Source(chunk=chunk)
    aggregates = con.sql(verify_sql(kind, protocol, bounds, source)).to_arrow_table()
    if aggregates.num_rows == 0:
        return None
    d = _decide(con, kind, protocol.study_id, source, aggregates, pseudonyms, {0: None})
    if d.clean != {0} or d.any_repeat:
        return None
    ids = [i for i in pc.unique(aggregates.column("pid")).to_pylist() if i is not None]
    with registered(con, PMAP, pseudonyms.table(ids)):
        inserted = load(con, kind, protocol, source, batch_id, file_name, ids_inside=any(d.embedded.values())).records
    if inserted != d.rows[0]:
        raise IngestError(f"internal error: {inserted} rows of a chunk of {printable(file_name)} were loaded, "
                          f"{d.rows[0]} verified; the batch was rolled back, nothing was stored")
    return inserted, d.embedded[0]


class Runs:
    """The batch's runs of whole files, with their byte facts counted and their first passes started on threads
    as soon as the files are known (the first pass reads only the files: it runs on a second cursor while the
    batch ingests the files before the run, say the consents, on the cores those small files leave idle)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, bounds: ItemBounds,
                 files: list[landing.LandingFile], enabled: bool):
        from concurrent.futures import ThreadPoolExecutor

        self.protocol, self.bounds = protocol, bounds
        self._facts_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flourish-facts")
        self._verify_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flourish-verify")
        self.facts = {f.name: self._facts_pool.submit(file_facts, f) for f in files if enabled and run_candidate(f)}
        self.runs = plan_runs(files, set(self.facts))
        self._by_name = {f.name: f for f in files}
        reader = con.cursor()  # a connection of its own: settings are per connection
        reader.execute("SET TimeZone = 'UTC'")
        reader.execute("SET enable_progress_bar = false")
        self._verified = {first: self._verify_pool.submit(verify_run, reader, protocol, bounds, run[0].kind,
                                                          [f.path for f in run])
                          for first, run in self.runs.items()}
        self._retry: set[str] = set()
        self.stored: dict[str, int] = {}  # file name -> rows a run stored
        self.embedded: dict[str, int] = {}  # file name -> rows a run stored with their participant id in another field

    def offer(self, con: duckdb.DuckDBPyConnection, f: landing.LandingFile, pseudonyms: Pseudonyms,
              batch_id: str) -> Mapping[str, int]:
        """Try the run ``f`` starts, then ``f`` alone if a failed run found it clean on its own; the rows withheld
        for this batch's erasure, by table."""
        if f.name in self.runs:
            outcome = self._try(con, self.runs[f.name], self._verified[f.name], pseudonyms, batch_id)
            if outcome.stored:
                return outcome.withheld
        if f.name in self._retry and f.name not in self.stored:
            return self._try(con, [f], None, pseudonyms, batch_id).withheld
        return {}

    def _try(self, con, files: list[landing.LandingFile], verified: Future[Verified] | None, pseudonyms: Pseudonyms,
             batch_id: str) -> RunOutcome:
        run = [(g, self.facts[g.name].result()) for g in files]
        outcome = try_run(con, run, self.protocol, self.bounds, pseudonyms, batch_id, verified)
        if outcome.stored:
            self.stored.update(outcome.rows)
            self.embedded.update(outcome.embedded)
        self._retry |= outcome.retry_alone
        return outcome

    def close(self) -> None:
        self._facts_pool.shutdown(wait=True, cancel_futures=True)
        self._verify_pool.shutdown(wait=True, cancel_futures=True)
