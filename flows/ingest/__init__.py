"""The ingest: landing files in, every row stored in a clean table or quarantined with a reason.

The modules in the order a batch runs them:

- ``batch.py``: :func:`ingest_batch`, one landing folder as one transaction (the sequence);
- ``landing.py``: which files hold which record kind, and their rows as Arrow chunks;
- ``contract.py``: the landing contract (``schemas/records.py``) and the protocol's checks, as SQL;
- ``stage.py``: the exact path's staging of a chunk, and the item checks of responses;
- ``gate.py``: the consent gate, de-duplication and assignment conflicts;
- ``fastpath/``: clean sources proved by aggregates and loaded in one statement (facts, source, verify, load);
- ``exact.py``: one chunk through staging, the gate and storage, every refused row with its reason;
- ``store.py``: the INSERTs both paths share;
- ``quarantine.py``: the quarantine folder's raw bytes of rows the warehouse cannot hold, sealed;
- ``reconciliation.py``: where every row went, frozen once the batch ends;
- ``pseudonyms.py``: raw ids to pseudonyms at the door.
"""

from flows.ingest.batch import ingest_batch, record_rewrites
from flows.ingest.errors import IngestError
from flows.ingest.quarantine import default_dir as quarantine_dir
from flows.ingest.quarantine import read_rejected
from flows.ingest.reconciliation import ErasureSummary, FileResult, Reconciliation

__all__ = ["ErasureSummary", "FileResult", "IngestError", "Reconciliation", "ingest_batch", "quarantine_dir",
           "read_rejected", "record_rewrites"]
