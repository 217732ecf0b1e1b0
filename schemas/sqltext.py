"""The one quoting of values and names in SQL text Flourish builds (DuckDB).

Values from data, partners or the command line reach SQL as bound parameters wherever DuckDB takes one
(``con.execute(sql, [value])``). Where it cannot (a ``COPY ... TO`` or ``ATTACH`` path, a literal inside a
generated query that runs as one statement, an identifier), the text goes through these functions and
nothing else: ``tests/schemas/test_sqltext.py`` holds them against hostile strings (quotes, backslashes,
comment and statement markers, newlines, NUL, non-ASCII) by round-tripping each through DuckDB, and
``tests/test_architecture.py`` fails on a SQL string built with an f-string from an unquoted name.

DuckDB's standard string literals have one escape: a doubled single quote. Backslashes are not escapes
outside ``E'...'`` strings, so nothing else needs quoting. A NUL character cannot be represented in DuckDB
text at all and is refused.
"""

from __future__ import annotations

from collections.abc import Iterable


def _text(value: object) -> str:
    text = str(value)
    if "\x00" in text:
        raise ValueError("a SQL literal or identifier cannot contain a NUL character")
    return text


def literal(value: object) -> str:
    """A SQL string literal of ``str(value)``."""
    return "'" + _text(value).replace("'", "''") + "'"


def ident(name: object) -> str:
    """A quoted SQL identifier."""
    return '"' + _text(name).replace('"', '""') + '"'


def varchar_list(values: Iterable[object]) -> str:
    """A SQL ``VARCHAR[]`` literal of these strings."""
    return "[" + ", ".join(literal(v) for v in values) + "]::VARCHAR[]"


def number(value: float | int) -> str:
    """A finite number as SQL text (``repr`` round-trips a float exactly); refuses NaN and infinities."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"a SQL number must be a finite int or float, got {value!r}")
    return repr(int(value)) if isinstance(value, int) else repr(float(value))
