"""The warehouse: one DuckDB file, its schema and its forward migrations.

This module opens the warehouse; its schema is ``schemas.warehouse`` (STYLE.md, habit 5). Migrations
are plain SQL files in ``schemas/warehouse/migrations/NNNN_name.sql``, applied in number order, each
in its own transaction, and recorded in ``schema_migrations``; a warehouse written by a newer
Flourish (a version this code does not know) is refused rather than guessed at.

DuckDB lets one process hold a file for writing at a time. ``connect`` waits (with back-off)
for a file another process holds, so two CLI commands started together queue instead of
failing; the wait is bounded and ends in a clear error.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from schemas.errors import FlourishError
from schemas.warehouse import MIGRATIONS_DIR, transaction

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class WarehouseError(FlourishError, RuntimeError):
    """The warehouse cannot be opened or is at a schema version this code does not know."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped, in order; duplicate numbers are refused."""
    found: dict[int, tuple[int, str, str]] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise WarehouseError(f"migration file {path.name} must be named NNNN_lowercase_name.sql")
        version = int(m.group(1))
        if version in found:
            raise WarehouseError(f"two migrations share version {version}: {found[version][1]} and {path.name}")
        found[version] = (version, path.name, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def latest_version() -> int:
    ms = migrations()
    return ms[-1][0] if ms else 0


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()[0]
    if not exists:
        return 0
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply every migration newer than the warehouse's version; return the names applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    current = schema_version(con)
    shipped = migrations()
    known = {v for v, _, _ in shipped}
    if current and current not in known:
        raise WarehouseError(
            f"the warehouse is at schema version {current}, which this Flourish does not know "
            f"(it knows up to {latest_version()}); upgrade Flourish rather than open it with older code"
        )
    applied: list[str] = []
    for version, name, sql in shipped:
        if version <= current:
            continue
        with transaction(con):
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
        applied.append(name)
    return applied


def connect(
    path: str | Path,
    *,
    read_only: bool = False,
    wait_seconds: float = 120.0,
    apply_migrations: bool = True,
    create: bool = True,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse file, migrated to the latest schema; with ``create`` (the ingest's default) a missing file
    is created, otherwise (commands that only read or add to a study's data) it is refused, so a mistyped path is an
    error rather than a new empty warehouse.

    Waits up to ``wait_seconds`` while another process holds the file's write lock.
    """
    p = Path(path)
    if (read_only or not create) and not p.exists():
        raise WarehouseError(f"warehouse {p} does not exist")
    if p.exists() and not p.is_file():
        raise WarehouseError(f"warehouse {p} is not a file")
    if not read_only:
        p.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(p), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise WarehouseError(f"cannot open warehouse {p}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    con.execute("SET enable_progress_bar = false")  # commands print their own progress; DuckDB's bar is noise
    if apply_migrations and not read_only:
        migrate(con)
    elif read_only and schema_version(con) > latest_version():
        con.close()
        raise WarehouseError(f"warehouse {p} was written by a newer Flourish (schema {schema_version(con)})")
    return con


@contextmanager
def open_warehouse(path: str | Path, **kwargs) -> Iterator[duckdb.DuckDBPyConnection]:
    """``with open_warehouse(path) as con:`` — connect, and always close."""
    con = connect(path, **kwargs)
    try:
        yield con
    finally:
        con.close()
