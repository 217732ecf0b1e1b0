-- The divergence monitor's rows and the decision rule's verdicts of each trusted- or public-tier analysis run
-- (analysis/divergence.py, analysis/decision.py), written beside that run's analysis_summary rows (same run_id) by
-- flows/analysis_flows.py. What the dashboard and the regulator report's post-market monitoring section read: each
-- row says its tier, and a public report reads the public tier's rows only. A divergence is also an alert of the
-- pipeline's run (pipeline_runs.alerts). Effects are arm minus control; nothing here identifies a participant.
CREATE TABLE divergence_status (
    run_id               VARCHAR NOT NULL,
    study_id             VARCHAR NOT NULL,
    plan_hash            VARCHAR NOT NULL,
    exploratory          BOOLEAN NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    arm                  VARCHAR NOT NULL,
    control              VARCHAR NOT NULL,
    wave                 VARCHAR NOT NULL,   -- the flourishing outcome's follow-up wave
    outcome              VARCHAR NOT NULL,   -- the flourishing outcome
    metric               VARCHAR NOT NULL,   -- the engagement metric (a telemetry surrogate)
    tier                 VARCHAR NOT NULL,   -- trusted | public
    status               VARCHAR NOT NULL,   -- divergence | no_divergence | indeterminate
    alpha                DOUBLE NOT NULL,    -- each one-sided test's level (1 - interval_level)
    margin               DOUBLE NOT NULL,    -- the outcome's non-inferiority margin, outcome units
    direction            VARCHAR NOT NULL,
    engagement_window    VARCHAR,
    engagement_method    VARCHAR,
    engagement_estimate  DOUBLE,
    engagement_sd        DOUBLE,
    flourishing_method   VARCHAR,
    flourishing_estimate DOUBLE,             -- as the preregistered model reports it (never adjusted for engagement)
    flourishing_sd       DOUBLE,
    harm_estimate        DOUBLE,             -- the flourishing effect against its good direction (positive = worse)
    p_engagement         DOUBLE,             -- one-sided, H0: engagement did not rise
    p_harm               DOUBLE,             -- one-sided, H0: harm within the margin
    p_iut                DOUBLE,             -- the intersection-union test's p-value (the larger)
    p_quadrant           DOUBLE,             -- posterior probability of engagement up and harm beyond the margin
    reason               VARCHAR             -- why indeterminate
);

CREATE TABLE decision_table (
    run_id            VARCHAR NOT NULL,
    study_id          VARCHAR NOT NULL,
    plan_hash         VARCHAR NOT NULL,
    exploratory       BOOLEAN NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    arm               VARCHAR NOT NULL,
    control           VARCHAR NOT NULL,
    tier              VARCHAR NOT NULL,
    decision          VARCHAR NOT NULL,      -- ship | do_not_ship | indeterminate (the arm's, on each of its rows)
    alpha             DOUBLE NOT NULL,
    tests_needed      INTEGER NOT NULL,      -- the primary and the guardrails
    target_power      DOUBLE NOT NULL,       -- the rule's power target (protocol design.target_power)
    per_test_power    DOUBLE NOT NULL,       -- 1 - (1 - target_power) / tests_needed (beta corrected, Spotify)
    criterion_kind    VARCHAR NOT NULL,      -- primary_success | guardrail | no_divergence
    outcome           VARCHAR,
    criterion_passed  BOOLEAN,               -- NULL: could not be evaluated (criterion_reason says why)
    wave              VARCHAR,
    method            VARCHAR,
    estimate          DOUBLE,
    sd                DOUBLE,
    lower             DOUBLE,
    upper             DOUBLE,
    margin            DOUBLE,
    p_value           DOUBLE,                -- primary: two-sided; guardrail: one-sided non-inferiority; monitor: min IUT
    criterion_reason  VARCHAR
);
