//! Warehouses: where staged loads are COPYed, MERGEd and recorded. One small trait;
//! adapters per engine (PostgreSQL, the Redshift Data API); one conformance
//! suite (`tests/it/warehouse_conformance.rs`) that every adapter passes.

pub mod postgres;
pub mod redshift;
pub mod statements;

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::NaiveDateTime;
use thiserror::Error;

use crate::migrate::MigrateError;
use crate::stage::StagedLoad;
use crate::store::StoreError;

/// A row of `etl_loads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRow {
    pub load_id: String,
    pub started_at: NaiveDateTime,
    pub finished_at: NaiveDateTime,
    pub status: String,
    pub files: i64,
    pub lines: i64,
    pub events_loaded: i64,
    pub duplicates: i64,
    pub rejects: i64,
    pub blank_lines: i64,
    pub recovered_events: i64,
    pub invalid_ips: i64,
}

/// A migration applied by [`Warehouse::migrate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub name: String,
}

/// A warehouse failure, naming the statement or object concerned and what to do.
#[derive(Debug, Error)]
pub enum WarehouseError {
    #[error("cannot connect to the warehouse at {target}: {message} (check warehouse.postgres.url and that the server is running)")]
    Connect { target: String, message: String },
    #[error("the warehouse at {target} runs PostgreSQL {found}; events-etl needs PostgreSQL {needed} or newer (its loads use MERGE): upgrade the server, or point warehouse.postgres.url at one that is")]
    UnsupportedVersion {
        target: String,
        found: String,
        needed: &'static str,
    },
    #[error("the warehouse schema `{schema}` is missing tables ({message}): run `events-etl migrate` first")]
    NotMigrated { schema: String, message: String },
    #[error("statement `{statement}` failed: {message}")]
    Statement { statement: String, message: String },
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("reading staged data: {0}")]
    Staging(#[from] StoreError),
    #[error("staged object {url} is unreadable: {message}")]
    StagedData { url: String, message: String },
    #[error("Data API {operation} failed: {message} (check AWS credentials, region, and warehouse.redshift settings)")]
    Api {
        operation: &'static str,
        message: String,
    },
    #[error("statement {statement} (Data API id {id}) still running after {secs} s; {}; nothing was committed, rerun or raise warehouse.redshift.statement_timeout_secs", if *cancelled { "it was cancelled" } else { "cancelling it failed, check the console" })]
    Timeout {
        statement: String,
        id: String,
        secs: u64,
        cancelled: bool,
    },
    #[error("statement {statement} (Data API id {id}): its outcome is unknown, the Data API could not describe it ({message}); it may have committed: rerun, which never loads or records a file twice")]
    OutcomeUnknown {
        statement: String,
        id: String,
        message: String,
    },
    #[error("COPY of {table} loaded {loaded} rows but staging wrote {staged}: the staged parts and manifest disagree; nothing was committed, rerun the load")]
    CountMismatch {
        table: &'static str,
        staged: u64,
        loaded: u64,
    },
}

/// What the pipeline needs from a warehouse.
#[async_trait]
pub trait Warehouse: Send + Sync {
    /// Creates or upgrades the tables; returns what it applied (empty when current).
    async fn migrate(&self) -> Result<Vec<AppliedMigration>, WarehouseError>;

    /// The (key, ETag) pairs among `keys` that `etl_files` already holds.
    async fn recorded_versions(&self, keys: &[String]) -> Result<HashSet<(String, String)>, WarehouseError>;

    /// In one transaction: COPY the staged load, MERGE new events, insert rejects, file
    /// rows and the load row. Files another loader recorded meanwhile are skipped. Returns
    /// the committed `etl_loads` row, or `None` when every file had been recorded.
    async fn load(
        &self,
        staged: &StagedLoad,
        started_at: NaiveDateTime,
    ) -> Result<Option<LoadRow>, WarehouseError>;

    /// The most recent loads, newest first.
    async fn recent_loads(&self, limit: i64) -> Result<Vec<LoadRow>, WarehouseError>;
}
