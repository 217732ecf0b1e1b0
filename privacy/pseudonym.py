"""Keyed pseudonyms: the only place a raw participant id is turned into what the warehouse stores.

Definition (documented so a partner holding the key can link records):
    pseudonym = lowercase hex of HMAC-SHA256(key, UTF-8 bytes of the raw participant id)
where ``key`` is the UTF-8 bytes of the key string exactly as configured (surrounding
whitespace and a trailing newline in a key file are stripped). RFC 2104 HMAC; FIPS 180-4 SHA-256.

The key lives outside the warehouse: ``FLOURISH_PSEUDONYM_KEY`` (the key itself) or
``FLOURISH_PSEUDONYM_KEY_FILE`` (a file holding it). Without one, ingest refuses to run.

The warehouse knows which key it is under without holding it: ``pseudonym_keys`` records the fingerprint
``HMAC(key, 'flourish-key-fingerprint-v1')[:16]`` of its active key (``rekey`` retires the old one and records
the new one). Everything that turns raw ids into pseudonyms for a warehouse (the ingest, ``erase``) calls
:func:`check_active_key` first: a retired key, or another study's, would give the same person a second
pseudonym (and let a leaked old key link new data again), so it is refused. A warehouse with no key recorded
(new, or written before fingerprints were recorded) adopts the first key used with it, in the caller's
transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from privacy.errors import KeyNotActive
from schemas.errors import FlourishError

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

MIN_KEY_CHARS = 16


class PseudonymKeyError(FlourishError, RuntimeError):
    """No usable pseudonym key."""


def pseudonymize(raw_id: str, key: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the UTF-8 raw id under ``key``."""
    return hmac.new(key, raw_id.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonymize_many(raw_ids: Iterable[str], key: bytes) -> dict[str, str]:
    """Pseudonyms of the *distinct* ids given (one HMAC per distinct id, not per row)."""
    out: dict[str, str] = {}
    for rid in raw_ids:
        if rid not in out:
            out[rid] = hmac.new(key, rid.encode("utf-8"), hashlib.sha256).hexdigest()
    return out


def _check(key: str, where: str) -> bytes:
    key = key.strip()
    if len(key) < MIN_KEY_CHARS:
        raise PseudonymKeyError(f"the pseudonym key from {where} is shorter than {MIN_KEY_CHARS} characters")
    return key.encode("utf-8")


def _read_key_file(p: Path) -> str:
    """The key file's text; every way it can fail is one sentence naming the file (never its content)."""
    if p.is_dir():
        raise PseudonymKeyError(f"pseudonym key file {p} is a directory; give the file that holds the key")
    if not p.exists():
        raise PseudonymKeyError(f"pseudonym key file {p} does not exist")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PseudonymKeyError(f"pseudonym key file {p} cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PseudonymKeyError(
            f"pseudonym key file {p} is not UTF-8 text; the key is the file's text (for example 64 hex "
            "characters), not binary bytes") from None


def load_key(key_file: str | Path | None = None, *, key_text: str | None = None, key_text_source: str = "the key") -> bytes:
    """The study key from an explicit key file, else from the key's text (``flows.settings`` passes
    FLOURISH_PSEUDONYM_KEY or the file named by FLOURISH_PSEUDONYM_KEY_FILE; this module reads no environment)."""
    if key_file is not None:
        p = Path(key_file)
        return _check(_read_key_file(p), f"key file {p}")
    if key_text:
        return _check(key_text, key_text_source)
    raise PseudonymKeyError(
        "no pseudonym key: set FLOURISH_PSEUDONYM_KEY (or FLOURISH_PSEUDONYM_KEY_FILE, or pass --key-file); "
        "ingest never stores raw participant ids, so it will not run without one"
    )


def create_key_file(path: str | Path) -> bytes:
    """Create a fresh random key file (mode 0600) if none exists; return the key. Used by ``demo``."""
    p = Path(path)
    if p.exists():
        return load_key(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    return key.encode("utf-8")


def key_fingerprint(key: bytes) -> str:
    """A public identifier of a key (not the key): HMAC(key, 'flourish-key-fingerprint-v1'), 16 hex."""
    return hmac.new(key, b"flourish-key-fingerprint-v1", hashlib.sha256).hexdigest()[:16]


def check_active_key(con: duckdb.DuckDBPyConnection, key: bytes) -> str:
    """Refuse ``key`` unless it is the warehouse's active key; record it when the warehouse has none; return its
    fingerprint.

    Call it inside the transaction that then uses the key (the ingest's batch, an erasure): a warehouse's first
    key is recorded only if that work commits. A retired key is named as such, with the date ``rekey`` retired it.
    """
    fingerprint = key_fingerprint(key)
    # fetchall, not fetchone: a result left open makes DuckDB 2 refuse the caller's next registration
    found = con.execute("SELECT fingerprint, activated_at FROM pseudonym_keys WHERE retired_at IS NULL").fetchall()
    active = found[0] if found else None
    if active is None:
        con.execute("INSERT INTO pseudonym_keys VALUES (?, ?, NULL) ON CONFLICT DO NOTHING",
                    [fingerprint, datetime.now(UTC)]).fetchall()  # consumed: DuckDB 2 refuses new work beside it
        return fingerprint
    if active[0] == fingerprint:
        return fingerprint
    found = con.execute("SELECT retired_at FROM pseudonym_keys WHERE fingerprint = ?", [fingerprint]).fetchall()
    retired = found[0] if found else None
    why = (f"it was retired by a rekey on {retired[0].astimezone(UTC):%Y-%m-%d %H:%M} UTC" if retired and retired[0] is not None
           else "it is not a key this warehouse has used")
    raise KeyNotActive(
        f"the pseudonym key given (fingerprint {fingerprint}) is not the warehouse's active key (fingerprint "
        f"{active[0]}): {why}; use the current key file, or the same person would get a second pseudonym")
