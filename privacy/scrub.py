"""Erasure and files: remove a participant from every file an erasure covers, row by row, and prove it.

An erasure request (``flows.privacy_flows.erase_participant``) covers the study folder and every landing folder an
ingest recorded, with its quarantine folder (``Folders``). Files are handled in two steps so that a failure
leaves everything as before or is finished by running the same erasure again:

* ``plan_scrub`` (read only, before any row is erased): finds every file under the covered folders that holds
  the pseudonym or the raw id and checks it can be rewritten (a readable Parquet file, a writable folder);
  otherwise it refuses and nothing has changed.
* ``apply_scrub``: every landing format the ingest reads is rewritten row by row (JSON lines ``.jsonl``,
  ``.ndjson``, ``.json``; delimited ``.csv``, ``.tsv``, a quoted value may span lines; Parquet), as are
  quarantine files and logs; other DuckDB files get the row steps and compaction. Source data (files under a
  landing or quarantine folder, or named as landing files) are never deleted: one that cannot be edited row by
  row is left and reported. A derived file of another format (an opaque cache, a JSON document) is deleted,
  since a cache can be recomputed but cannot be edited safely. Each file is rewritten into a temporary file and
  renamed over the original. Symbolic links are never followed.
* ``byte_scan``, the proof: every file under the covered folders is read and searched for the pseudonym and the
  raw id; files it could not read (and links) are listed as not checked, never counted as clean.

No SQL text here is built from a path: Parquet files are read and written by pyarrow, and DuckDB only decides,
on the table in memory, which rows stay. File names in receipts, logs and errors are masked (``Needles.masked``):
a partner's path may hold the raw id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb

from privacy.erasure import ERASED, compact_database, text_columns
from privacy.errors import PrivacyError
from schemas.sqltext import ident
from schemas.warehouse import participant_tables, table_names, transaction

# Files, by how they are scrubbed. Every landing format the ingest reads is here (flows/ingest/landing.py). A
# ``.json`` landing file is JSON lines to the ingest; elsewhere (a derived cache) it is one JSON document, which
# loses its structure if a line is cut out of it, so there it is deleted like any other opaque cache.
LINE_SUFFIXES = (".jsonl", ".ndjson", ".txt", ".log")             # one record per line, wherever they are
SOURCE_LINE_SUFFIXES = (".json",)                                 # one record per line in landing data
DELIMITED_SUFFIXES = (".csv", ".tsv")                             # a quoted value may hold a line break
PARQUET_SUFFIXES = (".parquet", ".pq")
DUCKDB_SUFFIXES = (".duckdb", ".db")
_TEMP_SUFFIXES = (".erase-tmp", ".compact-tmp")


def _raw_pattern(raw_id: str) -> re.Pattern[bytes]:
    """The raw id as a whole token (so erasing 'p1' does not touch 'p10')."""
    return re.compile(rb"(?<![A-Za-z0-9_\-])" + re.escape(raw_id.encode("utf-8")) + rb"(?![A-Za-z0-9_\-])")


@dataclass(frozen=True)
class Needles:
    """What identifies the participant in a file: their pseudonym and, when known, their raw id."""

    pseudonym: str
    raw_id: str | None = None

    def in_bytes(self, data: bytes) -> bool:
        if self.pseudonym.encode() in data:
            return True
        return bool(self.raw_id) and _raw_pattern(self.raw_id).search(data) is not None

    def in_record(self, record: bytes) -> bool:
        """The record names the participant, directly or inside an ingest quarantine file's base64 raw bytes."""
        if self.in_bytes(record):
            return True
        if b"raw_base64" in record:
            try:
                obj = json.loads(record)
                return isinstance(obj, dict) and self.in_bytes(base64.b64decode(obj.get("raw_base64") or ""))
            except (ValueError, binascii.Error):
                return False
        return False

    def masked(self, text: str) -> str:
        """``text`` (a file name for a receipt, a log or an error) with the raw id and pseudonym replaced: a
        partner's path may hold the id, and no message or log may copy it."""
        text = text.replace(self.pseudonym, "[participant]")
        return text.replace(self.raw_id, "[participant]") if self.raw_id else text

    def in_file(self, data: bytes) -> bool:
        return self.in_bytes(data) or (b"raw_base64" in data and any(self.in_record(r) for r in _lines(data)))


def _lines(data: bytes) -> list[bytes]:
    """Records split at "\\n" only, each keeping its terminator (the ingest splits JSON lines the same way; a
    stray carriage return inside a record must not split it, or a fragment of the erased row would stay)."""
    parts = data.split(b"\n")
    out = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _delimited_records(data: bytes) -> list[bytes]:
    """CSV/TSV records: lines joined while a double quote is open (RFC 4180: a quoted value may hold a line
    break, and a doubled quote inside it leaves the count even)."""
    records: list[bytes] = []
    current: list[bytes] = []
    quotes = 0
    for line in _lines(data):
        current.append(line)
        quotes += line.count(b'"')
        if quotes % 2 == 0:
            records.append(b"".join(current))
            current, quotes = [], 0
    if current:
        records.append(b"".join(current))
    return records


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".erase-tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, path.stat().st_mode & 0o777)
    tmp.replace(path)


def _scrub_records(path: Path, needles: Needles, split) -> None:
    records = split(path.read_bytes())
    _atomic_write(path, b"".join(r for r in records if not needles.in_record(r)))


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _scrub_parquet(path: Path, needles: Needles) -> None:
    """Rewrite a Parquet file without the participant's rows (pyarrow writes, DuckDB only decides which rows
    stay, on the table in memory: no path in SQL)."""
    import pyarrow.parquet as pq

    table = _read_parquet(path)
    cond = "contains(CAST(t AS VARCHAR), $pseudo)"
    params: dict[str, str] = {"pseudo": needles.pseudonym}
    if needles.raw_id:
        cond += " OR regexp_matches(CAST(t AS VARCHAR), $raw)"
        params["raw"] = r"(^|[^A-Za-z0-9_\-])" + re.escape(needles.raw_id) + r"($|[^A-Za-z0-9_\-])"
    con = duckdb.connect()
    try:
        con.register("flourish_scrub_source", table)
        keep = [bool(k) for (k,) in con.execute(
            f"SELECT NOT coalesce({cond}, false) FROM flourish_scrub_source t", params).fetchall()]
    finally:
        con.close()
    tmp = path.with_name(path.name + ".erase-tmp")
    pq.write_table(table.filter(keep), tmp)
    os.chmod(tmp, path.stat().st_mode & 0o777)
    tmp.replace(path)


def _scrub_other_duckdb(path: Path, needles: Needles) -> None:
    con = duckdb.connect(str(path))
    try:
        with transaction(con):
            for t in participant_tables(con):
                con.execute(f"DELETE FROM {ident(t)} WHERE participant = ?", [needles.pseudonym])
            for t in table_names(con):
                for col in text_columns(con, t):
                    con.execute(f"UPDATE {ident(t)} SET {ident(col)} = replace({ident(col)}, ?, ?) "
                                f"WHERE contains({ident(col)}, ?)", [needles.pseudonym, ERASED, needles.pseudonym])
    finally:
        con.close()
    compact_database(path)


Handler = Literal["lines", "delimited", "parquet", "duckdb", "delete", "leave"]


def _handler(path: Path, is_source: bool) -> Handler:
    name = path.name.lower()
    if name.endswith(LINE_SUFFIXES) or (is_source and name.endswith(SOURCE_LINE_SUFFIXES)):
        return "lines"
    if name.endswith(DELIMITED_SUFFIXES):
        return "delimited"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(DUCKDB_SUFFIXES):
        return "duckdb"
    return "leave" if is_source else "delete"


@dataclass(frozen=True)
class ScrubStep:
    path: Path
    shown: str          # the name the receipt and the erasure log use
    handler: Handler
    is_source: bool     # under a landing or quarantine folder: never deleted


@dataclass(frozen=True)
class ScrubPlan:
    steps: tuple[ScrubStep, ...] = ()
    unchecked: tuple[str, ...] = ()     # files that could not be read: whether they hold the participant is unknown
    scanned: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def _never(_name: str) -> bool:
    return False


@dataclass(frozen=True)
class Folders:
    """The folders an erasure covers: ``study`` (its own files, derived data), ``sources`` (landing and quarantine
    folders, whose files are never deleted), and ``missing`` (recorded source folders no longer there).

    ``is_landing_name`` tells a landing file by its name wherever it lies (the ingest's naming rule, passed in by
    the caller: ``privacy`` does not import the ingest); such a file is source data too."""

    study: Path
    sources: tuple[Path, ...] = ()
    missing: tuple[Path, ...] = ()
    skip: tuple[Path, ...] = ()   # the warehouse file and its WAL (compacted instead)
    is_landing_name: Callable[[str], bool] = field(default=_never, compare=False)

    def roots(self) -> list[Path]:
        """Every folder to walk, a folder inside another one dropped (its files are walked once)."""
        found = [self.study, *[s for s in self.sources if s.is_dir()]]
        out: list[Path] = []
        for root in sorted({r.resolve() for r in found}, key=lambda r: len(r.parts)):
            if not any(root.is_relative_to(o) for o in out):
                out.append(root)
        return out

    def is_source(self, path: Path) -> bool:
        return self.is_landing_name(path.name) or any(path.is_relative_to(s.resolve()) for s in self.sources)

    def shown(self, path: Path) -> str:
        study = self.study.resolve()
        return str(path.relative_to(study)) if path.is_relative_to(study) else str(path)


def _walk(folders: Folders) -> Iterable[tuple[Path, bool]]:
    """(path, is a symbolic link) of every file under the covered folders. Links are never followed: what one
    points to lies outside the folders the erasure covers (or is covered where it lies), and rewriting or
    deleting through a link would touch a file no one asked to erase from (a cache elsewhere, /etc/passwd)."""
    skipped = {s.resolve() for s in folders.skip}
    for root in folders.roots():
        for base, dirs, files in os.walk(root):  # does not descend into linked folders
            dirs.sort()
            for name in sorted(files):
                path = Path(base) / name
                if path in skipped or name.endswith(_TEMP_SUFFIXES):
                    continue
                yield path, path.is_symlink()


def plan_scrub(folders: Folders, needles: Needles) -> ScrubPlan:
    """Read only: which files hold the participant, and how each will be rewritten. Refuses (PrivacyError, nothing
    changed) when one of them cannot be rewritten: an unreadable Parquet file, a folder without write permission."""
    steps: list[ScrubStep] = []
    unchecked: list[str] = []
    for path, is_link in _walk(folders):
        shown = needles.masked(folders.shown(path))
        if is_link:
            unchecked.append(shown)
            continue
        try:
            data = path.read_bytes()
        except OSError:
            unchecked.append(shown)
            continue
        if not needles.in_file(data):
            continue
        is_source = folders.is_source(path)
        handler = _handler(path, is_source)
        if handler == "parquet":
            try:
                _read_parquet(path)
            except Exception as exc:  # pyarrow raises its own error types for a damaged file
                raise PrivacyError(
                    f"{shown} holds the participant but cannot be read as Parquet ({type(exc).__name__}), so it "
                    "cannot be rewritten without them; repair or remove it, then erase again (nothing was changed)"
                ) from None
        if handler != "leave" and not os.access(path.parent, os.W_OK):
            raise PrivacyError(
                f"{shown} holds the participant but its folder is not writable, so it cannot be rewritten; "
                "nothing was changed")
        steps.append(ScrubStep(path, shown, handler, is_source))
    return ScrubPlan(tuple(steps), tuple(unchecked), tuple(str(r) for r in folders.roots()),
                     tuple(str(m) for m in folders.missing))


def apply_scrub(plan: ScrubPlan, needles: Needles, *, on_rewrite: Callable[[str, str], None] | None = None
                ) -> tuple[list[str], list[str], list[str]]:
    """Rewrite the planned files; return (rewritten, deleted, left). A derived file still holding the participant
    after its rewrite (e.g. statistics in a footer) is deleted; a source file is left and reported.

    ``on_rewrite(sha256_before, sha256_after)`` hears of each file rewritten, so the ingest that records it does not
    read a scrubbed landing file again as new input (hardening D16)."""
    rewritten: list[str] = []
    deleted: list[str] = []
    left: list[str] = []
    for step in plan.steps:
        if not step.path.exists():  # scrubbed by an earlier, interrupted run of the same erasure
            continue
        if step.handler == "leave":
            left.append(step.shown)
            continue
        if step.handler == "delete":
            step.path.unlink()
            deleted.append(step.shown)
            continue
        before = hashlib.sha256(step.path.read_bytes()).hexdigest() if on_rewrite is not None else ""
        if step.handler == "lines":
            _scrub_records(step.path, needles, _lines)
        elif step.handler == "delimited":
            _scrub_records(step.path, needles, _delimited_records)
        elif step.handler == "parquet":
            _scrub_parquet(step.path, needles)
        else:
            _scrub_other_duckdb(step.path, needles)
        after = step.path.read_bytes()
        if needles.in_file(after):
            if step.is_source:
                left.append(step.shown)
            else:
                step.path.unlink()
                deleted.append(step.shown)
            continue
        rewritten.append(step.shown)
        if on_rewrite is not None:
            on_rewrite(before, hashlib.sha256(after).hexdigest())
    return rewritten, deleted, left


@dataclass(frozen=True)
class ByteScan:
    """The proof: files that still hold a needle, and files that could not be read (not proven clean)."""

    residual: tuple[str, ...]
    unchecked: tuple[str, ...]
    scanned: tuple[str, ...]


def byte_scan(folders: Folders, needles: Needles, *, include: Sequence[Path] = ()) -> ByteScan:
    """Read every file under the covered folders (and ``include``, e.g. the compacted warehouse) and search it."""
    residual: list[str] = []
    unchecked: list[str] = []
    paths = list(_walk(folders)) + [(p.resolve(), False) for p in include if p.exists()]
    for path, is_link in dict.fromkeys(paths):
        if is_link:
            unchecked.append(needles.masked(folders.shown(path)))
            continue
        try:
            data = path.read_bytes()
        except OSError:
            unchecked.append(needles.masked(folders.shown(path)))
            continue
        if needles.in_bytes(data):
            residual.append(needles.masked(folders.shown(path)))
    return ByteScan(tuple(residual), tuple(unchecked), tuple(str(r) for r in folders.roots()))


def scan_bytes(folder: str | Path, needles: Needles) -> list[str]:
    """Files under one folder whose bytes still contain the pseudonym or raw id (names relative to it)."""
    return list(byte_scan(Folders(Path(folder)), needles).residual)
