"""The ingest: landing files in, every row stored in a clean table or quarantined with a reason.

``ingest_batch`` (flows/ingest/batch.py) runs one landing folder as one transaction; ``landing`` discovers and
reads the files; ``fastpath`` is the clean-file path for JSON-lines files.
"""

from flows.ingest.batch import FileResult, IngestError, Reconciliation, ingest_batch, quarantine_dir

__all__ = ["FileResult", "IngestError", "Reconciliation", "ingest_batch", "quarantine_dir"]
