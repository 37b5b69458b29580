//! Amazon Redshift through the Data API (`aws-sdk-redshiftdata`). A load is ONE
//! `BatchExecuteStatement` (one transaction) of the statements in
//! `sql/redshift/load.sql`; COPY reads the staged manifests from S3 itself. Statements
//! are polled with backoff until they finish, fail or time out (then cancelled, so the
//! transaction rolls back and nothing is half-recorded).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_redshiftdata::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::{ExecutionMode, Field, StatementStatusString, StatusString};
use aws_sdk_redshiftdata::Client;
use chrono::{NaiveDateTime, Utc};
use tokio::time::Instant;

use super::statements::{render, split_statements, with_schema, Statements};
use super::views::{self, TrackedView, ViewChange};
use super::{
    AppliedMigration, CatalogRow, KnownPending, LoadRow, LoadStatus, Loaded, OpenReload, QuarantineReason,
    Quarantined, RunRow, RunStatus, StagedRead, Warehouse, WarehouseError,
};
use crate::event_types::EventTypes;
use crate::failure::FailureClass;
use crate::migrate::{self, AppliedRow, Dialect};
use crate::stage::StagedLoad;
use crate::store::{ObjectMeta, Place};

const LOAD_SQL: &str = include_str!("../../sql/redshift/load.sql");
const BOOTSTRAP_SQL: &str = include_str!("../../sql/redshift/bootstrap.sql");
const VIEWS_SQL: &str = include_str!("../../sql/redshift/views.sql");

/// The Data API's limits on one batch.
pub const MAX_BATCH_STATEMENTS: usize = 40;
/// The Data API's limit on one statement's text.
pub const MAX_STATEMENT_BYTES: usize = 100 * 1024;

/// The load's opening statements, before the COPYs.
const LOAD_BEGIN: [&str; 4] = [
    "lock",
    "clear_stage_events",
    "clear_stage_rejects",
    "clear_stage_files",
];

/// The load's statements after the COPYs, in order; `load_summary` comes last, so the
/// committed row is read from the batch itself and nothing runs after the commit.
const LOAD_AFTER_COPY: [&str; 27] = [
    "skip_recorded",
    "drop_orphan_events",
    "drop_orphan_rejects",
    "archive_reloaded",
    "drop_reloaded",
    "close_reloads",
    "load_reps",
    "load_earlier",
    "load_near",
    "load_stored",
    "load_identical",
    "load_classes",
    "insert_events",
    "insert_conflicts",
    "insert_rejects",
    "insert_files",
    "insert_load",
    "resolve_loaded",
    "catalog_source",
    "merge_catalog",
    "loaded_by_type",
    "drop_catalog_source",
    "end_clear_events",
    "end_clear_rejects",
    "end_clear_files",
    "drop_load_tables",
    "load_summary",
];

/// `load.dedupe_window_days` when the adapter is not told otherwise.
const DEFAULT_WINDOW_DAYS: u32 = super::DEFAULT_DEDUPE_WINDOW_DAYS as u32;

/// Rows per `recorded_versions` page: well under the Data API's result size cap.
const RECORDED_PAGE_ROWS: usize = 50_000;

/// Runs of one batch when it keeps failing on a serializable isolation conflict.
const ISOLATION_ATTEMPTS: u32 = 3;

/// The first DescribeStatement poll's delay; later ones back off by 1.5x.
const FIRST_POLL: Duration = Duration::from_millis(50);

/// How long to keep describing a cancelled statement until it reports how it ended.
const SETTLE_AFTER_CANCEL: Duration = Duration::from_secs(60);

/// The time literal form both dialects read as a TIMESTAMP.
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// A SQL string literal holding `s` exactly, as Redshift reads literals: a backslash is
/// an escape there, so backslashes are doubled as well as quotes (what QUOTE_LITERAL
/// does, AWS: r_QUOTE_LITERAL.html). Any UTF-8 text, keys and error messages included.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn api_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &'static str,
    e: &SdkError<E>,
) -> WarehouseError {
    let message = match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(e).to_string(),
    };
    WarehouseError::Api { operation, message }
}

/// One statement of a batch, with the name the errors use.
#[derive(Clone)]
struct Labeled {
    label: String,
    sql: String,
}

/// How the Data API reaches the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedshiftTarget {
    /// Provisioned cluster, temporary credentials for `db_user`.
    ClusterDbUser {
        cluster_identifier: String,
        db_user: String,
    },
    /// Provisioned cluster, credentials from Secrets Manager.
    ClusterSecret {
        cluster_identifier: String,
        secret_arn: String,
    },
    /// Serverless workgroup, with the caller's IAM identity or a secret.
    Workgroup {
        workgroup_name: String,
        secret_arn: Option<String>,
    },
}

/// The validated `warehouse.redshift` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedshiftConfig {
    pub target: RedshiftTarget,
    pub database: String,
    /// ARN of the role COPY assumes to read staging, or `default`.
    pub iam_role: String,
    /// `REGION` for COPY when the staging bucket is in another region.
    pub copy_region: Option<String>,
    /// How long to wait for a statement before cancelling it.
    pub statement_timeout: std::time::Duration,
    /// DescribeStatement polls start at 50 ms and back off to this.
    pub max_poll_interval: std::time::Duration,
}

/// The Data API adapter.
pub struct Redshift {
    client: Client,
    cfg: RedshiftConfig,
    schema: String,
    sql: Statements,
    staging: Place,
    /// `load.dedupe_window_days`.
    dedupe_window_days: u32,
    /// `cleaning.naive_timezone`, for the typed views' timestamp columns.
    naive_timezone: chrono_tz::Tz,
    /// Rows per page of the paged reads ([`RECORDED_PAGE_ROWS`]).
    page_rows: usize,
}

/// Sets the connection fields every Data API call that runs SQL needs.
macro_rules! target {
    ($builder:expr, $cfg:expr) => {{
        let b = $builder.database(&$cfg.database);
        match &$cfg.target {
            RedshiftTarget::ClusterDbUser {
                cluster_identifier,
                db_user,
            } => b.cluster_identifier(cluster_identifier).db_user(db_user),
            RedshiftTarget::ClusterSecret {
                cluster_identifier,
                secret_arn,
            } => b.cluster_identifier(cluster_identifier).secret_arn(secret_arn),
            RedshiftTarget::Workgroup {
                workgroup_name,
                secret_arn,
            } => b
                .workgroup_name(workgroup_name)
                .set_secret_arn(secret_arn.clone()),
        }
    }};
}

impl Redshift {
    /// A client from the standard AWS chain (`AWS_ENDPOINT_URL_REDSHIFT_DATA` honoured).
    pub async fn connect(cfg: &RedshiftConfig, schema: &str, staging: Place) -> Redshift {
        let shared = crate::aws::sdk_config().await;
        Self::with_client(Client::new(&shared), cfg, schema, staging)
    }

    /// Uses `client`'s endpoint and credentials, with the tool's retry policy.
    pub fn with_client(client: Client, cfg: &RedshiftConfig, schema: &str, staging: Place) -> Redshift {
        let conf = client
            .config()
            .to_builder()
            .retry_config(crate::aws::retry_config())
            .build();
        Redshift {
            client: Client::from_conf(conf),
            cfg: cfg.clone(),
            schema: schema.to_owned(),
            sql: Statements::parse(LOAD_SQL, schema),
            staging,
            dedupe_window_days: DEFAULT_WINDOW_DAYS,
            naive_timezone: chrono_tz::Tz::UTC,
            page_rows: RECORDED_PAGE_ROWS,
        }
    }

    /// Deduplicates against `events` within this many days of each staged event's
    /// `created_at` (`load.dedupe_window_days`; the default otherwise).
    pub fn with_dedupe_window_days(mut self, days: u32) -> Redshift {
        self.dedupe_window_days = days;
        self
    }

    /// Typed views read a timestamp without a zone in `zone` (`cleaning.naive_timezone`;
    /// UTC otherwise), as the cleaner reads `created_at`.
    pub fn with_naive_timezone(mut self, zone: chrono_tz::Tz) -> Redshift {
        self.naive_timezone = zone;
        self
    }

    /// Test hook (`test-hooks` feature): the SDK's retry backoff starting at `initial`
    /// instead of the standard second, so tests drive the SDK past its retries quickly.
    #[cfg(feature = "test-hooks")]
    pub fn with_initial_backoff(mut self, initial: Duration) -> Redshift {
        let conf = self
            .client
            .config()
            .to_builder()
            .retry_config(crate::aws::retry_config().with_initial_backoff(initial))
            .build();
        self.client = Client::from_conf(conf);
        self
    }

    /// Test hook (`test-hooks` feature): pages of `rows` rows in the paged reads, so
    /// tests reach the keyset pages without 50,000 rows.
    #[cfg(feature = "test-hooks")]
    pub fn with_page_rows(mut self, rows: usize) -> Redshift {
        self.page_rows = rows.max(1);
        self
    }

    /// The load SQL as shipped in `sql/redshift/load.sql`.
    pub fn load_sql() -> &'static str {
        LOAD_SQL
    }

    /// Test hook (`test-hooks` feature): this adapter with `load_sql` in place of
    /// `sql/redshift/load.sql`, so mutation tests show that the suite catches SQL that
    /// would break a real Redshift.
    #[cfg(feature = "test-hooks")]
    pub fn with_load_sql(mut self, load_sql: &str) -> Redshift {
        self.sql = Statements::parse(load_sql, &self.schema);
        self
    }

    /// Runs one statement and waits for it.
    async fn execute(&self, label: &str, sql: &str) -> Result<DescribeStatementOutput, WarehouseError> {
        let out = target!(self.client.execute_statement().sql(sql), self.cfg)
            .send()
            .await
            .map_err(|e| api_err("ExecuteStatement", &e))?;
        self.wait(out.id().unwrap_or_default(), &[label.to_owned()], None)
            .await
    }

    /// Runs statements as one transaction and waits for it.
    async fn batch(&self, stmts: Vec<Labeled>) -> Result<DescribeStatementOutput, WarehouseError> {
        self.batch_reporting(stmts, None).await
    }

    /// [`Redshift::batch`], telling `read` once its first `n` statements have FINISHED
    /// (`Some((n, read))`).
    async fn batch_reporting(
        &self,
        stmts: Vec<Labeled>,
        read: Option<(usize, &mut StagedRead)>,
    ) -> Result<DescribeStatementOutput, WarehouseError> {
        if stmts.len() > MAX_BATCH_STATEMENTS {
            return Err(WarehouseError::systemic(
                "batch",
                format!(
                    "{} statements exceed the Data API's {MAX_BATCH_STATEMENTS}",
                    stmts.len()
                ),
            ));
        }
        if let Some(big) = stmts.iter().find(|s| s.sql.len() > MAX_STATEMENT_BYTES) {
            return Err(WarehouseError::systemic(
                big.label.clone(),
                format!(
                    "{} bytes exceed the Data API's {MAX_STATEMENT_BYTES}",
                    big.sql.len()
                ),
            ));
        }
        let labels: Vec<String> = stmts.iter().map(|s| s.label.clone()).collect();
        let sqls: Vec<String> = stmts.into_iter().map(|s| s.sql).collect();
        let mut read = read;
        let mut attempt = 1;
        loop {
            // TRANSACTION is the documented default; said explicitly, since the whole
            // design (one load, one transaction) rests on it.
            let out = target!(
                self.client
                    .batch_execute_statement()
                    .set_sqls(Some(sqls.clone()))
                    .execution_mode(ExecutionMode::Transaction),
                self.cfg
            )
            .send()
            .await
            .map_err(|e| api_err("BatchExecuteStatement", &e))?;
            let id = out.id().unwrap_or_default().to_owned();
            let result = self
                .wait(&id, &labels, read.as_mut().map(|(n, r)| (*n, &mut **r)))
                .await;
            // A serializable isolation conflict rolled the batch back: running it again
            // resolves it, a bounded number of times. Not once its staged objects were
            // released for deletion: the next run stages again.
            let released = read.as_ref().is_some_and(|(_, r)| r.released());
            match result {
                Err(e) if is_isolation_conflict(&e) && attempt < ISOLATION_ATTEMPTS && !released => {
                    tracing::warn!(statement = %labels.join(", "), id, attempt, error = %e, "serializable isolation conflict; running the batch again");
                    attempt += 1;
                    tokio::time::sleep(FIRST_POLL * 4 * attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Polls DescribeStatement with backoff until the statement ends. A DescribeStatement
    /// call that fails (after the SDK's own retries) is retried until the deadline: the
    /// statement may still be running and must not be abandoned uncancelled. Past the
    /// deadline the statement is cancelled and described once more, so that a batch that
    /// finished meanwhile is reported as the success it is.
    ///
    /// With `Some((n, read))`, tells `read` as soon as a description shows the batch's
    /// first `n` sub-statements FINISHED (each sub-statement has its own status while the
    /// batch runs; AWS: API_SubStatementData.html, API_DescribeStatement.html).
    async fn wait(
        &self,
        id: &str,
        labels: &[String],
        mut read: Option<(usize, &mut StagedRead)>,
    ) -> Result<DescribeStatementOutput, WarehouseError> {
        let deadline = Instant::now() + self.cfg.statement_timeout;
        let mut delay = FIRST_POLL.min(self.cfg.max_poll_interval);
        loop {
            let last_api_error = match self.client.describe_statement().id(id).send().await {
                Ok(d) => {
                    if let Some((n, r)) = read.as_mut() {
                        if first_finished(&d, *n) {
                            r.done();
                        }
                    }
                    if let Some(done) = self.ended(d, labels) {
                        return done;
                    }
                    None
                }
                Err(e) => {
                    let err = api_err("DescribeStatement", &e);
                    tracing::warn!(statement = %labels.join(", "), id, error = %err, "describing the statement failed; retrying");
                    Some(err.to_string())
                }
            };
            if Instant::now() >= deadline {
                return self.cancel(id, labels, last_api_error).await;
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 3 / 2).min(self.cfg.max_poll_interval);
        }
    }

    /// `Some` when the described statement has ended (finished, failed or aborted).
    fn ended(
        &self,
        d: DescribeStatementOutput,
        labels: &[String],
    ) -> Option<Result<DescribeStatementOutput, WarehouseError>> {
        match d.status() {
            Some(StatusString::Finished) => Some(Ok(d)),
            Some(StatusString::Failed) | Some(StatusString::Aborted) => {
                Some(Err(failure(&d, labels, &self.schema)))
            }
            _ => None,
        }
    }

    /// Cancels a statement past its deadline, then reports what really happened to it.
    async fn cancel(
        &self,
        id: &str,
        labels: &[String],
        describe_error: Option<String>,
    ) -> Result<DescribeStatementOutput, WarehouseError> {
        let cancelled = self.client.cancel_statement().id(id).send().await;
        if let Err(e) = &cancelled {
            tracing::warn!(id, error = %api_err("CancelStatement", e), "cancelling the statement failed");
        }
        // The batch may have finished between the last poll and the cancel, or the
        // cancel may still be rolling it back: look until it has ended, briefly.
        let mut delay = FIRST_POLL.min(self.cfg.max_poll_interval);
        let settle = Instant::now() + SETTLE_AFTER_CANCEL;
        loop {
            match self.client.describe_statement().id(id).send().await {
                Ok(d) => {
                    let status = d.status().cloned();
                    if let Some(done) = self.ended(d, labels) {
                        return match (done, status) {
                            (Ok(d), _) => {
                                tracing::warn!(
                                    id,
                                    "the statement finished as its timeout expired; it committed"
                                );
                                Ok(d)
                            }
                            (Err(_), Some(StatusString::Aborted)) => Err(WarehouseError::Timeout {
                                statement: labels.join(", "),
                                id: id.to_owned(),
                                secs: self.cfg.statement_timeout.as_secs(),
                                cancelled: true,
                            }),
                            (Err(e), _) => Err(e),
                        };
                    }
                }
                Err(e) if Instant::now() >= settle => {
                    return Err(WarehouseError::OutcomeUnknown {
                        statement: labels.join(", "),
                        id: id.to_owned(),
                        message: describe_error
                            .unwrap_or_else(|| api_err("DescribeStatement", &e).to_string()),
                    })
                }
                Err(_) => {}
            }
            if Instant::now() >= settle {
                // Never seen ABORTED or FAILED: it may still commit.
                return Err(WarehouseError::OutcomeUnknown {
                    statement: labels.join(", "),
                    id: id.to_owned(),
                    message: format!(
                        "past its {} s timeout it was {}, and it had not ended {} s later",
                        self.cfg.statement_timeout.as_secs(),
                        if cancelled.is_ok() {
                            "cancelled"
                        } else {
                            "not cancelled (CancelStatement failed)"
                        },
                        SETTLE_AFTER_CANCEL.as_secs()
                    ),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(self.cfg.max_poll_interval);
        }
    }

    /// Reads every page of a finished statement's result (`id` may be a batch's
    /// `<id>:<n>` sub-statement).
    async fn result(&self, id: &str) -> Result<Vec<Vec<Field>>, WarehouseError> {
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .get_statement_result()
                .id(id)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| api_err("GetStatementResult", &e))?;
            rows.extend(page.records().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(rows),
            }
        }
    }

    /// Runs a query and reads every page of its result.
    async fn query(&self, label: &str, sql: &str) -> Result<Vec<Vec<Field>>, WarehouseError> {
        let d = self.execute(label, sql).await?;
        self.result(d.id()).await
    }

    /// After a failed COPY: what SYS_LOAD_ERROR_DETAIL logged for this load's parts,
    /// newest first. Best effort: empty if the lookup fails (the COPY's own error stands).
    async fn load_errors(&self, parts_prefix: &str) -> Vec<LoadError> {
        let sql = render(
            self.sql.get("load_errors"),
            &[
                ("prefix_len", &parts_prefix.chars().count().to_string()),
                ("parts_prefix", &lit(parts_prefix)),
            ],
        );
        match self.query("load_errors", &sql).await {
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    let get = |i: usize| r.get(i).and_then(text).unwrap_or_default();
                    LoadError {
                        file: get(0),
                        line: r.get(1).map(long).unwrap_or(0),
                        column: get(2),
                        code: get(3),
                        message: get(4),
                    }
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read SYS_LOAD_ERROR_DETAIL after the COPY failed");
                Vec::new()
            }
        }
    }

    /// COPY's `IAM_ROLE` value and its ` REGION '...'` clause (empty without one).
    fn copy_auth(&self) -> (String, String) {
        let iam = if self.cfg.iam_role == "default" {
            "default".to_owned()
        } else {
            lit(&self.cfg.iam_role)
        };
        let region = self
            .cfg
            .copy_region
            .as_ref()
            .map(|r| format!(" REGION {}", lit(r)))
            .unwrap_or_default();
        (iam, region)
    }

    fn statement(&self, name: &str) -> Labeled {
        Labeled {
            label: name.to_owned(),
            sql: self.sql.get(name).to_owned(),
        }
    }
}

/// One row of SYS_LOAD_ERROR_DETAIL (SYS_LOAD_ERROR_DETAIL.html).
struct LoadError {
    file: String,
    line: i64,
    column: String,
    code: String,
    message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file, self.line)?;
        if !self.column.is_empty() {
            write!(f, ", column {}", self.column)?;
        }
        write!(f, ": {} (error {})", self.message, self.code)
    }
}

/// Whether the batch's sub-statements `1..=n` have all FINISHED. Matched by the number
/// each sub-statement's id ends with (`<id>:<n>`, AWS: API_SubStatementData.html), so
/// the order the description lists them in does not matter.
fn first_finished(d: &DescribeStatementOutput, n: usize) -> bool {
    if n == 0 {
        return false;
    }
    let finished = d
        .sub_statements()
        .iter()
        .filter(|s| s.status() == Some(&StatementStatusString::Finished))
        .filter_map(|s| s.id().rsplit_once(':')?.1.parse::<usize>().ok())
        .filter(|k| (1..=n).contains(k))
        .collect::<std::collections::HashSet<usize>>();
    finished.len() == n
}

/// The error of a failed or aborted statement, naming the sub-statement that failed.
fn failure(d: &DescribeStatementOutput, labels: &[String], schema: &str) -> WarehouseError {
    let aborted = d.status() == Some(&StatusString::Aborted);
    let sub = d
        .sub_statements()
        .iter()
        .enumerate()
        .find(|(_, s)| s.error().is_some_and(|e| !e.is_empty()));
    let (label, message) = match sub {
        Some((i, s)) => {
            let n = s
                .id()
                .rsplit_once(':')
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .unwrap_or(i + 1);
            let label = labels
                .get(n.saturating_sub(1))
                .cloned()
                .unwrap_or_else(|| format!("#{n}"));
            let error = s.error().unwrap_or_default();
            (label, format!("{error} (sub-statement {n} of {})", labels.len()))
        }
        None => (labels.join(", "), d.error().unwrap_or_default().to_owned()),
    };
    let message = if aborted && message.is_empty() {
        "the statement was cancelled (ABORTED); nothing was committed".to_owned()
    } else {
        message
    };
    // A missing table or schema means `migrate` has not run (Redshift's wording).
    let missing_relation = message.contains("does not exist")
        && (message.contains(&format!("relation \"{schema}."))
            || message.contains(&format!("schema \"{schema}\"")));
    if missing_relation {
        return WarehouseError::NotMigrated {
            schema: schema.to_owned(),
            message,
        };
    }
    if label.starts_with("check_count") {
        return WarehouseError::Unattributed {
            statement: label,
            message: format!("a COPY loaded a different number of rows than staging wrote ({message}); nothing was committed"),
        };
    }
    let class = if aborted || error_number(&message) == Some(SERIALIZABLE_ISOLATION) {
        FailureClass::Transient
    } else {
        FailureClass::Systemic
    };
    WarehouseError::Statement {
        statement: label,
        message,
        class,
    }
}

/// Redshift's error number for a serializable isolation violation: two transactions
/// conflicted and one was aborted; running it again succeeds (AWS:
/// c_serial_isolation.html, "Fixing serializable isolation errors").
const SERIALIZABLE_ISOLATION: u32 = 1023;

/// The error number Redshift puts first in some errors (`ERROR: 1023 DETAIL: ...`).
/// The Data API reports a failed statement's error as this text alone (no SQLSTATE:
/// API_DescribeStatement.html, `Error`), so the number is read from it here, where the
/// error arises, and nowhere else.
fn error_number(error: &str) -> Option<u32> {
    let rest = error.trim_start().strip_prefix("ERROR:")?.trim_start();
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    let after = rest[digits.len()..].chars().next();
    if digits.is_empty() || after.is_some_and(|c| !c.is_whitespace()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether this failure is a serializable isolation conflict, which a retry resolves.
fn is_isolation_conflict(e: &WarehouseError) -> bool {
    matches!(e, WarehouseError::Statement { message, class: FailureClass::Transient, .. }
        if error_number(message) == Some(SERIALIZABLE_ISOLATION))
}

fn text(f: &Field) -> Option<String> {
    match f {
        Field::StringValue(s) => Some(s.clone()),
        Field::LongValue(n) => Some(n.to_string()),
        Field::DoubleValue(n) => Some(n.to_string()),
        Field::BooleanValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn long(f: &Field) -> i64 {
    match f {
        Field::LongValue(n) => *n,
        Field::StringValue(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn timestamp(f: &Field) -> NaiveDateTime {
    text(f)
        .and_then(|s| NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f").ok())
        .unwrap_or_default()
}

fn load_row(r: &[Field]) -> Result<LoadRow, WarehouseError> {
    let short = || WarehouseError::systemic("etl_loads", format!("a row of {} columns, not 13", r.len()));
    if r.len() < 13 {
        return Err(short());
    }
    Ok(LoadRow {
        load_id: text(&r[0]).ok_or_else(short)?,
        started_at: timestamp(&r[1]),
        finished_at: timestamp(&r[2]),
        status: super::word(
            LoadStatus::parse,
            "etl_loads.status",
            &text(&r[3]).unwrap_or_default(),
        )?,
        files: long(&r[4]),
        lines: long(&r[5]),
        events_loaded: long(&r[6]),
        duplicates: long(&r[7]),
        rejects: long(&r[8]),
        blank_lines: long(&r[9]),
        recovered_events: long(&r[10]),
        invalid_ips: long(&r[11]),
        conflicts: long(&r[12]),
        events_by_type: BTreeMap::new(),
    })
}

/// The `created_at` range of `events` a load's dedupe reads: the staged events' range
/// widened by the window on both sides. Without staged events nothing is compared, and
/// the range is left whole (it is a restriction for zone maps, never a rule).
fn created_window(
    staged: Option<(NaiveDateTime, NaiveDateTime)>,
    days: u32,
) -> (NaiveDateTime, NaiveDateTime) {
    // Years 1 to 9999: within Redshift's TIMESTAMP range, and every literal prints as
    // YYYY-MM-DD.
    let at = |y, m, d, h, mi, sec| {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, mi, sec))
            .unwrap_or_default()
    };
    let whole = (at(1, 1, 1, 0, 0, 0), at(9999, 12, 31, 23, 59, 59));
    let Some((lo, hi)) = staged else { return whole };
    let margin = chrono::Duration::days(i64::from(days));
    (
        lo.checked_sub_signed(margin).map_or(whole.0, |t| t.max(whole.0)),
        hi.checked_add_signed(margin).map_or(whole.1, |t| t.min(whole.1)),
    )
}

/// `source_key` bounds for the listed keys: `BETWEEN first AND last`.
/// The condition of the page after the row (`key`, `etag`) in `ORDER BY source_key,
/// etag` order, on columns qualified by `qualifier` (`settled.`, or empty).
fn keyset_after(qualifier: &str, key: &str, etag: &str) -> String {
    let (k, e) = (lit(key), lit(etag));
    let q = qualifier;
    format!("({q}source_key > {k} OR ({q}source_key = {k} AND {q}etag > {e}))")
}

fn key_range(keys: &[String]) -> String {
    let first = keys.iter().min().map(String::as_str).unwrap_or_default();
    let last = keys.iter().max().map(String::as_str).unwrap_or_default();
    format!("source_key BETWEEN {} AND {}", lit(first), lit(last))
}

impl Redshift {
    /// Runs statement `name` with `values` after `lock`, in one transaction; returns the
    /// rows it changed (the second sub-statement's count).
    async fn under_lock(&self, name: &str, values: &[(&str, &str)]) -> Result<u64, WarehouseError> {
        let mut s = self.statement(name);
        s.sql = render(&s.sql, values);
        let d = self.batch(vec![self.statement("lock"), s]).await?;
        Ok(d.sub_statements()
            .get(1)
            .and_then(|s| u64::try_from(s.result_rows()).ok())
            .unwrap_or(0))
    }

    /// After a COPY of the load whose parts are under `prefix` failed or fell short: the
    /// source files of the rows SYS_LOAD_ERROR_DETAIL names for these parts, each with
    /// its first error ([`WarehouseError::Refused`]), or, when it names none,
    /// [`WarehouseError::Unattributed`].
    async fn refused_rows(&self, prefix: &str, statement: String, message: String) -> WarehouseError {
        // `check_count stage_events` checks what `copy_events` loaded: name the COPY.
        let statement = match statement.strip_prefix("check_count stage_") {
            Some(table) => format!("copy_{table}"),
            None => statement,
        };
        let errors = self.load_errors(&self.staging.store.url(prefix)).await;
        let mut by_part: BTreeMap<&str, std::collections::BTreeSet<u64>> = BTreeMap::new();
        for e in &errors {
            if let Ok(line) = u64::try_from(e.line) {
                if line > 0 {
                    by_part.entry(e.file.as_str()).or_default().insert(line);
                }
            }
        }
        let mut files: Vec<super::RefusedFile> = Vec::new();
        for (part, lines) in &by_part {
            let sources = super::staged_row_sources(&self.staging, &[part], lines, &HashSet::new()).await;
            for (line, source_key) in sources {
                if files.iter().any(|f| f.source_key == source_key) {
                    continue;
                }
                let error = errors
                    .iter()
                    .find(|e| e.file == *part && u64::try_from(e.line) == Ok(line))
                    .map(LoadError::to_string)
                    .unwrap_or_default();
                files.push(super::RefusedFile {
                    source_key,
                    message: format!("{statement}: {message}; SYS_LOAD_ERROR_DETAIL: {error}"),
                });
            }
        }
        if files.is_empty() {
            let details: Vec<String> = errors.iter().take(5).map(LoadError::to_string).collect();
            let message = if details.is_empty() {
                message
            } else {
                format!("{message}; SYS_LOAD_ERROR_DETAIL: {}", details.join("; "))
            };
            return WarehouseError::Unattributed { statement, message };
        }
        WarehouseError::Refused { statement, files }
    }

    /// The views `migrate` created before (`event_type_views`).
    async fn tracked_views(&self, sql: &Statements) -> Result<Vec<TrackedView>, WarehouseError> {
        Ok(self
            .query("tracked_views", sql.get("tracked_views"))
            .await?
            .iter()
            .filter(|r| r.len() >= 3)
            .map(|r| TrackedView {
                view_name: text(&r[0]).unwrap_or_default(),
                event_name: text(&r[1]).unwrap_or_default(),
                checksum: text(&r[2]).unwrap_or_default(),
            })
            .collect())
    }

    /// The migration's applied rows, read again.
    async fn applied(&self) -> Result<Vec<AppliedRow>, WarehouseError> {
        // AWS: r_SELECT_synopsis.html, r_ORDER_BY_clause.html
        let rows = self
            .query(
                "read schema_migrations",
                &with_schema(
                    "SELECT version, name, checksum FROM {schema}.schema_migrations ORDER BY version",
                    &self.schema,
                ),
            )
            .await?;
        Ok(rows
            .iter()
            .filter(|r| r.len() >= 3)
            .map(|r| AppliedRow {
                version: long(&r[0]),
                name: text(&r[1]).unwrap_or_default(),
                checksum: text(&r[2]).unwrap_or_default(),
            })
            .collect())
    }

    /// Applies one migration. Returns false when another `migrate` applied it first.
    async fn apply(
        &self,
        m: &migrate::Migration,
        all: &[migrate::Migration],
    ) -> Result<bool, WarehouseError> {
        let label = format!("migration {:04}_{}", m.version, m.name);
        let statements = split_statements(&with_schema(m.sql, &self.schema));
        if !m.transaction {
            // Redshift refuses some DDL in a transaction block: one statement at a time.
            for sql in &statements {
                self.execute(&label, sql).await?;
            }
        }
        let guard_label = format!("{label}: already applied?");
        // LOCK serialises concurrent migrators (Redshift has no advisory locks); the
        // guard then fails the batch (division by zero) when another migrator applied
        // this version while this one waited, and the bookkeeping row commits with the
        // migration's statements or not at all. AWS: r_LOCK.html; the guard:
        // r_CASE_function.html, r_COUNT.html.
        let mut stmts = vec![
            Labeled {
                label: label.clone(),
                sql: with_schema("LOCK {schema}.schema_migrations", &self.schema),
            },
            Labeled {
                label: guard_label.clone(),
                sql: format!(
                    "SELECT 1 / CASE WHEN (SELECT COUNT(*) FROM {}.schema_migrations WHERE version = {}) = 0 THEN 1 ELSE 0 END",
                    self.schema, m.version
                ),
            },
        ];
        if m.transaction {
            stmts.extend(statements.into_iter().map(|sql| Labeled {
                label: label.clone(),
                sql,
            }));
        }
        // AWS: r_INSERT_30.html, r_GETDATE.html (one statement: its start is the time).
        stmts.push(Labeled {
            label: label.clone(),
            sql: format!(
                "INSERT INTO {}.schema_migrations (version, name, checksum, applied_at) VALUES ({}, {}, {}, GETDATE())",
                self.schema,
                m.version,
                lit(&m.name),
                lit(&m.checksum)
            ),
        });
        match self.batch(stmts).await {
            Ok(_) => Ok(true),
            Err(WarehouseError::Statement {
                statement,
                message,
                class,
            }) if statement == guard_label => {
                // Another migrator got there first; what it applied must be this file.
                let applied = self.applied().await?;
                migrate::pending(all, &applied)?;
                if applied.iter().any(|a| a.version == m.version) {
                    tracing::info!(migration = %label, "applied meanwhile by another migrate");
                    Ok(false)
                } else {
                    Err(WarehouseError::Statement {
                        statement,
                        message,
                        class,
                    })
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl Redshift {
    /// [`Warehouse::migrate`] with these migration files in place of the shipped ones
    /// (tests exercise migration forms the shipped files do not use).
    pub async fn migrate_files(
        &self,
        files: &[(&'static str, &'static str)],
    ) -> Result<Vec<AppliedMigration>, WarehouseError> {
        let all = migrate::migrations(Dialect::Redshift.dir(), files)?;
        let bootstrap: Vec<Labeled> = split_statements(&with_schema(BOOTSTRAP_SQL, &self.schema))
            .into_iter()
            .map(|sql| Labeled {
                label: "bootstrap".into(),
                sql,
            })
            .collect();
        // Idempotent (IF NOT EXISTS); a concurrent `migrate` creating the same objects can
        // still make it fail once (a serializable isolation error), so it is retried.
        let mut tries = 0;
        loop {
            match self.batch(bootstrap.clone()).await {
                Ok(_) => break,
                Err(WarehouseError::Statement { .. }) if tries < 2 => {
                    tries += 1;
                    tracing::info!("bootstrap failed, likely racing another migrate; retrying");
                }
                Err(e) => return Err(e),
            }
        }
        let applied = self.applied().await?;
        let mut done = Vec::new();
        for m in migrate::pending(&all, &applied)? {
            if self.apply(m, &all).await? {
                done.push(AppliedMigration {
                    version: m.version,
                    name: m.name.clone(),
                });
            }
        }
        Ok(done)
    }
}

/// A load's batch: its statements, and where in it the results are.
struct LoadBatch {
    statements: Vec<Labeled>,
    /// Sub-statements `1..=copied` are every COPY and its count check.
    copied: usize,
    /// The number of the `load_summary` sub-statement.
    summary_no: usize,
    /// The number of the `loaded_by_type` sub-statement.
    by_type_no: usize,
}

impl Redshift {
    /// The statements of one load's transaction, from `sql/redshift/load.sql`.
    fn load_batch(
        &self,
        staged: &StagedLoad,
        started_at: NaiveDateTime,
        loaded_at: NaiveDateTime,
    ) -> LoadBatch {
        let store = &self.staging.store;
        let (iam, region) = self.copy_auth();
        let (window_low, window_high) = created_window(staged.created_range, self.dedupe_window_days);
        let values = [
            ("load_id", lit(&staged.load_id)),
            ("started_at", lit(&started_at.format(TIME_FORMAT).to_string())),
            ("loaded_at", lit(&loaded_at.format(TIME_FORMAT).to_string())),
            ("files_manifest", lit(&store.url(&staged.files_manifest))),
            ("events_manifest", lit(&store.url(&staged.events_manifest))),
            ("rejects_manifest", lit(&store.url(&staged.rejects_manifest))),
            ("iam_role", iam),
            ("region", region),
            ("window_low", lit(&window_low.format(TIME_FORMAT).to_string())),
            ("window_high", lit(&window_high.format(TIME_FORMAT).to_string())),
            ("window_days", self.dedupe_window_days.to_string()),
            (
                "bucket_us",
                super::window_bucket_us(self.dedupe_window_days).to_string(),
            ),
        ];
        let values: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let fill = |name: &str| {
            let mut s = self.statement(name);
            s.sql = render(&s.sql, &values);
            s
        };
        let check = |table: &str, expected: u64| {
            let mut s = self.statement("check_count");
            s.label = format!("check_count {table}");
            s.sql = render(&s.sql, &[("table", table), ("expected", &expected.to_string())]);
            s
        };
        let mut statements: Vec<Labeled> = LOAD_BEGIN.iter().map(|n| fill(n)).collect();
        statements.push(fill("copy_files"));
        statements.push(check("stage_files", staged.files_staged));
        // COPY of a manifest without entries is an error on Redshift: skip empty streams.
        if staged.events_staged > 0 {
            statements.push(fill("copy_events"));
            statements.push(check("stage_events", staged.events_staged));
        }
        if staged.rejects_staged > 0 {
            statements.push(fill("copy_rejects"));
            statements.push(check("stage_rejects", staged.rejects_staged));
        }
        statements.extend(LOAD_AFTER_COPY.iter().map(|n| fill(n)));
        let number = |label: &str| {
            statements
                .iter()
                .position(|s| s.label == label)
                .map_or(0, |i| i + 1)
        };
        let by_type_no = number("loaded_by_type");
        let copied = statements
            .iter()
            .rposition(|s| s.label.starts_with("check_count"))
            .map_or(0, |i| i + 1);
        LoadBatch {
            summary_no: statements.len(),
            statements,
            copied,
            by_type_no,
        }
    }

    /// The committed load's row, read from its batch (`None`: every file had been
    /// recorded by another loader, so no row was written). The load has committed
    /// whatever happens here: a result that cannot be read is a warning and a row that
    /// says so.
    async fn committed_row(
        &self,
        done: &DescribeStatementOutput,
        batch: &LoadBatch,
        staged: &StagedLoad,
        started_at: NaiveDateTime,
        loaded_at: NaiveDateTime,
    ) -> Option<LoadRow> {
        let summary = self.result(&format!("{}:{}", done.id(), batch.summary_no)).await;
        let by_type = match self.result(&format!("{}:{}", done.id(), batch.by_type_no)).await {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| Some((text(r.first()?)?, long(r.get(1)?))))
                .collect(),
            Err(e) => {
                tracing::warn!(load_id = %staged.load_id, error = %e, "the load committed, but its events per type could not be read; the event catalog has them");
                BTreeMap::new()
            }
        };
        let row = summary.and_then(|rows| rows.first().map(|r| load_row(r)).transpose());
        match row {
            Ok(row) => row.map(|r| LoadRow {
                events_by_type: by_type,
                ..r
            }),
            Err(e) => {
                tracing::warn!(load_id = %staged.load_id, error = %e, "the load committed, but its summary could not be read; `events-etl status` shows it");
                Some(LoadRow {
                    load_id: staged.load_id.clone(),
                    started_at,
                    finished_at: loaded_at,
                    status: LoadStatus::SummaryUnavailable,
                    files: i64::try_from(staged.files_staged).unwrap_or(i64::MAX),
                    lines: 0,
                    events_loaded: 0,
                    duplicates: 0,
                    rejects: 0,
                    blank_lines: 0,
                    recovered_events: 0,
                    invalid_ips: 0,
                    conflicts: 0,
                    events_by_type: by_type,
                })
            }
        }
    }
}

#[async_trait]
impl Warehouse for Redshift {
    async fn migrate(&self) -> Result<Vec<AppliedMigration>, WarehouseError> {
        self.migrate_files(Dialect::Redshift.files()).await
    }

    async fn recorded_versions(&self, keys: &[String]) -> Result<HashSet<(String, String)>, WarehouseError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let range = key_range(keys);
        let wanted: HashSet<&str> = keys.iter().map(String::as_str).collect();
        let mut found = HashSet::new();
        let mut after = "TRUE".to_owned();
        loop {
            let sql = render(
                self.sql.get("recorded_versions"),
                &[
                    ("key_range", &range),
                    ("after", &after),
                    ("limit", &self.page_rows.to_string()),
                ],
            );
            let rows = self.query("recorded_versions", &sql).await?;
            let page: Vec<(String, String)> = rows
                .iter()
                .filter_map(|r| Some((text(r.first()?)?, text(r.get(1)?)?)))
                .collect();
            let last = page.last().cloned();
            found.extend(page.into_iter().filter(|(k, _)| wanted.contains(k.as_str())));
            match last {
                Some((k, e)) if rows.len() == self.page_rows => after = keyset_after("settled.", &k, &e),
                _ => return Ok(found),
            }
        }
    }

    async fn load_reporting(
        &self,
        staged: &StagedLoad,
        started_at: NaiveDateTime,
        mut read: StagedRead,
    ) -> Result<Loaded, WarehouseError> {
        // One time for every row this load writes (GETDATE() differs per statement).
        let loaded_at = Utc::now().naive_utc().max(started_at);
        let mut batch = self.load_batch(staged, started_at, loaded_at);
        let statements = std::mem::take(&mut batch.statements);
        let done = match self
            .batch_reporting(statements, Some((batch.copied, &mut read)))
            .await
        {
            Ok(done) => done,
            // A COPY failed, or loaded fewer rows than staged (MAXERROR lets it skip the
            // rows it refuses, and `check_count` then fails the batch): the load error
            // view names every refused row of this load's parts, so that the pipeline
            // sets all their files aside at once and loads the rest in one more pass.
            Err(
                WarehouseError::Statement {
                    statement, message, ..
                }
                | WarehouseError::Unattributed { statement, message },
            ) if statement.starts_with("copy_") || statement.starts_with("check_count") => {
                return Err(self.refused_rows(&staged.prefix, statement, message).await);
            }
            Err(e) => return Err(e),
        };
        // The batch has committed: from here on nothing may fail the run, or a rerun
        // would be told the load failed when it did not.
        let row = self
            .committed_row(&done, &batch, staged, started_at, loaded_at)
            .await;
        Ok(Loaded {
            row,
            refused: Vec::new(),
        })
    }

    async fn quarantine(&self, files: &[Quarantined]) -> Result<(), WarehouseError> {
        // One batch per 13 files: the lock, then an INSERT, a reopening UPDATE and the
        // reload's closing UPDATE each.
        for chunk in files.chunks((MAX_BATCH_STATEMENTS - 1) / 3) {
            let mut stmts = vec![self.statement("lock")];
            for q in chunk {
                let size = q.size_bytes.to_string();
                let values = [
                    ("source_key", lit(&q.source_key)),
                    ("etag", lit(&q.etag)),
                    ("size_bytes", size),
                    ("reason", lit(q.reason.as_str())),
                    ("detail", lit(&q.detail)),
                    (
                        "quarantined_at",
                        lit(&q.quarantined_at.format(TIME_FORMAT).to_string()),
                    ),
                ];
                let values: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
                for name in ["quarantine", "reopen_quarantine", "close_reload_quarantined"] {
                    let mut s = self.statement(name);
                    s.sql = render(&s.sql, &values);
                    stmts.push(s);
                }
            }
            self.batch(stmts).await?;
        }
        Ok(())
    }

    async fn request_reload(&self, key: &str, etag: &str, at: NaiveDateTime) -> Result<u64, WarehouseError> {
        self.under_lock(
            "request_reload",
            &[
                ("source_key", &lit(key)),
                ("etag", &lit(etag)),
                ("requested_at", &lit(&at.format(TIME_FORMAT).to_string())),
            ],
        )
        .await
    }

    async fn request_reload_range(
        &self,
        low: &str,
        high: &str,
        at: NaiveDateTime,
    ) -> Result<u64, WarehouseError> {
        self.under_lock(
            "request_reload_range",
            &[
                ("low", &lit(low)),
                ("high", &lit(high)),
                ("requested_at", &lit(&at.format(TIME_FORMAT).to_string())),
            ],
        )
        .await
    }

    async fn open_reloads(&self, limit: i64) -> Result<Vec<OpenReload>, WarehouseError> {
        let sql = render(
            self.sql.get("open_reloads"),
            &[("limit", &limit.max(0).to_string())],
        );
        let rows = self.query("open_reloads", &sql).await?;
        Ok(rows
            .iter()
            .filter(|r| r.len() >= 3)
            .map(|r| OpenReload {
                source_key: text(&r[0]).unwrap_or_default(),
                etag: text(&r[1]).unwrap_or_default(),
                requested_at: timestamp(&r[2]),
            })
            .collect())
    }

    async fn known_pending(&self, low: &str, high: &str) -> Result<Vec<KnownPending>, WarehouseError> {
        let mut out: Vec<KnownPending> = Vec::new();
        let mut after = "TRUE".to_owned();
        loop {
            let sql = render(
                self.sql.get("known_pending"),
                &[
                    ("low", &lit(low)),
                    ("high", &lit(high)),
                    ("after", &after),
                    ("limit", &self.page_rows.to_string()),
                ],
            );
            let rows = self.query("known_pending", &sql).await?;
            let n = rows.len();
            out.extend(rows.iter().filter(|r| r.len() >= 5).map(|r| KnownPending {
                source_key: text(&r[0]).unwrap_or_default(),
                etag: text(&r[1]).unwrap_or_default(),
                size_bytes: long(&r[2]),
                listed_at: timestamp(&r[4]),
            }));
            match out.last() {
                Some(last) if n == self.page_rows => after = keyset_after("", &last.source_key, &last.etag),
                _ => return Ok(out),
            }
        }
    }

    async fn remember_pending(
        &self,
        low: &str,
        high: &str,
        files: &[ObjectMeta],
        at: NaiveDateTime,
    ) -> Result<(), WarehouseError> {
        let mut forget = self.statement("forget_pending");
        forget.sql = render(&forget.sql, &[("low", &lit(low)), ("high", &lit(high))]);
        let listed = format!("CAST({} AS TIMESTAMP)", lit(&at.format(TIME_FORMAT).to_string()));
        let template = self.sql.get("remember_pending").to_owned();
        // Rows as literals, as many per INSERT as keep it well under the statement limit.
        let mut inserts: Vec<Labeled> = Vec::new();
        let mut rows: Vec<String> = Vec::new();
        let mut size = 0usize;
        let flush = |rows: &mut Vec<String>, inserts: &mut Vec<Labeled>| {
            if !rows.is_empty() {
                inserts.push(Labeled {
                    label: "remember_pending".into(),
                    sql: render(&template, &[("rows", &rows.join(", "))]),
                });
                rows.clear();
            }
        };
        for f in files {
            let modified = f.last_modified.map_or_else(
                || "NULL".to_owned(),
                |t| {
                    format!(
                        "CAST({} AS TIMESTAMP)",
                        lit(&t.naive_utc().format(TIME_FORMAT).to_string())
                    )
                },
            );
            let row = format!(
                "({}, {}, {}, {modified}, {listed})",
                lit(&f.key),
                lit(&f.etag),
                f.size
            );
            if size + row.len() > MAX_STATEMENT_BYTES / 2 {
                flush(&mut rows, &mut inserts);
                size = 0;
            }
            size += row.len() + 2;
            rows.push(row);
        }
        flush(&mut rows, &mut inserts);
        // The first batch forgets the range and writes what fits; later ones add the
        // rest (a failure between them only forgets some pending versions).
        let mut batch = vec![forget];
        for insert in inserts {
            if batch.len() == MAX_BATCH_STATEMENTS {
                self.batch(std::mem::take(&mut batch)).await?;
            }
            batch.push(insert);
        }
        if !batch.is_empty() {
            self.batch(batch).await?;
        }
        Ok(())
    }

    async fn close_reloads_gone(&self, versions: &[(String, String)]) -> Result<(), WarehouseError> {
        for chunk in versions.chunks(MAX_BATCH_STATEMENTS) {
            let stmts = chunk
                .iter()
                .map(|(key, etag)| {
                    let mut s = self.statement("close_reload_gone");
                    s.sql = render(&s.sql, &[("source_key", &lit(key)), ("etag", &lit(etag))]);
                    s
                })
                .collect();
            self.batch(stmts).await?;
        }
        Ok(())
    }

    async fn resolve_quarantine(
        &self,
        key: &str,
        by: &str,
        note: &str,
        at: NaiveDateTime,
    ) -> Result<u64, WarehouseError> {
        self.under_lock(
            "resolve_quarantine",
            &[
                ("source_key", &lit(key)),
                ("resolved_at", &lit(&at.format(TIME_FORMAT).to_string())),
                ("resolved_by", &lit(by)),
                ("resolution", &lit(note)),
            ],
        )
        .await
    }

    async fn quarantined(
        &self,
        limit: i64,
        include_resolved: bool,
    ) -> Result<Vec<Quarantined>, WarehouseError> {
        let sql = render(
            self.sql.get("quarantined"),
            &[
                ("limit", &limit.max(0).to_string()),
                (
                    "include_resolved",
                    if include_resolved { "TRUE" } else { "FALSE" },
                ),
            ],
        );
        let rows = self.query("quarantined", &sql).await?;
        rows.iter()
            .filter(|r| r.len() >= 9)
            .map(|r| {
                Ok(Quarantined {
                    source_key: text(&r[0]).unwrap_or_default(),
                    etag: text(&r[1]).unwrap_or_default(),
                    size_bytes: long(&r[2]),
                    reason: super::word(
                        QuarantineReason::parse,
                        "etl_quarantine.reason",
                        &text(&r[3]).unwrap_or_default(),
                    )?,
                    detail: text(&r[4]).unwrap_or_default(),
                    quarantined_at: timestamp(&r[5]),
                    resolved_at: text(&r[6]).map(|_| timestamp(&r[6])),
                    resolved_by: text(&r[7]),
                    resolution: text(&r[8]),
                })
            })
            .collect()
    }

    async fn applied_migrations(&self) -> Result<Vec<AppliedRow>, WarehouseError> {
        self.applied().await
    }

    async fn probe_copy(&self, manifest_key: &str) -> Result<(), WarehouseError> {
        let (iam, region) = self.copy_auth();
        let manifest = lit(&self.staging.store.url(manifest_key));
        let fill = |name: &str| {
            let mut s = self.statement(name);
            s.sql = render(
                &s.sql,
                &[("manifest", &manifest), ("iam_role", &iam), ("region", &region)],
            );
            s
        };
        self.batch(vec![fill("probe_table"), fill("probe_copy")])
            .await
            .map(|_| ())
    }

    async fn record_run(&self, r: &RunRow) -> Result<(), WarehouseError> {
        let error = r.error.as_deref().map_or_else(|| "NULL".to_owned(), lit);
        let sql = render(
            self.sql.get("record_run"),
            &[
                ("run_id", &lit(&r.run_id)),
                ("started_at", &lit(&r.started_at.format(TIME_FORMAT).to_string())),
                (
                    "finished_at",
                    &lit(&r.finished_at.format(TIME_FORMAT).to_string()),
                ),
                ("status", &lit(r.status.as_str())),
                ("loads", &r.loads.to_string()),
                ("files", &r.files.to_string()),
                ("events_loaded", &r.events_loaded.to_string()),
                ("rejects", &r.rejects.to_string()),
                ("error", &error),
            ],
        );
        self.execute("record_run", &sql).await.map(|_| ())
    }

    async fn last_run(&self, status: RunStatus) -> Result<Option<RunRow>, WarehouseError> {
        let sql = render(self.sql.get("last_run"), &[("status", &lit(status.as_str()))]);
        let rows = self.query("last_run", &sql).await?;
        Ok(rows.first().filter(|r| r.len() >= 9).map(|r| RunRow {
            run_id: text(&r[0]).unwrap_or_default(),
            started_at: timestamp(&r[1]),
            finished_at: timestamp(&r[2]),
            status,
            error: text(&r[4]),
            loads: long(&r[5]),
            files: long(&r[6]),
            events_loaded: long(&r[7]),
            rejects: long(&r[8]),
        }))
    }

    async fn sync_views(&self, types: &EventTypes) -> Result<Vec<ViewChange>, WarehouseError> {
        let sql = Statements::parse(VIEWS_SQL, &self.schema);
        let at = Utc::now().naive_utc().format(TIME_FORMAT).to_string();
        let changes = views::plan(
            &sql,
            types,
            self.naive_timezone,
            &self.tracked_views(&sql).await?,
            &at,
        );
        let mut done = Vec::new();
        for change in changes {
            let label = format!("view {}", change.view_name);
            let stmts = change
                .statements
                .iter()
                .map(|sql| Labeled {
                    label: label.clone(),
                    sql: sql.clone(),
                })
                .collect();
            if let Err(e) = self.batch(stmts).await {
                // Another `migrate` may have made this very change meanwhile (a batch
                // cannot read before it decides, so the check comes after).
                let now = self.tracked_views(&sql).await?;
                if views::still_needed(&sql, types, self.naive_timezone, &now, &change) {
                    return Err(views::explain_failure(&label, e));
                }
                continue;
            }
            done.push(change);
        }
        Ok(done)
    }

    async fn event_catalog(&self) -> Result<Vec<CatalogRow>, WarehouseError> {
        let rows = self.query("event_catalog", self.sql.get("event_catalog")).await?;
        Ok(rows
            .iter()
            .filter(|r| r.len() >= 4)
            .map(|r| CatalogRow {
                event_name: text(&r[0]).unwrap_or_default(),
                first_seen: timestamp(&r[1]),
                last_seen: timestamp(&r[2]),
                events: long(&r[3]),
            })
            .collect())
    }

    async fn recent_loads(&self, limit: i64) -> Result<Vec<LoadRow>, WarehouseError> {
        let sql = render(
            self.sql.get("recent_loads"),
            &[("limit", &limit.max(0).to_string())],
        );
        let rows = self.query("recent_loads", &sql).await?;
        rows.iter().map(|r| load_row(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The other statements: COPYs and their checks (added per non-empty stream), queries.
    const OTHER_STATEMENTS: [&str; 24] = [
        "copy_files",
        "copy_events",
        "copy_rejects",
        "check_count",
        "recent_loads",
        "recorded_versions",
        "load_errors",
        "quarantine",
        "quarantined",
        "record_run",
        "last_run",
        "probe_table",
        "probe_copy",
        "request_reload",
        "request_reload_range",
        "open_reloads",
        "close_reload_gone",
        "known_pending",
        "forget_pending",
        "remember_pending",
        "close_reload_quarantined",
        "reopen_quarantine",
        "resolve_quarantine",
        "event_catalog",
    ];

    #[test]
    fn load_sql_defines_every_statement_used() {
        let used: Vec<&str> = [&LOAD_BEGIN[..], &LOAD_AFTER_COPY, &OTHER_STATEMENTS].concat();
        Statements::parse(LOAD_SQL, "s").assert_defines_exactly(&used, "sql/redshift/load.sql");
    }

    #[test]
    fn error_numbers_are_read_from_the_start_of_the_error_only() {
        assert_eq!(
            error_number("ERROR: 1023 DETAIL: Serializable isolation violation on table - 1"),
            Some(1023)
        );
        assert_eq!(error_number("ERROR: relation \"s.t\" does not exist"), None);
        assert_eq!(error_number("ERROR: 1023x"), None);
        assert_eq!(error_number("load failed: ERROR: 1023 DETAIL"), None);
    }

    #[test]
    fn literals_and_key_ranges() {
        assert_eq!(lit("a'b"), "'a''b'");
        let keys = [
            "events/2020/01/02/b.json".to_owned(),
            "events/2020/01/01/a.json".to_owned(),
        ];
        assert_eq!(
            key_range(&keys),
            "source_key BETWEEN 'events/2020/01/01/a.json' AND 'events/2020/01/02/b.json'"
        );
        assert_eq!(
            key_range(&["a/x.json".to_owned(), "b'c.json".to_owned()]),
            "source_key BETWEEN 'a/x.json' AND 'b''c.json'"
        );
        // Keys that share no prefix still give a valid, bounded range.
        assert_eq!(
            key_range(&["a.json".to_owned(), "z.json".to_owned()]),
            "source_key BETWEEN 'a.json' AND 'z.json'"
        );
        assert_eq!(
            key_range(&["a\\b.json".to_owned(), "c\\'d.json".to_owned()]),
            "source_key BETWEEN 'a\\\\b.json' AND 'c\\\\''d.json'"
        );
        assert_eq!(lit("a\\'{offset}"), "'a\\\\''{offset}'");
    }

    /// A description of batch `b1` whose sub-statements have these (number, status).
    fn described(subs: &[(usize, StatementStatusString)]) -> DescribeStatementOutput {
        let mut d = DescribeStatementOutput::builder().id("b1");
        for (n, status) in subs {
            d = d.sub_statements(
                aws_sdk_redshiftdata::types::SubStatementData::builder()
                    .id(format!("b1:{n}"))
                    .status(status.clone())
                    .build()
                    .expect("sub-statement"),
            );
        }
        d.build().expect("description")
    }

    #[test]
    fn the_copies_are_read_once_every_sub_statement_up_to_the_last_check_finished() {
        use StatementStatusString::{Failed, Finished, Started, Submitted};
        let d = described(&[(1, Finished), (2, Finished), (3, Started), (4, Submitted)]);
        assert!(first_finished(&d, 2));
        assert!(!first_finished(&d, 3), "the third is still running");
        assert!(
            !first_finished(&d, 0),
            "no COPY in the batch: nothing to tell early"
        );
        // By the number in the id, whatever order the description lists them in.
        let d = described(&[(2, Finished), (3, Failed), (1, Finished)]);
        assert!(first_finished(&d, 2));
        assert!(!first_finished(&d, 3), "a failed COPY or check keeps the objects");
        // A description without sub-statements says nothing.
        assert!(!first_finished(&described(&[]), 1));
    }
}
