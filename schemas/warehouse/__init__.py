"""The warehouse's schema: its migrations, the canonical relations every reader uses, and two helpers
that act on a connection they are given (a transaction, the tables that hold participants).

This package never opens a warehouse (``flows.warehouse.connect`` does: files, locks, migrations run);
``privacy`` and ``flows`` receive a connection and use these helpers, so the bottom of the house has one
definition of each warehouse concept (DESIGN.md, "Each warehouse concept is defined once"):

- ``migrations/NNNN_name.sql``: the whole schema, applied in order by ``flows.warehouse.migrate``;
- :mod:`schemas.warehouse.relations`: the SQL of "the score of a participant at a wave", "the arm of a
  participant", "a telemetry metric per participant";
- :func:`transaction`, :func:`rollback_quietly`: all-or-nothing blocks;
- :func:`participant_tables`, :func:`table_names`: what erasure and re-keying must walk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing: commit on success, roll back on any exception (which propagates).

    A failed COMMIT (a read-only folder, a full disk) is rolled back too, so the connection is usable for
    the error path and the warehouse is as before the block."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        rollback_quietly(con)
        raise
    try:
        con.execute("COMMIT")
    except BaseException:
        rollback_quietly(con)
        raise


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK on an error path. When the transaction is already gone (DuckDB aborts it on some errors and
    refuses a second ROLLBACK) there is nothing to undo; the error being handled is the one that matters and
    propagates, so only that one refusal is ignored."""
    import duckdb

    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass


def table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The warehouse's own tables (not a connection's temporary ones), sorted."""
    return [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_catalog = current_database() AND table_type = 'BASE TABLE' ORDER BY 1"
    ).fetchall()]


def participant_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every table with a ``participant`` (pseudonym) column: what erasure and re-keying must walk.

    Derived from the live schema, so a table added by a later migration is covered without a list to update.
    Only the warehouse's own tables: a connection's temporary tables (the ingest's staging) are not records.
    """
    return [r[0] for r in con.execute(
        "SELECT DISTINCT c.table_name FROM information_schema.columns c JOIN information_schema.tables t "
        "ON t.table_name = c.table_name AND t.table_schema = c.table_schema AND t.table_catalog = c.table_catalog "
        "WHERE c.table_schema = 'main' AND c.table_catalog = current_database() AND c.column_name = 'participant' "
        "AND t.table_type = 'BASE TABLE' ORDER BY 1"
    ).fetchall()]
