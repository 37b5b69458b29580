-- The typed views of [event_types], PostgreSQL dialect: `migrate` renders one view per
-- configured type (`{schema}.events_<type>`) from create_view and one column_<type>
-- fragment per configured column, and tracks what it created in event_type_views. Each
-- `-- name:` starts a statement or fragment. {key} and {view} are validated names
-- ([a-z][a-z0-9_]*, never a Redshift reserved word; quoted as column names all the same,
-- since PostgreSQL reserves a few words Redshift does not); the other {placeholders} are
-- quoted literals.
--
-- A view must never fail whatever metadata holds: a value of the wrong JSON type reads
-- as NULL. Each fragment tests the JSON type first (a CASE evaluates its THEN only when
-- its WHEN holds) and only then casts; a timestamp must be a whole, valid timestamp of
-- a form `created_at` accepts before it is cast.

-- name: create_view
CREATE VIEW {schema}.{view} AS
SELECT e.event_id, e.created_at, e.user_email, e.ip, e.event_name, e.metadata{columns}
FROM {schema}.events e
WHERE e.event_name = {event_name};

-- name: column_text
CASE WHEN jsonb_typeof(e.metadata -> '{key}') = 'string' THEN e.metadata ->> '{key}' END AS "{key}"

-- name: column_bigint
-- A whole number in BIGINT's range; 1.0 counts (SUPER does not tell it from 1 either).
CASE WHEN jsonb_typeof(e.metadata -> '{key}') = 'number' THEN
    CASE WHEN (e.metadata -> '{key}')::numeric = trunc((e.metadata -> '{key}')::numeric)
          AND (e.metadata -> '{key}')::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
         THEN (e.metadata -> '{key}')::numeric::bigint END
END AS "{key}"

-- name: column_double
CASE WHEN jsonb_typeof(e.metadata -> '{key}') = 'number' THEN (e.metadata -> '{key}')::double precision END AS "{key}"

-- name: column_boolean
CASE WHEN jsonb_typeof(e.metadata -> '{key}') = 'boolean' THEN (e.metadata -> '{key}')::boolean END AS "{key}"

-- name: column_timestamp
-- The forms `created_at` accepts, converted to UTC as the cleaner converts `created_at`:
-- the date and time (the fraction cut to microseconds), then the suffix: none (a naive
-- time, in {naive_zone}, cleaning.naive_timezone), Z or z, or an offset ±HH, ±HHMM or
-- ±HH:MM. Character 20 on is the fraction and the suffix.
CASE WHEN jsonb_typeof(e.metadata -> '{key}') = 'string' AND (e.metadata ->> '{key}') ~ {timestamp_pattern}
     THEN (SELECT CASE WHEN p.suffix = '' THEN (p.local AT TIME ZONE {naive_zone}) AT TIME ZONE 'UTC'
                       WHEN p.suffix IN ('Z', 'z') THEN p.local
                       ELSE p.local - make_interval(mins => (CASE WHEN left(p.suffix, 1) = '-' THEN -1 ELSE 1 END)
                                                       * (CAST(substring(p.suffix, 2, 2) AS INTEGER) * 60
                                                          + CAST(CASE WHEN length(p.suffix) = 3 THEN '0'
                                                                      ELSE right(p.suffix, 2) END AS INTEGER)))
                  END
           FROM (SELECT CAST(substring(v, 1, 10) || ' ' || substring(v, 12, 8)
                             || left(COALESCE(substring(substring(v, 20) FROM '^[.][0-9]+'), ''), 7) AS TIMESTAMP) AS local,
                        regexp_replace(substring(v, 20), '^[.][0-9]+', '') AS suffix
                 FROM (SELECT e.metadata ->> '{key}' AS v) t) p)
END AS "{key}"

-- name: tracked_views
SELECT view_name, event_name, checksum FROM {schema}.event_type_views ORDER BY view_name;

-- name: lock_views
-- Serialises two `migrate` runs changing views.
LOCK TABLE {schema}.event_type_views IN SHARE ROW EXCLUSIVE MODE;

-- name: drop_view
-- Only views event_type_views lists are ever dropped: a view of the same name that
-- migrate did not create is left alone (create_view then fails, naming it).
DROP VIEW IF EXISTS {schema}.{view};

-- name: untrack_view
DELETE FROM {schema}.event_type_views WHERE view_name = {view_name};

-- name: track_view
INSERT INTO {schema}.event_type_views (view_name, event_name, checksum, created_at)
VALUES ({view_name}, {event_name}, {checksum}, CAST({at} AS TIMESTAMP));
