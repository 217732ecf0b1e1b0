-- Flourish warehouse, schema version 1: the study spine.
-- Participant identifiers are ALWAYS the keyed pseudonym (privacy/pseudonym.py); the raw id never lands here.

CREATE TABLE consents (
    participant      VARCHAR NOT NULL,        -- pseudonym
    consent_version  VARCHAR NOT NULL,
    scopes           VARCHAR[] NOT NULL,
    granted_at       TIMESTAMPTZ NOT NULL,
    withdrawn_at     TIMESTAMPTZ,
    record_hash      VARCHAR NOT NULL,        -- de-duplication key (hash of the pseudonymized record)
    batch_id         VARCHAR NOT NULL,
    source_file      VARCHAR NOT NULL,
    source_line      BIGINT NOT NULL
);

CREATE TABLE assignments (
    participant  VARCHAR NOT NULL,
    study_id     VARCHAR NOT NULL,
    arm          VARCHAR NOT NULL,
    assigned_at  TIMESTAMPTZ NOT NULL,
    stratum      VARCHAR,
    batch_id     VARCHAR NOT NULL
);

CREATE TABLE responses (
    response_id         VARCHAR NOT NULL,
    participant         VARCHAR NOT NULL,
    study_id            VARCHAR NOT NULL,
    instrument          VARCHAR NOT NULL,
    instrument_version  VARCHAR NOT NULL,
    wave                VARCHAR NOT NULL,
    submitted_at        TIMESTAMPTZ NOT NULL,
    items_answered      INTEGER NOT NULL,
    batch_id            VARCHAR NOT NULL
);

-- One row per answered-or-skipped item (value NULL = skipped); the scoring stage reads this.
CREATE TABLE response_items (
    response_id         VARCHAR NOT NULL,
    participant         VARCHAR NOT NULL,
    study_id            VARCHAR NOT NULL,
    instrument          VARCHAR NOT NULL,
    instrument_version  VARCHAR NOT NULL,
    wave                VARCHAR NOT NULL,
    item_code           VARCHAR NOT NULL,
    value               INTEGER
);

-- Scores: computed by Flourish (source 'flourish') or delivered from outside (source 'external').
CREATE TABLE scores (
    study_id        VARCHAR NOT NULL,
    participant     VARCHAR NOT NULL,
    wave            VARCHAR NOT NULL,
    outcome         VARCHAR NOT NULL,
    value           DOUBLE NOT NULL,
    items_answered  INTEGER,
    prorated        BOOLEAN NOT NULL DEFAULT false,
    source          VARCHAR NOT NULL DEFAULT 'flourish',
    scored_at       TIMESTAMPTZ,
    batch_id        VARCHAR
);

CREATE TABLE events (
    event_id     VARCHAR NOT NULL,
    participant  VARCHAR NOT NULL,
    study_id     VARCHAR NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    session_id   VARCHAR NOT NULL,
    type         VARCHAR NOT NULL,
    feature      VARCHAR,
    value        DOUBLE,
    batch_id     VARCHAR NOT NULL
);

-- Every rejected row, with a machine-readable reason. payload has participant_id replaced by
-- its pseudonym; a row whose id could not be read keeps its raw bytes only in a quarantine
-- file beside the landing batch (payload NULL here, payload_file says where).
CREATE TABLE quarantine (
    batch_id      VARCHAR NOT NULL,
    record_kind   VARCHAR NOT NULL,
    source_file   VARCHAR NOT NULL,
    line          BIGINT NOT NULL,
    reason        VARCHAR NOT NULL,
    message       VARCHAR NOT NULL,
    participant   VARCHAR,                 -- pseudonym when the id could be read
    payload       VARCHAR,                 -- JSON text, pseudonymized
    payload_file  VARCHAR                  -- quarantine file holding raw bytes when payload is NULL
);

-- Batch manifest: one row per ingest of a landing folder, one row per file.
CREATE TABLE batches (
    batch_id      VARCHAR PRIMARY KEY,
    study_id      VARCHAR NOT NULL,
    landing       VARCHAR NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL,
    rows_read     BIGINT NOT NULL,
    rows_stored   BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    reconciliation VARCHAR NOT NULL        -- the JSON the CLI prints
);

CREATE TABLE batch_files (
    batch_id     VARCHAR NOT NULL,
    file_name    VARCHAR NOT NULL,
    sha256       VARCHAR NOT NULL,
    size_bytes   BIGINT NOT NULL,
    record_kind  VARCHAR NOT NULL,
    rows_read    BIGINT NOT NULL,
    rows_stored  BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL
);

-- Erased participants: later data for them is quarantined as 'withdrawn'.
CREATE TABLE tombstones (
    participant  VARCHAR PRIMARY KEY,
    erased_at    TIMESTAMPTZ NOT NULL,
    reason       VARCHAR NOT NULL
);
