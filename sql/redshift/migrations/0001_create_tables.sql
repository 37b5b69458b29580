-- events-etl schema, Amazon Redshift dialect.
-- AWS (https://docs.aws.amazon.com/redshift/latest/dg/): r_CREATE_SCHEMA.html,
-- r_CREATE_TABLE_NEW.html (DISTSTYLE, DISTKEY, SORTKEY, PRIMARY KEY as a planner hint),
-- r_SUPER_type.html, r_Character_types.html (VARCHAR(n) counts bytes).
-- The rejected line's text is `raw_line`: RAW is a Redshift reserved word
-- (r_pg_keywords.html). An earlier version of this file named it `raw`; Redshift
-- refuses that file, so it never applied anywhere and editing it breaks no database.
-- {schema} is replaced by the validated warehouse.schema. Keep the table and column
-- list identical to sql/postgres/migrations/0001_create_tables.sql (a test checks).
-- Redshift does not enforce PRIMARY KEY or UNIQUE: the load's MERGE from a source
-- deduplicated by event_id is what keeps event_id unique, and the keys below are only
-- planner hints.

CREATE SCHEMA IF NOT EXISTS {schema};

-- Sorted by time (analysts filter on it); distributed on event_id so the MERGE join on
-- it is co-located.
CREATE TABLE {schema}.events (
    event_id     VARCHAR(36)   NOT NULL PRIMARY KEY,
    created_at   TIMESTAMP     NOT NULL,
    user_email   VARCHAR(254)  NOT NULL,
    ip           VARCHAR(45),
    event_name   VARCHAR(128)  NOT NULL,
    metadata     SUPER,
    source_key   VARCHAR(1024) NOT NULL,
    source_line  BIGINT        NOT NULL,
    load_id      VARCHAR(64)   NOT NULL,
    loaded_at    TIMESTAMP     NOT NULL
)
DISTSTYLE KEY
DISTKEY (event_id)
COMPOUND SORTKEY (created_at);

CREATE TABLE {schema}.event_rejects (
    load_id      VARCHAR(64)   NOT NULL,
    source_key   VARCHAR(1024) NOT NULL,
    source_line  BIGINT        NOT NULL,
    reason       VARCHAR(32)   NOT NULL,
    raw_line     VARCHAR(16384),
    rejected_at  TIMESTAMP     NOT NULL
)
DISTSTYLE EVEN
SORTKEY (load_id);

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
)
DISTSTYLE ALL
SORTKEY (load_id);

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
)
DISTSTYLE ALL
SORTKEY (source_key);

CREATE TABLE {schema}.stage_events (
    event_id     VARCHAR(36)   NOT NULL,
    created_at   TIMESTAMP     NOT NULL,
    user_email   VARCHAR(254)  NOT NULL,
    ip           VARCHAR(45),
    event_name   VARCHAR(128)  NOT NULL,
    metadata     SUPER,
    source_key   VARCHAR(1024) NOT NULL,
    source_line  BIGINT        NOT NULL
)
DISTSTYLE KEY
DISTKEY (event_id);

CREATE TABLE {schema}.stage_rejects (
    source_key   VARCHAR(1024) NOT NULL,
    source_line  BIGINT        NOT NULL,
    reason       VARCHAR(32)   NOT NULL,
    raw_line     VARCHAR(16384)
)
DISTSTYLE EVEN;

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
)
DISTSTYLE ALL;
