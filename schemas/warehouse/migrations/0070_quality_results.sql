-- Data-quality gates (flows/quality/): one row per expectation per quality run, written by
-- flows.quality.store in one transaction per run (a re-run with the same run_id replaces its rows).
-- No participant column and no participant data: examples are counts per value or cell, never ids or
-- pseudonyms, so erasure has nothing to walk here and the page rendered from this table is shareable
-- inside the study team.
CREATE TABLE quality_results (
    run_id            VARCHAR NOT NULL,
    study_id          VARCHAR NOT NULL,
    checked_at        TIMESTAMPTZ NOT NULL,   -- when the run validated
    as_of             TIMESTAMPTZ NOT NULL,   -- the time against which a wave counts as due (completeness)
    run_seconds       DOUBLE NOT NULL,        -- the whole run: reductions, validation, nothing of storing
    seq               INTEGER NOT NULL,       -- order of the expectation in the run
    expectation       VARCHAR NOT NULL,       -- stable name, e.g. score_in_range[who5.percent]
    family            VARCHAR NOT NULL,       -- the name without its [parameter]: what severities are set by
    expectation_type  VARCHAR NOT NULL,       -- Great Expectations' type, e.g. expect_column_values_to_be_between
    table_name        VARCHAR NOT NULL,       -- warehouse table or canonical relation judged
    column_name       VARCHAR NOT NULL,
    severity          VARCHAR NOT NULL,       -- critical | warning | info
    success           BOOLEAN NOT NULL,
    observed          VARCHAR,                -- JSON: what was seen (min/max, a share, a p-value, ...)
    checked_count     BIGINT,                 -- how many units the rule judged (NULL: not a count)
    unexpected_count  BIGINT,                 -- how many of them broke it
    unit              VARCHAR NOT NULL,       -- what the counts count: scores, responses, participants, ...
    examples          VARCHAR NOT NULL,       -- JSON list: a few unexpected values or cells with counts
    rule              VARCHAR NOT NULL,       -- JSON: the expectation's arguments (bounds, sets, thresholds)
    description       VARCHAR NOT NULL,
    error             VARCHAR,                -- the exception message when the expectation could not run
    gx_version        VARCHAR NOT NULL,
    PRIMARY KEY (run_id, expectation)
);
