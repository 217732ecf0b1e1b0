"""Domain errors. They say what and where (STYLE.md 7); the CLI turns them into one sentence."""

from __future__ import annotations

from schemas.errors import FlourishError


class InstrumentError(FlourishError):
    """Base class of every error raised by ``instruments``."""


class UnknownInstrument(InstrumentError, LookupError):
    """An instrument name or version that is not shipped."""


class InstrumentDefinitionError(InstrumentError, ValueError):
    """A definition file that breaks the schema or its own consistency rules."""


class LicenceError(InstrumentError):
    """Intended use not allowed by an instrument's licence without a recorded permission."""


class ResponseError(InstrumentError, ValueError):
    """Responses that cannot be scored: unknown item codes, out-of-range or non-integer values,
    duplicate answers, missing id columns."""

    def __init__(self, message: str, *, instrument: str = "", item: str = "", value: object = None,
                 allowed: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.instrument = instrument
        self.item = item
        self.value = value
        self.allowed = allowed
        self.reason = reason


class PsychometricsError(InstrumentError, ValueError):
    """A psychometric statistic that cannot be computed honestly from the data given."""
