"""Reconciliation: where every row of a batch went, frozen once the batch ends.

DESIGN.md: every input row ends in exactly one place, so for every file ``read = stored + quarantined``.
A :class:`FileTally` counts while a file is read; the batch freezes each into a :class:`FileResult` and
checks the equation before it writes anything about the file (a file that does not balance fails the batch).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from flows.ingest.errors import IngestError

STORED_KINDS = ("consents", "assignments", "participants", "responses", "scores", "events", "prompts")


@dataclass(frozen=True)
class FileResult:
    name: str  # path relative to the landing folder, a participant id in it replaced (landing.display_name)
    kind: str  # record kind, or "unknown"
    sha256: str
    size_bytes: int
    read: int = 0
    stored: int = 0
    quarantined: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    skipped: bool = False  # ingested before (same content), not read again
    unreadable_message: str = ""  # why the whole file could not be read, when it could not
    ids_in_other_fields: int = 0  # rows with their participant id inside another field (replaced by the pseudonym)


@dataclass
class FileTally:
    """The counts of one file while it is read; :meth:`freeze` checks and returns them."""

    name: str
    kind: str
    sha256: str
    size_bytes: int
    read: int = 0
    stored: int = 0
    quarantined: Counter = field(default_factory=Counter)
    unreadable_message: str = ""
    ids_in_other_fields: int = 0

    def add(self, read: int, stored: int, quarantined: Mapping[str, int], ids_in_other_fields: int = 0) -> None:
        self.read += read
        self.stored += stored
        self.quarantined.update(quarantined)
        self.ids_in_other_fields += ids_in_other_fields

    def freeze(self) -> FileResult:
        if self.read != self.stored + sum(self.quarantined.values()):
            raise IngestError(f"internal reconciliation failed for {self.name}: read {self.read}, stored "
                              f"{self.stored}, quarantined {sum(self.quarantined.values())}")
        return FileResult(self.name, self.kind, self.sha256, self.size_bytes, self.read, self.stored,
                          MappingProxyType(dict(sorted(self.quarantined.items()))),
                          unreadable_message=self.unreadable_message, ids_in_other_fields=self.ids_in_other_fields)


@dataclass(frozen=True)
class ErasureSummary:
    """The erasure a batch's consent withdrawals triggered (privacy.erasure.erase_withdrawn)."""

    erasure_id: str
    rows_deleted: int
    rows_redacted: int


@dataclass(frozen=True)
class Reconciliation:
    batch_id: str
    study_id: str
    files: tuple[FileResult, ...]
    seconds: float = 0.0
    erased: ErasureSummary | None = None

    @property
    def read(self) -> int:
        return sum(f.read for f in self.files)

    @property
    def stored(self) -> dict[str, int]:
        out = {k: 0 for k in ("consents", "assignments", "responses", "events")}
        for f in self.files:
            if f.kind in STORED_KINDS:
                out[f.kind] = out.get(f.kind, 0) + f.stored
        return out

    @property
    def quarantined(self) -> dict[str, int]:
        total: Counter = Counter()
        for f in self.files:
            total.update(f.quarantined)
        return dict(sorted(total.items()))

    @property
    def warnings(self) -> dict[str, int]:
        """What a partner should fix though nothing was refused for it: rows whose participant id appeared inside
        another field (an event id made from it); the ingest replaced it there by the pseudonym
        (contract.without_raw_id_sql), so the rows were kept and no raw id was stored."""
        n = sum(f.ids_in_other_fields for f in self.files)
        return {"participant_id_replaced_in_other_fields": n} if n else {}

    @property
    def balanced(self) -> bool:
        return self.read == sum(self.stored.values()) + sum(self.quarantined.values())

    def as_json(self) -> dict:
        return {
            "read": self.read,
            "stored": self.stored,
            "quarantined": self.quarantined,
            "batch_id": self.batch_id,
            "files_skipped": [f.name for f in self.files if f.skipped],
            "warnings": self.warnings,
            "erased_on_withdrawal": None if self.erased is None else {
                "erasure_id": self.erased.erasure_id, "rows_deleted": self.erased.rows_deleted,
                "rows_redacted": self.erased.rows_redacted},
        }
