"""Reading a landing folder: which files hold which record kind, and their rows as Arrow chunks.

Every format is turned into the same shape, a chunk of ``(line, raw)`` where ``raw`` is one
record as JSON text, so one vectorized validator (stage.py, fastpath/) serves JSONL, CSV and
Parquet alike. Chunks are bounded in bytes/rows, so memory stays flat as files grow.

- JSONL: split on newlines with numpy over 32 MiB blocks (no Python loop per line); ``line``
  is the physical line number; blank lines are kept here and skipped by the validator.
- CSV: pyarrow's streaming reader, every column as text; a row it cannot parse (wrong number of
  fields) comes back as a *reject* with its line number, never dropped.
- Parquet: record batches; ``line`` is the 1-based row number.

CSV and Parquet hold the structured fields (``items``, ``scopes``) as JSON text (or, in Parquet, as native
lists and maps): the record's JSON embeds them as JSON values, so a CSV row is held to the same contract as a
JSON line (text that is not JSON stays a string, and the contract refuses it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.records import RECORD_KINDS, field_specs
from schemas.sqltext import ident

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
CHUNK_BYTES = 32 << 20
CHUNK_ROWS = 200_000
TRAILING_COMMA = r",[ \t\r\n]*[}\]]"
"""JSON's blanks, then a comma before a closing bracket: a line DuckDB's JSON parser takes and JSON does not
may hold it (``{"a": 1,}``); both paths leave such lines to Python's strict parser (exact.lax_lines,
fastpath/facts.py)."""


@dataclass(frozen=True)
class LandingFile:
    path: Path
    kind: str | None  # None: the name starts with no known record kind
    fmt: str | None  # "jsonl" | "csv" | "parquet" | None (unsupported suffix)
    relative: str = ""  # path relative to the landing folder (its name when at the top level)

    @property
    def name(self) -> str:
        return self.relative or self.path.name


@dataclass
class Chunk:
    """Rows of one file: ``table`` has columns line (int64) and raw (large_string, JSON text)."""

    table: pa.Table
    rejects: list[tuple[int, bytes, str]] = field(default_factory=list)  # (line, raw bytes, why)


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


KIND_ORDER = {k: i for i, k in enumerate(("consents", "assignments", "scores", "responses", "events"))}


def discover(landing: Path) -> list[LandingFile]:
    """Files of a landing folder, consents first (the gate needs them), then by name.

    Sub-folders are read too. Hidden files and folders and anything whose name starts with ``_``
    are not data (this is where Flourish's own quarantine files live).
    """
    if not landing.is_dir():
        raise FileNotFoundError(f"landing folder {landing} does not exist or is not a folder")
    files = []
    for p in sorted(landing.rglob("*")):
        rel = p.relative_to(landing)
        if not p.is_file() or any(part.startswith((".", "_")) for part in rel.parts):
            continue
        # the kind comes from the file name, else from the nearest enclosing folder (events/2026-01.jsonl)
        kind = kind_of(p.name) or next((kind_of(part) for part in reversed(rel.parts[:-1]) if kind_of(part)), None)
        files.append(LandingFile(p, kind, format_of(p.name), rel.as_posix()))
    return sorted(files, key=lambda f: (KIND_ORDER.get(f.kind or "", 99), f.name))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.hexdigest()


# -- JSONL --------------------------------------------------------------------------------

def _lines_to_table(body: bytes, first_line: int) -> tuple[pa.Table, list[tuple[int, bytes, str]], int]:
    """Split ``body`` (ending in a newline) into lines; invalid UTF-8 lines become rejects. Also returns the
    number of physical lines, so the caller numbers the next block without counting again.

    Zero-copy: each ``raw`` value is a view of ``body`` that keeps its line ending ("\n" or "\r\n"),
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
        blank[i] = not body[starts[i]:newline[i]].strip()
    rejects: list[tuple[int, bytes, str]] = []
    try:
        body.decode("utf-8")  # one validation pass over the block (fast for ASCII)
        text = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(body))
    except UnicodeDecodeError:
        # Rare path: some line is not UTF-8. Find which, reject those, keep the rest.
        good: list[str | None] = []
        for i in range(n):
            v = body[starts[i]:offsets[i + 1]]
            try:
                good.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                rejects.append((int(lines[i]), v.rstrip(b"\r\n"), "line is not valid UTF-8"))
                good.append(None)
        mask = np.array([g is not None for g in good], dtype=bool)
        text = pa.array([g for g in good if g is not None], type=pa.large_string())
        lines = lines[mask]
        blank = blank[mask]
    table = pa.table({"line": pa.array(lines), "raw": text})
    if blank.any():
        table = table.filter(pa.array(~blank))
    return table, rejects, n


def read_jsonl(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    next_line = 1
    carry = b""
    with path.open("rb") as fh:
        if fh.read(3) != b"\xef\xbb\xbf":  # a UTF-8 byte-order mark is not part of the first record
            fh.seek(0)
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                if carry:  # last line without a trailing newline
                    table, rejects, _ = _lines_to_table(carry + b"\n", next_line)
                    yield Chunk(table, rejects)
                return
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            body, carry = data[: cut + 1], data[cut + 1:]
            table, rejects, n = _lines_to_table(body, next_line)
            next_line += n
            yield Chunk(table, rejects)


# -- CSV and Parquet: rows to JSON text through DuckDB ---------------------------------------

def _rows_to_json(table: pa.Table, first_line: int, kind: str | None, step: int = 1) -> pa.Table:
    import duckdb

    structured = {s.name for s in field_specs(kind) if s.form in ("items", "scopes")} if kind else set()
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


INVALID_UTF8 = "row is not valid UTF-8"


def reject_reason(fmt: str | None, why: str) -> str:
    """The quarantine reason of a row the reader could not turn into a record."""
    return "malformed_csv" if fmt == "csv" and why != INVALID_UTF8 else "invalid_utf8"


def _text_rows(table: pa.Table, lines: list[int], rejects: list[tuple[int, bytes, str]]) -> tuple[pa.Table, list[int]]:
    """The rows of a CSV batch (columns read as bytes) whose every field is UTF-8, as text; each other row
    becomes an ``invalid_utf8`` reject carrying its fields' bytes, comma-joined (a whole column decodes in
    one cast, and only a column that fails is looked at row by row)."""
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
        rejects.append((lines[i], b",".join(fields), INVALID_UTF8))
    keep = [i for i in range(table.num_rows) if i not in bad]
    kept = table.take(keep)
    return pa.table({n: c.cast(pa.string()) for n, c in zip(kept.column_names, kept.columns)}), [lines[i] for i in keep]


def read_csv(path: Path, kind: str | None, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
    import pyarrow.csv as pacsv

    rejects: list[tuple[int, bytes, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        number = row.number if row.number is not None else -1
        rejects.append((number, row.text.encode("utf-8", "surrogateescape"), f"CSV row has {row.actual_columns} fields, header has {row.expected_columns}"))
        return "skip"

    # a first reader only learns the column names (its handler records nothing)
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False, block_size=8 << 20),
        parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip", newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={},
            strings_can_be_null=True,
            null_values=[""],
            auto_dict_encode=False,
        ),
    )
    # all columns as bytes, decoded below row by row: one invalid UTF-8 byte costs its row, not the file
    schema = pa.schema([pa.field(n, pa.binary()) for n in reader.schema.names])
    reader.close()
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False, block_size=8 << 20),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types=schema, strings_can_be_null=True, null_values=[""], quoted_strings_can_be_null=False,
        ),
    )
    # Line numbers: the header is line 1; with use_threads=False rows arrive in file order and a
    # rejected row is reported through the handler before the batch that follows it.
    row_line = 2
    rejected_lines: set[int] = set()
    for batch in reader:
        new_rejects = rejects[:]
        rejects.clear()
        for line, _, _ in new_rejects:
            rejected_lines.add(line)
        table = pa.Table.from_batches([batch])
        lines: list[int] = []
        while len(lines) < table.num_rows:
            if row_line not in rejected_lines:
                lines.append(row_line)
            row_line += 1
        table, lines = _text_rows(table, lines, new_rejects)
        converted = _rows_to_json(table, 0, kind) if table.num_rows else pa.table(
            {"line": pa.array([], pa.int64()), "raw": pa.array([], pa.large_string())}
        )
        converted = converted.set_column(0, "line", pa.array(lines, pa.int64()))
        yield Chunk(converted, new_rejects)
    if rejects:
        yield Chunk(pa.table({"line": pa.array([], pa.int64()), "raw": pa.array([], pa.large_string())}), rejects[:])


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
