-- Flourish warehouse: privacy values as contracts (owned by privacy/; see schemas/privacy_values.py).

-- What each spend's mechanism lost, in its own measure, beside what the study's budget was charged:
-- loss_measure 'zCDP' (Gaussian noise, loss_value is rho) or 'pure' (Laplace noise, loss_value is epsilon).
ALTER TABLE privacy_ledger ADD COLUMN loss_measure VARCHAR;
ALTER TABLE privacy_ledger ADD COLUMN loss_value DOUBLE;
UPDATE privacy_ledger SET
    loss_measure = CASE WHEN mechanism = 'gaussian' THEN 'zCDP' ELSE 'pure' END,
    loss_value = CASE WHEN mechanism = 'gaussian' THEN rho ELSE epsilon END;

-- The protocol's privacy unit each release was made under (today always 'participant').
ALTER TABLE releases ADD COLUMN privacy_unit VARCHAR;
UPDATE releases SET privacy_unit = 'participant';
