"""Keyed pseudonyms: the only place a raw participant id is turned into what the warehouse stores.

Definition (documented so a partner holding the key can link records):
    pseudonym = lowercase hex of HMAC-SHA256(key, UTF-8 bytes of the raw participant id)
where ``key`` is the UTF-8 bytes of the key string exactly as configured (surrounding
whitespace and a trailing newline in a key file are stripped). RFC 2104 HMAC; FIPS 180-4 SHA-256.

The key lives outside the warehouse: ``FLOURISH_PSEUDONYM_KEY`` (the key itself) or
``FLOURISH_PSEUDONYM_KEY_FILE`` (a file holding it). Without one, ingest refuses to run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from schemas.errors import FlourishError

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


def load_key(key_file: str | Path | None = None, *, key_text: str | None = None, key_text_source: str = "the key") -> bytes:
    """The study key from an explicit key file, else from the key's text (``flows.settings`` passes
    FLOURISH_PSEUDONYM_KEY or the file named by FLOURISH_PSEUDONYM_KEY_FILE; this module reads no environment)."""
    if key_file is not None:
        p = Path(key_file)
        if not p.is_file():
            raise PseudonymKeyError(f"pseudonym key file {p} does not exist")
        return _check(p.read_text(encoding="utf-8"), f"key file {p}")
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
