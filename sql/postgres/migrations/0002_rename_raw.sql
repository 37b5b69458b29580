-- The rejected line's text is `raw_line` in both dialects: RAW is a Redshift reserved
-- word, and the tables must be the same in both (a test checks).
ALTER TABLE {schema}.event_rejects RENAME COLUMN raw TO raw_line;
ALTER TABLE {schema}.stage_rejects RENAME COLUMN raw TO raw_line;
