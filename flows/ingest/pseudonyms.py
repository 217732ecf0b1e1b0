"""Pseudonymization at the door: raw participant ids become HMAC pseudonyms before anything is stored.

Raw ids exist only in this process's memory: the Arrow chunk being read, and the map :meth:`Pseudonyms.table`
builds, which a query joins while it is registered under the name ``pmap`` (:func:`registered`). No DuckDB
table, temporary or not, ever holds a raw id (README, "Pseudonyms and keys").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from privacy.erasure import tombstone_token
from privacy.pseudonym import pseudonymize_many

PMAP = "pmap"
"""The name a pseudonym map is registered under while a query joins it: ``(pid_raw, participant, erased)``."""


class Pseudonyms:
    """Raw id -> (pseudonym, erased?) for the ids of a batch: one HMAC per distinct id, cached across chunks.

    ``erased`` compares the pseudonym's one-way tombstone token (privacy/erasure.py) with the stored tokens,
    read once per batch: tombstones change only at the batch's end (erase_withdrawn)."""

    MAX_CACHED = 2_000_000  # bound memory on very wide batches

    def __init__(self, key: bytes, tomb_tokens: set[str]):
        self.key = key
        self.tombs = tomb_tokens
        self.cache: dict[str, tuple[str, bool]] = {}

    def lookup(self, raw_ids: Iterable[str]) -> list[tuple[str, bool]]:
        ids = list(raw_ids)
        if len(self.cache) > self.MAX_CACHED:
            self.cache.clear()
        new = [i for i in ids if i not in self.cache]
        for rid, p in pseudonymize_many(new, self.key).items():
            self.cache[rid] = (p, tombstone_token(p) in self.tombs)
        return [self.cache[i] for i in ids]

    def table(self, raw_ids: list[str]) -> pa.Table:
        hits = self.lookup(raw_ids)
        return pa.table({"pid_raw": pa.array(raw_ids, pa.string()),
                         "participant": pa.array([h[0] for h in hits], pa.string()),
                         "erased": pa.array([h[1] for h in hits], pa.bool_())})

    def pseudonym(self, raw_id: str) -> str:
        return self.lookup([raw_id])[0][0]


def identity_table(pseudonyms: list[str], tomb_tokens: set[str]) -> pa.Table:
    """A map for records whose participant is already a pseudonym (quarantined rows being replayed)."""
    return pa.table({"pid_raw": pa.array(pseudonyms, pa.string()), "participant": pa.array(pseudonyms, pa.string()),
                     "erased": pa.array([tombstone_token(p) in tomb_tokens for p in pseudonyms], pa.bool_())})


@contextmanager
def registered(con, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` readable by name for the block's queries, and unregistered however the block ends."""
    con.register(name, table)
    try:
        yield
    except BaseException:
        try:
            con.unregister(name)
        except duckdb.Error:  # the error propagating aborted the transaction; it is the one that matters
            pass
        raise
    con.unregister(name)
