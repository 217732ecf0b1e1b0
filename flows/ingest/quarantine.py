"""Quarantine: the warehouse's ``quarantine`` rows, and the raw bytes of rows that cannot be stored there.

A refused row whose participant id could be read is a ``quarantine`` row with its payload pseudonymized
(stage.py). A row whose id could not be read (not JSON, not UTF-8, a file that cannot be read at all, a
file of no record kind) cannot be pseudonymized, so its raw bytes go to a file in the quarantine folder
(``<landing>.quarantine/`` beside the landing folder) and the ``quarantine`` row says which
(``payload_file``), never to the warehouse.

A file's records are written as the batch reads (bounded memory), to a temporary name, and renamed to their
deterministic name just before the batch commits (a re-run overwrites them); a failed batch removes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PART_BYTES = 1 << 20  # a whole unreadable file is copied in parts of 1 MiB (bounded memory)


def default_dir(landing_dir: Path) -> Path:
    """``<landing>.quarantine`` beside the landing folder (``.`` resolved first: it has no name of its own)."""
    landing_dir = landing_dir.resolve()
    return landing_dir.parent / f"{landing_dir.name}.quarantine"


def file_name(batch_id: str, source_name: str) -> str:
    """Unique per source file (a hash of its name in the landing folder) and short whatever the name's length."""
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", source_name.rsplit("/", 1)[-1])[:80]
    return f"{batch_id}-{hashlib.sha256(source_name.encode('utf-8')).hexdigest()[:16]}-{tail}.rejected.jsonl"


class RejectWriter:
    """The raw bytes of one batch's unstorable rows, one file per source file."""

    def __init__(self, directory: Path, batch_id: str, study_key: bytes):
        self.directory = directory
        self.batch_id = batch_id
        self.study_key = study_key
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

    @staticmethod
    def _record(source_name: str, line: int, why: str, data: bytes, part: int, parts: int) -> str:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return json.dumps({"source_file": source_name, "line": line, "why": why, "part": part, "parts": parts,
                           "raw": text, "raw_base64": base64.b64encode(data).decode("ascii")}) + "\n"

    def add(self, source_name: str, line: int, raw: bytes, why: str) -> None:
        """One row's raw bytes."""
        self._handle(source_name).write(self._record(source_name, line, why, raw, 0, 1))

    def add_file(self, source_name: str, path: Path, why: str) -> None:
        """A whole file that cannot be read as records, in parts of 1 MiB (line 0)."""
        parts = max(1, -(-path.stat().st_size // PART_BYTES))
        fh = self._handle(source_name)
        with path.open("rb") as src:
            for part in range(parts):
                fh.write(self._record(source_name, 0, why, src.read(PART_BYTES), part, parts))

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


def read_rejected(path: str | Path) -> Iterator[tuple[str, int, str, bytes]]:
    """``(source_file, line, why, raw bytes)`` of each row of a quarantine file (parts of a file joined)."""
    pending: list[bytes] = []
    with Path(path).open(encoding="utf-8") as fh:
        for text in fh:
            rec = json.loads(text)
            pending.append(base64.b64decode(rec["raw_base64"]))
            if rec["part"] == rec["parts"] - 1:
                yield rec["source_file"], rec["line"], rec["why"], b"".join(pending)
                pending = []
