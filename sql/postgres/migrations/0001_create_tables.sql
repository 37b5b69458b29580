-- events-etl schema, PostgreSQL dialect (the stand-in for Redshift).
-- {schema} is replaced by the validated warehouse.schema. Keep the table and column
-- list identical to sql/redshift/migrations/0001_create_tables.sql (a test checks).

CREATE SCHEMA IF NOT EXISTS {schema};

-- Clean events. event_id is the deduplication key: loads MERGE on it and never
-- overwrite a row that is already here.
CREATE TABLE {schema}.events (
    event_id     VARCHAR(36)   NOT NULL PRIMARY KEY,
    created_at   TIMESTAMP     NOT NULL,
    user_email   VARCHAR(254)  NOT NULL,
    ip           VARCHAR(45),
    event_name   VARCHAR(128)  NOT NULL,
    metadata     JSONB,
    source_key   VARCHAR(1024) NOT NULL,
    source_line  BIGINT        NOT NULL,
    load_id      VARCHAR(64)   NOT NULL,
    loaded_at    TIMESTAMP     NOT NULL
);
CREATE INDEX events_created_at_idx ON {schema}.events (created_at);
-- Per-load counts are computed from the rows a load inserted.
CREATE INDEX events_load_id_idx ON {schema}.events (load_id, source_key);

-- Lines that did not become events, with the reason and the start of the raw text.
CREATE TABLE {schema}.event_rejects (
    load_id      VARCHAR(64)   NOT NULL,
    source_key   VARCHAR(1024) NOT NULL,
    source_line  BIGINT        NOT NULL,
    reason       VARCHAR(32)   NOT NULL,
    raw          VARCHAR(16384),
    rejected_at  TIMESTAMP     NOT NULL
);
CREATE INDEX event_rejects_load_idx ON {schema}.event_rejects (load_id);

-- One row per committed load. Written in the load's own transaction.
CREATE TABLE {schema}.etl_loads (
    load_id           VARCHAR(64)  NOT NULL PRIMARY KEY,
    started_at        TIMESTAMP    NOT NULL,
    finished_at       TIMESTAMP    NOT NULL,
    status            VARCHAR(16)  NOT NULL,
    files             BIGINT       NOT NULL,
    lines             BIGINT       NOT NULL,
    events_loaded     BIGINT       NOT NULL,
    duplicates        BIGINT       NOT NULL,
    rejects           BIGINT       NOT NULL,
    blank_lines       BIGINT       NOT NULL,
    recovered_events  BIGINT       NOT NULL,
    invalid_ips       BIGINT       NOT NULL
);

-- One row per loaded file version: the source of truth for "already loaded".
CREATE TABLE {schema}.etl_files (
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
    PRIMARY KEY (source_key, etag)
);
CREATE INDEX etl_files_load_idx ON {schema}.etl_files (load_id);

-- Staging tables: filled and emptied inside each load's transaction (with DELETE, not
-- TRUNCATE, which commits on Redshift), so they are empty outside it.
CREATE TABLE {schema}.stage_events (
    event_id     VARCHAR(36)   NOT NULL,
    created_at   TIMESTAMP     NOT NULL,
    user_email   VARCHAR(254)  NOT NULL,
    ip           VARCHAR(45),
    event_name   VARCHAR(128)  NOT NULL,
    metadata     JSONB,
    source_key   VARCHAR(1024) NOT NULL,
    source_line  BIGINT        NOT NULL
);

CREATE TABLE {schema}.stage_rejects (
    source_key   VARCHAR(1024) NOT NULL,
    source_line  BIGINT        NOT NULL,
    reason       VARCHAR(32)   NOT NULL,
    raw          VARCHAR(16384)
);

CREATE TABLE {schema}.stage_files (
    source_key        VARCHAR(1024) NOT NULL,
    etag              VARCHAR(128)  NOT NULL,
    size_bytes        BIGINT        NOT NULL,
    lines             BIGINT        NOT NULL,
    blank_lines       BIGINT        NOT NULL,
    events_staged     BIGINT        NOT NULL,
    rejects           BIGINT        NOT NULL,
    recovered_events  BIGINT        NOT NULL,
    invalid_ips       BIGINT        NOT NULL
);
