-- The typed views of [event_types], Amazon Redshift dialect: `migrate` renders one view
-- per configured type (`{schema}.events_<type>`) from create_view and one column_<type>
-- fragment per configured column, and tracks what it created in event_type_views. Each
-- `-- name:` starts a statement or fragment. {key} and {view} are validated names
-- ([a-z][a-z0-9_]*, never a reserved word); the other {placeholders} are quoted literals.
-- All pages are under https://docs.aws.amazon.com/redshift/latest/dg/.
--
-- A view must never fail whatever metadata holds: a value of the wrong JSON type reads
-- as NULL. Each fragment tests the SUPER value's dynamic type first (IS_VARCHAR,
-- IS_BIGINT, IS_BOOLEAN, JSON_TYPEOF) and only then casts; besides, in the default lax
-- mode Redshift turns SUPER cast errors into NULL (limitations-super.html, "Casting
-- limitations") and navigating to a missing attribute reads NULL
-- (r_navigate_super_null_on_error.html). A timestamp must be a whole, valid timestamp
-- of a form `created_at` accepts before it is cast.

-- name: create_view
-- A regular (schema-bound) view: Redshift checks its columns when it is created.
-- AWS: r_CREATE_VIEW.html, query-super.html (navigation: e.metadata.key)
CREATE VIEW {schema}.{view} AS
SELECT e.event_id, e.created_at, e.user_email, e.ip, e.event_name, e.metadata{columns}
FROM {schema}.events e
WHERE e.event_name = {event_name};

-- name: column_text
-- A SUPER string holds at most 65535 bytes (limitations-super.html).
-- AWS: r_is_varchar.html, r_CASE_function.html, r_CAST_function.html
CASE WHEN IS_VARCHAR(e.metadata.{key}) THEN e.metadata.{key}::VARCHAR(65535) END AS {key}

-- name: column_bigint
-- IS_BIGINT: "true for numbers of scale 0 in the 64-bit range".
-- AWS: r_is_bigint.html, r_CASE_function.html, r_CAST_function.html
CASE WHEN IS_BIGINT(e.metadata.{key}) THEN e.metadata.{key}::BIGINT END AS {key}

-- name: column_double
-- JSON_TYPEOF is 'number' for every SUPER number (integer, decimal or float).
-- AWS: r_json_typeof.html, r_CASE_function.html, r_CAST_function.html
CASE WHEN JSON_TYPEOF(e.metadata.{key}) = 'number' THEN e.metadata.{key}::DOUBLE PRECISION END AS {key}

-- name: column_boolean
-- AWS: r_is_boolean.html, r_CASE_function.html, r_CAST_function.html
CASE WHEN IS_BOOLEAN(e.metadata.{key}) THEN e.metadata.{key}::BOOLEAN END AS {key}

-- name: column_timestamp
-- The forms `created_at` accepts, converted to UTC as the cleaner converts `created_at`:
-- the date and time (the fraction cut to microseconds), then the suffix: none (a naive
-- time, in {naive_zone}, cleaning.naive_timezone), Z or z, or an offset ±HH, ±HHMM or
-- ±HH:MM. Character 20 on is the fraction and the suffix. Written out in full for each
-- use (a view column cannot name a subquery's columns without a correlated subquery).
-- AWS: r_is_varchar.html, pattern-matching-conditions-posix.html (~),
-- r_SUBSTRING.html, r_LEFT.html, r_LEN.html (LENGTH), REGEXP_SUBSTR.html,
-- REGEXP_REPLACE.html, r_NVL_function.html (COALESCE), r_CAST_function.html,
-- CONVERT_TIMEZONE.html, r_DATEADD_function.html, r_CASE_function.html
CASE WHEN IS_VARCHAR(e.metadata.{key}) AND e.metadata.{key}::VARCHAR(65535) ~ {timestamp_pattern}
     THEN CASE WHEN REGEXP_REPLACE(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 20), '^[.][0-9]+', '') = ''
               THEN CONVERT_TIMEZONE({naive_zone}, 'UTC',
                        CAST(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 1, 10) || ' '
                             || SUBSTRING(e.metadata.{key}::VARCHAR(65535), 12, 8)
                             || LEFT(COALESCE(REGEXP_SUBSTR(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 20), '^[.][0-9]+'), ''), 7)
                             AS TIMESTAMP))
               WHEN REGEXP_REPLACE(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 20), '^[.][0-9]+', '') IN ('Z', 'z')
               THEN CAST(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 1, 10) || ' '
                         || SUBSTRING(e.metadata.{key}::VARCHAR(65535), 12, 8)
                         || LEFT(COALESCE(REGEXP_SUBSTR(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 20), '^[.][0-9]+'), ''), 7)
                         AS TIMESTAMP)
               ELSE DATEADD(minute,
                        (CASE WHEN LEFT(REGEXP_REPLACE(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 20), '^[.][0-9]+', ''), 1) = '-'
                              THEN 1 ELSE -1 END)
                        * (CAST(SUBSTRING(REGEXP_REPLACE(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 20), '^[.][0-9]+', ''), 2, 2) AS INTEGER) * 60
                           + CAST(CASE WHEN LENGTH(REGEXP_REPLACE(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 20), '^[.][0-9]+', '')) = 3 THEN '0'
                                       ELSE RIGHT(REGEXP_REPLACE(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 20), '^[.][0-9]+', ''), 2) END
                                  AS INTEGER)),
                        CAST(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 1, 10) || ' '
                             || SUBSTRING(e.metadata.{key}::VARCHAR(65535), 12, 8)
                             || LEFT(COALESCE(REGEXP_SUBSTR(SUBSTRING(e.metadata.{key}::VARCHAR(65535), 20), '^[.][0-9]+'), ''), 7)
                             AS TIMESTAMP))
          END
END AS {key}

-- name: tracked_views
-- AWS: r_SELECT_synopsis.html, r_ORDER_BY_clause.html
SELECT view_name, event_name, checksum FROM {schema}.event_type_views ORDER BY view_name;

-- name: lock_views
-- Serialises two `migrate` runs changing views.
-- AWS: r_LOCK.html
LOCK {schema}.event_type_views;

-- name: drop_view
-- Only views event_type_views lists are ever dropped: a view of the same name that
-- migrate did not create is left alone (create_view then fails, naming it).
-- AWS: r_DROP_VIEW.html
DROP VIEW IF EXISTS {schema}.{view};

-- name: untrack_view
-- AWS: r_DELETE.html
DELETE FROM {schema}.event_type_views WHERE view_name = {view_name};

-- name: track_view
-- AWS: r_INSERT_30.html, r_CAST_function.html
INSERT INTO {schema}.event_type_views (view_name, event_name, checksum, created_at)
VALUES ({view_name}, {event_name}, {checksum}, CAST({at} AS TIMESTAMP));
