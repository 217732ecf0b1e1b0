"""The clean-file fast path of the ingest: whole files vouched for by aggregates, then loaded in one pass.

Most landing files are clean: every row passes the contract, the consent gate and de-duplication.
For a JSONL file of a record kind whose fields are all scalars (events, assignments, scores) the
ingest first tries this path; if the files are not provably clean it falls back to the exact path
(flows/ingest.py), which reads them again and gives every row its own reason. So this path never
decides a rejection; it only vouches for files in which *every* row is stored.

It runs in two parallel ``read_json`` passes over a group of files, and stores nothing until the
first has proved the group clean:
1. ``verify_sql``: every row's contract checks, aggregated per (file, participant id): rows, rows
   failing a check, non-null optional fields, first and last record time. The participant ids it
   returns are pseudonymized (one HMAC each) and the consent gate is decided per participant from
   the first and last time (``gate_sql``): every record of a participant passes the gate exactly
   when the first and last do. ``repeats_sql`` finds record keys that occur twice, and
   ``stored_keys_sql`` keys that are stored already.
2. ``rows_sql``: the same files, typed as the exact path types them, joined to their pseudonyms, go
   straight into the clean table. Rows inserted must equal rows verified (else the batch fails).
No table, temporary or not, ever holds a raw participant id: the ids travel only as query results
in this process's memory and as the registered Arrow map ``pmap``.

Why it is sound. DuckDB's ``read_json`` with every known field typed ``JSON`` returns each field's
JSON text (one line, one row: a line that is not one JSON object reads as a row of NULLs, which
fails the checks). It does *not* see unknown keys, and a null field reads like a missing one. Both
are settled by counting bytes of the file (``FileFacts``): in a file with no backslash every ``"``
delimits a string, so the file's quote count is twice its keys plus twice its string values (quotes
inside nested values included). Rows that pass the checks carry each required field with its
contract type, so their known fields account for 4 quotes a string field and 2 a number, and
non-null optional fields likewise; null-valued optional fields are counted by their bytes
(``"key":null``, or ``"key": null`` when the first line is laid out so; either can only be a key
followed by null in valid JSON with no escapes, and a file mixing layouts under-counts and fails
the balance). The quotes left over are exactly those of unknown keys and their values, so "no
quote left over" proves "no unknown key in any row". Rows read must also equal the file's physical
lines (no blank or skipped lines) and record keys must be distinct. Anything else: the exact path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flows.sqltext import ident, literal
from privacy.consent import scope_summary_sql
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
    """Byte counts of a file, read in blocks into one reused buffer (counting in place: no copies).

    Quotes, newlines and backslashes are single bytes; a ``"key":null`` pattern that straddles a seam
    between blocks is counted in the bytes around that seam (the previous bytes, one short of the
    longest pattern, and the block's first bytes: any occurrence there straddles the seam).
    """
    lines = quotes = nulls = 0
    backslash = False
    buf = bytearray(BLOCK)
    seam = b""
    last = b""
    with path.open("rb") as fh:
        first = fh.readline(1 << 20)  # the layout of the first line: compact, or with a space after the colon
        bom = first.startswith(b"\xef\xbb\xbf")
        sep = ": " if b'": ' in first else ":"
        patterns = [f'"{k}"{sep}null'.encode() for k in optional_keys]
        keep = max((len(p) for p in patterns), default=1) - 1
        fh.seek(0)
        while n := fh.readinto(buf):
            lines += buf.count(b"\n", 0, n)
            quotes += buf.count(b'"', 0, n)
            backslash = backslash or buf.find(b"\\", 0, n) >= 0
            head = bytes(buf[:min(n, keep)])
            for p in patterns:
                nulls += buf.count(p, 0, n)
                if seam:
                    nulls += (seam[-(len(p) - 1):] + head[:len(p) - 1]).count(p)
            seam = (seam + bytes(buf[max(0, n - keep):n]))[-keep:] if keep else b""
            last = buf[n - 1:n]
    if last and last != b"\n":  # a last line without a newline counts
        lines += 1
    return FileFacts(lines, quotes, nulls, backslash, bom)


def _json_list(values) -> str:
    """SQL list of the JSON texts of these strings (a field's JSON text compares to them directly)."""
    return "[" + ", ".join(literal(json.dumps(v, ensure_ascii=False)) for v in values) + "]::VARCHAR[]"


def read_sql(paths: list[Path], columns: dict[str, str] | list[str]) -> str:
    """``read_json`` of the files with the named fields typed as given (a list: every one ``JSON``, its text).

    Its virtual column ``file_index`` numbers the files in the order given."""
    types = columns if isinstance(columns, dict) else dict.fromkeys(columns, "JSON")
    cols = "{" + ", ".join(f"{literal(n)}: {literal(t)}" for n, t in types.items()) + "}"
    files = "[" + ", ".join(literal(str(p)) for p in paths) + "]"
    return (f"read_json({files}, format = 'newline_delimited', records = true, columns = {cols}, "
            f"ignore_errors = true, auto_detect = false)")


def ids_from_texts(texts: list) -> list[str]:
    """Raw ids from their JSON texts: strings only; with no backslash in the file the text between the quotes."""
    return [t[1:-1] for t in texts if isinstance(t, str) and len(t) >= 2 and t[0] == '"']


STRING_KINDS = ("id", "str", "ts", "enum")  # field kinds whose JSON value is a string: 4 quotes with the key


def typed_and_checks(fields: dict[str, str], kind: str, protocol, max_id: int) -> tuple[dict[str, str], list[str]]:
    """(value SQL of each field, as the exact path types it; the checks every row must pass), over JSON texts.

    In a file with no backslash a string field's text is ``"..."`` with no other quote, so its value is
    the text between the quotes."""
    typed: dict[str, str] = {}
    checks: list[str] = []
    for n, spec in fields.items():
        optional = spec.endswith("?")
        base = spec.rstrip("?")
        j = f"{ident(n)}::VARCHAR"
        if base in ("id", "str"):
            typed[n] = literal(protocol.study_id) if n == "study_id" else f"({j})[2:-2]"  # study_id: checked equal
            # bytes bound characters from above: a text within the limit in bytes is within it in characters
            cond = f"starts_with({j}, '\"') AND strlen({j}) BETWEEN 3 AND {(max_id if base == 'id' else 1024) + 2}"
        elif base == "ts":
            typed[n] = f"try_cast(({j})[2:-2] AS TIMESTAMPTZ)"
            # the contract's pattern and the cast (which alone would take a naive time, or " 026" for a year)
            iso = '^"' + ISO_WITH_OFFSET[1:-1] + '"$'
            cond = f"regexp_full_match({j}, {literal(iso)}) AND {typed[n]} IS NOT NULL"
        elif base == "enum":
            typed[n] = f"({j})[2:-2]"
            cond = f"list_contains({_json_list(EVENT_TYPES)}, {j})"
        else:  # a JSON number; a number written as a string is for the exact path to judge
            typed[n] = f"try_cast({j} AS DOUBLE)"
            cond = f"NOT starts_with({j}, '\"') AND isfinite({typed[n]})"
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
    return typed, checks


def optional_fields(fields: dict[str, str]) -> list[str]:
    return [n for n, spec in fields.items() if spec.endswith("?")]


def quotes_of_clean_rows(fields: dict[str, str], rows: int, non_null: dict[str, int]) -> int:
    """The quotes that ``rows`` rows passing every check hold in their known fields (keys and values),
    given how many of them carry each optional field (``non_null``)."""
    weight = {n: 4 if spec.rstrip("?") in STRING_KINDS else 2 for n, spec in fields.items()}
    required = sum(w for n, w in weight.items() if not fields[n].endswith("?"))
    return rows * required + sum(weight[n] * non_null[n] for n in optional_fields(fields))


def verify_sql(paths: list[Path], kind: str, fields: dict[str, str], protocol, max_id: int, time_field: str) -> str:
    """Per (file, participant-id text): rows, rows failing a check, non-null optional fields, first and last time."""
    typed, checks = typed_and_checks(fields, kind, protocol, max_id)
    optional = optional_fields(fields)
    carried = "".join(f"{ident(n)}, " for n in optional)
    counts = "".join(f", count({ident(n)}) AS {ident('n_' + n)}" for n in optional)
    return f"""
    WITH c AS (
        SELECT file_index AS fi, participant_id::VARCHAR AS pid, {typed[time_field]} AS t, {carried}
               coalesce({' AND '.join(checks)}, false) AS ok
        FROM {read_sql(paths, list(fields))}
    )
    SELECT fi, pid, count(*) AS n, count_if(NOT ok) AS bad{counts}, min(t) AS t0, max(t) AS t1
    FROM c GROUP BY fi, pid"""


def gate_sql(fields: dict[str, str], scope: str | None, withdrawn_not_erased: str,
             stored_assignments: str | None) -> str:
    """Per file of ``fp`` (verify_sql's result, registered): its sums, the rows the consent gate refuses
    (``gated``: participant erased; a record at or after a withdrawal; with a scope, a record before the
    first consent with it, or consent versions that differ in it) and the rows of participants this batch
    erases (``withheld``). A participant's records all pass exactly when the first and last do."""
    fail = ["p.participant IS NULL", "p.erased", "(cs.withdrawn_at IS NOT NULL AND p.t1 >= cs.withdrawn_at)"]
    if scope:
        fail += ["coalesce(cs.mixed, false)", "cs.first_with_scope IS NULL", "p.t0 < cs.first_with_scope"]
    if stored_assignments:  # assignments: a participant already assigned in this study
        fail.append(f"p.participant IN ({stored_assignments})")
    sums = "".join(f", sum({ident('n_' + n)})::BIGINT" for n in optional_fields(fields))
    return f"""
    WITH cs AS ({scope_summary_sql(scope)}), p AS (
        SELECT fp.*, pm.participant, coalesce(pm.erased, false) AS erased
        FROM fp LEFT JOIN (SELECT '"' || pid_raw || '"' AS pid, participant, erased FROM pmap) pm USING (pid)
    )
    SELECT p.fi, sum(p.n)::BIGINT, sum(p.bad)::BIGINT{sums},
           coalesce(sum(p.n) FILTER (WHERE {' OR '.join(fail)}), 0)::BIGINT AS gated,
           coalesce(sum(p.n) FILTER (WHERE p.participant IN ({withdrawn_not_erased})), 0)::BIGINT AS withheld
    FROM p LEFT JOIN cs ON cs.participant = p.participant
    GROUP BY p.fi"""


def key_hashes_sql(paths: list[Path], key_fields: list[str]) -> str:
    """A 64-bit hash of each row's record key, read as text: a collision, or a number and a string of the
    same text, can only report a repeat that is not there (the files then take the exact path), never hide one."""
    return (f"SELECT hash({', '.join(ident(k) for k in key_fields)}) AS hk "
            f"FROM {read_sql(paths, dict.fromkeys(key_fields, 'VARCHAR'))} "
            f"WHERE {' AND '.join(f'{ident(k)} IS NOT NULL' for k in key_fields)}")


def repeats_sql(paths: list[Path], key_fields: list[str]) -> str:
    """Record keys that occur more than once in the files, each as (first file, last file) (see key_hashes_sql)."""
    return f"""
    SELECT min(fi), max(fi) FROM (
        SELECT file_index AS fi, hash({', '.join(ident(k) for k in key_fields)}) AS hk
        FROM {read_sql(paths, dict.fromkeys(key_fields, 'VARCHAR'))}
        WHERE {' AND '.join(f'{ident(k)} IS NOT NULL' for k in key_fields)}
    ) GROUP BY hk HAVING count(*) > 1"""


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

    Only for files ``verify_sql`` passed: every string field is a string with no backslash, so reading it
    as VARCHAR gives the text between its quotes (what the verify pass checked); numbers are read as
    their JSON text and cast, as the exact path casts them."""
    read: dict[str, str] = {}
    values: list[str] = []
    for n, spec in fields.items():
        base = spec.rstrip("?")
        read[n] = "JSON" if base == "num" else "VARCHAR"
        if n == "participant_id":
            continue
        if n == "study_id":  # checked equal to the protocol's
            values.append(f"{literal(protocol.study_id)} AS {ident(n)}")
        elif base == "ts":
            values.append(f"try_cast({ident(n)} AS TIMESTAMPTZ) AS {ident(n)}")
        elif base == "num":
            values.append(f"try_cast({ident(n)}::VARCHAR AS DOUBLE) AS {ident(n)}")
        else:
            values.append(ident(n))
    hold = f", participant IN ({withheld}) AS withhold" if withheld else ""
    return f"""
    SELECT {columns} FROM (
        SELECT {', '.join(values)}, participant_id AS pid_raw FROM {read_sql(paths, read)}
    ) r JOIN (SELECT pid_raw, participant{hold} FROM pmap) pm USING (pid_raw){' WHERE NOT pm.withhold' if withheld else ''}
"""
