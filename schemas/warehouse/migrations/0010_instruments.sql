-- Flourish warehouse: tables written by the scoring stage (flows/scoring.py, instruments/).
-- safety_flags: one row per triggered safety screen (PHQ-9 item 9 > 0, PHQ-2 >= 3, GAD-2 >= 3, ...).
CREATE TABLE IF NOT EXISTS safety_flags (
    study_id            VARCHAR NOT NULL,
    participant         VARCHAR NOT NULL,
    wave                VARCHAR NOT NULL,
    instrument          VARCHAR NOT NULL,
    instrument_version  VARCHAR NOT NULL,
    flag                VARCHAR NOT NULL,
    observed            DOUBLE NOT NULL,
    op                  VARCHAR NOT NULL,
    threshold           DOUBLE NOT NULL,
    basis               VARCHAR NOT NULL,   -- item | score | partial_sum
    source              VARCHAR NOT NULL
);

-- psychometrics: reliability per instrument score x wave x arm ('all' pools the arms).
CREATE TABLE IF NOT EXISTS psychometrics (
    study_id            VARCHAR NOT NULL,
    instrument          VARCHAR NOT NULL,
    instrument_version  VARCHAR NOT NULL,
    outcome             VARCHAR NOT NULL,
    wave                VARCHAR NOT NULL,
    arm                 VARCHAR NOT NULL,
    n_items             INTEGER NOT NULL,
    n_obs               INTEGER NOT NULL,
    alpha               DOUBLE,
    alpha_ci_lower      DOUBLE,
    alpha_ci_upper      DOUBLE,
    omega               DOUBLE,
    note                VARCHAR NOT NULL    -- why a statistic is NULL, '' otherwise
);
