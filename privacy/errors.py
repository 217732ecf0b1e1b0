"""Errors of the privacy area. Each message is one sentence saying what and where (STYLE.md, habit 7).

They subclass ``schemas.errors.FlourishError`` (and ValueError); the CLI turns them into one sentence. The
base ``PrivacyError`` and the two errors the privacy value contracts raise (``InvalidPrivacyParameter``,
``UnboundedColumn``) are defined beside those contracts in ``schemas/privacy_values.py`` and re-exported here,
so every privacy refusal is still a ``PrivacyError``. No message copies a raw participant id.
"""

from __future__ import annotations

from schemas.privacy_values import InvalidPrivacyParameter, PrivacyError, UnboundedColumn

__all__ = ["PrivacyError", "InvalidPrivacyParameter", "UnboundedColumn", "BudgetExceeded", "ReleaseRefused",
           "RekeyError", "KeyNotActive", "UnknownParticipant", "ErasureIncomplete"]


class BudgetExceeded(PrivacyError):
    """A release would spend more than the study's remaining privacy budget (refused before any noise)."""


class ReleaseAlreadyMade(PrivacyError):
    """A release with this id (a planned release's unique key) is in the ledger already: nothing is spent again."""


class ReleaseRefused(PrivacyError):
    """A release that would spend budget for nothing (no assignments, no scores) or could not be stored;
    refused before any budget is reserved."""


class RekeyError(PrivacyError):
    """Re-keying cannot map every pseudonym in the warehouse to its new value."""


class KeyNotActive(PrivacyError):
    """The pseudonym key given is not the warehouse's active key (a retired key, or another study's)."""


class UnknownParticipant(PrivacyError):
    """An erasure names a participant the warehouse holds nothing of (a mistyped id, or the wrong key)."""


class ErasureIncomplete(PrivacyError):
    """An erasure's rows are gone but a later step (files, compaction) failed; re-running it finishes it."""
