-- Flourish warehouse: privacy values as contracts (owned by privacy/; see schemas/privacy_values.py).

-- What each spend's mechanism lost, in its own measure and for which privacy unit, beside what the study's
-- budget was charged: loss_measure 'zCDP' (Gaussian noise, loss_value is rho) or 'pure' (Laplace noise,
-- loss_value is epsilon); privacy_unit the protocol's unit the loss holds for (today always 'participant').
-- The ledger, not `releases`, carries them: other code writes `releases` rows by position.
ALTER TABLE privacy_ledger ADD COLUMN loss_measure VARCHAR;
ALTER TABLE privacy_ledger ADD COLUMN loss_value DOUBLE;
ALTER TABLE privacy_ledger ADD COLUMN privacy_unit VARCHAR;
UPDATE privacy_ledger SET
    loss_measure = CASE WHEN mechanism = 'gaussian' THEN 'zCDP' ELSE 'pure' END,
    loss_value = CASE WHEN mechanism = 'gaussian' THEN rho ELSE epsilon END,
    privacy_unit = 'participant';
