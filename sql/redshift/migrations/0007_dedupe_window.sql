-- Deduplication against events reads only the created_at window of each staged event
-- (load.dedupe_window_days), so that zone maps on the sort key prune the scan of events
-- to the load's own time range. An id sent again with a created_at outside that window
-- is not seen and loads as a second row: the informational key becomes (event_id,
-- created_at), which stays true. Redshift does not enforce it, but its planner trusts
-- it, so it must not claim more than the loads guarantee (t_Defining_constraints.html).
-- AWS (https://docs.aws.amazon.com/redshift/latest/dg/): r_ALTER_TABLE.html (DROP
-- CONSTRAINT, ADD table_constraint), r_SHOW_CONSTRAINTS.html (a primary key created
-- with the table is named <table>_pkey).
ALTER TABLE {schema}.events DROP CONSTRAINT events_pkey;
ALTER TABLE {schema}.events ADD PRIMARY KEY (event_id, created_at);
