"""Reading a landing folder: which files hold which record kind, and their rows as Arrow chunks.

Every format is turned into the same shape, a chunk of ``(line, raw)`` where ``raw`` is one record as JSON
text, so one vectorized validator (stage.py, fastpath/) serves JSONL, CSV and Parquet alike. Chunks are
bounded in bytes and rows, and no row is ever held longer than ``MAX_ROW_BYTES`` (a longer one is refused as
``row_too_large`` with its first 64 KiB kept), so memory stays flat however large a file or a line is.

- JSONL: split on newlines with numpy over 32 MiB blocks (no Python loop per line); ``line`` is the physical
  line number; blank lines are not rows.
- CSV: the file's lines are screened first (a line that is not UTF-8 or is too long becomes a *reject*, blank
  lines are skipped), then pyarrow's streaming reader parses the rest, every column as text; a row it cannot
  parse (wrong number of fields) comes back as a reject with its line number, never dropped. A file whose
  first line names none of the kind's fields has no header: it is refused line by line (:class:`NoHeader`).
- Parquet: record batches; ``line`` is the 1-based row number.

CSV and Parquet hold the structured fields (``items``, ``scopes``) as JSON text (or, in Parquet, as native
lists and maps): the record's JSON embeds them as JSON values, so a CSV row is held to the same contract as a
JSON line (text that is not JSON stays a string, and the contract refuses it).

Nothing here copies a row's content into a message: a reject's reason says what is wrong and where.

Folders: sub-folders are read (``events/2026-01.jsonl`` takes its kind from the folder); names starting with
``.`` or ``_`` are not data. A symbolic link is never followed (it could lead out of the landing folder, or
loop): each one is a row of its own, refused with what it is (:attr:`LandingFile.link`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from flows.ingest.errors import IngestError, printable
from schemas.records import MAX_ROW_BYTES, RECORD_KINDS, field_specs
from schemas.sqltext import ident

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
CHUNK_BYTES = 32 << 20
CHUNK_ROWS = 200_000
KEPT_PREFIX_BYTES = 64 << 10  # of a row too large to read: what the quarantine folder keeps
TRAILING_COMMA = r",[ \t\r\n]*[}\]]"
"""JSON's blanks, then a comma before a closing bracket: a line DuckDB's JSON parser takes and JSON does not
may hold it (``{"a": 1,}``); both paths leave such lines to Python's strict parser (exact.lax_lines,
fastpath/facts.py)."""

INVALID_UTF8 = "the row is not valid UTF-8"
TOO_LARGE = f"the row is longer than {MAX_ROW_BYTES >> 20} MiB; its first {KEPT_PREFIX_BYTES >> 10} KiB are kept"


@dataclass(frozen=True)
class Reject:
    """A row the reader could not turn into a record: its line, raw bytes (at most a prefix), reason and why."""

    line: int
    raw: bytes
    reason: str  # invalid_utf8 | malformed_csv | row_too_large
    why: str


@dataclass(frozen=True)
class LandingFile:
    path: Path
    kind: str | None  # None: the name starts with no known record kind
    fmt: str | None  # "jsonl" | "csv" | "parquet" | None (unsupported suffix)
    relative: str = ""  # path relative to the landing folder
    link: str | None = None  # a symbolic link (not followed): what it is

    @property
    def name(self) -> str:
        return self.relative or self.path.name


@dataclass
class Chunk:
    """Rows of one file: ``table`` has columns line (int64) and raw (large_string, JSON text)."""

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)


class NoHeader(Exception):
    """A CSV file whose first line names none of its kind's fields: it has no header (a data row would otherwise
    be taken for one, and its values, raw ids among them, quoted as field names)."""


def kind_of(name: str) -> str | None:
    lower = name.lower()
    for kind in sorted(RECORD_KINDS, key=len, reverse=True):
        if lower.startswith(kind):
            rest = lower[len(kind):]
            if rest == "" or rest[0] in "-_.":
                return kind
    return None


def format_of(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(JSON_SUFFIXES):
        return "jsonl"
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


KIND_ORDER = {k: i for i, k in enumerate(("consents", "assignments", "participants", "scores", "prompts", "responses",
                                           "events"))}


def _link_kind(path: Path, landing: Path) -> str:
    """What a symbolic link is, without following it to read anything."""
    try:
        target = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        return "a symbolic link that loops" if exc.errno == 40 else "a broken symbolic link"
    if target.is_dir():
        return "a symbolic link to a folder"
    inside = target == landing or landing in target.parents
    return f"a symbolic link to a file {'inside' if inside else 'outside'} the landing folder"


def discover(landing: Path) -> list[LandingFile]:
    """Files (and links) of a landing folder, consents first (the gate needs them), then by name."""
    if not landing.is_dir():
        raise IngestError(f"the landing folder {printable(str(landing))} does not exist or is not a folder")
    root = Path(os.path.realpath(landing))
    found = []
    for folder, dirs, names in os.walk(landing, followlinks=False):
        base = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")) and not (base / d).is_symlink())
        entries = [n for n in names if not n.startswith((".", "_"))]
        entries += [d for d in os.listdir(base) if (base / d).is_symlink() and (base / d).is_dir()
                    and not d.startswith((".", "_"))]
        for name in sorted(set(entries)):
            p = base / name
            rel = p.relative_to(landing)
            # the kind comes from the file name, else from the nearest enclosing folder (events/2026-01.jsonl)
            kind = kind_of(name) or next((kind_of(part) for part in reversed(rel.parts[:-1]) if kind_of(part)), None)
            link = _link_kind(p, root) if p.is_symlink() else None
            found.append(LandingFile(p, kind, format_of(name), rel.as_posix(), link))
    return sorted(found, key=lambda f: (KIND_ORDER.get(f.kind or "", 99), f.name))


def digest(f: LandingFile) -> tuple[str, str | None]:
    """(SHA-256 that identifies the input, why it cannot be read or None). A link is identified by where it
    points, a file that cannot be opened by its name, size and time: both are remembered like files, so a
    re-run counts them once."""
    if f.link is not None:
        target = os.readlink(f.path)
        return hashlib.sha256(b"flourish-link\0" + os.fsencode(target)).hexdigest(), f"{f.link}: links are not followed"
    h = hashlib.sha256()
    try:
        with f.path.open("rb") as fh:
            while block := fh.read(8 << 20):
                h.update(block)
    except OSError as exc:
        st = f.path.lstat()
        why = "permission denied" if isinstance(exc, PermissionError) else type(exc).__name__
        ident_bytes = f"{f.relative}\0{st.st_size}\0{st.st_mtime_ns}".encode("utf-8", "surrogateescape")
        return hashlib.sha256(b"flourish-unreadable\0" + ident_bytes).hexdigest(), f"the file cannot be opened ({why})"
    return h.hexdigest(), None


_WORD = re.compile(r"[A-Za-z0-9]+")


def _name_candidates(part: str) -> list[str]:
    """The texts of one path part that could be a participant's id: every run of up to 12 consecutive words of it
    with what separates them (``u-6349ab2f`` in ``2026-03-u-6349ab2f.jsonl``, ``o'brien@example.org`` in
    ``events-o'brien@example.org.jsonl``), and the part itself; longest first."""
    words = list(_WORD.finditer(part))
    out = {part}
    for i, first in enumerate(words):
        for last in words[i:i + 12]:
            out.add(part[first.start():last.end()])
    # an id may begin or end with a separator-like character the words leave out (o'brien's quote is inside)
    return sorted((c for c in out if 0 < len(c) <= 256), key=len, reverse=True)


def name_candidates(relative: str) -> list[str]:
    """Every text :func:`display_name` checks in a path (to pseudonymize them in one go)."""
    return [c for part in relative.split("/") for c in _name_candidates(part) if c]


def display_name(relative: str, pseudonym_of: Callable[[str], str | None]) -> str:
    """``relative`` with every part of it that is a participant's raw id replaced by their pseudonym, so no folder
    or file name stores a raw id (a partner may file a participant's data under their id). ``pseudonym_of`` says
    whether a text is a known participant's id, and gives its pseudonym; the longest such text of a part wins."""
    parts = relative.split("/")
    for i, part in enumerate(parts):
        for candidate in _name_candidates(part):
            if candidate in parts[i] and (pseudonym := pseudonym_of(candidate)) is not None:
                parts[i] = parts[i].replace(candidate, pseudonym)
    return "/".join(parts)


# -- lines, bounded ----------------------------------------------------------------------------------------------

def bounded_lines(path: Path, block_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes, bool]]:
    """``(line number, bytes without the line ending, too large)`` of every line of a file, a line longer than
    ``MAX_ROW_BYTES`` cut to its first 64 KiB and never held whole (the rest of it is read past)."""
    number = 0
    carry = bytearray()
    oversized = False
    with path.open("rb") as fh:
        while block := fh.read(block_bytes):
            start = 0
            while True:
                cut = block.find(b"\n", start)
                if cut < 0:
                    if not oversized:
                        carry += block[start:]
                        if len(carry) > MAX_ROW_BYTES:
                            oversized = True
                            del carry[KEPT_PREFIX_BYTES:]
                    break
                if not oversized:
                    carry += block[start:cut]
                number += 1
                too_large = oversized or len(carry) > MAX_ROW_BYTES
                yield number, bytes(carry[:KEPT_PREFIX_BYTES] if too_large else carry).rstrip(b"\r"), too_large
                carry.clear()
                oversized = False
                start = cut + 1
    if carry or oversized:
        number += 1
        too_large = oversized or len(carry) > MAX_ROW_BYTES
        yield number, bytes(carry[:KEPT_PREFIX_BYTES] if too_large else carry).rstrip(b"\r"), too_large


def _blank(line: bytes) -> bool:
    return not line.strip()


# -- JSONL -------------------------------------------------------------------------------------------------------

def _lines_to_table(body: bytes, first_line: int) -> tuple[pa.Table, list[Reject], int]:
    """Split ``body`` (ending in a newline) into lines; invalid UTF-8 lines and lines longer than MAX_ROW_BYTES
    become rejects. Also returns the number of physical lines, so the caller numbers the next block without
    counting again.

    Zero-copy: each ``raw`` value is a view of ``body`` that keeps its line ending ("\\n" or "\\r\\n"),
    which JSON parsing ignores as trailing whitespace; consumers that need the bare bytes strip it.
    """
    buf = np.frombuffer(body, dtype=np.uint8)
    newline = np.flatnonzero(buf == 10)
    n = len(newline)
    offsets = np.empty(n + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = newline + 1
    starts = offsets[:-1]
    lengths = newline - starts  # without the LF
    lines = np.arange(first_line, first_line + n, dtype=np.int64)
    # blank lines (empty or only spaces/tabs/CR) are skipped and not counted; only short lines or lines
    # starting with whitespace can be blank, and those are rare, so check just them
    first = buf[np.minimum(starts, len(buf) - 1)]
    candidate = (lengths <= 1) | (first == 32) | (first == 9) | (first == 13)
    blank = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(candidate):
        blank[i] = _blank(body[starts[i]:newline[i]])
    rejects: list[Reject] = []
    refused = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(lengths > MAX_ROW_BYTES):
        rejects.append(Reject(int(lines[i]), body[starts[i]:starts[i] + KEPT_PREFIX_BYTES], "row_too_large", TOO_LARGE))
        refused[i] = True
    try:
        body.decode("utf-8")  # one validation pass over the block (fast for ASCII)
        valid_utf8 = True
    except UnicodeDecodeError:
        valid_utf8 = False
    if valid_utf8 and not refused.any():
        text = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(body))
        keep = ~blank
    else:  # rare: some line is not UTF-8 or too large; reject those, keep the rest
        values: list[str | None] = []
        for i in range(n):
            if refused[i]:
                values.append(None)
                continue
            v = body[starts[i]:offsets[i + 1]]
            try:
                values.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                rejects.append(Reject(int(lines[i]), v.rstrip(b"\r\n"), "invalid_utf8", INVALID_UTF8))
                values.append(None)
        text = pa.array(values, type=pa.large_string())
        keep = ~blank & np.array([v is not None for v in values], dtype=bool)
    table = pa.table({"line": pa.array(lines), "raw": text})
    if not keep.all():
        table = table.filter(pa.array(keep))
    return table, sorted(rejects, key=lambda r: r.line), n


def read_jsonl(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Chunks of a JSON-lines file. A line longer than MAX_ROW_BYTES is never held whole: once the bytes
    pending without a newline exceed it, they are cut to a prefix and the rest of the line is read past."""
    next_line = 1
    carry = b""
    oversized: bytes | None = None  # the prefix of a line too large, while the rest of it is read past
    with path.open("rb") as fh:
        if fh.read(3) != b"\xef\xbb\xbf":  # a UTF-8 byte-order mark is not part of the first record
            fh.seek(0)
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                if oversized is not None:
                    yield Chunk(_empty(), [Reject(next_line, oversized, "row_too_large", TOO_LARGE)])
                elif carry:  # last line without a trailing newline
                    table, rejects, _ = _lines_to_table(carry + b"\n", next_line)
                    yield Chunk(table, rejects)
                return
            if oversized is not None:
                cut = block.find(b"\n")
                if cut < 0:
                    continue
                yield Chunk(_empty(), [Reject(next_line, oversized, "row_too_large", TOO_LARGE)])
                next_line += 1
                oversized, block = None, block[cut + 1:]
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                if len(carry) > MAX_ROW_BYTES:
                    oversized, carry = carry[:KEPT_PREFIX_BYTES].rstrip(b"\r"), b""
                continue
            body, carry = data[: cut + 1], data[cut + 1:]
            table, rejects, n = _lines_to_table(body, next_line)
            next_line += n
            if len(carry) > MAX_ROW_BYTES:
                oversized, carry = carry[:KEPT_PREFIX_BYTES], b""
            yield Chunk(table, rejects)


def _empty() -> pa.Table:
    return pa.table({"line": pa.array([], pa.int64()), "raw": pa.array([], pa.large_string())})


# -- CSV and Parquet: rows to JSON text through DuckDB ------------------------------------------------------------

def _rows_to_json(table: pa.Table, first_line: int, kind: str | None, step: int = 1) -> pa.Table:
    import duckdb

    structured = {s.name for s in field_specs(kind) if s.form in ("items", "scopes", "characteristics")} if kind else set()
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("t", table)

        def text(c: str) -> bool:
            return pa.types.is_string(table.schema.field(c).type) or pa.types.is_large_string(table.schema.field(c).type)

        cols = ", ".join(
            f"{ident(c)} := CASE WHEN json_valid({ident(c)}) THEN {ident(c)}::JSON ELSE to_json({ident(c)}) END"
            if c in structured and text(c) else f"{ident(c)} := {ident(c)}" for c in table.column_names)
        raw = con.sql(f"SELECT to_json(struct_pack({cols}))::VARCHAR AS raw FROM t").to_arrow_table()
    finally:
        con.close()
    lines = np.arange(first_line, first_line + step * table.num_rows, step, dtype=np.int64)
    return pa.table({"line": pa.array(lines), "raw": raw.column("raw").cast(pa.large_string())})


def _text_rows(table: pa.Table, lines: list[int], rejects: list[Reject]) -> tuple[pa.Table, list[int]]:
    """The rows of a CSV batch (columns read as bytes) whose every field is UTF-8, as text. The screening
    (``_ScreenedCsv``) already refused lines that are not UTF-8, so this is a cheap cast per column; a row that
    still fails is a reject all the same (``invalid_utf8``, its fields' bytes comma-joined)."""
    text: dict[str, pa.ChunkedArray] = {}
    bad: set[int] = set()
    for name, col in zip(table.column_names, table.columns):
        try:
            text[name] = col.cast(pa.string())
        except pa.ArrowInvalid:
            for i, v in enumerate(col.to_pylist()):
                if v is not None:
                    try:
                        v.decode("utf-8")
                    except UnicodeDecodeError:
                        bad.add(i)
    if not bad and len(text) == table.num_columns:
        return pa.table(text), lines
    for i in sorted(bad):
        fields = [v if v is not None else b"" for v in (c[i].as_py() for c in table.columns)]
        rejects.append(Reject(lines[i], b",".join(fields), "invalid_utf8", INVALID_UTF8))
    keep = [i for i in range(table.num_rows) if i not in bad]
    kept = table.take(keep)
    return pa.table({n: c.cast(pa.string()) for n, c in zip(kept.column_names, kept.columns)}), [lines[i] for i in keep]


class _ScreenedCsv(io.RawIOBase):
    """A CSV file as pyarrow should see it: every line that is not UTF-8 or is longer than MAX_ROW_BYTES taken
    out (a reject, with its physical line number) and blank lines skipped, so the parser never meets them (it
    would copy a row it cannot decode into an error, raw ids and all, and refuse the whole file). Lines are
    kept in order; :meth:`physical` maps the n-th line pyarrow sees back to its line in the file."""

    def __init__(self, path: Path):
        self._lines = bounded_lines(path)
        self._pending = b""
        self.rejects: list[Reject] = []
        self._run_starts: list[int] = []  # the kept lines, as runs: output index where a run starts ...
        self._run_lines: list[int] = []  # ... and the physical line it starts at
        self._kept = 0

    def readable(self) -> bool:
        return True

    def _keep(self, number: int) -> None:
        if not self._run_starts or self._run_lines[-1] + (self._kept - self._run_starts[-1]) != number:
            self._run_starts.append(self._kept)
            self._run_lines.append(number)
        self._kept += 1

    def physical(self, index: int) -> int:
        """The file's line number of the ``index``-th (1-based) line pyarrow read."""
        run = bisect_right(self._run_starts, index - 1) - 1
        return self._run_lines[run] + (index - 1 - self._run_starts[run])

    def first_line(self) -> bytes | None:
        """The first line pyarrow will read (the header), read ahead."""
        while not self._pending:
            more = self._next_lines(1)
            if more is None:
                return None
        return self._pending.split(b"\n", 1)[0]

    def _next_lines(self, want: int) -> int | None:
        got = 0
        out = []
        for number, raw, too_large in self._lines:
            if too_large:
                self.rejects.append(Reject(number, raw, "row_too_large", TOO_LARGE))
            elif not raw.strip(b"\r"):
                continue  # blank: not a row
            else:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.rejects.append(Reject(number, raw, "invalid_utf8", INVALID_UTF8))
                    continue
                self._keep(number)
                out.append(raw + b"\n")
                got += len(raw) + 1
                if got >= want:
                    break
        else:
            if not out:
                return None
        self._pending += b"".join(out)
        return got

    def readinto(self, buffer) -> int:
        while len(self._pending) < len(buffer):
            if self._next_lines(len(buffer) - len(self._pending)) is None:
                break
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def read_csv(path: Path, kind: str | None, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
    import pyarrow.csv as pacsv

    screened = _ScreenedCsv(path)
    header = screened.first_line()
    if header is None:
        if screened.rejects:
            yield Chunk(_empty(), screened.rejects[:])
        return
    names = next(csv.reader([header.decode("utf-8")]))
    if kind is not None and not {n.strip() for n in names} & {s.name for s in field_specs(kind)}:
        raise NoHeader("the first line names none of the fields")
    invalid: list[tuple[int, int, int, bytes]] = []  # (line pyarrow counts, fields, header fields, raw bytes)

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # no copy of the row's text in a message: the count of fields says what is wrong, the line where
        invalid.append((row.number or 0, row.actual_columns, row.expected_columns,
                        row.text.encode("utf-8", "surrogateescape")))
        return "skip"

    # all columns as bytes, decoded below column by column; each block large enough for any row it may hold
    schema = pa.schema([pa.field(n, pa.binary()) for n in names])
    reader = pacsv.open_csv(
        screened,
        read_options=pacsv.ReadOptions(use_threads=False, block_size=2 * MAX_ROW_BYTES + (1 << 20),
                                       column_names=names, skip_rows=1),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True, null_values=[""],
                                             quoted_strings_can_be_null=False),
    )
    # pyarrow numbers the lines it reads from 1, the header included (so the first data row is 2), delivers rows in
    # order (use_threads=False) and reports a rejected row before the batch that follows it
    line, skipped = 2, set()
    for batch in reader:
        rejects = [Reject(screened.physical(number), text, "malformed_csv",
                          f"the CSV row has {actual} fields, the header has {expected}")
                   for number, actual, expected, text in invalid]
        skipped |= {number for number, *_ in invalid}
        invalid.clear()
        rejects += screened.rejects
        screened.rejects.clear()
        lines: list[int] = []
        while len(lines) < batch.num_rows:
            if line not in skipped:
                lines.append(screened.physical(line))
            line += 1
        table, lines = _text_rows(pa.Table.from_batches([batch]), lines, rejects)
        converted = _rows_to_json(table, 0, kind) if table.num_rows else _empty()
        converted = converted.set_column(0, "line", pa.array(lines, pa.int64()))
        yield Chunk(converted, sorted(rejects, key=lambda r: r.line))
    rest = [Reject(screened.physical(number), text, "malformed_csv",
                   f"the CSV row has {actual} fields, the header has {expected}")
            for number, actual, expected, text in invalid] + screened.rejects
    if rest:
        yield Chunk(_empty(), sorted(rest, key=lambda r: r.line))


def read_parquet(path: Path, kind: str | None, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    first = 1
    for batch in pf.iter_batches(batch_size=chunk_rows):
        table = pa.Table.from_batches([batch])
        yield Chunk(_rows_to_json(table, first, kind))
        first += table.num_rows


def read_chunks(f: LandingFile) -> Iterator[Chunk]:
    if f.fmt == "jsonl":
        return read_jsonl(f.path)
    if f.fmt == "csv":
        return read_csv(f.path, f.kind)
    if f.fmt == "parquet":
        return read_parquet(f.path, f.kind)
    raise ValueError(f"{f.name}: unsupported format")

