-- The event catalog: one row per event type ever loaded, maintained in each load's
-- transaction (per-load increments of what the MERGE inserted), so it always equals
-- `SELECT event_name, MIN(created_at), MAX(created_at), COUNT(*) FROM events GROUP BY 1`.
-- first_seen and last_seen are event times (created_at), not load times.
-- AWS: r_CREATE_TABLE_NEW.html (DISTSTYLE ALL, SORTKEY)
CREATE TABLE {schema}.event_types_seen (
    event_name   VARCHAR(128)  NOT NULL,
    first_seen   TIMESTAMP     NOT NULL,
    last_seen    TIMESTAMP     NOT NULL,
    events       BIGINT        NOT NULL
)
DISTSTYLE ALL
SORTKEY (event_name);

-- The typed views `migrate` created from [event_types] (one row per view): it drops
-- only these when a type leaves the configuration, and recreates one only when its
-- definition changed (checksum of the statement that created it).
-- AWS: r_CREATE_TABLE_NEW.html (DISTSTYLE ALL, SORTKEY)
CREATE TABLE {schema}.event_type_views (
    view_name    VARCHAR(128)  NOT NULL,
    event_name   VARCHAR(128)  NOT NULL,
    checksum     VARCHAR(64)   NOT NULL,
    created_at   TIMESTAMP     NOT NULL
)
DISTSTYLE ALL
SORTKEY (view_name);

-- Events loaded before this migration: counted once, under the loaders' lock so that no
-- load commits between the count and this migration's commit.
-- AWS: r_LOCK.html, r_INSERT_30.html, r_GROUP_BY_clause.html
LOCK {schema}.etl_files;
INSERT INTO {schema}.event_types_seen (event_name, first_seen, last_seen, events)
SELECT event_name, MIN(created_at), MAX(created_at), COUNT(*)
FROM {schema}.events
GROUP BY event_name;
