"""Where the fast path reads lines: a run of whole files through DuckDB's ``read_json``, or one chunk.

Both give the verify and load passes the same two relations, so one SQL serves both:

- :meth:`Source.lines`: ``(fi, line, raw, lax)``, each line whole as JSON text, ``fi`` its file's index in
  the run (0 for a chunk), ``line`` its line number where known (a chunk) or NULL (``read_json`` numbers no
  lines), ``lax`` true for a line DuckDB's parser takes and JSON does not;
- :meth:`Source.fields`: ``(fi, line, <the kind's fields>)``, each field as text (``scopes`` as a text list,
  ``items`` as JSON), as the clean tables type them in load.py.

A run reads its files in parallel with ``read_json`` (the fastest reader DuckDB has); a chunk is the Arrow
table the exact path registered (landing.read_chunks), which carries line numbers (consents store theirs)
and serves every format. For a line the verify pass found clean (every field of its contract type, no key
repeated), ``read_json`` reading a field as text gives what ``json_extract_string`` gave that pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import flows.ingest.contract as contract
from schemas.sqltext import ident, literal


@dataclass(frozen=True)
class Source:
    paths: tuple[Path, ...] = ()  # a run of files (read_json), or
    chunk: str | None = None  # the name a chunk is registered under

    def guard(self) -> str | None:
        """What a line must satisfy before it is parsed (``read_json`` gives NULL for a line that is not JSON;
        a chunk's text may be anything)."""
        return "json_valid(raw)" if self.chunk else None

    @property
    def canonical(self) -> bool:
        """Whether :meth:`lines` hands back each line as ``read_json`` writes it: minified, every value by one JSON
        writer (a run; a chunk's text is the partner's own). contract.unpack_sql then counts keys by length."""
        return self.chunk is None

    def _read_json(self, columns: dict[str, str], *, records: bool) -> str:
        cols = "{" + ", ".join(f"{literal(n)}: {literal(t)}" for n, t in columns.items()) + "}"
        files = "[" + ", ".join(literal(str(p)) for p in self.paths) + "]"
        return (f"read_json({files}, format = 'newline_delimited', records = {str(records).lower()}, "
                f"columns = {cols}, ignore_errors = true, auto_detect = false)")

    def lines(self) -> str:
        if self.chunk:
            return f"(SELECT 0 AS fi, line, raw, lax FROM {ident(self.chunk)})"
        return (f"(SELECT file_index AS fi, NULL::BIGINT AS line, json AS raw, false AS lax "
                f"FROM {self._read_json({'json': 'JSON'}, records=False)})")

    def fields(self, kind: str) -> str:
        specs = contract.specs(kind)
        if self.chunk:
            cols = []
            for s in specs:
                if s.form == "scopes":
                    cols.append(f"json_extract_string(raw, {literal('$.' + s.name + '[*]')}) AS {ident(s.name)}")
                elif s.form == "items":
                    cols.append(f"json_extract(raw, {literal('$.' + s.name)}) AS {ident(s.name)}")
                else:
                    cols.append(f"json_extract_string(raw, {literal('$.' + s.name)}) AS {ident(s.name)}")
            return f"(SELECT 0 AS fi, line, {', '.join(cols)} FROM {ident(self.chunk)})"
        types = {s.name: {"scopes": "VARCHAR[]", "items": "JSON"}.get(s.form, "VARCHAR") for s in specs}
        return (f"(SELECT file_index AS fi, NULL::BIGINT AS line, {', '.join(ident(n) for n in types)} "
                f"FROM {self._read_json(types, records=True)})")
