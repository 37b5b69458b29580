-- Versions a run listed but left pending (it failed, or stopped before loading them).
-- The next run that lists the same key range and no longer finds one records it as lost
-- (etl_quarantine, reason `vanished`): a file that left the source without ever loading
-- is never only logged. Each run replaces the rows of the key range it listed.
CREATE TABLE {schema}.etl_pending (
    source_key     VARCHAR(1024) NOT NULL,
    etag           VARCHAR(128)  NOT NULL,
    size_bytes     BIGINT        NOT NULL,
    last_modified  TIMESTAMP,
    listed_at      TIMESTAMP     NOT NULL
);
CREATE INDEX etl_pending_key_idx ON {schema}.etl_pending (source_key COLLATE "C");
