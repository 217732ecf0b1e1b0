"""The clean-file fast path of the ingest: one parallel ``read_json`` pass instead of per-row JSON functions.

Most landing files are clean: every row passes the contract, the consent gate and de-duplication.
For a JSONL file of a record kind whose fields are all scalars (events, assignments, scores) the
ingest first tries this path; if the file is not provably clean it falls back to the exact path
(flows/ingest.py), which reads the file again and gives every row its own reason. So this path
never decides a rejection; it only vouches for files in which *every* row is stored.

Why it is sound. DuckDB's ``read_json`` with every known field typed ``JSON`` returns each field's
JSON text in one parallel parse, and refuses (here: skips, with ``ignore_errors``) malformed lines,
repeated keys, invalid UTF-8 and a byte-order mark. It does *not* see unknown keys, and a null field
reads like a missing one. Both are settled by counting bytes of the file (``FileFacts``): in a file
with no backslash every ``"`` delimits a string, so the file's quote count is twice its keys plus
twice its string values (quotes inside nested values included). The parsed known fields account for
their keys and values; null-valued optional fields are counted by their bytes (``"key":null``, or
``"key": null`` when the first line is laid out so; either can only be a key followed by null in
valid JSON with no escapes, and a file mixing layouts under-counts and fails the balance). The
quotes left over are exactly those of unknown keys and their values, so "no quote left over"
proves "no unknown key in any row". Rows read must also equal the file's physical lines (no blank,
skipped or split lines), record keys must be distinct, and every row must pass every contract check
and the consent gate. Anything else: the exact path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flows.sqltext import ident, literal
from schemas.records import EVENT_TYPES, ISO_WITH_OFFSET

BLOCK = 16 << 20


@dataclass(frozen=True)
class FileFacts:
    lines: int  # physical lines (a last line without a newline counts)
    quotes: int
    null_optional: int  # "<optional key>":null occurrences, in the first line's layout (a file mixing
    #                     layouts under-counts, fails the quote balance and goes to the exact path)
    backslash: bool
    bom: bool


def file_facts(path: Path, optional_keys: list[str]) -> FileFacts:
    """Byte counts of a file, read in blocks cut at newlines (no pattern spans a line)."""
    lines = quotes = nulls = 0
    patterns: list[bytes] | None = None
    backslash = False
    carry = b""
    with path.open("rb") as fh:
        head = fh.read(3)
        bom = head == b"\xef\xbb\xbf"
        fh.seek(0)
        while True:
            block = fh.read(BLOCK)
            if not block:
                break
            data = carry + block
            if patterns is None:  # the layout of the first line: compact, or with a space after the colon
                sep = ": " if b'": ' in data[: data.find(b"\n")] else ":"
                patterns = [f'"{k}"{sep}null'.encode() for k in optional_keys]
            cut = data.rfind(b"\n") + 1
            body, carry = data[:cut], data[cut:]
            lines += body.count(b"\n")
            quotes += body.count(b'"')
            backslash = backslash or b"\\" in body
            nulls += sum(body.count(p) for p in patterns)
    if carry and patterns is not None:
        lines += 1
        quotes += carry.count(b'"')
        backslash = backslash or b"\\" in carry
        nulls += sum(carry.count(p) for p in patterns)
    return FileFacts(lines, quotes, nulls, backslash, bom)


def _json_list(values) -> str:
    """SQL list of the JSON texts of these strings (a field's JSON text compares to them directly)."""
    return "[" + ", ".join(literal(json.dumps(v, ensure_ascii=False)) for v in values) + "]::VARCHAR[]"


def read_sql(paths: list[Path], fields, *, filename: bool = True) -> str:
    """``read_json`` of the files with every field typed JSON (its text, one parse per line), and ``filename``."""
    cols = "{" + ", ".join(f"{literal(n)}: 'JSON'" for n in fields) + "}"
    files = "[" + ", ".join(literal(str(p)) for p in paths) + "]"
    return (f"read_json({files}, format = 'newline_delimited', records = true, columns = {cols}, "
            f"ignore_errors = true, auto_detect = false, filename = {str(filename).lower()})")


def distinct_ids_sql(paths: list[Path]) -> str:
    """The files' distinct participant-id JSON texts (a one-column read: about a third of a full one)."""
    return f"SELECT DISTINCT participant_id::VARCHAR FROM {read_sql(paths, ['participant_id'], filename=False)}"


def ids_from_texts(texts: list) -> list[str]:
    """Raw ids from their JSON texts: strings only; with no backslash in the file the text between the quotes."""
    return [t[1:-1] for t in texts if isinstance(t, str) and len(t) >= 2 and t[0] == '"']


PMAP_HASHES_DISTINCT = """SELECT count(DISTINCT hash('"' || pid_raw || '"')) = count(*) FROM pmap"""


def source_sql(paths: list[Path], kind: str, fields: dict[str, str], protocol, max_id: int) -> str:
    """The staged rows of the files, in the columns of the exact path's staging query, plus ``q_known``
    and ``filename``.

    ``pmap`` (raw id -> participant, erased) must hold every id of the files (``distinct_ids_sql``), with
    distinct 64-bit hashes of their JSON texts (``PMAP_HASHES_DISTINCT``): rows find their pseudonym by
    that hash, an integer join instead of a string one, exact because every id of the files is in the map.
    ``reason`` is 'not_fast' for any row that fails a check; the caller then abandons the path.
    In a file with no backslash a string field's text is ``"..."`` with no other quote, so its
    value is the text between the quotes and it holds 4 quotes with its key (a number: 2).
    """
    typed: list[str] = []
    checks: list[str] = []
    quotes: list[str] = []
    for n, spec in fields.items():
        optional = spec.endswith("?")
        base = spec.rstrip("?")
        j = f"{ident(n)}::VARCHAR"
        v = ident("v_" + n)
        quotes.append(f"CASE WHEN {ident(n)} IS NULL THEN 0 WHEN starts_with({j}, '\"') THEN 4 ELSE 2 END")
        if base in ("id", "str"):
            if n == "study_id":  # checked equal to the protocol's below
                typed.append(f"{literal(protocol.study_id)} AS {v}")
            elif n != "participant_id":  # the id is only looked up in the pseudonym map, by its JSON text
                typed.append(f"({j})[2:-2] AS {v}")
            # bytes bound characters from above: a text within the limit in bytes is within it in characters
            cond = f"starts_with({j}, '\"') AND strlen({j}) BETWEEN 3 AND {(max_id if base == 'id' else 1024) + 2}"
        elif base == "ts":
            typed.append(f"try_cast(({j})[2:-2] AS TIMESTAMPTZ) AS {v}")
            iso = '^"' + ISO_WITH_OFFSET[1:-1] + '"$'
            cond = f"regexp_full_match({j}, '{iso}') AND {v} IS NOT NULL"
        elif base == "enum":
            typed.append(f"({j})[2:-2] AS {v}")
            cond = f"list_contains({_json_list(EVENT_TYPES)}, {j})"
        else:  # a JSON number; a number written as a string is for the exact path to judge
            typed.append(f"try_cast({j} AS DOUBLE) AS {v}")
            cond = f"NOT starts_with({j}, '\"') AND isfinite({v})"
        checks.append(f"({ident(n)} IS NULL OR ({cond}))" if optional else f"({ident(n)} IS NOT NULL AND {cond})")
    text = lambda n: f"{ident(n)}::VARCHAR"  # noqa: E731
    if "study_id" in fields:
        checks.append(f"{text('study_id')} = {literal(json.dumps(protocol.study_id, ensure_ascii=False))}")
    if kind == "assignments":
        checks.append(f"list_contains({_json_list(protocol.arm_names)}, {text('arm')})")
    if "wave" in fields:
        checks.append(f"list_contains({_json_list(protocol.wave_names)}, {text('wave')})")
    if kind == "scores":
        checks.append(f"list_contains({_json_list([o.name for o in protocol.outcomes])}, {text('outcome')})")
    out = ", ".join(f"{ident('v_' + n)} AS {ident(n)}" for n in fields if n != "participant_id")
    return f"""(
        WITH r AS (
            -- no line numbers: a window over the scan would run it on one thread, and a clean file has no
            -- row to report; repeated record keys are caught by the caller's distinct-key count instead
            SELECT 0::BIGINT AS line, * FROM {read_sql(paths, fields)}
        ), t AS (
            SELECT *, {', '.join(typed)}, {' + '.join(quotes)} AS q_known FROM r
        ), c AS (
            SELECT *, coalesce({' AND '.join(checks)}, false) AS ok FROM t
        )
        SELECT c.line, pm.participant, coalesce(pm.erased, false) AS erased, {out},
               CASE WHEN c.ok AND pm.participant IS NOT NULL THEN NULL ELSE 'not_fast' END AS reason,
               NULL::VARCHAR AS message, NULL::VARCHAR AS payload, c.q_known, c.filename
        FROM c LEFT JOIN (SELECT hash('"' || pid_raw || '"') AS h, participant, erased FROM pmap) pm
          ON pm.h = hash(c.participant_id::VARCHAR)
    )"""
