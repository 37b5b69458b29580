-- Run by `events-etl migrate` before any migration: the bookkeeping table.
-- AWS (https://docs.aws.amazon.com/redshift/latest/dg/): r_CREATE_SCHEMA.html (IF NOT
-- EXISTS), r_CREATE_TABLE_NEW.html (IF NOT EXISTS; PRIMARY KEY is informational only).
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
    version     BIGINT       NOT NULL PRIMARY KEY,
    name        VARCHAR(256) NOT NULL,
    checksum    VARCHAR(64)  NOT NULL,
    applied_at  TIMESTAMP    NOT NULL
);
