"""Preregistration: a study's protocol and analysis plan locked by hash, with deviations on the record.

Why a hash: the people who read a Flourish result (a regulator, a journal, the trial team a year
later) must be able to check that the analysis that produced it is the one written down before
the outcome data were seen (OSF / AsPredicted preregistration; SPIRIT 2013 item 'statistical
methods'; CONSORT 2010 item 23 'registration' and 24 'protocol'). We canonicalize the validated
protocol (defaults filled in, keys sorted, no whitespace variance) so that two YAML files saying
the same thing hash the same, whatever their key order or formatting.

The registry is an append-only list of entries per study, hash-chained like a ledger: each entry's
hash covers the previous entry's hash, so rewriting or deleting an earlier entry breaks every hash
after it and :func:`verify_chain` says where. A change to a locked plan is never a silent relock:
it is a ``deviation`` entry with its time, its reason and the new plan hash.

Pure functions only; ``flows/analysis_flows.py`` reads and writes the warehouse table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from schemas.protocol import StudyProtocol
from schemas.errors import FlourishError

EntryKind = Literal["lock", "deviation"]
GENESIS = "0" * 64  # prev_entry_hash of a study's first entry


class PreregistrationError(FlourishError, ValueError):
    """The registry refuses an entry, or its chain does not verify."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no insignificant whitespace and UTF-8 text: one spelling per value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _without_absent(value: Any) -> Any:
    """The value with every key whose value is absent (None, an empty list or mapping) left out, recursively."""
    if isinstance(value, dict):
        kept = {k: _without_absent(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_without_absent(v) for v in value]
    return value


def canonical_protocol(protocol: StudyProtocol) -> str:
    """The protocol and its analysis plan as canonical JSON: validated, every default with a value made explicit
    (a plan that relied on a default keeps its meaning if a later Flourish changes the default: the hash changes),
    and every absent field (None, an empty list or mapping) left out, so a later Flourish that adds an optional
    field (a schedule, baseline covariates) leaves the hashes of plans that do not use it, and their locks, as
    they were."""
    return canonical_json(_without_absent(protocol.model_dump(mode="json")))


def plan_hash(protocol: StudyProtocol) -> str:
    """SHA-256 (hex) of :func:`canonical_protocol`: the preregistration hash of a study."""
    return hashlib.sha256(canonical_protocol(protocol).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RegistryEntry:
    """One append-only registry entry. ``entry_hash`` chains it to ``prev_entry_hash``."""

    study_id: str
    seq: int
    kind: EntryKind
    plan_hash: str
    recorded_at: datetime
    reason: str
    prev_entry_hash: str
    entry_hash: str

    def as_row(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id, "seq": self.seq, "kind": self.kind, "plan_hash": self.plan_hash,
            "recorded_at": self.recorded_at, "reason": self.reason,
            "prev_entry_hash": self.prev_entry_hash, "entry_hash": self.entry_hash,
        }


def _entry_hash(study_id: str, seq: int, kind: str, plan_hash_hex: str, recorded_at: datetime,
                reason: str, prev_entry_hash: str) -> str:
    body = canonical_json({
        "study_id": study_id, "seq": seq, "kind": kind, "plan_hash": plan_hash_hex,
        "recorded_at": recorded_at.isoformat(), "reason": reason, "prev_entry_hash": prev_entry_hash,
    })
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def next_entry(
    history: Sequence[RegistryEntry],
    *,
    study_id: str,
    new_plan_hash: str,
    recorded_at: datetime,
    deviation_reason: str | None = None,
) -> RegistryEntry:
    """The entry to append after ``history`` (this study's entries in ``seq`` order).

    - No history: a ``lock``. ``deviation_reason`` is refused (nothing to deviate from).
    - Latest plan hash equals ``new_plan_hash``: refused, the plan is already locked as is.
    - Otherwise a plan change after lock: refused unless ``deviation_reason`` is given, in which
      case a ``deviation`` entry records time, reason and the new hash.
    """
    if recorded_at.tzinfo is None:
        raise PreregistrationError("registry times must carry a UTC offset")
    verify_chain(history)
    if history and any(e.study_id != study_id for e in history):
        raise PreregistrationError(f"registry history passed for study {study_id!r} holds other studies' entries")
    reason = (deviation_reason or "").strip()
    if not history:
        if reason:
            raise PreregistrationError(
                f"study {study_id!r} has no locked plan yet, so there is nothing to deviate from; "
                "preregister without --deviation first"
            )
        kind: EntryKind = "lock"
    else:
        latest = history[-1]
        if latest.plan_hash == new_plan_hash:
            raise PreregistrationError(
                f"study {study_id!r} is already locked at plan hash {new_plan_hash[:12]} (entry {latest.seq}); nothing to record"
            )
        if not reason:
            raise PreregistrationError(
                f"study {study_id!r} was locked at plan hash {latest.plan_hash[:12]} and this protocol hashes to "
                f"{new_plan_hash[:12]}; record the change with --deviation \"reason\" instead of relocking"
            )
        kind = "deviation"
    seq = len(history) + 1
    prev = history[-1].entry_hash if history else GENESIS
    return RegistryEntry(
        study_id=study_id, seq=seq, kind=kind, plan_hash=new_plan_hash, recorded_at=recorded_at,
        reason=reason, prev_entry_hash=prev,
        entry_hash=_entry_hash(study_id, seq, kind, new_plan_hash, recorded_at, reason, prev),
    )


def verify_chain(history: Sequence[RegistryEntry]) -> None:
    """Raise PreregistrationError naming the first entry whose sequence or hash does not verify."""
    prev = GENESIS
    for i, e in enumerate(history, start=1):
        if e.seq != i:
            raise PreregistrationError(f"registry for {e.study_id!r} is missing entry {i} (found seq {e.seq})")
        if e.prev_entry_hash != prev:
            raise PreregistrationError(f"registry entry {e.seq} of {e.study_id!r} does not chain to entry {e.seq - 1}")
        expected = _entry_hash(e.study_id, e.seq, e.kind, e.plan_hash, e.recorded_at, e.reason, e.prev_entry_hash)
        if expected != e.entry_hash:
            raise PreregistrationError(f"registry entry {e.seq} of {e.study_id!r} was altered after it was recorded")
        prev = e.entry_hash


@dataclass(frozen=True)
class LockStatus:
    """Whether an analysis of this exact protocol is confirmatory.

    ``locked`` is True only when the protocol's hash equals the study's latest registry entry
    (a lock or a recorded deviation). Anything else may run only as exploratory.
    """

    study_id: str
    plan_hash: str
    locked: bool
    latest_entry: RegistryEntry | None
    explanation: str


def lock_status(history: Sequence[RegistryEntry], protocol: StudyProtocol) -> LockStatus:
    verify_chain(history)
    h = plan_hash(protocol)
    sid = protocol.study_id
    if not history:
        return LockStatus(sid, h, False, None, f"study {sid!r} has no preregistered plan")
    latest = history[-1]
    if latest.plan_hash == h:
        how = "locked" if latest.kind == "lock" else f"locked after a recorded deviation ({latest.reason})"
        return LockStatus(sid, h, True, latest, f"plan {h[:12]} is {how}")
    return LockStatus(
        sid, h, False, latest,
        f"protocol hashes to {h[:12]} but study {sid!r} is locked at {latest.plan_hash[:12]}; "
        "record the change with `flourish preregister --deviation`",
    )
