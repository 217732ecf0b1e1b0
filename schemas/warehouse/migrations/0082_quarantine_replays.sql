-- Flourish warehouse: replays of quarantined rows (owned by flows/ingest/replay.py; hardening finding D8).
-- A record that arrives before its participant's consent is quarantined as no_consent. Once the consent has been
-- ingested, flourish replay sends the quarantined record (its pseudonymized payload) through the same checks and
-- gate again and stores it if it now passes. Its quarantine row is kept and named here, with the replay that
-- stored it, so every batch's reconciliation still adds up (rows read = stored + quarantined) and the replay has
-- its own (rows re-gated = rows stored + rows still refused). A quarantine row is one line of one file of one
-- batch: (batch_id, source_file, line) names it.
CREATE TABLE replayed_rows (
    batch_id     VARCHAR NOT NULL,
    source_file  VARCHAR NOT NULL,
    line         BIGINT NOT NULL,
    replay_id    VARCHAR NOT NULL
);

CREATE TABLE replays (
    replay_id      VARCHAR PRIMARY KEY,
    study_id       VARCHAR NOT NULL,
    replayed_at    TIMESTAMPTZ NOT NULL,
    rows_regated   BIGINT NOT NULL,
    rows_stored    BIGINT NOT NULL,
    detail         VARCHAR NOT NULL    -- JSON: rows stored per kind, rows still refused per reason
);
