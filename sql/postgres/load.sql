-- The statements of one load, PostgreSQL dialect, in the order the adapter runs them,
-- all inside one transaction. Each `-- name:` starts a statement. {schema} is the
-- validated warehouse.schema; $1 is the load id, $2 the run's start (UTC).

-- name: lock
-- Serialises loaders: a second loader waits here, then sees the first one's files as
-- recorded and skips them. Readers (discovery, status) are not blocked.
LOCK TABLE {schema}.etl_files IN SHARE ROW EXCLUSIVE MODE;

-- name: clear_stage
-- DELETE, not TRUNCATE: TRUNCATE commits on Redshift, and the staging tables must stay
-- part of the load's transaction in both dialects.
DELETE FROM {schema}.stage_events;
DELETE FROM {schema}.stage_rejects;
DELETE FROM {schema}.stage_files;

-- name: create_raw
-- COPY's landing table: one JSON document per staged line, as Redshift's
-- FORMAT JSON 'auto' would read it; the statements below map keys to columns.
CREATE TEMP TABLE IF NOT EXISTS stage_raw (doc JSONB NOT NULL) ON COMMIT DROP;

-- name: copy_raw
COPY stage_raw (doc) FROM STDIN (FORMAT binary);

-- name: raw_to_events
INSERT INTO {schema}.stage_events
    (event_id, created_at, user_email, ip, event_name, metadata, source_key, source_line)
SELECT doc->>'event_id', (doc->>'created_at')::timestamp, doc->>'user_email', doc->>'ip',
       doc->>'event_name', NULLIF(doc->'metadata', 'null'::jsonb), doc->>'source_key',
       (doc->>'source_line')::bigint
FROM stage_raw;

-- name: raw_to_rejects
INSERT INTO {schema}.stage_rejects (source_key, source_line, reason, raw_line)
SELECT doc->>'source_key', (doc->>'source_line')::bigint, doc->>'reason', doc->>'raw_line'
FROM stage_raw;

-- name: raw_to_files
INSERT INTO {schema}.stage_files
    (source_key, etag, size_bytes, lines, blank_lines, events_staged, rejects, recovered_events, invalid_ips)
SELECT doc->>'source_key', doc->>'etag', (doc->>'size_bytes')::bigint, (doc->>'lines')::bigint,
       (doc->>'blank_lines')::bigint, (doc->>'events_staged')::bigint, (doc->>'rejects')::bigint,
       (doc->>'recovered_events')::bigint, (doc->>'invalid_ips')::bigint
FROM stage_raw;

-- name: clear_raw
DELETE FROM stage_raw;

-- name: skip_recorded
-- File versions another loader recorded while this one was cleaning: drop them and
-- their rows, so nothing is loaded or recorded twice. A version with an open reload
-- request is read again, not skipped.
DELETE FROM {schema}.stage_files s
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
     recovered_events, invalid_ips, loaded_at, superseded_by, superseded_at)
SELECT f.source_key, f.etag, f.size_bytes, f.load_id, f.lines, f.events_loaded, f.duplicates, f.rejects,
       f.blank_lines, f.recovered_events, f.invalid_ips, f.loaded_at, $1, now() AT TIME ZONE 'UTC'
FROM {schema}.etl_files f
JOIN {schema}.stage_files s ON s.source_key = f.source_key AND s.etag = f.etag;

-- name: drop_reloaded
DELETE FROM {schema}.etl_files f
USING {schema}.stage_files s
WHERE f.source_key = s.source_key AND f.etag = s.etag;

-- name: close_reloads
-- The open reload requests this load serves are closed by it.
UPDATE {schema}.etl_reloads r SET load_id = $1
FROM {schema}.stage_files s
WHERE r.load_id IS NULL AND r.source_key = s.source_key AND r.etag = s.etag;

-- name: drop_orphans
DELETE FROM {schema}.stage_events e
WHERE NOT EXISTS (SELECT 1 FROM {schema}.stage_files s WHERE s.source_key = e.source_key);
DELETE FROM {schema}.stage_rejects r
WHERE NOT EXISTS (SELECT 1 FROM {schema}.stage_files s WHERE s.source_key = r.source_key);

-- name: merge_events
-- The source is deduplicated first: the earliest copy of an id by (key, line) wins
-- within the load, and MERGE needs at most one source row per target row. Rows already
-- in events are never updated. Keys compare as bytes (COLLATE "C"), the order S3 lists
-- and the pipeline loads them in, whatever the database's default collation.
MERGE INTO {schema}.events AS t
USING (
    SELECT event_id, created_at, user_email, ip, event_name, metadata, source_key, source_line
    FROM (
        SELECT s.*,
               ROW_NUMBER() OVER (PARTITION BY s.event_id ORDER BY s.source_key COLLATE "C", s.source_line) AS rn
        FROM {schema}.stage_events s
    ) ranked
    WHERE rn = 1
) AS s
ON t.event_id = s.event_id
WHEN NOT MATCHED THEN
    INSERT (event_id, created_at, user_email, ip, event_name, metadata, source_key, source_line,
            load_id, loaded_at)
    VALUES (s.event_id, s.created_at, s.user_email, s.ip, s.event_name, s.metadata, s.source_key,
            s.source_line, $1, now() AT TIME ZONE 'UTC');

-- name: insert_rejects
INSERT INTO {schema}.event_rejects (load_id, source_key, source_line, reason, raw_line, rejected_at)
SELECT $1, source_key, source_line, reason, raw_line, now() AT TIME ZONE 'UTC'
FROM {schema}.stage_rejects;

-- name: insert_files
-- events_loaded counts what this load inserted for the file; the rest of its staged
-- events were duplicates (within the load, or of rows already loaded).
INSERT INTO {schema}.etl_files
    (source_key, etag, size_bytes, load_id, lines, events_loaded, duplicates, rejects, blank_lines,
     recovered_events, invalid_ips, loaded_at)
SELECT f.source_key, f.etag, f.size_bytes, $1, f.lines,
       COALESCE(l.n, 0), f.events_staged - COALESCE(l.n, 0), f.rejects, f.blank_lines,
       f.recovered_events, f.invalid_ips, now() AT TIME ZONE 'UTC'
FROM {schema}.stage_files f
LEFT JOIN (
    SELECT source_key, COUNT(*) AS n FROM {schema}.events WHERE load_id = $1 GROUP BY source_key
) l ON l.source_key = f.source_key;

-- name: insert_load
-- The load's totals are the sums of its file rows: the control tables cannot disagree.
INSERT INTO {schema}.etl_loads
    (load_id, started_at, finished_at, status, files, lines, events_loaded, duplicates, rejects,
     blank_lines, recovered_events, invalid_ips)
SELECT $1::varchar, $2::timestamp, now() AT TIME ZONE 'UTC', 'committed', COUNT(*), COALESCE(SUM(lines), 0),
       COALESCE(SUM(events_loaded), 0), COALESCE(SUM(duplicates), 0), COALESCE(SUM(rejects), 0),
       COALESCE(SUM(blank_lines), 0), COALESCE(SUM(recovered_events), 0), COALESCE(SUM(invalid_ips), 0)
FROM {schema}.etl_files
WHERE load_id = $1::varchar
HAVING COUNT(*) > 0;

-- name: catalog
-- The event catalog, in the load's transaction: what this load inserted, per type (rows
-- already in events were not inserted, so reloads and duplicates never count twice).
MERGE INTO {schema}.event_types_seen AS t
USING (
    SELECT event_name, COUNT(*) AS events, MIN(created_at) AS first_seen, MAX(created_at) AS last_seen
    FROM {schema}.events
    WHERE load_id = $1
    GROUP BY event_name
) AS s
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
SELECT event_name, COUNT(*) FROM {schema}.events WHERE load_id = $1 GROUP BY event_name ORDER BY event_name;

-- name: load_summary
SELECT load_id, started_at, finished_at, status, files, lines, events_loaded, duplicates, rejects,
       blank_lines, recovered_events, invalid_ips
FROM {schema}.etl_loads
WHERE load_id = $1;

-- name: recent_loads
SELECT load_id, started_at, finished_at, status, files, lines, events_loaded, duplicates, rejects,
       blank_lines, recovered_events, invalid_ips
FROM {schema}.etl_loads
ORDER BY started_at DESC, load_id DESC
LIMIT $1;

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
-- `reload`: an open request for each settled version of key $1, unless one is open.
INSERT INTO {schema}.etl_reloads (source_key, etag, requested_at, load_id)
SELECT v.source_key, v.etag, $2::timestamp, NULL
FROM (
    SELECT source_key, etag FROM {schema}.etl_files WHERE source_key = $1
    UNION
    SELECT source_key, etag FROM {schema}.etl_quarantine WHERE source_key = $1
) v
WHERE NOT EXISTS (SELECT 1 FROM {schema}.etl_reloads r
                  WHERE r.source_key = v.source_key AND r.etag = v.etag AND r.load_id IS NULL);

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
SELECT source_key, etag, size_bytes, reason, detail, quarantined_at
FROM {schema}.etl_quarantine
ORDER BY quarantined_at DESC, source_key
LIMIT $1;

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
