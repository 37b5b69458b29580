-- Deduplication against events reads only the created_at window of each staged event
-- (load.dedupe_window_days), so that a load costs what its own size costs, not what
-- history costs. An id sent again with a created_at outside that window is not seen and
-- loads as a second row, on Redshift as here: the key is therefore (event_id,
-- created_at), and the dedupe's probe is one lookup in this key's index per staged id
-- (event_id equal, created_at in the window). Rebuilding the key's index reads the table
-- once.
ALTER TABLE {schema}.events DROP CONSTRAINT events_pkey;
ALTER TABLE {schema}.events ADD PRIMARY KEY (event_id, created_at);
-- Loads count their inserted rows from their own deduplicated source, never from events
-- by load_id: nothing reads this index any more, and every insert paid for it.
DROP INDEX {schema}.events_load_id_idx;
