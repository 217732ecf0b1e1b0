-- Flourish warehouse: landing files Flourish itself rewrote (owned by flows/ingest/).
-- An erasure scrub (privacy/erasure.py, run by flourish erase) removes a participant's lines from landing files,
-- which changes their SHA-256. The ingest skips a file already ingested for its study by that hash; a rewrite
-- recorded here carries "ingested" over to the rewritten bytes, so re-running an ingest after a scrub reads
-- nothing again instead of quarantining every remaining row as a duplicate (hardening finding D16).
-- Only hashes: nothing here names a participant or a file.
CREATE TABLE landing_rewrites (
    sha256_before  VARCHAR NOT NULL,
    sha256_after   VARCHAR NOT NULL,
    rewritten_at   TIMESTAMPTZ NOT NULL,
    reason         VARCHAR NOT NULL
);
