"""Quoting for SQL text the flows build (DuckDB): string literals, identifiers, VARCHAR lists."""

from __future__ import annotations


def literal(value) -> str:
    """A SQL string literal of ``str(value)``."""
    return "'" + str(value).replace("'", "''") + "'"


def ident(name) -> str:
    """A quoted SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def varchar_list(values) -> str:
    """A SQL ``VARCHAR[]`` literal of these strings."""
    return "[" + ", ".join(literal(v) for v in values) + "]::VARCHAR[]"
