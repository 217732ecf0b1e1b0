"""Errors the analysis raises: each says what failed and where, never a plausible default.

``InsufficientData`` is defined beside the statistic types in ``schemas.suffstats`` (analysis
imports schemas, never the reverse) and re-exported here.
"""

from __future__ import annotations

from schemas.errors import FlourishError
from schemas.suffstats import InsufficientData


class AnalysisInputError(FlourishError, ValueError):
    """The data frame or statistics handed to a model do not fit the plan (a missing column, an
    arm that is not in the data, a covariate the plan names but the frame lacks)."""


class DiagnosticsFailed(FlourishError, RuntimeError):
    """A fitted model failed its convergence gate; its results must not be reported as confirmatory.

    ``reasons`` lists each failed check, e.g. ``"R-hat 1.04 > 1.01 for beta"``."""

    def __init__(self, outcome: str, reasons: tuple[str, ...]):
        self.outcome, self.reasons = outcome, tuple(reasons)
        super().__init__(f"the model of {outcome} failed its diagnostics: " + "; ".join(reasons))


class AnalysisRefused(FlourishError):
    """The plan cannot publish anything honest (every outcome's model failed, the sample-ratio check or the
    surrogate index cannot run on the inputs given); nothing was published."""


__all__ = ["AnalysisInputError", "AnalysisRefused", "DiagnosticsFailed", "InsufficientData"]
