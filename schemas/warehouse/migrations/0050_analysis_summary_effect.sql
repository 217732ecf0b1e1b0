-- Outcome summary rows carry the whole effect (schemas/results.py Effect): the spread of the estimate (posterior SD
-- or standard error), the interval's level, the participants analysed per arm, the control arm, the outcome's good
-- direction, and whether the effect could be estimated (with the reason when not: such a row has no number).
-- Rows stored before this migration leave these NULL (not recorded).
ALTER TABLE analysis_summary ADD COLUMN sd DOUBLE;
ALTER TABLE analysis_summary ADD COLUMN interval_level DOUBLE;
ALTER TABLE analysis_summary ADD COLUMN n_arm BIGINT;
ALTER TABLE analysis_summary ADD COLUMN n_control BIGINT;
ALTER TABLE analysis_summary ADD COLUMN control VARCHAR;
ALTER TABLE analysis_summary ADD COLUMN direction VARCHAR;
ALTER TABLE analysis_summary ADD COLUMN estimable BOOLEAN;
ALTER TABLE analysis_summary ADD COLUMN reason VARCHAR;
