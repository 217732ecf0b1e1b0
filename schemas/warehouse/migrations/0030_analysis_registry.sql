-- Preregistration registry (analysis/prereg.py): append-only, hash-chained per study.
-- Flourish only ever INSERTs here; every read verifies the chain, so an edited or deleted row is detected.
CREATE TABLE plan_registry (
    study_id         VARCHAR NOT NULL,
    seq              INTEGER NOT NULL,
    kind             VARCHAR NOT NULL,       -- 'lock' | 'deviation'
    plan_hash        VARCHAR NOT NULL,       -- SHA-256 of the canonical protocol JSON
    recorded_at      TIMESTAMPTZ NOT NULL,
    reason           VARCHAR NOT NULL,       -- deviation reason; '' for a lock
    prev_entry_hash  VARCHAR NOT NULL,
    entry_hash       VARCHAR NOT NULL,
    plan_json        VARCHAR NOT NULL,       -- the canonical protocol JSON that was hashed
    PRIMARY KEY (study_id, seq)
);

-- Outcome summary rows of each analysis run (analysis/summary.py), confirmatory or exploratory.
CREATE TABLE analysis_summary (
    run_id        VARCHAR NOT NULL,
    study_id      VARCHAR NOT NULL,
    outcome       VARCHAR NOT NULL,
    arm           VARCHAR NOT NULL,
    wave          VARCHAR NOT NULL,          -- a wave name or 'long_run'
    estimate      DOUBLE,
    lower         DOUBLE,
    upper         DOUBLE,
    p_benefit     DOUBLE,
    p_above_mcid  DOUBLE,
    p_in_rope     DOUBLE,
    method        VARCHAR NOT NULL,
    tier          VARCHAR NOT NULL,
    plan_hash     VARCHAR NOT NULL,
    exploratory   BOOLEAN NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
