-- One row per `events-etl run`, succeeded or failed. A failure is recorded outside the
-- failed load's transaction (which rolled back), so a scheduled loader that keeps
-- failing leaves a trace that `status` shows.
CREATE TABLE {schema}.etl_runs (
    run_id         VARCHAR(64)   NOT NULL,
    started_at     TIMESTAMP     NOT NULL,
    finished_at    TIMESTAMP     NOT NULL,
    status         VARCHAR(16)   NOT NULL,
    error          VARCHAR(4096),
    loads          BIGINT        NOT NULL,
    files          BIGINT        NOT NULL,
    events_loaded  BIGINT        NOT NULL,
    rejects        BIGINT        NOT NULL
);
