-- `events-etl reload`: a request to read a recorded file version again while the source
-- still has it (after a cleaning-contract change, or a fixed quarantined file). A request
-- is open while load_id is NULL: discovery then treats the version as pending, and the
-- load that reloads it closes the request (load_id) and moves the version's previous
-- etl_files row to etl_files_history, so the ledger keeps both. Ids already in events
-- are never overwritten.
CREATE TABLE {schema}.etl_reloads (
    source_key     VARCHAR(1024) NOT NULL,
    etag           VARCHAR(128)  NOT NULL,
    requested_at   TIMESTAMP     NOT NULL,
    load_id        VARCHAR(64)
);

CREATE TABLE {schema}.etl_files_history (
    source_key        VARCHAR(1024) NOT NULL,
    etag              VARCHAR(128)  NOT NULL,
    size_bytes        BIGINT        NOT NULL,
    load_id           VARCHAR(64)   NOT NULL,
    lines             BIGINT        NOT NULL,
    events_loaded     BIGINT        NOT NULL,
    duplicates        BIGINT        NOT NULL,
    rejects           BIGINT        NOT NULL,
    blank_lines       BIGINT        NOT NULL,
    recovered_events  BIGINT        NOT NULL,
    invalid_ips       BIGINT        NOT NULL,
    loaded_at         TIMESTAMP     NOT NULL,
    superseded_by     VARCHAR(64)   NOT NULL,
    superseded_at     TIMESTAMP     NOT NULL
);
