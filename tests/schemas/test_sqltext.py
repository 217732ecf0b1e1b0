"""The one quoting function holds against hostile strings: each value round-trips through DuckDB unchanged,
as a literal, inside a list, and as an identifier (a column named by it)."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.sqltext import ident, literal, number, varchar_list

HOSTILE = [
    "o'brien", "''", "'; DROP TABLE scores; --", "x' (FORMAT csv) --", '"quoted"', "back\\slash\\", "\\'",
    "new\nline", "tab\there", "$1", "?", "/* comment */", "-- comment", "ünïcødé ✓", "\u202eRTL", "%s{}[]*",
    "E'\\x41'", " ", "",
]
text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    yield c
    c.close()


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_literals_round_trip(con, value):
    assert con.execute(f"SELECT {literal(value)}").fetchone()[0] == value
    assert con.execute(f"SELECT {varchar_list([value, 'x'])}").fetchone()[0] == [value, "x"]


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
def test_hostile_identifiers_name_one_column(con, value):
    got = con.execute(f"SELECT 1 AS {ident(value)}").description[0][0]
    assert got == value


@settings(max_examples=200, deadline=None)
@given(text)
def test_any_text_round_trips(value):
    with duckdb.connect() as c:
        assert c.execute(f"SELECT {literal(value)}").fetchone()[0] == value


def test_nul_and_non_finite_numbers_are_refused():
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")
    with pytest.raises(ValueError, match="NUL"):
        ident("a\x00b")
    for bad in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError):
            number(bad)  # type: ignore[arg-type]
    assert number(0.1) == "0.1" and number(3) == "3"
