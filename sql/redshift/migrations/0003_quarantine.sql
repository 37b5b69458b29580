-- File versions set aside instead of loaded: the failure is permanent for that object
-- (an archived or unreadable object, a row the warehouse refuses), so retrying it would
-- stall every run. Discovery treats a quarantined (source_key, etag) as settled; a new
-- version of the file (new ETag) loads normally. `status` lists them.
-- AWS: r_CREATE_TABLE_NEW.html (DISTSTYLE ALL, SORTKEY)
CREATE TABLE {schema}.etl_quarantine (
    source_key      VARCHAR(1024) NOT NULL,
    etag            VARCHAR(128)  NOT NULL,
    size_bytes      BIGINT        NOT NULL,
    reason          VARCHAR(32)   NOT NULL,
    detail          VARCHAR(4096) NOT NULL,
    quarantined_at  TIMESTAMP     NOT NULL
)
DISTSTYLE ALL
SORTKEY (source_key);
