"""The fast path's second pass: a source the verify pass proved clean, loaded in one statement a table.

The rows are typed as the exact path types them (``contract``: a timestamp cast to TIMESTAMPTZ, a number
trimmed and cast to DOUBLE, the study the protocol's), joined to their pseudonyms (``pmap``), and inserted
by the exact path's own statements (store.py). A run's records go straight into their tables, except those of
participants this batch erases (:func:`withholds`): withheld (as batch.flush_events withholds events), never
inserted and then deleted, which made the batch's commit about ten times slower (10,000-participant study: 0.10 s
without the deletes, 1.09 s with them). Events of a chunk join the batch's other clean events in ``acc_events``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

import flows.ingest.contract as contract
import flows.ingest.store as store
from flows.ingest.fastpath.source import Source
from flows.ingest.gate import ACC_EVENTS, ERASED_BY_THIS_BATCH, KEPT_BY_THIS_BATCH, keyed_by_record_id
from flows.ingest.pseudonyms import PMAP
from schemas.protocol import StudyProtocol
from schemas.sqltext import ident, literal

RESPONSE_ROWS = "fast_responses"


def rows_sql(kind: str, protocol: StudyProtocol, source: Source, withhold: bool, ids_inside: bool = True) -> str:
    """The source's rows typed, with their pseudonym (``participant``), in the kind's fields (and their line, for
    consents); without the rows of participants this batch erases when ``withhold`` (decided on the pseudonym
    map's few rows, not on the source's many)."""
    values = ["line"] if kind == "consents" else []
    for s in contract.specs(kind):
        n = ident(s.name)
        if s.name == "participant_id":
            continue
        if s.name == "study_id":  # checked equal to the protocol's
            values.append(f"{literal(protocol.study_id)} AS {n}")
        elif s.form == "timestamp":
            values.append(f"try_cast({n} AS TIMESTAMPTZ) AS {n}")
        elif s.form == "number":
            values.append(f"try_cast(trim({n}) AS DOUBLE) AS {n}")
        else:
            values.append(n)
    hold = f" WHERE {KEPT_BY_THIS_BATCH}" if withhold else ""
    # the participant's raw id inside other text fields becomes its pseudonym, as the exact path stores it; a source
    # whose verify pass counted no such row (``ids_inside`` false) has none to replace, and is read as it is
    carrying = [] if not ids_inside else [f"{contract.without_raw_id_sql(f'r.{ident(name)}', 'r.pid_raw', 'pm.participant')} AS {ident(name)}"
                for name in contract.id_carrying_fields(kind)]
    stored_as = f" REPLACE ({', '.join(carrying)})" if carrying else ""
    return f"""
    SELECT r.* EXCLUDE (pid_raw){stored_as}, pm.participant FROM (
        SELECT {', '.join(values)}, participant_id AS pid_raw FROM {source.fields(kind)}
    ) r JOIN (SELECT pid_raw, participant FROM {PMAP}{hold}) pm USING (pid_raw)"""


@dataclass(frozen=True)
class Loaded:
    records: int  # records inserted (a response counts once, not per item)
    withheld: dict[str, int] = field(default_factory=dict)  # table -> rows of participants this batch erases, held back


def withholds(kind: str, source: Source) -> bool:
    """Whether :func:`load` holds back the rows of participants this batch erases: for a run of a kind keyed by a
    record id (events, responses, prompts). Their keys already leave those participants' rows out
    (gate.stored_keys), so a record repeating a held-back one is judged alike whichever path read either. A kind
    keyed by its participant (an assignment, an external score) is stored and erased: a second assignment of the
    participant must meet the first (conflicting_assignment), and there are few of them."""
    return source.chunk is None and keyed_by_record_id(kind)


def load(con: duckdb.DuckDBPyConnection, kind: str, protocol: StudyProtocol, source: Source, batch_id: str,
         file_name: str | None = None, ids_inside: bool = True) -> Loaded:
    """Insert the source's rows (those of participants this batch erases held back, :func:`withholds`). ``ids_inside``:
    the verify pass counted rows with their participant id inside another field (verify.verify_sql's ``embedded``).
    The rows held back are counted here for responses only (their items); the verify pass counted the records."""
    params = {"batch": batch_id}
    if kind == "consents":
        params["file"] = file_name
    hold = withholds(kind, source)
    if kind == "responses":
        con.execute(f"CREATE OR REPLACE TEMP TABLE {RESPONSE_ROWS} AS {rows_sql(kind, protocol, source, withhold=False, ids_inside=ids_inside)}")
        try:
            held_items = 0
            rows = RESPONSE_ROWS
            if hold:
                held_items = con.execute(f"SELECT coalesce(sum(len(json_keys(items))), 0) FROM {RESPONSE_ROWS} "
                                         f"WHERE {ERASED_BY_THIS_BATCH}").fetchall()[0][0]
                rows = f"(SELECT * FROM {RESPONSE_ROWS} WHERE {KEPT_BY_THIS_BATCH})"
            for sql in store.response_inserts(rows):
                con.execute(sql, params if "$batch" in sql else None)
            inserted = int(con.execute(f"SELECT count(*) FROM {rows} r").fetchall()[0][0])
            return Loaded(inserted, {"response_items": int(held_items)} if held_items else {})
        finally:
            con.execute(f"DROP TABLE IF EXISTS {RESPONSE_ROWS}")
    target = ACC_EVENTS if kind == "events" and source.chunk else None
    rows = f"({rows_sql(kind, protocol, source, withhold=hold, ids_inside=ids_inside)})"
    return Loaded(int(con.execute(store.insert_sql(kind, rows, target), params).fetchall()[0][0]))
