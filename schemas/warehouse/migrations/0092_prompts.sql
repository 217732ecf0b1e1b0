-- Flourish warehouse: survey prompts (issue 17 item 4; landing record kind `prompts`, schemas/records.py Prompt).
-- One row per prompt as the partner's scheduler reported it: when it was scheduled (under which schedule version),
-- sent, opened, started, completed or expired, and the participant's IANA time zone when it was scheduled (a
-- participant who travels has prompts in several zones). `instrument` NULL: a prompt for the whole wave.
-- The response windows and the compliance table are computed from it by schemas/warehouse/relations.py
-- (response_windows, prompt_compliance); nothing derived is stored here.
CREATE TABLE prompts (
    prompt_id         VARCHAR NOT NULL,
    participant       VARCHAR NOT NULL,        -- pseudonym
    study_id          VARCHAR NOT NULL,
    wave              VARCHAR NOT NULL,
    instrument        VARCHAR,
    schedule_version  VARCHAR NOT NULL,
    scheduled_at      TIMESTAMPTZ NOT NULL,
    sent_at           TIMESTAMPTZ,
    opened_at         TIMESTAMPTZ,
    started_at        TIMESTAMPTZ,
    completed_at      TIMESTAMPTZ,
    expired_at        TIMESTAMPTZ,
    timezone          VARCHAR NOT NULL,
    batch_id          VARCHAR NOT NULL
);
