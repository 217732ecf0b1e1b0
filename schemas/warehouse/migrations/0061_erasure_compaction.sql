-- Flourish warehouse: which erasures still leave bytes in the warehouse file (owned by privacy/erasure.py).

-- When the warehouse file was rewritten after this erasure (privacy/erasure.compact_database): until then
-- DuckDB's free blocks may still hold the erased rows' bytes. NULL: not compacted yet (`flourish compact`).
ALTER TABLE erasure_log ADD COLUMN compacted_at TIMESTAMPTZ;
