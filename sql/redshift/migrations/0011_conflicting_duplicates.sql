-- Conflicting duplicates are kept (docs/cleaning-contract.md, "Duplicates and
-- conflicts"): a copy of an id whose cleaned payload differs from every earlier copy's
-- and lies within the deduplication window of one is a reject, reason
-- `conflicting_duplicate`, not a silent duplicate.
-- payload_hash: what the stager computed over a row's cleaned payload (id, created_at,
-- user_email, ip, event_name, metadata as sent): two copies are identical when their
-- hashes are, so loads never compare SUPER values. Rows loaded before this migration
-- have none; a copy of one at the same created_at counts as a duplicate, as it did then.
-- A conflicting duplicate's reject row carries its id, time and payload hash, so that
-- later loads see it as an earlier copy: rows per id do not depend on how loads are cut.
-- ALTER TABLE adds one column per statement.
-- AWS: r_ALTER_TABLE.html (ADD COLUMN column_name column_type DEFAULT default_expr
-- NOT NULL)
ALTER TABLE {schema}.events ADD COLUMN payload_hash VARCHAR(32);
ALTER TABLE {schema}.stage_events ADD COLUMN payload_hash VARCHAR(32);
ALTER TABLE {schema}.event_rejects ADD COLUMN event_id VARCHAR(36);
ALTER TABLE {schema}.event_rejects ADD COLUMN created_at TIMESTAMP;
ALTER TABLE {schema}.event_rejects ADD COLUMN payload_hash VARCHAR(32);
-- How many of a file's (a load's) rejects are conflicting duplicates.
ALTER TABLE {schema}.etl_files ADD COLUMN conflicts BIGINT DEFAULT 0 NOT NULL;
ALTER TABLE {schema}.etl_files_history ADD COLUMN conflicts BIGINT DEFAULT 0 NOT NULL;
ALTER TABLE {schema}.etl_loads ADD COLUMN conflicts BIGINT DEFAULT 0 NOT NULL;
