-- Outcome summary: subgroup rows and frequentist p-values (raw and Holm-adjusted across secondary outcomes).
ALTER TABLE analysis_summary ADD COLUMN subgroup VARCHAR;
ALTER TABLE analysis_summary ADD COLUMN p_value DOUBLE;
ALTER TABLE analysis_summary ADD COLUMN p_adjusted DOUBLE;
