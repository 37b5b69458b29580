-- A quarantine row is an alarm that clears: a load of a newer version of the key, a
-- load of a reload of the version, or an operator (`events-etl quarantine resolve`)
-- resolves it. Resolved rows stay, so the ledger keeps what happened and who cleared it;
-- `status --check` and the metrics count only unresolved ones. A version that vanished
-- before it was read is recorded here too, with reason `vanished`.
ALTER TABLE {schema}.etl_quarantine ADD COLUMN resolved_at TIMESTAMP;
ALTER TABLE {schema}.etl_quarantine ADD COLUMN resolved_by VARCHAR(256);
ALTER TABLE {schema}.etl_quarantine ADD COLUMN resolution VARCHAR(1024);
