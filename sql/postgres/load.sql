-- The statements of one load, PostgreSQL dialect, in the order the adapter runs them,
-- all inside one transaction. Each `-- name:` starts a statement. {schema} is the
-- validated warehouse.schema; $1 is the load id; $2 the run's start (UTC) in insert_load, the
-- dedupe window in days (load.dedupe_window_days) in insert_events.

-- name: lock
-- Serialises loaders: a second loader waits here, then sees the first one's files as
-- recorded and skips them. Readers (discovery, status) are not blocked.
LOCK TABLE {schema}.etl_files IN SHARE ROW EXCLUSIVE MODE;

-- name: copies_begin
-- Before the COPYs: a row the server refuses fails its COPY, and the load goes back
-- here to copy again without that row's file, in the same transaction.
SAVEPOINT copies;

-- name: copies_undo
ROLLBACK TO SAVEPOINT copies;

-- name: settings
-- For this transaction only. JIT compilation of the load's statements costs more than
-- it saves: its compile time is paid again by every load.
-- work_mem: classify sorts the staged events (by id and payload, then its reps by key
-- and line); at the server's default 4 MB a large load spills those sorts to disk. The
-- 64 MB are the server's, for this transaction's sorts.
SET LOCAL jit = off;
SET LOCAL work_mem = '64MB';

-- name: create_stage
-- The staging tables of this load: temporary copies of {schema}.stage_* (same columns,
-- types, NOT NULLs and collations), private to this session and dropped when the
-- transaction ends, committed or rolled back. Nothing has to clear them, no other
-- session sees their rows, and their writes skip the write-ahead log. The tables in
-- {schema} stay empty here: they define the staged rows' columns for both dialects
-- (Redshift loads into them, and clears them with DELETE, not TRUNCATE, which commits
-- there).
CREATE TEMP TABLE stage_files (LIKE {schema}.stage_files) ON COMMIT DROP;
CREATE TEMP TABLE stage_events (LIKE {schema}.stage_events) ON COMMIT DROP;
CREATE TEMP TABLE stage_rejects (LIKE {schema}.stage_rejects) ON COMMIT DROP;

-- name: copy_files
-- The adapter reads each staged part the manifest lists, parses its rows in Rust as
-- Redshift's COPY ... FORMAT JSON 'auto' reads them (keys to columns by name, an absent
-- key or a JSON null loads NULL, other keys ignored) and sends typed columns.
COPY pg_temp.stage_files
    (source_key, etag, size_bytes, lines, blank_lines, events_staged, rejects, recovered_events, invalid_ips)
FROM STDIN (FORMAT binary);

-- name: copy_events
-- metadata is sent as the staged JSON text, as jsonb (a JSON null is SQL NULL).
COPY pg_temp.stage_events
    (event_id, created_at, user_email, ip, event_name, metadata, payload_hash, source_key, source_line)
FROM STDIN (FORMAT binary);

-- name: copy_rejects
COPY pg_temp.stage_rejects (source_key, source_line, reason, raw_line) FROM STDIN (FORMAT binary);

-- name: analyze_stage
-- Temporary tables have no statistics until analyzed (autovacuum never sees them).
-- stage_files is analyzed, so that the statements joining it with etl_files, whose
-- size follows history, plan on its real size: a few hundred rows, read in a
-- millisecond. stage_events is not: sampling it cost about 90 ms on 200,000 events,
-- and no plan depends on it. insert_events reads it once, sorted, and probes events
-- by index whatever the estimates (probe_by_index); the planner sizes it from its
-- pages.
ANALYZE pg_temp.stage_files (source_key, etag);

-- name: skip_recorded
-- File versions another loader recorded while this one was cleaning: drop them and
-- their rows, so nothing is loaded or recorded twice. A version with an open reload
-- request is read again, not skipped.
DELETE FROM pg_temp.stage_files s
USING {schema}.etl_files f
WHERE f.source_key = s.source_key AND f.etag = s.etag
  AND NOT EXISTS (SELECT 1 FROM {schema}.etl_reloads r
                  WHERE r.source_key = s.source_key AND r.etag = s.etag AND r.load_id IS NULL);

-- name: archive_reloaded
-- Reloaded versions: their previous ledger rows move to etl_files_history ($1 is the
-- load that supersedes them), so etl_files keeps one row per version and the ledger
-- keeps both.
INSERT INTO {schema}.etl_files_history
    (source_key, etag, size_bytes, load_id, lines, events_loaded, duplicates, rejects, blank_lines,
     recovered_events, invalid_ips, loaded_at, superseded_by, superseded_at, conflicts)
SELECT f.source_key, f.etag, f.size_bytes, f.load_id, f.lines, f.events_loaded, f.duplicates, f.rejects,
       f.blank_lines, f.recovered_events, f.invalid_ips, f.loaded_at, $1, now() AT TIME ZONE 'UTC',
       f.conflicts
FROM {schema}.etl_files f
JOIN pg_temp.stage_files s ON s.source_key = f.source_key AND s.etag = f.etag;

-- name: drop_reloaded
DELETE FROM {schema}.etl_files f
USING pg_temp.stage_files s
WHERE f.source_key = s.source_key AND f.etag = s.etag;

-- name: close_reloads
-- The open reload requests this load serves are closed by it.
UPDATE {schema}.etl_reloads r SET load_id = $1
FROM pg_temp.stage_files s
WHERE r.load_id IS NULL AND r.source_key = s.source_key AND r.etag = s.etag;

-- name: drop_orphans
DELETE FROM pg_temp.stage_events e
WHERE NOT EXISTS (SELECT 1 FROM pg_temp.stage_files s WHERE s.source_key = e.source_key);
DELETE FROM pg_temp.stage_rejects r
WHERE NOT EXISTS (SELECT 1 FROM pg_temp.stage_files s WHERE s.source_key = r.source_key);

-- name: create_load_types
-- What insert_events inserted, per type: the event catalog and the run report read it
-- here instead of looking events up by load_id (no index on load_id: see migration
-- 0007). Dropped when the load's transaction ends, committed or not.
CREATE TEMP TABLE IF NOT EXISTS load_types (
    event_name  VARCHAR(128) NOT NULL,
    events      BIGINT       NOT NULL,
    first_seen  TIMESTAMP    NOT NULL,
    last_seen   TIMESTAMP    NOT NULL
) ON COMMIT DROP;

-- name: probe_by_index
-- insert_events probes events once per staged id. A planner that believes events is
-- empty (a new table that autovacuum has analyzed) prices a sequential scan of it at
-- nothing, and would run that scan once per staged id over the rows the statement itself
-- inserts: quadratic. The probe must use the key's index whatever the statistics say,
-- so sequential scans are priced out for insert_events alone (the staging tables, which
-- have no index, are still read sequentially); probe_reset undoes it.
SET LOCAL enable_seqscan = off;

-- name: probe_reset
SET LOCAL enable_seqscan TO DEFAULT;

-- name: classify
-- Finds the load's copies that are not inserted, the exceptions (docs/cleaning-contract.md,
-- "Duplicates and conflicts"): load_copies lists each by (key, line) with its class,
-- `duplicate` or `conflict`; every other staged event is inserted. $1 is
-- load.dedupe_window_days, $2 the width in microseconds of the window's buckets (the
-- window, or 1 µs for a window of 0), $3 and $4 the load's earliest and latest staged
-- created_at.
-- * Copies of an id with the same payload_hash are one payload: its first copy by (key,
--   line) stands for it (a rep), the others are duplicates, counted only. Keys compare
--   as bytes (COLLATE "C"), the order S3 lists and the pipeline loads them in, whatever
--   the database's default collation.
-- * A rep is a duplicate when an earlier load stored the same payload: a row of events
--   at the same created_at with the same hash (or with none: rows loaded before
--   migration 0011 have no hash, and such a copy counted as a duplicate then), or a
--   conflicting duplicate's reject with the same hash.
-- * Otherwise a rep is a conflicting duplicate when an earlier copy of its id lies
--   within the window: a row of events or a conflicting duplicate's reject (earlier
--   loads), or an earlier rep of this load by (key, line). Else it is inserted.
-- The rule is the same within a load as across loads, so the rows per id do not depend
-- on how files are cut into loads and runs, as long as they load in key order.
-- Nearly every id is sent once: those (singles) are not sorted, only probed. The ids sent
-- more than once (repeated) are ranked, and their earlier reps within the window are
-- found without comparing reps pairwise (an id sent a million times would make that
-- quadratic): the time line is cut into buckets as wide as the window, so that reps in
-- one bucket are within the window of each other, and the neighbouring buckets are
-- searched for the earliest rep at or after created_at - window (below) and at or before
-- created_at + window (above), with running minimums over the reps and the query points
-- sorted together.
-- The probes of events and event_rejects are one lookup in an index per rep, as LATERAL
-- subqueries with LIMIT 1 (not EXISTS, which the planner turns into a hash anti-join
-- reading all of events once the load is large) whatever the statistics
-- (probe_by_index): whether events holds the id within the window reads the key's
-- index alone, and only a rep that it holds is looked up again for an identical row.
-- event_rejects is probed only when it holds a conflicting duplicate in the load's time
-- range widened by the window (one lookup first, a one-time filter after).
CREATE TEMP TABLE load_copies ON COMMIT DROP AS
WITH repeated AS (
    SELECT event_id FROM pg_temp.stage_events GROUP BY event_id HAVING COUNT(*) > 1
),
ranked AS (
    SELECT s.event_id, s.payload_hash, s.created_at, s.source_key, s.source_line,
           ROW_NUMBER() OVER (PARTITION BY s.event_id ORDER BY s.source_key COLLATE "C", s.source_line) AS rn
    FROM pg_temp.stage_events s
    WHERE s.event_id IN (SELECT event_id FROM repeated)
),
first_of_payload AS (
    SELECT event_id, payload_hash, created_at, source_key, source_line, rn,
           ROW_NUMBER() OVER (PARTITION BY event_id, payload_hash ORDER BY rn) AS nth
    FROM ranked
),
multi AS (
    SELECT event_id, rn, created_at,
           (extract(epoch FROM created_at - TIMESTAMP '0001-01-01') * 1000000)::bigint / $2 AS b
    FROM first_of_payload
    WHERE nth = 1
),
same_bucket AS (
    SELECT event_id, rn, MIN(rn) OVER (PARTITION BY event_id, b) AS first_rn
    FROM multi
),
below AS (
    SELECT event_id, q_rn AS rn, first_rn FROM (
        SELECT event_id, q_rn,
               MIN(d_rn) OVER (PARTITION BY event_id, b ORDER BY t DESC, is_query
                               ROWS UNBOUNDED PRECEDING) AS first_rn
        FROM (
            SELECT event_id, b, created_at AS t, rn AS d_rn, CAST(NULL AS BIGINT) AS q_rn, 0 AS is_query
            FROM multi
            UNION ALL
            SELECT event_id, b - 1, created_at - make_interval(days => $1), NULL, rn, 1
            FROM multi
        ) points
    ) scanned
    WHERE q_rn IS NOT NULL
),
above AS (
    SELECT event_id, q_rn AS rn, first_rn FROM (
        SELECT event_id, q_rn,
               MIN(d_rn) OVER (PARTITION BY event_id, b ORDER BY t, is_query
                               ROWS UNBOUNDED PRECEDING) AS first_rn
        FROM (
            SELECT event_id, b, created_at AS t, rn AS d_rn, CAST(NULL AS BIGINT) AS q_rn, 0 AS is_query
            FROM multi
            UNION ALL
            SELECT event_id, b + 1, created_at + make_interval(days => $1), NULL, rn, 1
            FROM multi
        ) points
    ) scanned
    WHERE q_rn IS NOT NULL
),
earlier AS (
    SELECT s.event_id, s.rn
    FROM same_bucket s
    JOIN below b ON b.event_id = s.event_id AND b.rn = s.rn
    JOIN above a ON a.event_id = s.event_id AND a.rn = s.rn
    WHERE s.first_rn < s.rn OR b.first_rn < s.rn OR a.first_rn < s.rn
),
reps AS (
    SELECT s.event_id, s.payload_hash, s.created_at, s.source_key, s.source_line, FALSE AS earlier
    FROM pg_temp.stage_events s
    WHERE s.event_id NOT IN (SELECT event_id FROM repeated)
    UNION ALL
    SELECT f.event_id, f.payload_hash, f.created_at, f.source_key, f.source_line, e.rn IS NOT NULL
    FROM first_of_payload f
    LEFT JOIN earlier e ON e.event_id = f.event_id AND e.rn = f.rn
    WHERE f.nth = 1
),
conflicts_near AS (
    SELECT EXISTS (
        SELECT 1 FROM {schema}.event_rejects x
        WHERE x.event_id IS NOT NULL
          AND x.created_at BETWEEN CAST($3 AS TIMESTAMP) - make_interval(days => $1)
                               AND CAST($4 AS TIMESTAMP) + make_interval(days => $1)
    ) AS any_conflict
),
classed AS (
    SELECT r.source_key, r.source_line,
           CASE WHEN identical.same OR rejected_same.hit THEN 'duplicate'
                WHEN r.earlier OR stored.hit OR rejected.hit THEN 'conflict'
           END AS class
    FROM reps r
    LEFT JOIN LATERAL (
        SELECT TRUE AS hit FROM {schema}.events x
        WHERE x.event_id = r.event_id
          AND x.created_at BETWEEN r.created_at - make_interval(days => $1)
                               AND r.created_at + make_interval(days => $1)
        LIMIT 1
    ) stored ON TRUE
    LEFT JOIN LATERAL (
        SELECT TRUE AS same FROM {schema}.events x
        WHERE stored.hit
          AND x.event_id = r.event_id AND x.created_at = r.created_at
          AND COALESCE(x.payload_hash, r.payload_hash) = r.payload_hash
        LIMIT 1
    ) identical ON TRUE
    LEFT JOIN LATERAL (
        SELECT TRUE AS hit FROM {schema}.event_rejects x
        WHERE (SELECT any_conflict FROM conflicts_near)
          AND x.event_id = r.event_id
          AND x.created_at BETWEEN r.created_at - make_interval(days => $1)
                               AND r.created_at + make_interval(days => $1)
        LIMIT 1
    ) rejected ON TRUE
    LEFT JOIN LATERAL (
        SELECT TRUE AS hit FROM {schema}.event_rejects x
        WHERE (SELECT any_conflict FROM conflicts_near)
          AND x.event_id = r.event_id AND x.created_at = r.created_at AND x.payload_hash = r.payload_hash
        LIMIT 1
    ) rejected_same ON TRUE
)
SELECT source_key, source_line, class FROM classed WHERE class IS NOT NULL
UNION ALL
SELECT source_key, source_line, 'duplicate' FROM first_of_payload WHERE nth > 1;

-- name: analyze_copies
-- The exceptions are few: the planner must know it, so that insert_events hashes them
-- and reads stage_events once.
ANALYZE pg_temp.load_copies;

-- name: insert_events
-- One statement inserts the events (every staged event classify did not list) and the
-- conflicting duplicates' rejects, and records the files. Rows already in events are never updated.
-- events_loaded counts, per file, the rows this statement inserted (read from its own
-- RETURNING, never from events by load_id), conflicts its conflicting duplicates; the
-- rest of the file's staged events were duplicates. A conflicting duplicate's reject
-- keeps its cleaned payload as JSON text (its first 4,096 characters; metadata over
-- 4,096 bytes is left out, as on Redshift, where serializing it could fail) where other
-- rejects keep the raw line, and its id, time and hash, which later loads compare with.
-- The same inserted rows, per type, go to load_types for the catalog. loaded_at is a
-- scalar subquery, computed once (an InitPlan): written as a bare expression, now() and
-- its time zone conversion ran once per inserted row.
WITH inserted AS (
    INSERT INTO {schema}.events
        (event_id, created_at, user_email, ip, event_name, metadata, payload_hash, source_key,
         source_line, load_id, loaded_at)
    SELECT s.event_id, s.created_at, s.user_email, s.ip, s.event_name, s.metadata, s.payload_hash,
           s.source_key, s.source_line, $1, (SELECT now() AT TIME ZONE 'UTC')
    FROM pg_temp.stage_events s
    WHERE NOT EXISTS (SELECT 1 FROM pg_temp.load_copies c
                      WHERE c.source_key = s.source_key AND c.source_line = s.source_line)
    RETURNING source_key, event_name, created_at
),
conflicting AS (
    INSERT INTO {schema}.event_rejects
        (load_id, source_key, source_line, reason, raw_line, rejected_at, event_id, created_at,
         payload_hash)
    SELECT $1, s.source_key, s.source_line, 'conflicting_duplicate',
           left(CAST(jsonb_build_object(
                'id', s.event_id, 'created_at', CAST(s.created_at AS VARCHAR),
                'user_email', s.user_email, 'ip', s.ip, 'event_name', s.event_name,
                'metadata', CASE WHEN s.metadata IS NULL OR octet_length(CAST(s.metadata AS TEXT)) <= 4096
                                 THEN s.metadata
                                 ELSE to_jsonb(CAST('(over 4096 bytes: see the source line)' AS TEXT)) END)
                AS TEXT), 4096),
           (SELECT now() AT TIME ZONE 'UTC'), s.event_id, s.created_at, s.payload_hash
    FROM pg_temp.load_copies c
    JOIN pg_temp.stage_events s ON s.source_key = c.source_key AND s.source_line = c.source_line
    WHERE c.class = 'conflict'
    RETURNING source_key
),
-- The inserted rows are read once, counted per (file, type); both tallies below add up
-- those few groups.
per_file_type AS (
    SELECT source_key, event_name, COUNT(*) AS n, MIN(created_at) AS first_seen,
           MAX(created_at) AS last_seen
    FROM inserted
    GROUP BY source_key, event_name
),
by_type AS (
    INSERT INTO load_types (event_name, events, first_seen, last_seen)
    SELECT event_name, SUM(n)::bigint, MIN(first_seen), MAX(last_seen) FROM per_file_type GROUP BY event_name
)
INSERT INTO {schema}.etl_files
    (source_key, etag, size_bytes, load_id, lines, events_loaded, duplicates, rejects, blank_lines,
     recovered_events, invalid_ips, loaded_at, conflicts)
SELECT f.source_key, f.etag, f.size_bytes, $1, f.lines,
       COALESCE(l.n, 0), f.events_staged - COALESCE(l.n, 0) - COALESCE(k.n, 0),
       f.rejects + COALESCE(k.n, 0), f.blank_lines, f.recovered_events, f.invalid_ips,
       now() AT TIME ZONE 'UTC', COALESCE(k.n, 0)
FROM pg_temp.stage_files f
LEFT JOIN (SELECT source_key, SUM(n)::bigint AS n FROM per_file_type GROUP BY source_key) l
    ON l.source_key = f.source_key
LEFT JOIN (SELECT source_key, COUNT(*) AS n FROM conflicting GROUP BY source_key) k
    ON k.source_key = f.source_key;

-- name: insert_rejects
INSERT INTO {schema}.event_rejects (load_id, source_key, source_line, reason, raw_line, rejected_at)
SELECT $1, source_key, source_line, reason, raw_line, now() AT TIME ZONE 'UTC'
FROM pg_temp.stage_rejects;

-- name: insert_load
-- The load's totals are the sums of its file rows: the control tables cannot disagree.
INSERT INTO {schema}.etl_loads
    (load_id, started_at, finished_at, status, files, lines, events_loaded, duplicates, rejects,
     blank_lines, recovered_events, invalid_ips, conflicts)
SELECT $1::varchar, $2::timestamp, now() AT TIME ZONE 'UTC', 'committed', COUNT(*), COALESCE(SUM(lines), 0),
       COALESCE(SUM(events_loaded), 0), COALESCE(SUM(duplicates), 0), COALESCE(SUM(rejects), 0),
       COALESCE(SUM(blank_lines), 0), COALESCE(SUM(recovered_events), 0), COALESCE(SUM(invalid_ips), 0),
       COALESCE(SUM(conflicts), 0)
FROM {schema}.etl_files
WHERE load_id = $1::varchar
HAVING COUNT(*) > 0;

-- name: catalog
-- The event catalog, in the load's transaction: what this load inserted, per type (rows
-- already in events were not inserted, so reloads and duplicates never count twice),
-- from load_types.
MERGE INTO {schema}.event_types_seen AS t
USING load_types AS s
ON t.event_name = s.event_name
WHEN MATCHED THEN
    UPDATE SET events = t.events + s.events,
               first_seen = LEAST(t.first_seen, s.first_seen),
               last_seen = GREATEST(t.last_seen, s.last_seen)
WHEN NOT MATCHED THEN
    INSERT (event_name, first_seen, last_seen, events)
    VALUES (s.event_name, s.first_seen, s.last_seen, s.events);

-- name: loaded_by_type
-- The load's events per type, for the run report and metrics.
SELECT event_name, events FROM load_types ORDER BY event_name;

-- name: load_summary
SELECT load_id, started_at, finished_at, status, files, lines, events_loaded, duplicates, rejects,
       blank_lines, recovered_events, invalid_ips, conflicts
FROM {schema}.etl_loads
WHERE load_id = $1;

-- name: recent_loads
SELECT load_id, started_at, finished_at, status, files, lines, events_loaded, duplicates, rejects,
       blank_lines, recovered_events, invalid_ips, conflicts
FROM {schema}.etl_loads
ORDER BY started_at DESC, load_id DESC
LIMIT $1;

-- name: unsettled_versions
-- Of the versions sent ($1 keys, $2 ETags, in pairs), the positions (from 0) of those
-- not settled, in order: neither loaded nor quarantined, or with a reload request still
-- open (recorded_versions' complement). Only the unsettled come back, nearly none on a
-- run with nothing new. Each pair is one lookup in the key of etl_files and of
-- etl_quarantine, as LATERAL subqueries with LIMIT 1, so the cost follows the versions
-- sent, not the ledger: as NOT EXISTS, the planner, which cannot tell how many pairs an
-- array holds, hashed all of etl_files for every call (125 ms a call at 200,000 files,
-- against 13 ms). The open reload requests are few: hashed once.
SELECT v.i - 1
FROM unnest(CAST($1 AS VARCHAR[]), CAST($2 AS VARCHAR[])) WITH ORDINALITY AS v(source_key, etag, i)
LEFT JOIN LATERAL (
    SELECT TRUE AS hit FROM {schema}.etl_files f
    WHERE f.source_key = v.source_key AND f.etag = v.etag
    LIMIT 1
) loaded ON TRUE
LEFT JOIN LATERAL (
    SELECT TRUE AS hit FROM {schema}.etl_quarantine q
    WHERE q.source_key = v.source_key AND q.etag = v.etag
    LIMIT 1
) held ON TRUE
WHERE (loaded.hit IS NULL AND held.hit IS NULL)
   OR EXISTS (SELECT 1 FROM {schema}.etl_reloads r
              WHERE r.source_key = v.source_key AND r.etag = v.etag AND r.load_id IS NULL)
ORDER BY v.i;

-- name: recorded_versions
-- Settled versions: loaded, or quarantined (a new version of a quarantined file loads),
-- unless a reload of the version was requested and is still open.
SELECT v.source_key, v.etag FROM (
    SELECT source_key, etag FROM {schema}.etl_files WHERE source_key = ANY($1)
    UNION
    SELECT source_key, etag FROM {schema}.etl_quarantine WHERE source_key = ANY($1)
) v
WHERE NOT EXISTS (SELECT 1 FROM {schema}.etl_reloads r
                  WHERE r.source_key = v.source_key AND r.etag = v.etag AND r.load_id IS NULL);

-- name: request_reload
-- `reload --key`: an open request for version ($1, $2), the one the source lists now,
-- if it is settled (loaded or quarantined) and no request for it is open.
INSERT INTO {schema}.etl_reloads (source_key, etag, requested_at, load_id)
SELECT v.source_key, v.etag, $3::timestamp, NULL
FROM (
    SELECT source_key, etag FROM {schema}.etl_files WHERE source_key = $1 AND etag = $2
    UNION
    SELECT source_key, etag FROM {schema}.etl_quarantine WHERE source_key = $1 AND etag = $2
) v
WHERE NOT EXISTS (SELECT 1 FROM {schema}.etl_reloads r
                  WHERE r.source_key = v.source_key AND r.etag = v.etag AND r.load_id IS NULL);

-- name: request_reload_range
-- `reload --from --to`: one statement for every settled version whose key is in
-- [$1, $2) (the date partitions' key range, compared bytewise as S3 orders keys).
-- Versions the source no longer lists are closed by the next run (close_reload_gone).
INSERT INTO {schema}.etl_reloads (source_key, etag, requested_at, load_id)
SELECT v.source_key, v.etag, $3::timestamp, NULL
FROM (
    SELECT source_key, etag FROM {schema}.etl_files
    WHERE source_key COLLATE "C" >= $1 AND source_key COLLATE "C" < $2
    UNION
    SELECT source_key, etag FROM {schema}.etl_quarantine
    WHERE source_key COLLATE "C" >= $1 AND source_key COLLATE "C" < $2
) v
WHERE NOT EXISTS (SELECT 1 FROM {schema}.etl_reloads r
                  WHERE r.source_key = v.source_key AND r.etag = v.etag AND r.load_id IS NULL);

-- name: open_reloads
-- `status` and each run: the reload requests not served yet, oldest first.
SELECT source_key, etag, requested_at FROM {schema}.etl_reloads
WHERE load_id IS NULL
ORDER BY requested_at, source_key
LIMIT $1;

-- name: close_reload_gone
-- A requested version the source no longer lists: nothing can read it again.
UPDATE {schema}.etl_reloads SET load_id = 'gone'
WHERE load_id IS NULL AND source_key = $1 AND etag = $2;

-- name: close_reload_quarantined
-- A reloaded version quarantined again: its request is closed, or every run would
-- read it again.
UPDATE {schema}.etl_reloads SET load_id = 'quarantined'
WHERE load_id IS NULL AND source_key = $1 AND etag = $2;

-- name: quarantine
-- One file version set aside, unless it is already loaded or quarantined. Run under the
-- loaders' lock, in a transaction of its own.
INSERT INTO {schema}.etl_quarantine (source_key, etag, size_bytes, reason, detail, quarantined_at)
SELECT $1::varchar, $2::varchar, $3::bigint, $4::varchar, $5::varchar, $6::timestamp
WHERE NOT EXISTS (SELECT 1 FROM {schema}.etl_quarantine q WHERE q.source_key = $1 AND q.etag = $2)
  AND NOT EXISTS (SELECT 1 FROM {schema}.etl_files f WHERE f.source_key = $1 AND f.etag = $2);

-- name: quarantined
-- Unresolved rows (the alarms), or every row when $2 is true; newest first.
SELECT source_key, etag, size_bytes, reason, detail, quarantined_at, resolved_at, resolved_by, resolution
FROM {schema}.etl_quarantine
WHERE $2 OR resolved_at IS NULL
ORDER BY quarantined_at DESC, source_key
LIMIT $1;

-- name: reopen_quarantine
-- A resolved version quarantined again (a reload that failed the same way): the alarm
-- stands again, with the new reason and detail.
UPDATE {schema}.etl_quarantine
SET reason = $3, detail = $4, quarantined_at = $5, resolved_at = NULL, resolved_by = NULL, resolution = NULL
WHERE source_key = $1 AND etag = $2 AND resolved_at IS NOT NULL;

-- name: resolve_quarantine
-- `quarantine resolve`: an operator clears every unresolved row of key $1.
UPDATE {schema}.etl_quarantine
SET resolved_at = $2, resolved_by = $3, resolution = $4
WHERE source_key = $1 AND resolved_at IS NULL;

-- name: resolve_loaded
-- A load of a key clears its alarms: a newer version loaded, or a reload of the
-- quarantined version did. $1 is the load id.
UPDATE {schema}.etl_quarantine q
SET resolved_at = now() AT TIME ZONE 'UTC', resolved_by = 'load ' || $1, resolution = 'loaded'
FROM pg_temp.stage_files s
WHERE q.resolved_at IS NULL AND q.source_key = s.source_key;

-- name: record_run
INSERT INTO {schema}.etl_runs
    (run_id, started_at, finished_at, status, error, loads, files, events_loaded, rejects)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: last_run
SELECT run_id, started_at, finished_at, status, error, loads, files, events_loaded, rejects
FROM {schema}.etl_runs
WHERE status = $1
ORDER BY started_at DESC, run_id DESC
LIMIT 1;

-- name: event_catalog
-- `status`: the event catalog.
SELECT event_name, first_seen, last_seen, events FROM {schema}.event_types_seen ORDER BY event_name;

-- name: known_pending
-- The versions an earlier run left pending in the key range [$1, $2).
SELECT source_key, etag, size_bytes, last_modified, listed_at FROM {schema}.etl_pending
WHERE source_key COLLATE "C" >= $1 AND source_key COLLATE "C" < $2
ORDER BY source_key COLLATE "C";

-- name: forget_pending
-- Before a run records what it left pending in [$1, $2).
DELETE FROM {schema}.etl_pending
WHERE source_key COLLATE "C" >= $1 AND source_key COLLATE "C" < $2;

-- name: remember_pending
INSERT INTO {schema}.etl_pending (source_key, etag, size_bytes, last_modified, listed_at)
SELECT * FROM UNNEST($1::varchar[], $2::varchar[], $3::bigint[], $4::timestamp[], $5::timestamp[]);
