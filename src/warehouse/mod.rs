//! Warehouses: where staged loads are COPYed, inserted and recorded. One small trait;
//! adapters per engine (PostgreSQL, the Redshift Data API); one conformance
//! suite (`tests/it/warehouse_conformance.rs`) that every adapter passes.

mod copy_rows;
pub mod postgres;
pub mod redshift;
pub(crate) mod staged;
pub mod statements;
pub(crate) mod tls;
pub mod views;

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use chrono::NaiveDateTime;
use thiserror::Error;

use crate::failure::FailureClass;
use crate::migrate::MigrateError;
use crate::read::LineReader;
use crate::stage::rows::MAX_STAGED_ROW_BYTES;
use crate::stage::StagedLoad;
use crate::store::Place;
use crate::store::StoreError;

/// Loads deduplicate against `events` only within this many days of each staged
/// event's `created_at`, so that the scan of `events` (sorted by `created_at` on
/// Redshift) covers the load's own time range, not all of history. The app writes the
/// id and `created_at` together and re-sends both unchanged, so a true duplicate has
/// the same `created_at`; one day covers the widest honest disagreement, a client that
/// wrote the same instant as naive local time instead of UTC (offsets reach +14:00 and
/// -12:00), and keeps the scanned range at the load's span plus two days.
pub const DEFAULT_DEDUPE_WINDOW_DAYS: u64 = 1;

/// The width, in microseconds, of the buckets a load cuts the time line into to find
/// the earlier copies of an id within `window_days` without comparing copies pairwise:
/// the window itself, so that copies in one bucket lie within the window of each other,
/// or 1 µs for a window of 0 (a copy is then within the window of another only at the
/// same instant). `load.dedupe_window_days` is at most 3,650, far below overflow.
pub(crate) fn window_bucket_us(window_days: u32) -> i64 {
    (i64::from(window_days) * 86_400_000_000).max(1)
}

/// Declares an enum of the words a control-table column holds: `as_str` is the SQL
/// text, `parse` reads it back, and the enum compares equal to its text.
macro_rules! sql_words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// The text the control tables hold.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The value whose text is `s`.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
    };
}

sql_words! {
    /// How a load ended (`etl_loads.status`).
    LoadStatus {
        /// Committed, with its row read back.
        Committed = "committed",
        /// Committed, but its row could not be read back (Redshift); `status` shows it.
        SummaryUnavailable = "committed (summary unavailable)",
    }
}

sql_words! {
    /// How a run ended (`etl_runs.status`).
    RunStatus {
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

sql_words! {
    /// Why a file version was quarantined (`etl_quarantine.reason`).
    QuarantineReason {
        /// In an archive storage class (GLACIER, DEEP_ARCHIVE) and not restored: the
        /// store answered `InvalidObjectState`.
        Archived = "archived",
        /// The store refuses to read it (access denied, a KMS key, another permanent
        /// error).
        Unreadable = "unreadable",
        /// The warehouse refused one of its staged rows.
        Refused = "refused",
        /// Listed, then gone before it was read (expired or deleted): its events are
        /// lost unless someone has a copy.
        Vanished = "vanished",
    }
}

/// A row of `etl_loads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRow {
    pub load_id: String,
    pub started_at: NaiveDateTime,
    pub finished_at: NaiveDateTime,
    pub status: LoadStatus,
    pub files: i64,
    pub lines: i64,
    pub events_loaded: i64,
    pub duplicates: i64,
    pub rejects: i64,
    pub blank_lines: i64,
    pub recovered_events: i64,
    pub invalid_ips: i64,
    /// Conflicting duplicates: copies of an id whose payload differs from an earlier
    /// copy's within the deduplication window, stored as rejects (counted in `rejects`
    /// too).
    pub conflicts: i64,
    /// Events this load inserted, per event type (what it added to `event_types_seen`).
    /// Filled by [`Warehouse::load`]; rows read back by [`Warehouse::recent_loads`]
    /// leave it empty, since no table keeps it per load.
    pub events_by_type: BTreeMap<String, i64>,
}

/// A row of the event catalog `event_types_seen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRow {
    pub event_name: String,
    /// The earliest and latest `created_at` of the type's events.
    pub first_seen: NaiveDateTime,
    pub last_seen: NaiveDateTime,
    pub events: i64,
}

/// A file version set aside instead of loaded (`etl_quarantine`): its failure is
/// permanent for that object, so retrying it would stall every run; or a version lost
/// before it could be read (`vanished`). Each row is an alarm until it is resolved: by
/// a load of a newer version of the key, by a load of a reload of it, or by an operator
/// (`events-etl quarantine resolve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub source_key: String,
    pub etag: String,
    pub size_bytes: i64,
    pub reason: QuarantineReason,
    /// What happened, in the words of the store or the warehouse.
    pub detail: String,
    pub quarantined_at: NaiveDateTime,
    /// When the alarm was cleared; `None` while it stands.
    pub resolved_at: Option<NaiveDateTime>,
    /// Who or what cleared it: `load <load_id>` or the operator's name.
    pub resolved_by: Option<String>,
    /// Why: `loaded` for a load, the operator's note otherwise.
    pub resolution: Option<String>,
}

/// Longest `detail` kept (the column holds 4096 bytes).
pub const MAX_QUARANTINE_DETAIL: usize = 2000;

impl Quarantined {
    /// A quarantine row for one version, its detail cut to [`MAX_QUARANTINE_DETAIL`].
    pub fn new(
        source_key: &str,
        etag: &str,
        size: u64,
        reason: QuarantineReason,
        detail: &str,
        at: NaiveDateTime,
    ) -> Self {
        let mut end = detail.len().min(MAX_QUARANTINE_DETAIL);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        Quarantined {
            source_key: source_key.to_owned(),
            etag: etag.to_owned(),
            size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
            reason,
            detail: detail[..end].to_owned(),
            quarantined_at: at,
            resolved_at: None,
            resolved_by: None,
            resolution: None,
        }
    }

    /// Whether this row is a lost file (`vanished`) rather than one set aside.
    pub fn is_lost(&self) -> bool {
        self.reason == QuarantineReason::Vanished
    }
}

/// A reload request not served yet (`etl_reloads` with no `load_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReload {
    pub source_key: String,
    pub etag: String,
    pub requested_at: NaiveDateTime,
}

/// A version a run listed and left pending (`etl_pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPending {
    pub source_key: String,
    pub etag: String,
    pub size_bytes: i64,
    /// When that run listed it.
    pub listed_at: NaiveDateTime,
}

/// A row of `etl_runs`: one `events-etl run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub run_id: String,
    pub started_at: NaiveDateTime,
    pub finished_at: NaiveDateTime,
    pub status: RunStatus,
    /// What failed, for a failed run.
    pub error: Option<String>,
    pub loads: i64,
    pub files: i64,
    pub events_loaded: i64,
    pub rejects: i64,
}

/// Longest `etl_runs.error` kept (the column holds 4096 bytes).
pub const MAX_RUN_ERROR: usize = 3000;

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
    #[error("statement `{statement}` failed: {message} ({})", class.advice())]
    Statement {
        statement: String,
        message: String,
        /// Decided from the server's code (PostgreSQL's SQLSTATE, Redshift's error
        /// number): [`FailureClass::Transient`] or [`FailureClass::Systemic`].
        class: FailureClass,
    },
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
    /// Past its timeout, cancelled, and seen ABORTED afterwards: rolled back.
    #[error("statement {statement} (Data API id {id}) still running after {secs} s; it was cancelled and rolled back (ABORTED): nothing was committed; rerun, or raise warehouse.redshift.statement_timeout_secs")]
    Timeout {
        statement: String,
        id: String,
        secs: u64,
        /// Always true: a statement not seen ABORTED after the cancel is
        /// [`WarehouseError::OutcomeUnknown`].
        cancelled: bool,
    },
    #[error("statement {statement} (Data API id {id}): its outcome is unknown, the Data API could not describe it ({message}); it may have committed: rerun, which never loads or records a file twice")]
    OutcomeUnknown {
        statement: String,
        id: String,
        message: String,
    },
    /// The warehouse refused staged rows, and named the source file of each.
    #[error("statement `{statement}` refused staged rows of {}", describe_refused(files))]
    Refused {
        statement: String,
        /// Never empty; one entry per source file.
        files: Vec<RefusedFile>,
    },
    /// A statement the server cancelled: a statement timeout or a cancel request
    /// (PostgreSQL SQLSTATE 57014). A load that hits it is narrowed to fewer files.
    #[error("statement `{statement}` was cancelled (a statement timeout or a cancel request): {message} ({})", FailureClass::Transient.advice())]
    Cancelled { statement: String, message: String },
    /// The load failed on its staged data and the warehouse named no row (a Redshift
    /// COPY error without a SYS_LOAD_ERROR_DETAIL row, a COPY that loaded another number
    /// of rows than were staged). The pipeline narrows the load to find the file.
    #[error("statement `{statement}` failed on the load's staged data without naming a row: {message}")]
    Unattributed { statement: String, message: String },
    #[error("COPY of {table} loaded {loaded} rows but staging wrote {staged}: the staged parts and manifest disagree; nothing was committed, rerun the load")]
    CountMismatch {
        table: &'static str,
        staged: u64,
        loaded: u64,
    },
}

/// A source file one of whose staged rows the warehouse refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedFile {
    pub source_key: String,
    pub message: String,
}

fn describe_refused(files: &[RefusedFile]) -> String {
    match files {
        [] => "no file".to_owned(),
        [one] => format!("{}: {}", one.source_key, one.message),
        [first, rest @ ..] => format!(
            "{} file(s), first {}: {}",
            rest.len() + 1,
            first.source_key,
            first.message
        ),
    }
}

/// What a committed (or empty) load did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loaded {
    /// The committed `etl_loads` row; `None` when every file had been recorded (or
    /// refused).
    pub row: Option<LoadRow>,
    /// Files the warehouse refused a row of, quarantined in the load's own transaction
    /// (PostgreSQL copies the rest again without them); empty on Redshift, which
    /// reports them as [`WarehouseError::Refused`].
    pub refused: Vec<Quarantined>,
}

/// Reads a control-table word back, or says which column held what.
pub(crate) fn word<T>(parse: fn(&str) -> Option<T>, column: &str, text: &str) -> Result<T, WarehouseError> {
    parse(text).ok_or_else(|| {
        WarehouseError::systemic(
            column,
            format!("`{text}` is not a value events-etl writes there; the control tables were changed by hand or by a newer version"),
        )
    })
}

impl WarehouseError {
    /// A failure of the warehouse or of what it was asked, not of the data: the run stops
    /// and nothing is set aside.
    pub fn systemic(statement: impl Into<String>, message: impl Into<String>) -> WarehouseError {
        WarehouseError::Statement {
            statement: statement.into(),
            message: message.into(),
            class: FailureClass::Systemic,
        }
    }

    /// Whether the failure may be the size or the data of the load's files without
    /// naming one: a timeout, a cancel, a COPY error without a row, a row-count mismatch.
    /// The pipeline then loads fewer files at a time, so that the rest of a chunk loads
    /// and a file that fails alone is found.
    pub fn narrowable(&self) -> bool {
        matches!(
            self,
            WarehouseError::Timeout { .. }
                | WarehouseError::Cancelled { .. }
                | WarehouseError::Unattributed { .. }
                | WarehouseError::CountMismatch { .. }
        )
    }

    /// How the pipeline handles this failure. [`WarehouseError::Refused`] is the only
    /// failure of one object; the rest stop the run with nothing set aside.
    pub fn class(&self) -> FailureClass {
        match self {
            WarehouseError::Refused { .. } => FailureClass::Object,
            WarehouseError::Statement { class, .. } => *class,
            WarehouseError::Connect { .. }
            | WarehouseError::Timeout { .. }
            | WarehouseError::OutcomeUnknown { .. }
            | WarehouseError::Cancelled { .. }
            | WarehouseError::Unattributed { .. }
            | WarehouseError::CountMismatch { .. } => FailureClass::Transient,
            WarehouseError::Staging(e) => e.class(),
            WarehouseError::Api { .. }
            | WarehouseError::UnsupportedVersion { .. }
            | WarehouseError::NotMigrated { .. }
            | WarehouseError::Migrate(_)
            | WarehouseError::StagedData { .. } => FailureClass::Systemic,
        }
    }
}

/// Told when a load's COPYs have read its staged objects. The pipeline then deletes them
/// while the load merges and commits, instead of after the commit: one store round trip
/// (a DeleteObjects) less in every load's sequence, and the cleaned rows (emails, IPs)
/// stay in staging no longer than they are needed. Dropped without [`StagedRead::done`]
/// (a COPY failed, or the adapter cannot tell), the objects stay until the load ends.
pub struct StagedRead {
    tx: Option<tokio::sync::oneshot::Sender<()>>,
    told: bool,
}

impl StagedRead {
    /// A `StagedRead` and what it tells: `Ok(())` once done, an error if dropped first.
    pub fn channel() -> (StagedRead, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            StagedRead {
                tx: Some(tx),
                told: false,
            },
            rx,
        )
    }

    /// Tells no one.
    pub fn ignored() -> StagedRead {
        StagedRead {
            tx: None,
            told: false,
        }
    }

    /// Whether someone was told the staged objects may go: a failed load can then not
    /// run its COPYs again.
    pub fn released(&self) -> bool {
        self.told
    }

    /// Every COPY of the load has finished reading; later calls do nothing.
    pub fn done(&mut self) {
        if let Some(tx) = self.tx.take() {
            // The receiver gone means no one waits to delete: nothing to do.
            self.told = tx.send(()).is_ok();
        }
    }
}

/// What the pipeline needs from a warehouse.
#[async_trait]
pub trait Warehouse: Send + Sync {
    /// Creates or upgrades the tables; returns what it applied (empty when current).
    async fn migrate(&self) -> Result<Vec<AppliedMigration>, WarehouseError>;

    /// The (key, ETag) pairs among `keys` that are settled: loaded (`etl_files`) or
    /// quarantined (`etl_quarantine`).
    async fn recorded_versions(&self, keys: &[String]) -> Result<HashSet<(String, String)>, WarehouseError>;

    /// The positions in `versions` of the (key, ETag) pairs that are not settled, in
    /// order: what discovery keeps. The default reads the settled versions of the keys
    /// ([`Warehouse::recorded_versions`]); an adapter that can send the versions and get
    /// back only the unsettled ones (nearly none on a run with nothing new) does so.
    async fn unsettled_versions(&self, versions: &[(&str, &str)]) -> Result<Vec<usize>, WarehouseError> {
        let keys: Vec<String> = versions.iter().map(|(k, _)| (*k).to_owned()).collect();
        let settled = self.recorded_versions(&keys).await?;
        let settled: HashSet<(&str, &str)> = settled.iter().map(|(k, e)| (k.as_str(), e.as_str())).collect();
        Ok(versions
            .iter()
            .enumerate()
            .filter(|(_, v)| !settled.contains(*v))
            .map(|(i, _)| i)
            .collect())
    }

    /// In one transaction: COPY the staged load, insert its new events (deduplicated by
    /// id), insert rejects, file
    /// rows and the load row. Files another loader recorded meanwhile are skipped. Returns
    /// the committed `etl_loads` row, or `None` when every file had been recorded.
    ///
    /// Calls [`StagedRead::done`] on `read` once every COPY of the load has finished, so
    /// the staged objects are no longer needed while the load merges and commits; not
    /// when a COPY fails (its objects are then what an operator inspects).
    async fn load_reporting(
        &self,
        staged: &StagedLoad,
        started_at: NaiveDateTime,
        read: StagedRead,
    ) -> Result<Loaded, WarehouseError>;

    /// [`Warehouse::load_reporting`], for callers that do not delete staged objects.
    async fn load(
        &self,
        staged: &StagedLoad,
        started_at: NaiveDateTime,
    ) -> Result<Option<LoadRow>, WarehouseError> {
        self.load_reporting(staged, started_at, StagedRead::ignored())
            .await
            .map(|l| l.row)
    }

    /// The most recent loads, newest first.
    async fn recent_loads(&self, limit: i64) -> Result<Vec<LoadRow>, WarehouseError>;

    /// Records these file versions as quarantined, in a transaction of its own; a
    /// version already recorded (loaded or quarantined) is left as it is.
    async fn quarantine(&self, files: &[Quarantined]) -> Result<(), WarehouseError>;

    /// The quarantined and lost file versions whose alarm stands (with
    /// `include_resolved`, every row), newest first.
    async fn quarantined(
        &self,
        limit: i64,
        include_resolved: bool,
    ) -> Result<Vec<Quarantined>, WarehouseError>;

    /// `quarantine resolve`: clears every standing alarm of `key`, recording who and
    /// why; returns how many rows it resolved. Under the loaders' lock.
    async fn resolve_quarantine(
        &self,
        key: &str,
        by: &str,
        note: &str,
        at: NaiveDateTime,
    ) -> Result<u64, WarehouseError>;

    /// The migrations recorded in `schema_migrations` (for `check`).
    async fn applied_migrations(&self) -> Result<Vec<crate::migrate::AppliedRow>, WarehouseError>;

    /// `check`: that the warehouse can COPY the staged probe whose manifest is at
    /// `manifest_key` in staging (Redshift: through `iam_role`, into a temporary table).
    /// PostgreSQL reads staged objects itself, so there is nothing more to probe.
    async fn probe_copy(&self, manifest_key: &str) -> Result<(), WarehouseError> {
        let _ = manifest_key;
        Ok(())
    }

    /// `reload --key`: opens a request to read version (`key`, `etag`) again, the one
    /// the source lists now; returns 1, or 0 when that version is not settled (loaded or
    /// quarantined) or a request for it is open. Under the loaders' lock.
    async fn request_reload(&self, key: &str, etag: &str, at: NaiveDateTime) -> Result<u64, WarehouseError>;

    /// `reload --from --to`: one set-based request for every settled version whose key
    /// is in `[low, high)` (compared bytewise); returns how many it opened. Under the
    /// loaders' lock.
    async fn request_reload_range(
        &self,
        low: &str,
        high: &str,
        at: NaiveDateTime,
    ) -> Result<u64, WarehouseError>;

    /// The reload requests not served yet, oldest first.
    async fn open_reloads(&self, limit: i64) -> Result<Vec<OpenReload>, WarehouseError>;

    /// Closes the open requests for these versions, which the source no longer lists.
    async fn close_reloads_gone(&self, versions: &[(String, String)]) -> Result<(), WarehouseError>;

    /// The versions an earlier run listed and left pending, in the key range
    /// `[low, high)` (compared bytewise).
    async fn known_pending(&self, low: &str, high: &str) -> Result<Vec<KnownPending>, WarehouseError>;

    /// Replaces the remembered pending versions of `[low, high)` by `files` (the ones
    /// this run listed there and did not settle).
    async fn remember_pending(
        &self,
        low: &str,
        high: &str,
        files: &[crate::store::ObjectMeta],
        at: NaiveDateTime,
    ) -> Result<(), WarehouseError>;

    /// Records one run in `etl_runs`, in a transaction of its own.
    async fn record_run(&self, run: &RunRow) -> Result<(), WarehouseError>;

    /// The latest run with this status, if any.
    async fn last_run(&self, status: RunStatus) -> Result<Option<RunRow>, WarehouseError>;

    /// `migrate`, after the migrations: brings the typed views `<schema>.events_<type>`
    /// in line with `[event_types]` (see [`views`]), each change in a transaction of its
    /// own. Returns the changes made.
    async fn sync_views(
        &self,
        types: &crate::event_types::EventTypes,
    ) -> Result<Vec<views::ViewChange>, WarehouseError>;

    /// The event catalog, by name.
    async fn event_catalog(&self) -> Result<Vec<CatalogRow>, WarehouseError>;
}

/// The `source_key` of each row numbered in `rows` (1-based, counting only rows whose
/// source file is not in `skipped`) of the staged parts `part_urls`, read in order once:
/// which source file each row the warehouse refused came from. Every staged row (event,
/// reject, file) carries its `source_key`. Rows that cannot be read are left out.
pub async fn staged_row_sources(
    staging: &Place,
    part_urls: &[&str],
    rows: &std::collections::BTreeSet<u64>,
    skipped: &HashSet<String>,
) -> BTreeMap<u64, String> {
    let mut found = BTreeMap::new();
    let Some(&last) = rows.iter().next_back() else {
        return found;
    };
    let mut seen = 0u64;
    for url in part_urls {
        let Some(key) = staging.store.key_of(url) else {
            return found;
        };
        let Ok(part) = staging.store.get(&key).await else {
            return found;
        };
        let Ok(mut lines) = LineReader::with_limit(part, &key, MAX_STAGED_ROW_BYTES).await else {
            return found;
        };
        while let Ok(Some(line)) = lines.next_line().await {
            let source = copy_rows::source_key(line.bytes);
            if source.as_ref().is_some_and(|k| skipped.contains(k)) {
                continue;
            }
            seen += 1;
            if rows.contains(&seen) {
                if let Some(k) = source {
                    found.insert(seen, k);
                }
            }
            if seen >= last {
                return found;
            }
        }
    }
    found
}
