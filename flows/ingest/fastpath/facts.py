"""The clean-file fast path of the ingest: whole files vouched for by aggregates, then loaded in one pass.

Most landing files are clean: every row passes the contract, the consent gate and de-duplication.
For a JSONL file of a record kind whose fields are all scalars (events, assignments, scores) the
ingest first tries this path; if the files are not provably clean it falls back to the exact path
(flows/ingest.py), which reads them again and gives every row its own reason. So this path never
decides a rejection; it only vouches for files in which *every* row is stored.

It reads a group of files with DuckDB's parallel ``read_json`` and stores nothing until the group
is proved clean:
1. Verify (``_fast_verify_sql`` in flows/ingest.py): each line read whole (``lines_sql``) and held
   to the contract: each field by one sufficient condition (``_fast_field_ok``: a value it leaves
   out goes to the exact path), unknown or repeated keys through ``json_keys``, and the exact path's
   own protocol checks. Aggregated per (file, participant id): rows, rows failing, first and last
   record time, and the hashes of the record keys (a repeat among them, or a key stored already
   (``stored_keys_sql``), is a duplicate). The participant ids it returns are pseudonymized (one
   HMAC each) and the consent gate is decided per participant (``gate_sql``): every record of a
   participant passes it exactly when the first and last do.
2. Load (``rows_sql``): the same files, each field read as text and typed as the exact path types
   it, joined to their pseudonyms, go straight into the clean table. Rows inserted must equal rows
   verified (else the batch fails and rolls back).
No table, temporary or not, ever holds a raw participant id: the ids travel only as query results
in this process's memory and as the registered Arrow map ``pmap``.

The bytes of a file settle the rest (``FileFacts``): rows read must equal its physical lines (no
blank, skipped or split lines), and a file with a byte-order mark, a trailing comma (``{"a": 1,}``) or a raw
vertical tab or form feed (both of which DuckDB's reader takes and JSON does not) takes the exact path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from schemas.sqltext import ident, literal
from privacy.consent import scope_summary_sql

BLOCK = 16 << 20


@dataclass(frozen=True)
class FileFacts:
    lines: int  # physical lines (a last line without a newline counts)
    bom: bool
    trailing_comma: bool  # a comma before a closing bracket somewhere (JSON refuses it, DuckDB's parser takes it)
    vt_or_ff: bool  # a raw vertical tab or form feed: DuckDB's line reader takes them as blanks around a record,
    #                 JSON (and the exact path) does not, and no valid JSON line holds one


# JSON's blanks, then a comma before a closing bracket: the exact path's candidates (flows/ingest.py) and,
# over bytes, these (a file's blocks may cut the pattern: a comma may be left pending for the next block)
BLANKS = r"[ \t\r\n]*"
TRAILING_COMMA = "," + BLANKS + r"[}\]]"
_COMMA_THEN_CLOSE = re.compile(TRAILING_COMMA.encode())
_PENDING_COMMA = re.compile(("," + BLANKS).encode())
_LEADING_CLOSE = re.compile((BLANKS + r"[}\]]").encode())
_BLANK = re.compile(BLANKS.encode())


def file_facts(path: Path) -> FileFacts:
    """Newlines, a byte-order mark, trailing commas and raw vertical tabs or form feeds of a file, read in
    blocks into one reused buffer.

    A trailing comma may straddle blocks: a block that ends in a comma and blanks leaves it pending for
    the next block's first non-blank byte."""
    lines = 0
    trailing = pending = vt_or_ff = False
    buf = bytearray(BLOCK)
    last = b""
    with path.open("rb") as fh:
        bom = fh.read(3) == b"\xef\xbb\xbf"
        fh.seek(0)
        while n := fh.readinto(buf):
            lines += buf.count(b"\n", 0, n)
            vt_or_ff = vt_or_ff or buf.find(b"\x0b", 0, n) >= 0 or buf.find(b"\x0c", 0, n) >= 0
            if not trailing:
                view = memoryview(buf)[:n]
                trailing = bool((pending and _LEADING_CLOSE.match(view)) or _COMMA_THEN_CLOSE.search(view))
                comma = buf.rfind(b",", 0, n)
                pending = (pending and _BLANK.fullmatch(view) is not None) or (
                    comma >= 0 and _PENDING_COMMA.fullmatch(view, comma) is not None)
                view.release()
            last = buf[n - 1:n]
    if last and last != b"\n":  # a last line without a newline counts
        lines += 1
    return FileFacts(lines, bom, trailing, vt_or_ff)


def read_sql(paths: list[Path], columns: dict[str, str], *, records: bool = True) -> str:
    """``read_json`` of the files with the named fields typed as given; with ``records = False`` each line
    whole as the one column named (NULL when the line is not JSON). Its virtual column ``file_index``
    numbers the files in the order given."""
    cols = "{" + ", ".join(f"{literal(n)}: {literal(t)}" for n, t in columns.items()) + "}"
    files = "[" + ", ".join(literal(str(p)) for p in paths) + "]"
    return (f"read_json({files}, format = 'newline_delimited', records = {str(records).lower()}, columns = {cols}, "
            f"ignore_errors = true, auto_detect = false)")


def lines_sql(paths: list[Path]) -> str:
    """The files' lines, each whole as one JSON value ``json``, with ``file_index``."""
    return read_sql(paths, {"json": "JSON"}, records=False)


def gate_sql(scope: str | None, withdrawn_not_erased: str,
             stored_assignments: str | None) -> str:
    """Per file of ``fp`` (``_fast_verify_sql``'s result, registered): its sums, the rows the consent gate refuses
    (``gated``: participant erased; a record at or after a withdrawal; with a scope, a record before the
    first consent with it, or consent versions that differ in it) and the rows of participants this batch
    erases (``withheld``). A participant's records all pass exactly when the first and last do."""
    fail = ["p.participant IS NULL", "p.erased", "(cs.withdrawn_at IS NOT NULL AND p.t1 >= cs.withdrawn_at)"]
    if scope:
        fail += ["coalesce(cs.mixed, false)", "cs.first_with_scope IS NULL", "p.t0 < cs.first_with_scope"]
    if stored_assignments:  # assignments: a participant already assigned in this study
        fail.append(f"p.participant IN ({stored_assignments})")
    return f"""
    WITH cs AS ({scope_summary_sql(scope)}), p AS (
        SELECT fp.*, pm.participant, coalesce(pm.erased, false) AS erased
        FROM fp LEFT JOIN pmap pm ON pm.pid_raw = fp.pid
    )
    SELECT p.fi, sum(p.n)::BIGINT, sum(p.bad)::BIGINT,
           coalesce(sum(p.n) FILTER (WHERE {' OR '.join(fail)}), 0)::BIGINT AS gated,
           coalesce(sum(p.n) FILTER (WHERE p.participant IN ({withdrawn_not_erased})), 0)::BIGINT AS withheld
    FROM p LEFT JOIN cs ON cs.participant = p.participant
    GROUP BY p.fi"""


def stored_keys_sql(paths: list[Path], stored: str, key_fields: list[str]) -> str:
    """Per file, its rows whose record key is stored already (``stored``: the stored keys' relation, with
    ``participant`` for a key that holds the participant id). The files' keys are the join's build side."""
    batch = [f"r.{ident(k)}" for k in key_fields if k != "participant_id"]
    join_pid = ""
    if "participant_id" in key_fields:
        batch.append("pm.participant")
        join_pid = " JOIN pmap pm ON pm.pid_raw = r.participant_id"
    on = " AND ".join("s.participant = b.participant" if k == "participant_id" else f"s.{ident(k)} = b.{ident(k)}"
                      for k in key_fields)
    return f"""
    SELECT b.fi, count(*) FROM ({stored}) s
    JOIN (SELECT r.file_index AS fi, {', '.join(batch)}
          FROM {read_sql(paths, dict.fromkeys(key_fields, 'VARCHAR'))} r{join_pid}) b ON {on}
    GROUP BY b.fi"""


def rows_sql(paths: list[Path], fields: dict[str, str], protocol, columns: str, withheld: str | None) -> str:
    """The files' rows, typed as the exact path types them, with their pseudonym (``participant``), in
    ``columns``; without the rows of participants in ``withheld`` when it is given.

    Only for files the first pass proved clean: every field holds its contract type, no key is repeated,
    so reading a field as VARCHAR gives what ``json_extract_string`` gave that pass (and gives the exact
    path), and each value is cast as the exact path casts it."""
    read: dict[str, str] = {}
    values: list[str] = []
    for n, spec in fields.items():
        base = spec.rstrip("?")
        read[n] = "VARCHAR"
        if n == "participant_id":
            continue
        if n == "study_id":  # checked equal to the protocol's
            values.append(f"{literal(protocol.study_id)} AS {ident(n)}")
        elif base == "ts":
            values.append(f"try_cast({ident(n)} AS TIMESTAMPTZ) AS {ident(n)}")
        elif base == "num":
            values.append(f"try_cast(trim({ident(n)}) AS DOUBLE) AS {ident(n)}")
        else:
            values.append(ident(n))
    hold = f", participant IN ({withheld}) AS withhold" if withheld else ""
    return f"""
    SELECT {columns} FROM (
        SELECT {', '.join(values)}, participant_id AS pid_raw FROM {read_sql(paths, read)}
    ) r JOIN (SELECT pid_raw, participant{hold} FROM pmap) pm USING (pid_raw){' WHERE NOT pm.withhold' if withheld else ''}
"""
