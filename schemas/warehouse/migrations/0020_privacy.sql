-- Flourish warehouse: privacy (owned by privacy/). Consent ledger, erasure log, re-keying log,
-- pseudonym key fingerprints, the privacy budget ledger and the DP release tables.
-- Nothing here holds a raw participant id. See privacy/STATEMENT.md.

-- Append-only, hash-chained consent ledger. The chain covers subject_commit = sha256(subject_salt || participant),
-- not the pseudonym itself, so erasure can redact participant and subject_salt (set NULL, redacted = true)
-- and the chain still verifies. Redaction (and re-keying, which re-seals the chain and logs both heads in
-- rekey_log) are the only mutations; privacy/consent.py is the one writer.
CREATE TABLE consent_ledger (
    seq              BIGINT PRIMARY KEY,
    participant      VARCHAR,                 -- pseudonym; NULL once erased
    subject_salt     VARCHAR,                 -- random per entry; NULL once erased
    subject_commit   VARCHAR NOT NULL,        -- sha256(subject_salt || participant), hex
    scope            VARCHAR NOT NULL,        -- telemetry | surveys | linkage | aggregate_release
    consent_version  VARCHAR NOT NULL,
    action           VARCHAR NOT NULL,        -- grant | withdraw
    effective_us     BIGINT NOT NULL,         -- when the grant/withdrawal takes effect, microseconds since epoch UTC
    recorded_us      BIGINT NOT NULL,         -- when it was appended, microseconds since epoch UTC
    prev_hash        VARCHAR NOT NULL,
    entry_hash       VARCHAR NOT NULL UNIQUE,
    redacted         BOOLEAN NOT NULL DEFAULT false
);

-- One row per erasure, with nothing that identifies the participant (not even a hash): counts only.
-- erasure_id is the receipt handed back to the requester.
CREATE TABLE erasure_log (
    erasure_id        VARCHAR PRIMARY KEY,
    erased_at         TIMESTAMPTZ NOT NULL,
    reason            VARCHAR NOT NULL,
    rows_deleted      BIGINT NOT NULL,
    rows_redacted     BIGINT NOT NULL,
    detail            VARCHAR NOT NULL        -- JSON: rows per table, files rewritten/deleted
);

CREATE TABLE pseudonym_keys (
    fingerprint   VARCHAR PRIMARY KEY,        -- HMAC(key, 'flourish-key-fingerprint-v1')[:16]; not the key
    activated_at  TIMESTAMPTZ NOT NULL,
    retired_at    TIMESTAMPTZ
);

CREATE TABLE rekey_log (
    rekey_id          VARCHAR PRIMARY KEY,
    rekeyed_at        TIMESTAMPTZ NOT NULL,
    old_fingerprint   VARCHAR NOT NULL,
    new_fingerprint   VARCHAR NOT NULL,
    participants      BIGINT NOT NULL,
    rows_updated      BIGINT NOT NULL,
    ledger_head_before VARCHAR,
    ledger_head_after  VARCHAR,
    detail            VARCHAR NOT NULL
);

-- The budget of each study, fixed at its first release. accounting 'zcdp': spend is counted in rho
-- (additive composition) against rho_total, the largest rho whose Bun & Steinke (2016) conversion
-- rho + 2 sqrt(rho ln(1/delta)) fits in (epsilon_total, delta). accounting 'pure': spend counted in epsilon.
CREATE TABLE privacy_budgets (
    study_id        VARCHAR PRIMARY KEY,
    accounting      VARCHAR NOT NULL,
    epsilon_total   DOUBLE NOT NULL,
    delta           DOUBLE NOT NULL,
    rho_total       DOUBLE,
    rho_spent       DOUBLE NOT NULL DEFAULT 0,
    epsilon_spent_pure DOUBLE NOT NULL DEFAULT 0,
    releases        BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- Every spend. Reserved (and counted) BEFORE noise is drawn; 'released' once the values are stored.
-- A reservation whose process died stays counted: the conservative side.
CREATE TABLE privacy_ledger (
    entry_id        VARCHAR PRIMARY KEY,
    study_id        VARCHAR NOT NULL,
    release_id      VARCHAR NOT NULL,
    query           VARCHAR NOT NULL,
    mechanism       VARCHAR NOT NULL,          -- gaussian | laplace
    noise_scale     DOUBLE NOT NULL,           -- OpenDP scale on the normalized vector (see privacy/release.py)
    sensitivity     DOUBLE NOT NULL,           -- L2 (gaussian) or L1 (laplace) sensitivity of that vector
    rho             DOUBLE,                    -- zCDP cost (gaussian; laplace as epsilon^2/2 under zcdp)
    epsilon         DOUBLE,                    -- pure-DP cost (laplace) or Bun-Steinke epsilon of rho at delta
    delta           DOUBLE,
    status          VARCHAR NOT NULL,          -- reserved | released
    reserved_at     TIMESTAMPTZ NOT NULL,
    released_at     TIMESTAMPTZ,
    values_sha256   VARCHAR
);

CREATE TABLE releases (
    release_id      VARCHAR PRIMARY KEY,
    study_id        VARCHAR NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    mechanism       VARCHAR NOT NULL,
    accounting      VARCHAR NOT NULL,
    rho             DOUBLE,
    epsilon         DOUBLE NOT NULL,
    delta           DOUBLE NOT NULL,
    min_cell_size   INTEGER NOT NULL,
    queries         VARCHAR NOT NULL,          -- JSON list of query names
    values_sha256   VARCHAR NOT NULL,
    opendp_version  VARCHAR NOT NULL,
    opendp_features VARCHAR NOT NULL
);

-- The public tier's only input. value is NULL when suppressed (noisy count below min_cell_size).
-- noise_sd is the standard deviation of the noise in value (exact for sums and counts; delta-method
-- approximation for means), for noise-aware models (Bernstein & Sheldon 2018).
CREATE TABLE release_values (
    release_id  VARCHAR NOT NULL,
    study_id    VARCHAR NOT NULL,
    query       VARCHAR NOT NULL,
    outcome     VARCHAR,
    arm         VARCHAR,
    wave        VARCHAR,
    statistic   VARCHAR NOT NULL,
    value       DOUBLE,
    noise_sd    DOUBLE,
    suppressed  BOOLEAN NOT NULL
);

-- tombstones.participant holds tombstone_token(pseudonym), not the pseudonym, so an erased participant's
-- pseudonym is in no table; ingest refuses late data with  tombstone_token(participant) IN (SELECT participant FROM tombstones).
CREATE MACRO tombstone_token(p) AS sha256('flourish-tombstone-v1:' || p);
