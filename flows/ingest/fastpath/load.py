"""The fast path's second pass: a source the verify pass proved clean, loaded in one statement a table.

The rows are typed as the exact path types them (``contract``: a timestamp cast to TIMESTAMPTZ, a number
trimmed and cast to DOUBLE, the study the protocol's), joined to their pseudonyms (``pmap``), and inserted
by the exact path's own statements (store.py). Events of a run go straight into ``events``, except those of participants
this batch erases (withheld, as batch.flush_events withholds them); events of a chunk join the batch's other
clean events in ``acc_events``.
"""

from __future__ import annotations

import duckdb

import flows.ingest.contract as contract
import flows.ingest.store as store
from flows.ingest.fastpath.source import Source
from flows.ingest.gate import ACC_EVENTS
from flows.ingest.pseudonyms import PMAP
from privacy.erasure import WITHDRAWN_NOT_ERASED
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
    hold = f" WHERE participant NOT IN ({WITHDRAWN_NOT_ERASED})" if withhold else ""
    # the participant's raw id inside other text fields becomes its pseudonym, as the exact path stores it; a source
    # whose verify pass counted no such row (``ids_inside`` false) has none to replace, and is read as it is
    carrying = [] if not ids_inside else [f"{contract.without_raw_id_sql(f'r.{ident(name)}', 'r.pid_raw', 'pm.participant')} AS {ident(name)}"
                for name in contract.id_carrying_fields(kind)]
    stored_as = f" REPLACE ({', '.join(carrying)})" if carrying else ""
    return f"""
    SELECT r.* EXCLUDE (pid_raw){stored_as}, pm.participant FROM (
        SELECT {', '.join(values)}, participant_id AS pid_raw FROM {source.fields(kind)}
    ) r JOIN (SELECT pid_raw, participant FROM {PMAP}{hold}) pm USING (pid_raw)"""


def load(con: duckdb.DuckDBPyConnection, kind: str, protocol: StudyProtocol, source: Source, batch_id: str,
         file_name: str | None = None, ids_inside: bool = True) -> int:
    """Insert the source's rows; the number of records stored (responses count once, not per item). ``ids_inside``:
    the verify pass counted rows with their participant id inside another field (verify.verify_sql's ``embedded``)."""
    params = {"batch": batch_id}
    if kind == "consents":
        params["file"] = file_name
    if kind == "responses":
        con.execute(f"CREATE OR REPLACE TEMP TABLE {RESPONSE_ROWS} AS {rows_sql(kind, protocol, source, withhold=False, ids_inside=ids_inside)}")
        try:
            for sql in store.response_inserts(RESPONSE_ROWS):
                con.execute(sql, params if "$batch" in sql else None)
            return int(con.execute(f"SELECT count(*) FROM {RESPONSE_ROWS}").fetchall()[0][0])
        finally:
            con.execute(f"DROP TABLE IF EXISTS {RESPONSE_ROWS}")
    into_events = kind == "events" and source.chunk is None
    target = ACC_EVENTS if kind == "events" and source.chunk else None
    rows = f"({rows_sql(kind, protocol, source, withhold=into_events, ids_inside=ids_inside)})"
    return int(con.execute(store.insert_sql(kind, rows, target), params).fetchall()[0][0])
