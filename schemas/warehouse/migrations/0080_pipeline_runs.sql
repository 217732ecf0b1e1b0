-- Flourish warehouse: the pipeline's own record (flows/runs.py). One row per `flourish run` (or scheduled run)
-- and one per stage of it, kept for good: a data engineer can read every run's stages, states, times and cache
-- keys. Nothing here identifies a participant.
CREATE TABLE pipeline_runs (
    run_id        VARCHAR PRIMARY KEY,
    study_id      VARCHAR NOT NULL,
    trigger       VARCHAR NOT NULL,          -- cli | schedule:<deployment> | demo
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    state         VARCHAR NOT NULL,          -- running | completed | failed | stopped
    message       VARCHAR,                   -- one sentence when failed or stopped
    alerts        VARCHAR NOT NULL DEFAULT '[]'   -- JSON list of alerts raised by the run (e.g. divergence)
);

CREATE TABLE pipeline_stages (
    run_id        VARCHAR NOT NULL,
    stage         VARCHAR NOT NULL,          -- ingest | score | quality | analyze | release | reports
    seq           INTEGER NOT NULL,
    state         VARCHAR NOT NULL,          -- completed | cached | skipped | failed
    cache_key     VARCHAR,                   -- sha256 of the stage's inputs (flows/runs.py)
    started_at    TIMESTAMPTZ NOT NULL,
    seconds       DOUBLE NOT NULL,
    summary       VARCHAR NOT NULL,          -- JSON: what the stage did (counts, ids), never participant data
    message       VARCHAR                    -- why skipped or failed
);
