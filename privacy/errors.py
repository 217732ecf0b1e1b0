"""Errors of the privacy area. Each message is one sentence saying what and where (STYLE.md, habit 7).

They subclass ``schemas.errors.FlourishError`` (and ValueError); the CLI turns them into one sentence.
"""

from __future__ import annotations

from schemas.errors import FlourishError


class PrivacyError(FlourishError, ValueError):
    """Base of every refusal the privacy area makes; nothing has been written when one is raised."""


class BudgetExceeded(PrivacyError):
    """A release would spend more than the study's remaining privacy budget (refused before any noise)."""


class ReleaseAlreadyMade(PrivacyError):
    """A release with this id (a planned release's unique key) is in the ledger already: nothing is spent again."""


class UnboundedColumn(PrivacyError):
    """A release was asked for a value with no declared clipping bounds."""


class InvalidPrivacyParameter(PrivacyError):
    """Negative, zero or non-finite epsilon, rho, delta or fraction."""


class ConsentChainBroken(PrivacyError):
    """The consent ledger's hash chain does not verify."""


class RekeyError(PrivacyError):
    """Re-keying cannot map every pseudonym in the warehouse to its new value."""
