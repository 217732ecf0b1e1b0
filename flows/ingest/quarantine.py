"""Quarantine: the warehouse's ``quarantine`` rows, and the raw bytes of rows that cannot be stored there.

A refused row whose participant id could be read is a ``quarantine`` row with its payload pseudonymized
(stage.py). A row whose id could not be read (not JSON, not UTF-8, too large, a file that cannot be read at
all, a file of no record kind) cannot be pseudonymized, so its raw bytes go to a file in the quarantine
folder (``<landing>.quarantine/`` beside the landing folder by default, or where ``--quarantine-dir`` says)
and the ``quarantine`` row says which (``payload_file``).

Sealed, not copied. Those bytes may hold a raw participant id, and the quarantine folder must hold none
(README, "Pseudonyms and keys"). Each row's bytes are encrypted with AES-256-GCM (NIST SP 800-38D) under a
key derived from the study key by HKDF-SHA256 (RFC 5869, info ``flourish-quarantine-v1``), a fresh 96-bit
nonce per record, and the source file, line and part as associated data (a record cannot be moved to another
row unnoticed): a partner holding the study key reads them with :func:`read_rejected`; nobody else can. Both
primitives come from the ``cryptography`` library. Each record also lists the pseudonyms of the id-like
tokens in the row's first 64 KiB (:func:`token_pseudonyms`), so ``flourish erase`` (privacy/erasure.py),
which removes every line holding a participant's pseudonym, removes a sealed row that names them too.

A file's records are written as the batch reads (bounded memory), to a temporary name, and renamed to their
deterministic name just before the batch commits (a re-run overwrites them); a failed batch removes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privacy.pseudonym import pseudonymize_many

SEAL_INFO = b"flourish-quarantine-v1"
PART_BYTES = 1 << 20  # a whole unreadable file is sealed in parts of 1 MiB (bounded memory)
TOKEN_SCAN_BYTES = 64 << 10
MAX_TOKENS = 256
_QUOTED = re.compile(r'"((?:[^"\\]|\\.){1,512})"')
_SPLIT = re.compile(r"[\s,;|\t{}\[\]:=]+")


def default_dir(landing_dir: Path) -> Path:
    """``<landing>.quarantine`` beside the landing folder (``.`` resolved first: it has no name of its own)."""
    landing_dir = landing_dir.resolve()
    return landing_dir.parent / f"{landing_dir.name}.quarantine"


def file_name(batch_id: str, source_name: str) -> str:
    """Unique per source file (a hash of its name in the landing folder) and short whatever the name's length."""
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", source_name.rsplit("/", 1)[-1])[:80]
    return f"{batch_id}-{hashlib.sha256(source_name.encode('utf-8')).hexdigest()[:16]}-{tail}.rejected.jsonl"


def _seal_key(study_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEAL_INFO).derive(study_key)


def _aad(source_file: str, line: int, part: int) -> bytes:
    return json.dumps([SEAL_INFO.decode(), source_file, line, part]).encode("utf-8")


def token_pseudonyms(raw: bytes, key: bytes) -> list[str]:
    """Pseudonyms of the tokens of a row that could be a participant id: JSON strings and the fields between
    separators, in its first 64 KiB, at most 256. Only what erasure needs to find the row; never the tokens."""
    text = raw[:TOKEN_SCAN_BYTES].decode("utf-8", "replace")
    tokens: list[str] = []
    for m in _QUOTED.finditer(text):
        try:
            tokens.append(json.loads(f'"{m.group(1)}"'))
        except ValueError:
            tokens.append(m.group(1))
    tokens += [t.strip("'\"") for t in _SPLIT.split(text)]
    seen = list(dict.fromkeys(t for t in tokens if 0 < len(t) <= 256 and _unicode(t)))[:MAX_TOKENS]
    return sorted(pseudonymize_many(seen, key).values())


def _unicode(text: str) -> bool:
    """A lone surrogate (an escape like ``\\ud800``) is no one's id: the contract refuses it in an id."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RejectWriter:
    """The sealed raw bytes of one batch's unstorable rows, one file per source file."""

    def __init__(self, directory: Path, batch_id: str, study_key: bytes):
        self.directory = directory
        self.batch_id = batch_id
        self.study_key = study_key
        self._aead = AESGCM(_seal_key(study_key))
        self._open: dict[str, tuple[Path, Path, IO[str]]] = {}

    def name_for(self, source_name: str) -> str:
        return file_name(self.batch_id, source_name)

    def _handle(self, source_name: str) -> IO[str]:
        if source_name not in self._open:
            self.directory.mkdir(parents=True, exist_ok=True)
            target = self.directory / self.name_for(source_name)
            tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self._open[source_name] = (target, tmp, os.fdopen(fd, "w", encoding="utf-8"))
        return self._open[source_name][2]

    def _record(self, source_name: str, line: int, why: str, data: bytes, part: int, parts: int,
                size: int, pseudonyms: list[str]) -> str:
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, data, _aad(source_name, line, part))
        return json.dumps({"source_file": source_name, "line": line, "why": why, "part": part, "parts": parts,
                           "bytes": size, "sealed": base64.b64encode(sealed).decode("ascii"),
                           "pseudonyms": pseudonyms}) + "\n"

    def add(self, source_name: str, line: int, raw: bytes, why: str) -> None:
        """One row's raw bytes (at most a row's size: the reader cuts longer ones)."""
        fh = self._handle(source_name)
        fh.write(self._record(source_name, line, why, raw, 0, 1, len(raw), token_pseudonyms(raw, self.study_key)))

    def add_file(self, source_name: str, path: Path, why: str) -> None:
        """A whole file that cannot be read as records, in parts of 1 MiB (line 0)."""
        size = path.stat().st_size
        parts = max(1, -(-size // PART_BYTES))
        fh = self._handle(source_name)
        with path.open("rb") as src:
            for part in range(parts):
                data = src.read(PART_BYTES)
                names = token_pseudonyms(data, self.study_key)
                fh.write(self._record(source_name, 0, why, data, part, parts, size, names))

    def commit(self) -> None:
        """Give every file its final name (atomically; a re-run of the batch overwrites it)."""
        for target, tmp, fh in self._open.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            tmp.replace(target)
        self._open.clear()

    def discard(self) -> None:
        for _, tmp, fh in self._open.values():
            fh.close()
            tmp.unlink(missing_ok=True)
        self._open.clear()


def read_rejected(path: str | Path, study_key: bytes) -> Iterator[tuple[str, int, str, bytes]]:
    """``(source_file, line, why, raw bytes)`` of each row of a quarantine file, decrypted with the study key
    (the key the batch was ingested with); a record that was altered or moved raises ``InvalidTag``."""
    aead = AESGCM(_seal_key(study_key))
    pending: list[bytes] = []
    with Path(path).open(encoding="utf-8") as fh:
        for text in fh:
            rec = json.loads(text)
            sealed = base64.b64decode(rec["sealed"])
            pending.append(aead.decrypt(sealed[:12], sealed[12:], _aad(rec["source_file"], rec["line"], rec["part"])))
            if rec["part"] == rec["parts"] - 1:
                yield rec["source_file"], rec["line"], rec["why"], b"".join(pending)
                pending = []
