-- Flourish warehouse: participants' baseline characteristics from partners (landing record kind `participants`;
-- issue 20 item 5). One record per participant and study; each characteristic is one row of
-- participant_characteristics, as the protocol's baseline_covariates declare it: a categorical covariate's level in
-- value_text, a numeric covariate's value in value_number (NULL when the partner sent null: not recorded).
-- Both tables have a participant (pseudonym) column, so erasure and re-keying walk them
-- (schemas.warehouse.participant_tables).
CREATE TABLE participants (
    participant   VARCHAR NOT NULL,        -- pseudonym
    study_id      VARCHAR NOT NULL,
    recorded_at   TIMESTAMPTZ NOT NULL,
    stratum       VARCHAR,
    batch_id      VARCHAR NOT NULL
);

CREATE TABLE participant_characteristics (
    participant   VARCHAR NOT NULL,        -- pseudonym
    study_id      VARCHAR NOT NULL,
    covariate     VARCHAR NOT NULL,        -- a declared baseline covariate of the study's protocol
    value_text    VARCHAR,                 -- a categorical covariate's level
    value_number  DOUBLE,                  -- a numeric covariate's value
    batch_id      VARCHAR NOT NULL
);
