"""The root of Flourish's own errors.

Every package's refusals subclass :class:`FlourishError` (``ProtocolError``, ``PrivacyError``,
``InstrumentError``, ``AnalysisInputError``, ``InsufficientData``, ``WarehouseError``, ``IngestError``, ...),
so the command line turns any of them into one sentence on stderr with exit code 2, and anything else
is a bug that keeps its traceback. It lives in ``schemas`` because every package imports ``schemas``
and ``schemas`` imports nothing of the project.
"""

from __future__ import annotations


class FlourishError(Exception):
    """An error the user can act on (bad input, a refused operation); never a bug.

    The message is one sentence that says what and where (STYLE.md, habit 7) and never copies a
    participant's raw id or a row's content."""
